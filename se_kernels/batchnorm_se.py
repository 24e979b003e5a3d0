"""SE with a BatchNorm on its bottleneck that uses batch statistics (timm ``SEModule`` with
``norm_layer``, as in ReXNet, in training mode).

The BatchNorm couples the samples of a batch, so it cannot live inside one per-sample
program. The split ops (``split_ops.py``) run the fused kernels up to it and from it:

    forward:  split_squeeze (pool, FC1)  ->  + b1, BatchNorm on [N, R] (torch's
              native_batch_norm: batch statistics, running-stat update)  ->
              split_excite (act, FC2, gate, scale, residual, ReLU)
    backward: split_squeeze_backward (dL/d FC2 out, dL/dh)  ->  act', BatchNorm backward
              on [N, R] (native_batch_norm_backward)  ->  split_excite_backward (dx)

so x is read twice forward and g twice backward, as in the fused op; the BatchNorm work
is a few tiny ops on ``[N, R]``. Computed in float32 (float64 on the reference).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from .autograd_rules import _layout_safe
from .backends import resolve_backend
from .options import as_matrix, check_options, mergeable, parse_act
from .reference import apply_act
from .split_ops import split_ops


_aten = torch.ops.aten
# dL/dz from dL/d act(z), by the backward kernels torch's own activations use (so their
# conventions at the kinks), as plain ops that torch.compile traces.
_ACT_BACKWARD = {
    "identity": lambda g, z: g,
    "relu": lambda g, z: _aten.threshold_backward(g, torch.relu(z), 0.0),
    "relu6": lambda g, z: _aten.hardtanh_backward(g, z, 0.0, 6.0),
    "silu": lambda g, z: _aten.silu_backward(g, z),
    "gelu": lambda g, z: _aten.gelu_backward(g, z),
    "gelu_tanh": lambda g, z: _aten.gelu_backward(g, z, approximate="tanh"),
    "hard_swish": lambda g, z: _aten.hardswish_backward(g, z),
    "mish": lambda g, z: _aten.mish_backward(g, z),
    "tanh": lambda g, z: _aten.tanh_backward(g, torch.tanh(z)),
    "sigmoid": lambda g, z: _aten.sigmoid_backward(g, torch.sigmoid(z)),
}


def act_backward(grad: Tensor, z: Tensor, act: str) -> Tensor:
    """dL/dz from dL/d act(z) (see _ACT_BACKWARD); leaky_relu with its slope."""
    name, slope = parse_act(act)
    if name == "leaky_relu":
        return _aten.leaky_relu_backward(grad, z, slope, False)
    return _ACT_BACKWARD[name](grad, z)


class SEBatchNormFunction(torch.autograd.Function):
    """Fused SE around a batch-statistics BatchNorm on the bottleneck; see the module doc.

    ``apply(x, w1, b1, bn_weight, bn_bias, running_mean, running_var, w2, b2, residual,
    momentum, eps, act, gate, gain, out_act, backend)``: 2-D weights, a resolved backend.
    Updates ``running_mean`` / ``running_var`` in place (when given) as torch's BatchNorm.
    Differentiable once (a second backward raises).
    """

    @staticmethod
    def forward(ctx, x, w1, b1, bn_weight, bn_bias, running_mean, running_var, w2, b2, residual,
                momentum: float, eps: float, act: str, gate: str, gain: float, out_act: str,
                backend: str):
        ops = split_ops(backend)
        pooled, z1 = ops.squeeze(x, w1)
        acc = z1.dtype
        if b1 is not None:
            z1 = z1 + b1.to(acc)
        F._verify_batch_size(z1.shape)  # torch's error for one value per channel
        stats = [running_mean, running_var]
        # native_batch_norm takes statistics in the input's dtype: update copies, then
        # write them back (no copy when they are already float32).
        work = [None if t is None else t.to(acc) for t in stats]
        bn_w, bn_b = (None if t is None else t.to(acc) for t in (bn_weight, bn_bias))
        z_norm, mean, invstd = torch.ops.aten.native_batch_norm(
            z1, bn_w, bn_b, work[0], work[1], True, momentum, eps)
        for t, w in zip(stats, work):
            if t is not None and w is not t:
                t.copy_(w)
        y, fc2_out = ops.excite(x, pooled, z_norm, w2, b2, residual, act, gate, gain, out_act)
        ctx.options = (act, gate, gain, out_act, eps, backend, residual is not None)
        ctx.dtypes = [None if t is None else t.dtype for t in (w1, b1, bn_weight, bn_bias, w2, b2)]
        ctx.save_for_backward(x, y if out_act == "relu" else None, w1, w2, bn_w, pooled, z1,
                              z_norm, mean, invstd, fc2_out)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        x, out, w1, w2, bn_w, pooled, z1, z_norm, mean, invstd, fc2_out = ctx.saved_tensors
        act, gate, gain, out_act, eps, backend, has_residual = ctx.options
        needs = ctx.needs_input_grad
        ops = split_ops(backend)
        g = _layout_safe(grad_y, x)
        grad_fc2, grad_h = ops.squeeze_backward(g, x, out, w2, fc2_out, gate, gain, out_act)
        grad_norm = act_backward(grad_h, z_norm, act)
        grad_z1, grad_bn_w, grad_bn_b = torch.ops.aten.native_batch_norm_backward(
            grad_norm, z1, bn_w, None, None, mean, invstd, True, eps,
            [True, needs[3] and bn_w is not None, needs[4]])
        dx, d_residual = ops.excite_backward(g, x, out, w1, fc2_out, grad_fc2, grad_z1,
                                             has_residual, gate, gain, out_act)
        w1_t, b1_t, bnw_t, bnb_t, w2_t, b2_t = ctx.dtypes
        grads = [
            dx if needs[0] else None,
            (grad_z1.t() @ pooled).to(w1_t) if needs[1] else None,
            grad_z1.sum(0).to(b1_t) if needs[2] else None,
            grad_bn_w.to(bnw_t) if needs[3] else None,
            grad_bn_b.to(bnb_t) if needs[4] else None,
            None, None,
            (grad_fc2.t() @ apply_act(z_norm, act)).to(w2_t) if needs[7] else None,
            grad_fc2.sum(0).to(b2_t) if needs[8] else None,
            (d_residual if out_act == "relu" else grad_y) if needs[9] else None,
        ]
        return (*grads, None, None, None, None, None, None, None)


def squeeze_excite_batchnorm(
    x: Tensor,
    w1: Tensor,
    b1: Optional[Tensor],
    bn_weight: Optional[Tensor],
    bn_bias: Optional[Tensor],
    running_mean: Optional[Tensor],
    running_var: Optional[Tensor],
    w2: Tensor,
    b2: Optional[Tensor] = None,
    *,
    momentum: float = 0.1,
    eps: float = 1e-5,
    act: str = "relu",
    gate: str = "sigmoid",
    gain: float = 1.0,
    residual: Optional[Tensor] = None,
    out_act: str = "identity",
    backend: str = "auto",
) -> Tensor:
    """SE whose bottleneck goes through a BatchNorm with batch statistics:
    ``out_act(x * gain * gate(FC2(act(BN(FC1(mean_hw x))))) + residual)``, average pooling.

    The BatchNorm is torch's training-mode one over the batch: ``running_mean`` /
    ``running_var`` (``[R]``, or None) are updated in place with ``momentum`` (the factor
    torch's module passes: for ``momentum=None`` modules, ``1 / num_batches_tracked``);
    counting ``num_batches_tracked`` is the caller's, as in ``nn.BatchNorm``. An eval-mode
    BatchNorm needs none of this: fold it into FC1 and call :func:`squeeze_excite`.

    Shapes: x ``[N, C, H, W]`` (N > 1); w1 ``[R, C]`` (or 1x1 conv), b1 / bn_weight /
    bn_bias / running stats ``[R]``; w2 ``[C, R]``; b2 ``[C]``. Returns ``[N, C, H, W]``.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    w1, w2 = as_matrix("w1", w1), as_matrix("w2", w2)
    check_options("avg", act, gate, out_act, gain)
    for name, t in (("b1", b1), ("bn_weight", bn_weight), ("bn_bias", bn_bias),
                    ("running_mean", running_mean), ("running_var", running_var)):
        if t is not None and tuple(t.shape) != (w1.shape[0],):
            raise ValueError(f"{name} must have shape [{w1.shape[0]}] (w1's output size), "
                             f"got {list(t.shape)}")
    return SEBatchNormFunction.apply(
        mergeable(x), w1, b1, bn_weight, bn_bias, running_mean, running_var, w2, b2,
        mergeable(residual), float(momentum), float(eps), act, gate, float(gain), out_act,
        resolve_backend(backend, x))


def uses_batch_statistics(bn: torch.nn.Module) -> bool:
    """Whether ``bn`` normalises with the batch's statistics (as nn.BatchNorm decides)."""
    return bn.training or bn.running_mean is None or bn.running_var is None


def squeeze_excite_with_module_batchnorm(
    x: Tensor, fc1: torch.nn.Module, bn: torch.nn.Module, fc2: torch.nn.Module, *, act: str,
    gate: str, residual: Optional[Tensor], out_act: str, backend: str,
) -> Tensor:
    """:func:`squeeze_excite_batchnorm` with an ``nn.BatchNorm`` module's own bookkeeping
    (``num_batches_tracked`` and its momentum, ``momentum=None`` as a cumulative average),
    for a module that :func:`uses_batch_statistics`."""
    factor = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        # momentum=None reads the count on the host, as nn.BatchNorm does (a sync on a GPU).
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    track = not bn.training or bn.track_running_stats
    return squeeze_excite_batchnorm(
        x, fc1.weight, fc1.bias, bn.weight, bn.bias, bn.running_mean if track else None,
        bn.running_var if track else None, fc2.weight, fc2.bias, momentum=factor, eps=bn.eps,
        act=act, gate=gate, residual=residual, out_act=out_act, backend=backend)
