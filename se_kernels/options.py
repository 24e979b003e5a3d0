"""Option names and the input checks every backend shares.

The option strings are the public vocabulary (``pool="avgmax"``, ``act="silu"``...), and
what every op takes. The Triton kernels receive them as integer constexpr codes, taken
from the tables below (``se_kernels/triton/math.py`` names them); the C++ ops parse the
strings themselves (``csrc/se_host.cpp``) into the enums of ``csrc/se_options.h``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional

import torch

POOLS = {"avg": 0, "avgmax": 1}
# Codes shared with csrc/se_options.h; every act is exact to the torch function of the
# same name (gelu: erf; gelu_tanh: F.gelu(approximate="tanh"); leaky_relu: torch's
# default slope 0.01, or "leaky_relu:<slope>" for another), gradients included.
ACTS = {"identity": 0, "relu": 1, "silu": 2, "relu6": 3, "gelu": 4, "gelu_tanh": 5,
        "hard_swish": 6, "mish": 7, "tanh": 8, "sigmoid": 9, "leaky_relu": 10}
LEAKY_SLOPE = 0.01
LEAKY_PREFIX = "leaky_relu:"


def parse_act(act: str) -> tuple[str, float]:
    """``(name, leaky_relu's negative slope)`` of an act option: a name of ACTS, or
    ``"leaky_relu:<slope>"`` (as csrc/se_host.cpp parses it). Raises ValueError."""
    if isinstance(act, str) and act.startswith(LEAKY_PREFIX):
        try:
            slope = float(act[len(LEAKY_PREFIX):])
        except ValueError:
            slope = float("nan")
        if not math.isfinite(slope):
            raise ValueError(f"act 'leaky_relu:<slope>' needs a finite number after the colon, "
                             f"got {act!r}")
        return "leaky_relu", slope
    _check_choice("act", act, ACTS, extra=[LEAKY_PREFIX + "<slope>"])
    return act, LEAKY_SLOPE


def leaky_relu_act(slope: float) -> str:
    """The act option for leaky_relu with this negative slope (exact: repr round-trips)."""
    return "leaky_relu" if slope == LEAKY_SLOPE else f"{LEAKY_PREFIX}{float(slope)!r}"


GATES = {"sigmoid": 0, "hard_sigmoid": 1, "tanh": 2}
OUT_ACTS = {"identity": 0, "relu": 1}

KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
WEIGHT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _check_choice(name: str, value: str, choices: dict, extra: tuple = ()) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices) + list(extra)}, got {value!r}")


def check_options(pool: str, act: str, gate: str, out_act: str, gain: float) -> None:
    """Validate the option strings and the gain."""
    _check_choice("pool", pool, POOLS)
    parse_act(act)
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
    # squeeze(d) drops dimension d only when it is 1: no Python test on sizes, which under
    # torch.jit.trace would be a traced value.
    matrix = w.squeeze(3).squeeze(2) if w.dim() == 4 else w
    if matrix.dim() != 2:
        raise ValueError(
            f"{name} must have shape [out, in] or [out, in, 1, 1], got {list(w.shape)}"
        )
    return matrix


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


def mergeable(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Kernels index H*W as one axis; a tensor whose H, W do not merge is copied once.
    (Anything that is not a 4-D tensor goes to the op as it is, which rejects it.)"""
    if not isinstance(t, torch.Tensor) or t.dim() != 4:
        return t
    # The two common layouts first: is_contiguous is a flag (no traced sizes under jit.trace).
    if t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last):
        return t
    return t if hw_strides(t) is not None else t.contiguous()


@dataclass(frozen=True)
class SEShapes:
    """Sizes of one SE call: ``R1`` is FC1's output width (R, or C for single-FC eSE)."""

    N: int
    C: int
    HW: int
    R1: int
    has_fc2: bool


