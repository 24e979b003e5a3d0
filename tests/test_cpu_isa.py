"""Run-time CPU ISA dispatch: the CPU kernels are built once per ISA and the best one the
CPU supports is loaded at first use; SE_KERNELS_CPU_ISA forces one. Each built variant is
loaded in a fresh process with the variable forced and checked against the reference."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from conftest import require_backend

from se_kernels.backends import cpu_isa

WIDEST_FIRST = ["avx512", "avx2", "baseline"]


@pytest.fixture(autouse=True)
def _cpu_kernels():
    require_backend("cpu")


def test_the_widest_available_isa_is_in_use():
    available = torch.ops.se_kernels.cpu_isas()
    assert available and available == [i for i in WIDEST_FIRST if i in available]
    forced = os.environ.get("SE_KERNELS_CPU_ISA")
    assert cpu_isa() == (forced or available[0])


CHECK = """
import torch, se_kernels
from se_kernels.backends import cpu_isa
assert cpu_isa() == {isa!r}, cpu_isa()
g = torch.Generator().manual_seed(0)
for dtype, fmt in [(torch.float32, torch.contiguous_format), (torch.bfloat16, torch.channels_last)]:
    x = torch.randn(3, 40, 9, 9, generator=g).to(dtype).contiguous(memory_format=fmt)
    w1, w2 = torch.randn(8, 40, generator=g) / 6, torch.randn(40, 8, generator=g) / 3
    x.requires_grad_()
    y = se_kernels.squeeze_excite(x, w1, None, w2, residual=x.detach(), out_act="relu", backend="cpu")
    (gx,) = torch.autograd.grad(y.sum(), [x])
    x64 = x.detach().double().requires_grad_()
    ref = se_kernels.squeeze_excite_reference(x64, w1.double(), None, w2.double(),
                                              residual=x64.detach(), out_act="relu")
    (rx,) = torch.autograd.grad(ref.sum(), [x64])
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(y.double(), ref, rtol=tol, atol=tol)
    torch.testing.assert_close(gx.double(), rx, rtol=tol, atol=tol)
print("ok", cpu_isa())
"""


@pytest.mark.parametrize("isa", WIDEST_FIRST)
def test_forced_isa_loads_and_computes(isa):
    if isa not in torch.ops.se_kernels.cpu_isas():
        pytest.skip(f"{isa}: not supported by this CPU or not built")
    env = dict(os.environ, SE_KERNELS_CPU_ISA=isa)
    out = subprocess.run([sys.executable, "-c", CHECK.format(isa=isa)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith(f"ok {isa}")


def test_unknown_isa_is_a_clear_error():
    env = dict(os.environ, SE_KERNELS_CPU_ISA="sse9")
    code = ("import torch, se_kernels\n"
            "se_kernels.squeeze_excite(torch.randn(1, 4, 2, 2), torch.randn(2, 4), None, "
            "torch.randn(4, 2), backend='cpu')")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode != 0
    assert "SE_KERNELS_CPU_ISA must be one of baseline, avx2, avx512; got 'sse9'" in out.stderr
