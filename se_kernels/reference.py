"""Plain-PyTorch SE: the ground truth (run it in float64) and the unfused baseline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from .options import as_matrix, check_inputs, parse_act


def onnx_exporting() -> bool:
    """True while torch.onnx.export (either exporter) records the model: SE layers then run
    as plain torch ops (this reference), for which ONNX has standard ops. The legacy
    exporter traces with torch.jit, the dynamo one runs under torch.compiler; those are
    checked first because is_in_onnx_export costs ~1 us and they ~0.05 us."""
    return ((torch.jit.is_tracing() or torch.compiler.is_compiling())
            and torch.onnx.is_in_onnx_export())


_ACT_FUNCTIONS = {
    "relu": F.relu,
    "silu": F.silu,
    "relu6": F.relu6,
    "gelu": F.gelu,
    "gelu_tanh": lambda z: F.gelu(z, approximate="tanh"),
    "hard_swish": F.hardswish,
    "mish": F.mish,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
}


def apply_act(z: torch.Tensor, act: str) -> torch.Tensor:
    """The hidden activation by name (``se_kernels.options.ACTS``, or
    ``"leaky_relu:<slope>"``), as the torch function."""
    name, slope = parse_act(act)
    if name == "leaky_relu":
        return F.leaky_relu(z, slope)
    fn = _ACT_FUNCTIONS.get(name)
    return z if fn is None else fn(z)


# aten's hardsigmoid backward multiplies by 1.0f / 6.0f, rounded to float32 even for
# float64 tensors: the same constant keeps the reference value-identical to torch.
_ONE_SIXTH = float(torch.tensor(1.0 / 6.0, dtype=torch.float32))


class _HardSigmoid(torch.autograd.Function):
    """F.hardsigmoid with aten's backward, value for value (grad * 1/6 strictly inside
    (-3, 3), else 0), written in differentiable ops: aten's own hardsigmoid_backward has
    no derivative, so without this a second backward through the reference would fail."""

    @staticmethod
    def forward(ctx, z: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(z)
        return F.hardsigmoid(z)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (z,) = ctx.saved_tensors
        slope = ((z > -3) & (z < 3)).to(grad.dtype) * _ONE_SIXTH
        return grad * slope


def hard_sigmoid(z: torch.Tensor) -> torch.Tensor:
    """relu6(z + 3) / 6, as F.hardsigmoid in both directions, twice differentiable.
    Traced or exported, F.hardsigmoid itself (the exporters know it, not the Function)."""
    if torch.jit.is_tracing() or onnx_exporting():
        return F.hardsigmoid(z)
    return _HardSigmoid.apply(z)


def apply_gate(z: torch.Tensor, gate: str) -> torch.Tensor:
    """The gate by name (``sigmoid`` | ``hard_sigmoid``, as F.hardsigmoid | ``tanh``)."""
    if gate == "sigmoid":
        return torch.sigmoid(z)
    return torch.tanh(z) if gate == "tanh" else hard_sigmoid(z)


@dataclass
class Stages:
    """The small tensors of one SE call, ``[N, C]`` or ``[N, R1]``, in x's dtype."""

    pooled: torch.Tensor  # mean, or 0.5 * mean + 0.5 * max (avgmax): FC1's input
    peak: Optional[torch.Tensor]  # the max (avgmax)
    fc1_out: torch.Tensor  # FC1's output (the gate's input for single-FC eSE)
    fc2_out: Optional[torch.Tensor]  # FC2's output (two-FC)
    scale: torch.Tensor  # gain * gate


