"""torch.library registration: op definitions, fake implementations, autograd, and the
one table mapping a backend name to its (forward op, backward op).

Ops (namespace ``se_kernels``):
- ``triton_forward`` / ``triton_backward``: Python custom ops around the Triton kernels.
- ``forward`` / ``backward``: the compiled C++ ops (schemas in ``csrc/se_ops.cpp``, with
  CUDA and CPU implementations), registered here with the same fakes and autograd.
- ``sim_forward`` / ``sim_backward``: the same schema, the CUDA kernels run on CPU tensors
  under the SIMT emulator (backend ``cuda_sim``).
- ``infer`` / ``triton_infer`` / ``sim_infer``: the forward for calls that build no graph,
  returning y only (the small tensors backward would need are scratch). No autograd.

The Triton ops use ``torch.library.custom_op`` rather than ``triton_op``: under the CPU
interpreter that CI relies on, ``triton_op`` fails opcheck's fake-tensor test, while
``custom_op`` passes every opcheck test and traces with ``fullgraph=True``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from . import autograd_rules, reference_ops
from .backends import PROBE
from .buffers import backward_outputs, forward_outputs
from .options import check_backward_inputs, check_inputs


def forward_fake(x, w1, b1, w2, b2, residual, pool, act, gate, gain, out_act):
    """Output shapes for fake / meta tensors, after the ops' own input checks (they use
    torch._check, so ranks, dtypes, devices and matching sizes are checked symbolically)."""
    check_inputs(x, w1, b1, w2, b2, residual, pool, act, gate, gain, out_act, kernel=True)
    return forward_outputs(x, w1.shape[0], w2 is not None, pool)


def infer_fake(x, w1, b1, w2, b2, residual, pool, act, gate, gain, out_act):
    check_inputs(x, w1, b1, w2, b2, residual, pool, act, gate, gain, out_act, kernel=True)
    return torch.empty_like(x)


def backward_fake(grad_y, x, out, w1, w2, pooled_max, fc1_out, fc2_out, has_residual, pool, act,
                  gate, gain, out_act):
    check_backward_inputs(grad_y, x, out, w1, w2, pooled_max, fc1_out, fc2_out, pool, act, gate,
                          gain, out_act)
    return backward_outputs(x, w1.shape[0], w2 is not None, has_residual and out_act == "relu")


@dataclass(frozen=True)
class BackendOps:
    forward: Callable
    backward: Callable
    infer: Callable  # y only, no autograd: for calls that build no graph


def _register(forward_op, backward_op, infer_op, *, fakes: bool) -> BackendOps:
    if fakes:
        torch.library.register_fake(forward_op, forward_fake)
        torch.library.register_fake(backward_op, backward_fake)
        torch.library.register_fake(infer_op, infer_fake)
    torch.library.register_autograd(
        forward_op, autograd_rules.backward, setup_context=autograd_rules.setup_context_for(backward_op)
    )
    return BackendOps(forward_op, backward_op, infer_op)


TABLE: dict[str, BackendOps] = {
    # The same contract in plain torch ops (any float dtype): SEFunction runs it end to end.
    "reference": BackendOps(reference_ops.forward, reference_ops.backward, reference_ops.infer),
}

if PROBE.triton is None:
    from .triton import launch as _triton_launch

    def _triton_op(name: str, fn: Callable):
        return torch.library.custom_op(f"se_kernels::triton_{name}", fn, mutates_args=())

    triton_forward = _triton_op("forward", _triton_launch.forward)
    triton_backward = _triton_op("backward", _triton_launch.backward)
    triton_infer = _triton_op("infer", _triton_launch.infer)
    TABLE["triton"] = _register(triton_forward, triton_backward, triton_infer, fakes=True)

_se = torch.ops.se_kernels
if PROBE.extension is None:
    _compiled = _register(_se.forward.default, _se.backward.default, _se.infer.default, fakes=True)
    TABLE["cuda"] = TABLE["cpu"] = _compiled  # one schema, dispatched by device
if PROBE.sim_kernels:
    TABLE["cuda_sim"] = _register(_se.sim_forward.default, _se.sim_backward.default,
                                  _se.sim_infer.default, fakes=True)


def call_without_autograd(op: Callable, *args):
    """Call an op straight to its device kernel, for calls that build no autograd graph.

    register_autograd installs a Python autograd kernel that every call passes through,
    even under no_grad (about 10 us, as much as a small SE layer's kernel). Dynamo traces
    the plain call instead.
    """
    if torch.compiler.is_compiling():
        return op(*args)
    with torch._C._AutoDispatchBelowAutograd():
        return op(*args)


def backend_ops(backend: str) -> BackendOps:
    """The (forward, backward) ops of a resolved backend name."""
    return TABLE[backend]
