"""SEFunction: the torch.autograd.Function behind ``squeeze_excite``.

forward op -> small saved tensors -> backward op; the formula lives in
``autograd_rules`` and is the same one each op registers with ``register_autograd``.
"""

from __future__ import annotations

from typing import Optional

import torch

from . import autograd_rules
from .ops import backend_ops, call_without_autograd
from .options import as_matrix


class SEFunction(torch.autograd.Function):
    """Fused SE on an explicit kernel backend.

    ``SEFunction.apply(x, w1, b1, w2, b2, residual, pool, act, gate, gain, out_act,
    backend)`` with weights ``[out, in]`` or 1x1 conv weights ``[out, in, 1, 1]`` (their
    gradients come back in the same shape) and a resolved backend name (``"cuda"``, ``"triton"``,
    ``"cpu"``, ``"cuda_sim"``, or ``"reference"`` for the same contract in plain torch ops,
    float64 included) returns ``(y, pooled, pooled_max, fc1_out, fc2_out)``; only ``y`` is
    differentiable. Twice differentiable: a backward with ``create_graph=True`` runs as
    differentiable torch ops. Prefer :func:`se_kernels.squeeze_excite`, which validates,
    reshapes weights and picks the backend first (and, for the compiled ops, builds the
    same node in C++: ``se_kernels/native_autograd.py``).
    """

    @staticmethod
    def forward(
        ctx,
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
        backend: str,
    ):
        # Classic forward(ctx, ...): a separate setup_context makes every apply() bind
        # arguments through inspect.signature, which costs more than a small kernel.
        ops = backend_ops(backend)
        inputs = (x, w1, b1, w2, b2, residual, pool, act, gate, gain, out_act)
        # The op takes 2-D weights; views made here, where autograd records nothing, so
        # a conv weight's gradient needs no view node of its own in the backward graph.
        matrices = (as_matrix("w1", w1), b1, None if w2 is None else as_matrix("w2", w2))
        outputs = call_without_autograd(ops.forward, x, *matrices, *inputs[4:])
        autograd_rules.setup_context(ctx, inputs, outputs, ops.backward)
        return outputs

    @staticmethod
    def backward(ctx, grad_y, *unused):
        # Fused normally; differentiable torch ops when a second backward will follow.
        return autograd_rules.backward(ctx, grad_y) + (None,)
