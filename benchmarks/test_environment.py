"""The metadata written beside every result says which machine it came from."""

import sys

import pytest

from benchmarks import environment


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and sysfs")
def test_cpu_metadata_names_the_model_caches_and_kernel_isa():
    meta = environment.metadata("cpu")
    with open("/proc/cpuinfo") as f:
        model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    assert meta["device"].startswith(model) and meta["device"].endswith(f"({meta['threads']} threads)")
    assert meta["cpu_caches"].startswith("L1d ") and " L2 " in meta["cpu_caches"]
    assert meta["se_kernels_cpu_isa"] in ("avx512", "avx2", "baseline", None)
    assert meta["torch_cpu_capability"]


def test_cpu_caches_skip_instruction_caches(tmp_path, monkeypatch):
    for index, (level, kind, size) in enumerate([("1", "Data", "48K"), ("1", "Instruction", "32K"),
                                                 ("2", "Unified", "2048K")]):
        d = tmp_path / f"index{index}"
        d.mkdir()
        for name, value in (("level", level), ("type", kind), ("size", size)):
            (d / name).write_text(value + "\n")
    real_path = environment.Path
    monkeypatch.setattr(environment, "Path", lambda p: tmp_path if "cpu0/cache" in str(p) else real_path(p))
    assert environment.cpu_caches() == "L1d 48K, L2 2048K"
