"""64-bit indexing: an input past 2**31 elements (GPU only, marked slow, about 20 GB).

x is constant over each (sample, channel) map, so the float64 truth comes from the same
layer on a 1x1 map: pooling a constant map returns the constant, every element of y and
of dx equals its channel's value on the small map, and the weight gradients of y.sum()
are H * W times the small map's. A wrong (32-bit, wrapped) offset reads or writes another
channel's data and breaks that equality. The same check runs at a small size on every
available backend, so the construction itself is tested in CI.
"""

from __future__ import annotations

import pytest
import torch

from conftest import EPS, KERNEL_BACKENDS, LAYOUTS, backend_device, require_backend

import se_kernels

R = 8


def check_constant_maps(backend: str, N: int, C: int, H: int, W: int, layout: str,
                        dtype: torch.dtype) -> None:
    device = backend_device(backend)
    gen = torch.Generator().manual_seed(0)
    level = torch.randn(N, C, 1, 1, generator=gen)
    w1 = torch.randn(R, C, generator=gen) * C ** -0.5
    w2 = torch.randn(C, R, generator=gen) * R ** -0.5

    small = [t.double().requires_grad_() for t in (level, w1, w2)]
    truth = se_kernels.squeeze_excite_reference(small[0], small[1], None, small[2])
    truth_gx, truth_gw1, truth_gw2 = torch.autograd.grad(truth.sum(), small)

    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = torch.empty(N, C, H, W, device=device, dtype=dtype, memory_format=fmt)
    x.copy_(level.to(device=device, dtype=dtype).expand(N, C, H, W))
    x.requires_grad_()
    w1k, w2k = (w.to(device).requires_grad_() for w in (w1, w2))
    y = se_kernels.squeeze_excite(x, w1k, None, w2k, backend=backend)
    gx, gw1, gw2 = torch.autograd.grad(y.sum(), (x, w1k, w2k))

    # The rounding of a result to dtype (the maps are constant, so no accumulation error
    # beyond float32's own).
    rtol, atol = 2 * EPS[dtype], 1e-6
    for name, got, want in (("y", y, truth), ("grad x", gx, truth_gx)):
        for n in range(N):  # one sample at a time bounds the temporaries
            expected = want[n].to(device=device, dtype=torch.float32).expand(C, H, W)
            torch.testing.assert_close(got[n].float(), expected, rtol=rtol, atol=atol,
                                       msg=lambda m, name=name, n=n: f"{name}, sample {n}: {m}")
    for name, got, want in (("grad w1", gw1, truth_gw1), ("grad w2", gw2, truth_gw2)):
        torch.testing.assert_close(got.double().cpu(), want * (H * W), rtol=1e-3, atol=1e-3,
                                   msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_constant_maps_small(backend, layout):
    """The construction of the large test, at a size every backend runs here."""
    check_constant_maps(backend, N=2, C=5, H=16, W=16, layout=layout, dtype=torch.float32)


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU with about 20 GB free")
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_more_than_2_pow_31_elements(backend, layout):
    require_backend(backend)
    N, C, H, W = 2, 1025, 1024, 1024  # 2**31 + 2**21 elements
    assert N * C * H * W > 2 ** 31
    check_constant_maps(backend, N, C, H, W, layout, torch.bfloat16)
    torch.cuda.empty_cache()
