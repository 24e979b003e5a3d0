"""The backward formula shared by every backend and by both autograd entry points
(``SEFunction`` and the ``register_autograd`` of each forward op).

The backward op returns dx (and the masked residual grad) plus the two small
gradients ``dL/d(FC1 out)`` ``[N, R1]`` and ``dL/d(FC2 out)`` ``[N, C]``; the weight and
bias gradients are then two tiny GEMMs over the batch and two sums (``fc_grads.py``, one
CPU op call or torch ops), done once here for all backends.

When autograd needs a graph of the backward itself (``create_graph=True``: gradient
penalties, meta-learning), the backward runs as differentiable torch ops instead: the
reference formula, recomputed from the saved inputs, so a second backward goes through it.
The first backward stays fused in the normal case.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from .fc_grads import fc_grads
from .options import hw_strides
from .reference import se_stages

# Forward-op arguments after x: w1, b1, w2, b2, residual, pool, act, gate, gain, out_act.
N_FORWARD_ARGS = 11


def setup_context(ctx, inputs: tuple, output: tuple, backward_op: Callable) -> None:
    """Save what backward needs: x, the small fp32 tensors, and y only for the ReLU mask."""
    x, w1, b1, w2, b2, residual, pool, act, gate, gain, out_act = inputs
    y, pooled, pooled_max, fc1_out, fc2_out = output
    ctx.backward_op = backward_op
    ctx.options = (pool, act, gate, gain, out_act)
    ctx.has_residual = residual is not None
    ctx.save_for_backward(x, y if out_act == "relu" else None, w1, w2, b1, b2, pooled,
                          pooled_max, fc1_out, fc2_out)
    ctx.mark_non_differentiable(pooled, pooled_max, fc1_out, fc2_out)
    # The four small outputs never get a gradient: without this autograd would fill a
    # zero tensor for each on every backward call. grad_y may then be None (a zero
    # gradient: gradgradcheck sends one); backward returns no gradients for it.
    ctx.set_materialize_grads(False)


def setup_context_for(backward_op: Callable) -> Callable:
    """A ``register_autograd`` setup_context bound to one backend's backward op."""

    def _setup(ctx, inputs, output):
        setup_context(ctx, inputs, output, backward_op)

    return _setup


def _matrix(w: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """A saved weight as the ops take it: ``[out, in]`` (SEFunction saves 1x1 conv weights
    ``[out, in, 1, 1]`` as they came)."""
    return w if w is None or w.dim() == 2 else w.flatten(1)


def _layout_safe(grad: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Copy a gradient whose H and W do not merge (rare: e.g. a sliced view) once."""
    if hw_strides(grad) is not None:
        return grad
    fmt = torch.channels_last if like.is_contiguous(memory_format=torch.channels_last) else (
        torch.contiguous_format)
    return grad.contiguous(memory_format=fmt)


def graph_backward(grad_y: torch.Tensor, x: torch.Tensor, out: Optional[torch.Tensor],
                   w1: torch.Tensor, b1: Optional[torch.Tensor], w2: Optional[torch.Tensor],
                   b2: Optional[torch.Tensor], options: tuple, needs: Sequence[bool]) -> list:
    """The backward as differentiable torch ops (for create_graph=True): the VJP of
    x * scale(x, weights), recomputed by the reference formula in float32 (float64 for
    float64), with the ReLU epilogue's mask applied to grad_y first. Returns the gradients
    of (x, w1, b1, w2, b2, residual), None where ``needs`` is false."""
    pool, act, gate, gain, out_act = options
    if out_act == "relu":  # the mask's own derivative is zero almost everywhere
        grad_y = torch.where(out <= 0, torch.zeros_like(grad_y), grad_y)
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    inputs = (x, w1, b1, w2, b2)
    wanted = [i for i, t in enumerate(inputs) if needs[i] and t is not None]
    grads: list = [None] * 6
    if wanted:
        xf = x.to(acc)
        scale = se_stages(xf, _matrix(w1), b1, _matrix(w2), b2, pool=pool, act=act, gate=gate,
                          gain=gain).scale
        found = torch.autograd.grad(xf * scale[:, :, None, None], [inputs[i] for i in wanted],
                                    grad_y.to(acc), create_graph=True, allow_unused=True)
        for i, g in zip(wanted, found):
            grads[i] = torch.zeros_like(inputs[i]) if g is None else g
    if needs[5]:
        grads[5] = grad_y
    return grads


def _backward_with_graph(ctx, grad_y: torch.Tensor) -> tuple:
    x, out, w1, w2, b1, b2, *_ = ctx.saved_tensors
    grads = graph_backward(grad_y, x, out, w1, b1, w2, b2, ctx.options, ctx.needs_input_grad)
    return (*grads,) + (None,) * 5


def backward(ctx, grad_y: Optional[torch.Tensor], *_unused) -> tuple:
    """Gradients for the 11 forward-op inputs (None for the option arguments)."""
    if grad_y is None:  # y's gradient is zero: so are all the others
        return (None,) * N_FORWARD_ARGS
    if torch.is_grad_enabled():  # create_graph=True: autograd needs this backward's graph
        return _backward_with_graph(ctx, grad_y)
    x, out, w1, w2, b1, b2, pooled, pooled_max, fc1_out, fc2_out = ctx.saved_tensors
    pool, act, gate, gain, out_act = ctx.options
    needs = ctx.needs_input_grad
    grad_y = _layout_safe(grad_y, x)
    dx, d_residual, grad_fc1, grad_fc2 = ctx.backward_op(
        grad_y, x, out, _matrix(w1), _matrix(w2), pooled_max, fc1_out, fc2_out,
        ctx.has_residual, pool, act, gate, gain, out_act,
    )
    gw1 = gb1 = gw2 = gb2 = None
    if any(needs[1:5]):  # frozen SE weights: none to compute
        gw1, gb1, gw2, gb2 = fc_grads(grad_fc1, grad_fc2, pooled, fc1_out, w1, b1, w2, b2, act)
    g_res = None
    if needs[5]:
        g_res = d_residual if out_act == "relu" else grad_y
    return (dx if needs[0] else None, gw1 if needs[1] else None, gb1 if needs[2] else None,
            gw2 if needs[3] else None, gb2 if needs[4] else None, g_res) + (None,) * 5
