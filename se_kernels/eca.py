"""Efficient channel attention (ECA-Net, Wang et al. 2020; timm ``EcaModule`` and
``CecaModule``): pool, a 1-D convolution of odd size k across the channel axis (zero
padding for ECA, circular for CECA), gate, scale.

Two launches each way, through the split ops (``split_ops.py``), with the k-tap
convolution on the pooled ``[N, C]`` vector between them:

    forward:  split_squeeze (pool)  ->  conv over channels  ->  split_excite (gate, scale,
              residual, ReLU)
    backward: split_squeeze_backward (dL/d logits)  ->  the convolution's transpose, and
              its k tap gradients (a reduction over [N, C])  ->  split_excite_backward (dx)

Every neighbour a channel needs (also across channel blocks, and the wrap-around for
CECA) is in the pooled vector by then, and the convolution is O(k C) per sample.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from .autograd_rules import _layout_safe
from .backends import resolve_backend
from .options import GATES, OUT_ACTS, mergeable
from .reference import apply_gate, onnx_exporting
from .split_ops import split_ops

PADDINGS = ("zeros", "circular")


def _padded(pooled: Tensor, pad: int, padding: str) -> Tensor:
    """``[N, C + 2 pad]``: the pooled vector with the convolution's padding."""
    return F.pad(pooled[:, None], (pad, pad), mode="circular" if padding == "circular" else "constant")[:, 0]


def channel_conv(pooled: Tensor, weight: Tensor, bias: Optional[Tensor], padding: str) -> Tensor:
    """The ECA logits ``[N, C]``: ``pooled`` convolved across its channels with the k taps
    of ``weight`` (``[1, 1, k]`` or ``[k]``), as timm's Conv1d (and F.pad for CECA)."""
    taps = weight.reshape(1, 1, -1).to(pooled.dtype)
    pad = (taps.shape[-1] - 1) // 2
    out = F.conv1d(_padded(pooled, pad, padding)[:, None], taps,
                   None if bias is None else bias.to(pooled.dtype))
    return out[:, 0]


def channel_conv_backward(grad: Tensor, pooled: Tensor, weight: Tensor,
                          padding: str) -> tuple[Tensor, Tensor]:
    """(dL/dpooled ``[N, C]``, dL/dtaps ``[k]``) of :func:`channel_conv`, in a fixed order
    (k shifted adds, one reduction): no atomics."""
    taps = weight.reshape(-1).to(grad.dtype)
    k, channels = taps.numel(), grad.shape[1]
    pad = (k - 1) // 2
    windows = _padded(pooled, pad, padding).unfold(1, k, 1)  # [N, C, k]
    d_taps = (windows * grad[:, :, None]).sum((0, 1))
    d_padded = grad.new_zeros((grad.shape[0], channels + 2 * pad))
    for j in range(k):
        d_padded[:, j:j + channels] += taps[j] * grad
    d_pooled = d_padded[:, pad:pad + channels].clone()
    if padding == "circular" and pad:  # the wrap-around: the padding's grads fold back
        d_pooled[:, :pad] += d_padded[:, channels + pad:]
        d_pooled[:, channels - pad:] += d_padded[:, :pad]
    return d_pooled, d_taps


class ECAFunction(torch.autograd.Function):
    """ECA / CECA on the split ops; see the module doc.

    ``apply(x, weight, bias, residual, padding, gate, gain, out_act, backend)`` with a
    resolved backend. Differentiable once (a second backward raises).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, residual, padding: str, gate: str, gain: float,
                out_act: str, backend: str):
        ops = split_ops(backend)
        pooled, _ = ops.squeeze(x, None)
        logits = channel_conv(pooled, weight, bias, padding)
        y, _ = ops.excite(x, pooled, logits, None, None, residual, "identity", gate, gain, out_act)
        ctx.options = (padding, gate, gain, out_act, backend, residual is not None)
        ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
        ctx.save_for_backward(x, y if out_act == "relu" else None, weight, pooled, logits)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        x, out, weight, pooled, logits = ctx.saved_tensors
        padding, gate, gain, out_act, backend, has_residual = ctx.options
        needs = ctx.needs_input_grad
        ops = split_ops(backend)
        g = _layout_safe(grad_y, x)
        grad_logits, _ = ops.squeeze_backward(g, x, out, None, logits, gate, gain, out_act)
        d_pooled, d_taps = channel_conv_backward(grad_logits, pooled, weight, padding)
        dx, d_residual = ops.excite_backward(g, x, out, None, logits, grad_logits, d_pooled,
                                             has_residual, gate, gain, out_act)
        weight_t, bias_t = ctx.dtypes
        return (dx if needs[0] else None,
                d_taps.reshape(weight.shape).to(weight_t) if needs[1] else None,
                grad_logits.sum().reshape(1).to(bias_t) if needs[2] else None,
                (d_residual if out_act == "relu" else grad_y) if needs[3] else None,
                None, None, None, None, None)


def efficient_channel_attention(
    x: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    *,
    padding: str = "zeros",
    gate: str = "sigmoid",
    gain: float = 1.0,
    residual: Optional[Tensor] = None,
    out_act: str = "identity",
    backend: str = "auto",
) -> Tensor:
    """Fused ECA / CECA: ``out_act(x * gain * gate(conv_k(mean_hw x)) + residual)``, the
    convolution across the channel axis.

    Args:
        x: ``[N, C, H, W]``, float32/float16/bfloat16 (float64 on ``backend="reference"``).
        weight: the Conv1d taps, ``[1, 1, k]`` (timm's ``conv.weight``) or ``[k]``, k odd.
        bias: ``[1]`` or None (timm's CecaModule has one when it has an act).
        padding: ``"zeros"`` (ECA) | ``"circular"`` (CECA), ``(k - 1) // 2`` each side.
        gate, gain, residual, out_act, backend: as :func:`se_kernels.squeeze_excite`.

    Returns:
        ``[N, C, H, W]`` in x's dtype and memory format.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {list(PADDINGS)}, got {padding!r}")
    if gate not in GATES or out_act not in OUT_ACTS:
        raise ValueError(f"gate must be one of {list(GATES)} and out_act one of "
                         f"{list(OUT_ACTS)}, got {gate!r} and {out_act!r}")
    k = weight.numel()
    if weight.dim() not in (1, 3) or k % 2 == 0 or weight.shape[-1] != k:
        raise ValueError(f"weight must be [1, 1, k] or [k] with k odd, got {list(weight.shape)}")
    if bias is not None and bias.numel() != 1:
        raise ValueError(f"bias must have one element, got shape {list(bias.shape)}")
    if onnx_exporting():  # plain torch ops, for which ONNX has standard ops
        pooled = x.mean((2, 3))
        y = x * (gain * apply_gate(channel_conv(pooled, weight, bias, padding), gate))[:, :, None, None]
        y = y if residual is None else y + residual
        return torch.relu(y) if out_act == "relu" else y
    return ECAFunction.apply(mergeable(x), weight, bias, mergeable(residual), padding, gate,
                             float(gain), out_act, resolve_backend(backend, x))
