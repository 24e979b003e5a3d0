"""The compiled extension: built, loaded, and a kernel registered for every op."""

from __future__ import annotations

import os

import pytest
import torch

from se_kernels.backends import PROBE

OPS = ("forward", "backward")
SIM_OPS = ("sim_forward", "sim_backward")


def _registered(key: str, ops=OPS) -> list[str]:
    return [op for op in ops
            if torch._C._dispatch_has_kernel_for_dispatch_key(f"se_kernels::{op}", key)]


def test_extension_loads_with_cpu_and_cuda_sim_kernels():
    if PROBE.extension is not None:
        if os.environ.get("SE_EXPECT_CUDA_BUILD") == "1":
            pytest.fail(f"CI expects the compiled extension: {PROBE.extension}")
        pytest.skip(PROBE.extension)
    assert _registered("CPU") == list(OPS)
    assert _registered("CPU", SIM_OPS) == list(SIM_OPS), "cuda_sim builds with the CPU kernels"


@pytest.mark.skipif(os.environ.get("SE_EXPECT_CUDA_BUILD") != "1",
                    reason="set SE_EXPECT_CUDA_BUILD=1 where nvcc is present (CI does)")
def test_cuda_kernels_are_built():
    """Built with nvcc (no GPU needed): CUDA kernels registered for every op."""
    assert PROBE.extension is None, PROBE.extension
    assert _registered("CUDA") == list(OPS)


@pytest.mark.skipif("SE_EXPECT_INSTALLED_PREFIX" not in os.environ,
                    reason="set by scripts/package_check.sh, which tests the installed wheel")
def test_tests_import_the_installed_package():
    """The suite run against the installed wheel must not import the checkout by accident."""
    import se_kernels

    prefix = os.path.realpath(os.environ["SE_EXPECT_INSTALLED_PREFIX"])
    assert os.path.realpath(se_kernels.__file__).startswith(prefix), se_kernels.__file__
