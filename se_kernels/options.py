"""Option names and the input checks every backend shares.

The option strings are the public vocabulary (``pool="avgmax"``, ``act="silu"``...).
Kernels receive them as small integer codes; the codes below are the single source of
truth and ``csrc/se_options.h`` mirrors them for the C++ kernels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

POOLS = {"avg": 0, "avgmax": 1}
ACTS = {"identity": 0, "relu": 1, "silu": 2}
GATES = {"sigmoid": 0, "hard_sigmoid": 1}
OUT_ACTS = {"identity": 0, "relu": 1}

KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
WEIGHT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _check_choice(name: str, value: str, choices: dict) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")


def check_options(pool: str, act: str, gate: str, out_act: str, gain: float) -> None:
    """Validate the option strings and the gain."""
    _check_choice("pool", pool, POOLS)
    _check_choice("act", act, ACTS)
    _check_choice("gate", gate, GATES)
    _check_choice("out_act", out_act, OUT_ACTS)
    if isinstance(gain, bool) or not isinstance(gain, (int, float)):
        raise TypeError(f"gain must be a Python float, got {type(gain).__name__}")


def as_matrix(name: str, w: torch.Tensor) -> torch.Tensor:
    """Accept a linear weight ``[out, in]`` or a 1x1 conv weight ``[out, in, 1, 1]``.

    Returns a 2-D view (no copy), so gradients flow back to the caller's tensor.
    """
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(w).__name__}")
    if w.dim() == 4 and w.shape[2] == 1 and w.shape[3] == 1:
        return w.flatten(1)
    if w.dim() != 2:
        raise ValueError(
            f"{name} must have shape [out, in] or [out, in, 1, 1], got {list(w.shape)}"
        )
    return w


def hw_strides(t: torch.Tensor) -> Optional[tuple[int, int, int]]:
    """Strides ``(n, c, hw)`` when H and W of a 4-D tensor merge into one index.

    True for NCHW- and channels_last-contiguous tensors (and for expanded grads with
    zero strides); ``None`` otherwise, in which case the caller must copy.
    """
    n_stride, c_stride, h_stride, w_stride = t.stride()
    height, width = t.shape[2], t.shape[3]
    if height == 1:
        return n_stride, c_stride, w_stride
    if width == 1:
        return n_stride, c_stride, h_stride
    if h_stride == width * w_stride:
        return n_stride, c_stride, w_stride
    return None


@dataclass(frozen=True)
class SEShapes:
    """Sizes of one SE call: ``R1`` is FC1's output width (R, or C for single-FC eSE)."""

    N: int
    C: int
    HW: int
    R1: int
    has_fc2: bool


