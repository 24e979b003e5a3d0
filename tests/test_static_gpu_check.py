"""scripts/static_gpu_check.py: its occupancy maths, its cuobjdump parsing, and proof
that it fails when a variant spills (a deliberately oversized tile, compiled for sm_90).

The compile runs in a subprocess: Triton compiles for real GPUs only without
TRITON_INTERPRET, which this test session sets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
check = pytest.importorskip("static_gpu_check", reason="needs the source tree (scripts/)")


@pytest.mark.parametrize("regs, smem, threads, cc, ctas, warps", [
    (128, 0, 128, 90, 4, 16),    # 128 registers at 4 warps: the streaming floor exactly
    (32, 0, 256, 90, 8, 64),     # thread-limited: 2048 threads per SM
    (64, 17152, 256, 80, 4, 32),  # register-limited
    (40, 100_000, 128, 80, 1, 4),  # shared-memory-limited (164 KB per SM on sm_80)
    (255, 0, 256, 90, 1, 8),
])
def test_occupancy(regs, smem, threads, cc, ctas, warps):
    assert check.occupancy(check.ARCHS[cc], regs, smem, threads) == (ctas, warps)


def test_parse_resource_usage():
    text = """
Fatbin elf code:
================
arch = sm_90
 Function _Z6kernelPf:
  REG:40 STACK:8 SHARED:2048 LOCAL:4 CONSTANT[0]:556 TEXTURE:0 SURFACE:0 SAMPLER:0
"""
    assert check.parse_resource_usage(text) == [
        (90, "_Z6kernelPf", {"REG": 40, "STACK": 8, "SHARED": 2048, "LOCAL": 4})]


def test_check_flags_each_budget():
    base = dict(backend="triton", kernel="excite_kernel", arch="sm_90", dtype="*bf16",
                variant="v", regs=64, stack=0, local=0, shared=1024, threads=128,
                ctas_per_sm=8, warps_per_sm=32)
    assert check.check([base]) == []
    assert "spills" in check.check([dict(base, stack=8)])[0]
    assert "registers" in check.check([dict(base, regs=130)])[0]
    assert "warps per SM" in check.check([dict(base, warps_per_sm=8)])[0]
    assert check.check([dict(base, arch="sm_100", stack=8)]) == []  # budgets: sm_80, sm_90


COMPILE = """
import json, sys
sys.path.insert(0, {scripts!r})
import static_gpu_check as check
from benchmarks.models import SEOptions
work = check.Workload("test", 2, 64, 8, 7, 7, "float32", "channels_last",
                      SEOptions("avg", "relu", "sigmoid", True, True, True, True))
variant = next(v for v in check.triton_variants(work, 132) if v.name == "excite_kernel")
meta = json.loads(variant.constexprs)
huge = dict(meta, BLOCK_C=32, BLOCK_HW=128, BLOCK_R=64)  # 4096-element x tile on one warp
oversized = check.TritonVariant(variant.kernel, variant.signature, json.dumps(huge),
                                variant.attrs, 1, variant.num_stages)
rows = []
for v in (variant, oversized):
    usage = check.compile_triton(v, 90)
    ctas, warps = check.occupancy(check.ARCHS[90], usage["REG"], usage["SHARED"], usage["threads"])
    rows.append(dict(backend="triton", kernel=v.name, arch="sm_90", dtype="*fp32", variant="",
                     regs=usage["REG"], stack=usage["STACK"], local=usage["LOCAL"],
                     shared=usage["SHARED"], threads=usage["threads"], ctas_per_sm=ctas,
                     warps_per_sm=warps))
print(json.dumps(dict(normal=check.check(rows[:1]), oversized=check.check(rows[1:]), rows=rows)))
"""


def test_an_oversized_tile_fails_the_check():
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", COMPILE.format(scripts=str(ROOT / "scripts"))],
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["normal"] == [], result
    assert any("spills" in v for v in result["oversized"]), result
