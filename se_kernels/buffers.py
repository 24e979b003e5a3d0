"""Output allocation shared by the Triton ops and every fake (meta) implementation.

Keeping one allocator guarantees the fakes report exactly the shapes, dtypes and
strides the kernels produce. ``empty_like(x)`` keeps x's memory format, so y and dx
are channels_last when x is.
"""

from __future__ import annotations

import math

import torch

_F32 = torch.float32


def _empty(x: torch.Tensor) -> torch.Tensor:
    """A zero-element placeholder for an output that this configuration does not use."""
    return x.new_empty((0,), dtype=_F32)


def forward_outputs(x: torch.Tensor, r1: int, has_fc2: bool, pool: str):
    """``(y, pooled, pooled_max, fc1_out, fc2_out)`` for the forward op.

    y ``[N, C, H, W]`` like x; pooled ``[N, C]``; pooled_max ``[N, C]`` (avgmax only);
    fc1_out ``[N, R1]`` (FC1 pre-activation); fc2_out ``[N, C]`` (two-FC only). The
    small tensors are float32 and are what backward needs, never a full-size one.
    """
    n, c = x.shape[0], x.shape[1]
    return (
        torch.empty_like(x),
        x.new_empty((n, c), dtype=_F32),
        x.new_empty((n, c), dtype=_F32) if pool == "avgmax" else _empty(x),
        x.new_empty((n, r1), dtype=_F32),
        x.new_empty((n, c), dtype=_F32) if has_fc2 else _empty(x),
    )


def float_buffers(x: torch.Tensor, *shapes: tuple[int, ...]) -> list[torch.Tensor]:
    """float32 tensors of the given shapes on x's device, carved from one allocation (one
    allocator call however many small arrays a launch needs)."""
    sizes = [math.prod(shape) for shape in shapes]
    flat = x.new_empty((sum(sizes),), dtype=_F32)
    return [part.view(shape) for part, shape in zip(flat.split(sizes), shapes)]


def infer_buffers(x: torch.Tensor, r1: int, has_fc2: bool, pool: str, *scratch: tuple[int, ...]):
    """``forward_outputs`` for a call that returns y only: the small tensors (then scratch,
    never returned) and the kernels' own ``scratch`` shapes share one allocation.
    Returns ``(outputs, scratch tensors)``."""
    n, c = x.shape[0], x.shape[1]
    small = float_buffers(x, (n, c), (n if pool == "avgmax" else 0, c), (n, r1),
                          (n if has_fc2 else 0, c), *scratch)
    return (torch.empty_like(x), *small[:4]), small[4:]


def backward_outputs(x: torch.Tensor, r1: int, has_fc2: bool, write_d_residual: bool):
    """``(dx, d_residual, grad_fc1_out, grad_fc2_out)`` for the backward op.

    d_residual is only materialised for the ReLU epilogue (otherwise it equals the
    incoming gradient and autograd passes that through without a copy).
    """
    n, c = x.shape[0], x.shape[1]
    return (
        torch.empty_like(x),
        torch.empty_like(x) if write_d_residual else _empty(x),
        x.new_empty((n, r1), dtype=_F32),
        x.new_empty((n, c), dtype=_F32) if has_fc2 else _empty(x),
    )


def no_fc1_weight(x: torch.Tensor) -> torch.Tensor:
    """The FC1 weight of ``split_squeeze(x, None)``: ``[0, C]``, so it pools only (its fc1
    output is ``[N, 0]``)."""
    return x.new_empty((0, x.shape[1] if x.dim() == 4 else 0), dtype=_F32)