def check_inputs(
    x: torch.Tensor,
    w1: torch.Tensor,
    b1: Optional[torch.Tensor],
    w2: Optional[torch.Tensor],
    b2: Optional[torch.Tensor],
    residual: Optional[torch.Tensor],
    pool: str,
    act: str,
    gate: str,
    gain: float,
    out_act: str,
    *,
    kernel: bool,
) -> SEShapes:
    """Check shapes, devices, dtypes and options; raise before any kernel runs.

    ``w1``/``w2`` must already be 2-D (see :func:`as_matrix`). ``kernel=True`` adds
    the restrictions of the fused kernels (no float64 or integer activations).
    """
    check_options(pool, act, gate, out_act, gain)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"x must be 4-D [N, C, H, W], got shape {list(x.shape)}")
    N, C, H, W = x.shape
    if C == 0 or H * W == 0:
        raise ValueError(f"x must have C >= 1 and H*W >= 1, got shape {list(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
    if kernel and x.dtype not in KERNEL_DTYPES:
        raise TypeError(
            f"x has dtype {x.dtype}; the fused kernels take float32, float16 or bfloat16 "
            "(float64 runs only on backend='reference')"
        )

    R1 = w1.shape[0]
    if w1.shape[1] != C:
        raise ValueError(f"w1 must have shape [R, C={C}] to match x, got {list(w1.shape)}")
    if w2 is None:
        if R1 != C:
            raise ValueError(
                f"with w2=None (single-FC eSE) w1 must be square [C={C}, C={C}], "
                f"got {list(w1.shape)}"
            )
        if b2 is not None:
            raise ValueError("b2 was given but w2 is None; single-FC eSE has no second bias")
    elif tuple(w2.shape) != (C, R1):
        raise ValueError(
            f"w2 must have shape [C={C}, R={R1}] to match x and w1, got {list(w2.shape)}"
        )
    if b1 is not None and tuple(b1.shape) != (R1,):
        raise ValueError(f"b1 must have shape [{R1}] (w1's output size), got {list(b1.shape)}")
    if b2 is not None and tuple(b2.shape) != (C,):
        raise ValueError(f"b2 must have shape [C={C}], got {list(b2.shape)}")

    for name, w in (("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2)):
        if w is None:
            continue
        if w.dtype not in WEIGHT_DTYPES:
            raise TypeError(f"{name} must be a float tensor, got {w.dtype}")
        if w.device != x.device:
            raise RuntimeError(
                f"{name} is on {w.device} but x is on {x.device}; all tensors must share a device"
            )

    if residual is not None:
        if not isinstance(residual, torch.Tensor):
            raise TypeError(f"residual must be a torch.Tensor, got {type(residual).__name__}")
        if residual.shape != x.shape:
            raise ValueError(
                f"residual must have x's shape {list(x.shape)}, got {list(residual.shape)}"
            )
        if residual.device != x.device:
            raise RuntimeError(f"residual is on {residual.device} but x is on {x.device}")
        if residual.dtype != x.dtype:
            raise TypeError(f"residual must have x's dtype {x.dtype}, got {residual.dtype}")
    return SEShapes(N=N, C=C, HW=H * W, R1=R1, has_fc2=w2 is not None)


def kernel_strides(name: str, t: torch.Tensor) -> tuple[int, int, int]:
    """:func:`hw_strides` for a kernel argument, or a clear error naming it."""
    strides = hw_strides(t)
    if strides is None:
        raise ValueError(
            f"{name} has strides {t.stride()} for shape {list(t.shape)}: the kernels need H and W "
            "to merge into one index (NCHW- or channels_last-contiguous); call "
            ".contiguous() first (squeeze_excite does this for you, once)"
        )
    return strides


def _expect(name: str, t: Optional[torch.Tensor], shape: tuple, dtype: torch.dtype,
            device: torch.device) -> None:
    if t is None or tuple(t.shape) != tuple(shape) or t.dtype != dtype or t.device != device:
        got = "None" if t is None else f"{list(t.shape)} {t.dtype} on {t.device}"
        raise ValueError(f"{name} must be {list(shape)} {dtype} on {device}, got {got}")


def check_backward_inputs(
    grad_y: torch.Tensor,
    x: torch.Tensor,
    out: Optional[torch.Tensor],
    w1: torch.Tensor,
    w2: Optional[torch.Tensor],
    pooled_max: torch.Tensor,
    fc1_out: torch.Tensor,
    fc2_out: torch.Tensor,
    pool: str,
    act: str,
    gate: str,
    gain: float,
    out_act: str,
) -> SEShapes:
    """Check the backward op's arguments (the forward op's saved outputs) before launch."""
    s = check_inputs(x, w1, None, w2, None, None, pool, act, gate, gain, out_act, kernel=True)
    f32, dev = torch.float32, x.device
    _expect("grad_y", grad_y, tuple(x.shape), x.dtype, dev)
    if out_act == "relu":
        _expect("out (the forward output, needed by out_act='relu')", out, tuple(x.shape),
                x.dtype, dev)
    _expect("fc1_out", fc1_out, (s.N, s.R1), f32, dev)
    _expect("fc2_out", fc2_out, (s.N, s.C) if s.has_fc2 else (0,), f32, dev)
    _expect("pooled_max", pooled_max, (s.N, s.C) if pool == "avgmax" else (0,), f32, dev)
    return s
