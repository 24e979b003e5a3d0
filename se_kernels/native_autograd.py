"""``se_kernels::squeeze_excite``: the fused SE as one op whose autograd is C++
(``csrc/autograd/squeeze_excite.cpp``), for the backends whose kernels are compiled ops:
``cpu`` and ``cuda`` (``se_kernels::forward`` / ``backward``, dispatched by device) and
``cuda_sim`` (their SIMT emulation, ``sim=True``).

It computes exactly what :class:`~se_kernels.SEFunction` computes, with the same ops in the
same order (the tests demand equal bits), without Python between them: a training call's
forward and backward then cost ~75 us of host time at a tiny shape instead of ~120 us (one
thread, this project's CPU). ``squeeze_excite`` uses it for those backends outside
torch.compile (which traces the Python ``SEFunction``) and outside ``torch.jit.trace``.

Registered here: its fake (for meta and fake tensors), and the implementation of
``se_kernels::backward_with_graph``, the differentiable backward the C++ node calls when a
second backward will follow (``create_graph=True``): ``autograd_rules.graph_backward``.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Optional

import torch

from . import autograd_rules
from .backends import PROBE
from .ops import infer_fake
from .options import as_matrix

# Backend name -> the op's ``sim`` argument, for the backends the op runs.
NATIVE_SIM_FLAG: dict[str, bool] = {}
_OP: Optional[Callable] = None
_LIB = None


def _fake(x, w1, b1, w2, b2, residual, pool, act, gate, gain, out_act, sim=False):
    return infer_fake(x, as_matrix("w1", w1), b1, None if w2 is None else as_matrix("w2", w2), b2,
                      residual, pool, act, gate, gain, out_act)


def _graph_backward(grad_y, x, out, w1, b1, w2, b2, pool, act, gate, gain, out_act, needs):
    grads = autograd_rules.graph_backward(grad_y, x, out, w1, b1, w2, b2,
                                          (pool, act, gate, gain, out_act), needs)
    # A Tensor[] return holds no None: an empty tensor where no gradient was asked for.
    return [x.new_empty(0) if g is None else g for g in grads]


if PROBE.extension is None:
    _OP = torch.ops.se_kernels.squeeze_excite.default
    torch.library.register_fake(_OP, _fake)
    _LIB = torch.library.Library("se_kernels", "IMPL")  # kept alive: it owns the registration
    _LIB.impl("backward_with_graph", _graph_backward, "CompositeImplicitAutograd")
    NATIVE_SIM_FLAG.update(cpu=False, cuda=False)
    if PROBE.sim_kernels:
        NATIVE_SIM_FLAG["cuda_sim"] = True


def native_op(backend: str) -> Optional[Callable]:
    """The op for a resolved backend name, or None when that backend has no C++ autograd
    (``triton``, ``reference``) or the extension is not built."""
    return _OP if backend in NATIVE_SIM_FLAG else None


@contextlib.contextmanager
def python_autograd_only() -> Iterator[None]:
    """Within it, ``squeeze_excite`` builds the Python ``SEFunction`` on every backend, as
    before the C++ node existed (``benchmarks.e2e --python-autograd``: an A/B of the two)."""
    saved = dict(NATIVE_SIM_FLAG)
    NATIVE_SIM_FLAG.clear()
    try:
        yield
    finally:
        NATIVE_SIM_FLAG.update(saved)
