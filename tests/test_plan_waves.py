"""Batch-1 and batch-8 layers fill the GPU: for every SE layer of the benchmark networks,
the streaming kernels (excite, excite_backward) launch at least one full wave of CTAs on
a 132-SM GPU (an H100), from the CUDA plan (csrc/cuda/plan.cpp) and the Triton plan.

A layer too small for that gets at least one CTA per WAVE_ELEMENTS elements of x: each
CTA re-adds the FC1 partials and computes its block of FC2 before it streams, so cutting
a small layer finer would spend more on that fixed work than it saves (csrc/cuda/limits.h,
kMinElementsPerCta, is half of this, which leaves room for rounding).
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("timm")
pytest.importorskip("benchmarks.shapes", reason="needs the source tree (benchmarks/)")
from benchmarks.shapes import NETWORKS, se_layers  # noqa: E402
from se_kernels.backends import unavailable_reason  # noqa: E402
from se_kernels.plans import cuda_plan  # noqa: E402
from se_kernels.triton.plan import cuda_heuristics, make_plan  # noqa: E402

SMS = 132
WAVE_ELEMENTS = 4096


def _layers():
    for net in NETWORKS:
        for layer in se_layers(net):
            for n in (1, 8):
                yield pytest.param(layer, n, id=f"{layer.name}-N{n}")


def wanted(n: int, layer) -> int:
    return min(SMS, n * layer.C * layer.H * layer.W // WAVE_ELEMENTS)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layer, n", list(_layers()))
def test_streaming_kernels_fill_a_wave(layer, n, layout, dtype):
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = torch.empty(n, layer.C, layer.H, layer.W, device="meta", dtype=dtype, memory_format=fmt)
    triton_plan = make_plan(n, layer.C, layer.H * layer.W, layer.R, layout == "channels_last",
                            True, cuda_heuristics(SMS))
    ctas = {"triton": n * triton_plan.n_cblocks * triton_plan.n_tiles}
    if unavailable_reason("cpu", "cpu") is None:  # the plan binding ships with the extension
        plan = cuda_plan(x, layer.R, True, "avg", SMS, [x])
        ctas["cuda"] = n * plan.n_cblocks * plan.n_tiles
    for backend, count in ctas.items():
        assert count >= wanted(n, layer), (
            f"{backend}: {count} CTAs for {layer.name} at batch {n}, want {wanted(n, layer)}")