def _same_shape(a: torch.Tensor, shape) -> bool:
    """Shape equality that stays symbolic-friendly (one comparison per dimension)."""
    return a.dim() == len(shape) and all(d == s for d, s in zip(a.shape, shape))


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
    the restrictions of the fused kernels (no float64 or integer activations). Written
    with ``torch._check*``, so the fake implementations run the same checks on fake and
    symbolic shapes; the C++ ops raise the same errors (csrc/se_host.cpp).
    """
    check_options(pool, act, gate, out_act, gain)
    torch._check_type(isinstance(x, torch.Tensor),
                      lambda: f"x must be a torch.Tensor, got {type(x).__name__}")
    torch._check_value(x.dim() == 4, lambda: f"x must be 4-D [N, C, H, W], got shape {list(x.shape)}")
    N, C, H, W = x.shape
    torch._check_value(C >= 1 and H * W >= 1,
                       lambda: f"x must have C >= 1 and H*W >= 1, got shape {list(x.shape)}")
    if kernel:
        torch._check_type(x.dtype in KERNEL_DTYPES, lambda: (
            f"x has dtype {x.dtype}; the fused kernels take float32, float16 or bfloat16 "
            "(float64 runs only on backend='reference')"))
    torch._check_type(x.is_floating_point(),
                      lambda: f"x must be a floating-point tensor, got {x.dtype}")

    R1 = w1.shape[0]
    torch._check_value(w1.dim() == 2 and w1.shape[1] == C,
                       lambda: f"w1 must have shape [R, C={C}] to match x, got {list(w1.shape)}")
    if w2 is None:
        torch._check_value(R1 == C, lambda: (
            f"with w2=None (single-FC eSE) w1 must be square [C={C}, C={C}], got {list(w1.shape)}"))
        torch._check_value(b2 is None,
                           lambda: "b2 was given but w2 is None; single-FC eSE has no second bias")
    else:
        torch._check_value(_same_shape(w2, (C, R1)), lambda: (
            f"w2 must have shape [C={C}, R={R1}] to match x and w1, got {list(w2.shape)}"))
    if b1 is not None:
        torch._check_value(_same_shape(b1, (R1,)), lambda: (
            f"b1 must have shape [{R1}] (w1's output size), got {list(b1.shape)}"))
    if b2 is not None:
        torch._check_value(_same_shape(b2, (C,)),
                           lambda: f"b2 must have shape [C={C}], got {list(b2.shape)}")

    for name, w in (("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2)):
        if w is None:
            continue
        torch._check_type(w.dtype in WEIGHT_DTYPES,
                          lambda: f"{name} must be a float tensor, got {w.dtype}")
        torch._check(w.device == x.device, lambda: (
            f"{name} is on {w.device} but x is on {x.device}; all tensors must share a device"))

    if residual is not None:
        torch._check_type(isinstance(residual, torch.Tensor),
                          lambda: f"residual must be a torch.Tensor, got {type(residual).__name__}")
        torch._check_value(_same_shape(residual, x.shape), lambda: (
            f"residual must have x's shape {list(x.shape)}, got {list(residual.shape)}"))
        torch._check(residual.device == x.device,
                     lambda: f"residual is on {residual.device} but x is on {x.device}")
        torch._check_type(residual.dtype == x.dtype,
                          lambda: f"residual must have x's dtype {x.dtype}, got {residual.dtype}")
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
    torch._check_value(
        t is not None and _same_shape(t, shape) and t.dtype == dtype and t.device == device,
        lambda: f"{name} must be {list(shape)} {dtype} on {device}, got "
                + ("None" if t is None else f"{list(t.shape)} {t.dtype} on {t.device}"))


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


def check_split_inputs(
    x: torch.Tensor,
    *,
    w1: Optional[torch.Tensor] = None,
    w2: Optional[torch.Tensor] = None,
    b2: Optional[torch.Tensor] = None,
    residual: Optional[torch.Tensor] = None,
    act: str = "identity",
    gate: str = "sigmoid",
    gain: float = 1.0,
    out_act: str = "identity",
    grad_y: Optional[torch.Tensor] = None,
    out: Optional[torch.Tensor] = None,
    small: Optional[dict] = None,
    taps: Optional[torch.Tensor] = None,
    taps_bias: Optional[torch.Tensor] = None,
) -> SEShapes:
    """Check the split ops' arguments (csrc/se_host.cpp ``check_split``): x, the one FC
    weight the op takes (``w1 [R, C]`` or ``w2 [C, R]``; with neither, ``R1 = C`` and
    ``has_fc2`` is False), b2, residual, the gradient and
    forward output for the backward ops, and the given per-sample float32 vectors,
    ``small = {name: (tensor, is_per_channel)}``: ``[N, C]`` or ``[N, R]``; ECA's
    convolution ``taps`` ``[k]`` (k odd, no FC weights) and its one-element ``taps_bias``."""
    torch._check_value(x.dim() == 4, lambda: f"x must be 4-D [N, C, H, W], got shape {list(x.shape)}")
    C = x.shape[1]
    has_fc = w1 is not None or w2 is not None
    if w1 is None and w2 is not None:  # check w2 under its own name, then with its transpose
        torch._check_value(w2.dim() == 2 and w2.shape[0] == C, lambda: (
            f"w2 must have shape [C={C}, R] to match x, got {list(w2.shape)}"))
        w1 = w2.t()
    elif w1 is not None and w2 is None:
        w2 = w1.t()
    elif w1 is None:  # no FC weight: the gate's input is per channel (R1 = C), as eSE
        torch._check_value(b2 is None, lambda: "b2 was given but w2 is None; the gate takes z1 itself")
        w1 = x.new_empty((), dtype=torch.float32).expand(C, C)
    s = check_inputs(x, w1, None, w2, b2, residual, "avg", act, gate, gain, out_act, kernel=True)
    s = replace(s, has_fc2=has_fc)
    if grad_y is not None:
        _expect("grad_y", grad_y, tuple(x.shape), x.dtype, x.device)
        if out_act == "relu":
            _expect("out (the forward output, needed by out_act='relu')", out, tuple(x.shape),
                    x.dtype, x.device)
    for name, (t, per_channel) in (small or {}).items():
        _expect(name, t, (s.N, s.C if per_channel else s.R1), torch.float32, x.device)
    torch._check_value(taps is not None or taps_bias is None,
                       lambda: "taps_bias was given without taps")
    if taps is not None:
        torch._check_value(not s.has_fc2, lambda: (
            "taps (ECA's convolution) take the place of the FC weights; w1 / w2 must be None"))
        torch._check_value(taps.dim() == 1 and taps.shape[0] % 2 == 1,
                           lambda: f"taps must be 1-D of odd size k, got {list(taps.shape)}")
        for name, t in (("taps", taps), ("taps_bias", taps_bias)):
            if t is not None:
                torch._check_type(t.dtype in WEIGHT_DTYPES,
                                  lambda: f"{name} must be a float tensor, got {t.dtype}")
                torch._check(t.device == x.device, lambda: (
                    f"{name} is on {t.device} but x is on {x.device}; all tensors must share a device"))
        torch._check_value(taps_bias is None or taps_bias.numel() == 1, lambda: (
            f"taps_bias must have one element, got {list(taps_bias.shape)}"))
    return s
