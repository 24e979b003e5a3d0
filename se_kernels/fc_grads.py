"""The FC weights' and biases' gradients of an SE layer, from the backward op's small
outputs: ``gw1 = grad_fc1^T @ pooled``, ``gb1 = sum_n grad_fc1``, ``gw2 = grad_fc2^T @
act(fc1_out)``, ``gb2 = sum_n grad_fc2``, each shaped and typed like its parameter.

On CPU and CUDA tensors they come from one call of the ``se_kernels::fc_grads`` op: inside
a backward every torch call costs about twice what it costs outside one, and the seven
calls of ``fc_grads_torch`` took 40 us of a small layer's ~100 us backward. On the CPU
the op runs its own loops on float32 (``csrc/cpu/fc_grads.cpp``); on CUDA, and on the CPU
in other dtypes, it runs ``fc_grads_torch``'s maths as ATen ops in C++
(``csrc/fc_grads.cpp``), so the C++ autograd node calls no Python. Elsewhere (other
devices, an install without the compiled ops) ``fc_grads_torch`` itself.
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
    def like(param):  # an absent parameter's: [0] of pooled's dtype, one each (no aliases)
        return pooled.new_empty((0,)) if param is None else param.new_empty(param.shape)

    return like(w1), like(b1), like(w2), like(b2 if w2 is not None else None)


# The devices whose kernels the op has: CUDA's is the ATen formula (csrc/fc_grads.cpp),
# the CPU's needs a CPU kernel library that loads here.
_OP = None
_OP_DEVICES: tuple[str, ...] = ()
if PROBE.extension is None:
    torch.library.register_fake(torch.ops.se_kernels.fc_grads.default, _fake)
    _OP = torch.ops.se_kernels.fc_grads.default
    _OP_DEVICES = ("cuda", "cpu") if PROBE.cpu_kernels else ("cuda",)


def fc_grads(grad_fc1: torch.Tensor, grad_fc2: torch.Tensor, pooled: torch.Tensor,
             fc1_out: torch.Tensor, w1: torch.Tensor, b1: Optional[torch.Tensor],
             w2: Optional[torch.Tensor], b2: Optional[torch.Tensor], act: str) -> Grads:
    """``(gw1, gb1, gw2, gb2)``, None for an absent parameter.

    Shapes: grad_fc1 / fc1_out ``[N, R1]``, grad_fc2 / pooled ``[N, C]``; w1 ``[R1, C]``
    or ``[R1, C, 1, 1]``, w2 ``[C, R1]`` or ``[C, R1, 1, 1]`` (None: single FC).
    """
    if _OP is None or pooled.device.type not in _OP_DEVICES:
        return fc_grads_torch(grad_fc1, grad_fc2, pooled, fc1_out, w1, b1, w2, b2, act)
    gw1, gb1, gw2, gb2 = _OP(grad_fc1, grad_fc2, pooled, fc1_out, w1, b1, w2, b2, act)
    return (gw1, None if b1 is None else gb1, None if w2 is None else gw2,
            None if w2 is None or b2 is None else gb2)