def se_stages(x: torch.Tensor, w1: torch.Tensor, b1: Optional[torch.Tensor],
              w2: Optional[torch.Tensor], b2: Optional[torch.Tensor], *, pool: str, act: str,
              gate: str, gain: float) -> Stages:
    """Pool, FC1, act, FC2 and gate in x's dtype (weights cast to it), 2-D weights."""

    def cast(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        return None if t is None else t.to(x.dtype)

    pooled = x.mean((2, 3))
    peak = x.amax((2, 3)) if pool == "avgmax" else None
    if peak is not None:
        pooled = 0.5 * pooled + 0.5 * peak
    fc1_out = F.linear(pooled, cast(w1), cast(b1))
    fc2_out = None if w2 is None else F.linear(apply_act(fc1_out, act), cast(w2), cast(b2))
    scale = apply_gate(fc1_out if fc2_out is None else fc2_out, gate)
    if gain != 1.0:
        scale = scale * gain
    return Stages(pooled, peak, fc1_out, fc2_out, scale)


def squeeze_excite_reference(
    x: torch.Tensor,
    w1: torch.Tensor,
    b1: Optional[torch.Tensor] = None,
    w2: Optional[torch.Tensor] = None,
    b2: Optional[torch.Tensor] = None,
    *,
    pool: str = "avg",
    act: str = "relu",
    gate: str = "sigmoid",
    gain: float = 1.0,
    residual: Optional[torch.Tensor] = None,
    out_act: str = "identity",
) -> torch.Tensor:
    """Squeeze-and-Excitation in eager PyTorch ops (DESIGN.md section 1).

    Args:
        x: ``[N, C, H, W]`` activations, any float dtype, any memory format.
        w1: ``[R, C]`` or ``[R, C, 1, 1]`` (``[C, C]`` for single-FC eSE).
        b1: ``[R]`` or None.
        w2: ``[C, R]`` or ``[C, R, 1, 1]``; None selects single-FC eSE, where the gate
            is applied to FC1's output directly and ``act`` is not used.
        b2: ``[C]`` or None.
        pool: ``"avg"`` or ``"avgmax"`` (0.5*mean + 0.5*amax, timm ``add_maxpool``).
        act, gate: hidden activation and gate names.
        gain: multiplies the gate (NFNet uses 2.0).
        residual: optional ``[N, C, H, W]`` added after scaling.
        out_act: ``"identity"`` or ``"relu"`` applied after the residual add.

    Weights are cast to ``x.dtype`` so that this is "eager PyTorch in x's dtype";
    pass float64 tensors to get the ground truth.

    Returns:
        ``[N, C, H, W]`` in ``x.dtype``.
    """
    w1 = as_matrix("w1", w1)
    w2 = None if w2 is None else as_matrix("w2", w2)
    if not (torch.compiler.is_compiling() or torch.jit.is_tracing()):  # traced: ops check
        check_inputs(x, w1, b1, w2, b2, residual, pool, act, gate, gain, out_act, kernel=False)

    scale = se_stages(x, w1, b1, w2, b2, pool=pool, act=act, gate=gate, gain=gain).scale
    y = x * scale[:, :, None, None]
    if residual is not None:
        y = y + residual
    if out_act == "relu":
        y = F.relu(y)
    return y


# --- ECA's convolution across the channel axis (se_kernels.eca), in plain torch ops ------

def _padded(v: torch.Tensor, pad: int, circular: bool) -> torch.Tensor:
    """``[N, C + 2 pad]``: v with the convolution's zero or circular padding."""
    return F.pad(v[:, None], (pad, pad), mode="circular" if circular else "constant")[:, 0]


def channel_conv(v: torch.Tensor, taps: torch.Tensor, bias: Optional[torch.Tensor],
                 circular: bool) -> torch.Tensor:
    """``[N, C]``: v convolved across its channels with the k taps (``[1, 1, k]`` or ``[k]``)
    as timm's ECA Conv1d (zero padding) or CECA's F.pad + Conv1d (circular)."""
    w = taps.reshape(1, 1, -1).to(v.dtype)
    pad = (w.shape[-1] - 1) // 2
    return F.conv1d(_padded(v, pad, circular)[:, None], w,
                    None if bias is None else bias.reshape(1).to(v.dtype))[:, 0]


def channel_conv_transpose(grad: torch.Tensor, taps: torch.Tensor, circular: bool) -> torch.Tensor:
    """dL/dv ``[N, C]`` of :func:`channel_conv` from dL/d(its output): k shifted adds in a
    fixed order, the padding's share folded back for circular (no atomics)."""
    w = taps.reshape(-1).to(grad.dtype)
    k, channels = w.numel(), grad.shape[1]
    pad = (k - 1) // 2
    d_padded = grad.new_zeros((grad.shape[0], channels + 2 * pad))
    for j in range(k):
        d_padded[:, j:j + channels] += w[j] * grad
    d_v = d_padded[:, pad:pad + channels].clone()
    if circular and pad:
        d_v[:, :pad] += d_padded[:, channels + pad:]
        d_v[:, channels - pad:] += d_padded[:, :pad]
    return d_v


def channel_conv_tap_grads(grad: torch.Tensor, v: torch.Tensor, k: int, circular: bool) -> torch.Tensor:
    """dL/dtaps ``[k]`` of :func:`channel_conv`: one reduction over the ``[N, C, k]``
    windows of v."""
    windows = _padded(v, (k - 1) // 2, circular).unfold(1, k, 1)
    return (windows * grad[:, :, None]).sum((0, 1))
