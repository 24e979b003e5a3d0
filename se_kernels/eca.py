"""Efficient channel attention (ECA-Net, Wang et al. 2020; timm ``EcaModule`` and
``CecaModule``): pool, a 1-D convolution of odd size k across the channel axis (zero
padding for ECA, circular for CECA), gate, scale.

Two launches each way, through the split ops (``split_ops.py``):

    forward:  split_squeeze (pool)  ->  split_excite with the taps: each channel block
              convolves the pooled vector at its channels (its k-neighbourhood, also
              channels other blocks own, and the wrap-around for CECA), gates and scales
    backward: split_squeeze_backward (dL/d logits)  ->  split_excite_backward with the
              taps (the convolution's transpose of dL/d logits, the same way, then dx);
              the k tap gradients are one small reduction over [N, C] here

The pooled vector is complete when the second launch starts, so no block waits on
another; the convolution is O(k C) per sample.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .autograd_rules import _layout_safe
from .backends import resolve_backend
from .options import check_options, mergeable
from .reference import apply_gate, channel_conv, channel_conv_tap_grads, onnx_exporting
from .split_ops import split_ops

PADDINGS = ("zeros", "circular")


class ECAFunction(torch.autograd.Function):
    """ECA / CECA on the split ops; see the module doc.

    ``apply(x, weight, bias, residual, padding, gate, gain, out_act, backend)`` with a
    resolved backend. Differentiable once (a second backward raises).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, residual, padding: str, gate: str, gain: float,
                out_act: str, backend: str):
        ops = split_ops(backend)
        circular = padding == "circular"
        taps = weight.reshape(-1)
        pooled, _ = ops.squeeze(x, None)
        y, logits = ops.excite(x, pooled, pooled, None, None, residual, "identity", gate, gain,
                               out_act, taps, None if bias is None else bias.reshape(1), circular)
        ctx.options = (circular, gate, gain, out_act, backend, residual is not None)
        ctx.bias_like = None if bias is None else (bias.shape, bias.dtype)
        ctx.save_for_backward(x, y if out_act == "relu" else None, weight, pooled, logits)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        x, out, weight, pooled, logits = ctx.saved_tensors
        circular, gate, gain, out_act, backend, has_residual = ctx.options
        needs = ctx.needs_input_grad
        ops = split_ops(backend)
        g = _layout_safe(grad_y, x)
        grad_logits, _ = ops.squeeze_backward(g, x, out, None, logits, gate, gain, out_act)
        dx, d_residual = ops.excite_backward(g, x, out, None, logits, grad_logits, grad_logits,
                                             has_residual, gate, gain, out_act,
                                             weight.reshape(-1), circular)
        d_taps = d_bias = None
        if needs[1]:
            d_taps = channel_conv_tap_grads(grad_logits, pooled, weight.numel(), circular)
            d_taps = d_taps.reshape(weight.shape).to(weight.dtype)
        if needs[2]:
            bias_shape, bias_dtype = ctx.bias_like
            d_bias = grad_logits.sum().reshape(bias_shape).to(bias_dtype)
        return (dx if needs[0] else None,
                d_taps,
                d_bias,
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
    check_options("avg", "identity", gate, out_act, gain)
    k = weight.numel()
    if weight.dim() not in (1, 3) or k % 2 == 0 or weight.shape[-1] != k:
        raise ValueError(f"weight must be [1, 1, k] or [k] with k odd, got {list(weight.shape)}")
    if bias is not None and bias.numel() != 1:
        raise ValueError(f"bias must have one element, got shape {list(bias.shape)}")
    if onnx_exporting():  # plain torch ops, for which ONNX has standard ops
        pooled = x.mean((2, 3))
        logits = channel_conv(pooled, weight, bias, padding == "circular")
        y = x * (gain * apply_gate(logits, gate))[:, :, None, None]
        y = y if residual is None else y + residual
        return torch.relu(y) if out_act == "relu" else y
    return ECAFunction.apply(mergeable(x), weight, bias, mergeable(residual), padding, gate,
                             float(gain), out_act, resolve_backend(backend, x))
