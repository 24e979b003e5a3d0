"""The FC weights' and biases' gradients of an SE layer, from the backward op's small
outputs: ``gw1 = grad_fc1^T @ pooled``, ``gb1 = sum_n grad_fc1``, ``gw2 = grad_fc2^T @
act(fc1_out)``, ``gb2 = sum_n grad_fc2``, each shaped and typed like its parameter.

On CPU float32 tensors (backends ``cpu`` and ``cuda_sim``, and ``reference`` in float32)
they come from one call of the ``se_kernels::fc_grads`` op (``csrc/cpu/fc_grads.cpp``):
inside a backward every torch call costs about twice what it costs outside one, and the
seven calls below took 40 us of a small layer's ~100 us backward. Everywhere else (GPU
tensors, float64, an install without the compiled ops) the same maths as torch ops.
"""

from __future__ import annotations

from typing import Optional

import torch

from .backends import PROBE
from .reference import apply_act

Grads = tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor], Optional[torch.Tensor]]


def _shaped(grad: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    grad = grad.to(param.dtype)
    return grad if grad.dim() == param.dim() else grad.view(param.shape)


def fc_grads_torch(grad_fc1, grad_fc2, pooled, fc1_out, w1, b1, w2, b2, act: str) -> Grads:
    """The gradients as torch ops (any device and float dtype)."""
    gw1 = _shaped(grad_fc1.t() @ pooled, w1)
    gb1 = None if b1 is None else grad_fc1.sum(0).to(b1.dtype)
    if w2 is None:
        return gw1, gb1, None, None
    gw2 = _shaped(grad_fc2.t() @ apply_act(fc1_out, act), w2)
    return gw1, gb1, gw2, None if b2 is None else grad_fc2.sum(0).to(b2.dtype)


def _fake(grad_fc1, grad_fc2, pooled, fc1_out, w1, b1, w2, b2, act):
    def like(param):  # an absent parameter's: [0] float32, one per output (no aliases)
        return pooled.new_empty((0,)) if param is None else param.new_empty(param.shape)

    return like(w1), like(b1), like(w2), like(b2 if w2 is not None else None)


def _fc_grads_gpu(grad_fc1, grad_fc2, pooled, fc1_out, w1, b1, w2, b2, act):
    """The op on GPU tensors (the C++ autograd node calls it by device): the torch formula,
    with the op's [0] for each absent parameter."""
    grads = fc_grads_torch(grad_fc1, grad_fc2, pooled, fc1_out, w1, b1, w2, b2, act)
    return tuple(pooled.new_empty((0,)) if g is None else g for g in grads)


_OP = None
if PROBE.extension is None:
    torch.library.register_fake(torch.ops.se_kernels.fc_grads.default, _fake)
    torch.library.register_kernel(torch.ops.se_kernels.fc_grads.default, "cuda", _fc_grads_gpu)
    if PROBE.cpu_kernels:
        _OP = torch.ops.se_kernels.fc_grads.default


def fc_grads(grad_fc1: torch.Tensor, grad_fc2: torch.Tensor, pooled: torch.Tensor,
             fc1_out: torch.Tensor, w1: torch.Tensor, b1: Optional[torch.Tensor],
             w2: Optional[torch.Tensor], b2: Optional[torch.Tensor], act: str) -> Grads:
    """``(gw1, gb1, gw2, gb2)``, None for an absent parameter.

    Shapes: grad_fc1 / fc1_out ``[N, R1]``, grad_fc2 / pooled ``[N, C]``; w1 ``[R1, C]``
    or ``[R1, C, 1, 1]``, w2 ``[C, R1]`` or ``[C, R1, 1, 1]`` (None: single FC).
    """
    if _OP is None or pooled.device.type != "cpu" or pooled.dtype != torch.float32:
        return fc_grads_torch(grad_fc1, grad_fc2, pooled, fc1_out, w1, b1, w2, b2, act)
    gw1, gb1, gw2, gb2 = _OP(grad_fc1, grad_fc2, pooled, fc1_out, w1, b1, w2, b2, act)
    return (gw1, None if b1 is None else gb1, None if w2 is None else gw2,
            None if w2 is None or b2 is None else gb2)
