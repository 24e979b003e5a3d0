"""The lean call of an SE module when no graph is built (eval, ``no_grad``, ``inference_mode``).

A module's forward normally flattens its weights (and folds a BatchNorm), resolves the
backend and goes through ``squeeze_excite``: about as much host time as a small layer's
kernel. None of that depends on the input beyond its device and dtype, so
:class:`InferencePath` derives it once and reuses it while the parameters are unchanged,
leaving a forward of a few attribute reads and one call of the backend's infer op.

The cache is keyed on each source tensor's identity, storage address and version counter,
so it is rebuilt when a parameter is replaced (reassignment, ``.to()`` making new
Parameters), re-pointed (``.to()`` / ``.data =`` swapping the storage), or written in place
(``load_state_dict``, optimizer steps, BatchNorm running statistics). It holds an alias of
the storage it was built from: a new storage can then never reuse that address, so an equal
address means the same storage.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from .backends import resolve_backend
from .ops import backend_ops
from .options import as_matrix, mergeable

Weights = tuple[Tensor, Optional[Tensor], Optional[Tensor], Optional[Tensor]]


def _source_key(t: Optional[Tensor]):
    return None if t is None else (id(t), t.data_ptr(), t._version, t.dtype)


class _Entry:
    """One immutable cache entry: replaced whole, so a concurrent caller never sees the
    weights of one entry with the op or key of another."""

    __slots__ = ("key", "op", "weights", "storage")

    def __init__(self, key, op, weights: Weights, storage: list) -> None:
        self.key, self.op, self.weights, self.storage = key, op, weights, storage

    def __call__(self, x: Tensor, residual: Optional[Tensor], pool: str, act: str, gate: str,
                 gain: float, out_act: str) -> Tensor:
        return self.op(mergeable(x), *self.weights, mergeable(residual), pool, act, gate,
                       float(gain), out_act)


class InferencePath:
    """Weights and infer op of one module, for inputs of one device and dtype."""

    __slots__ = ("_entry",)

    def __init__(self) -> None:
        self._entry: Optional[_Entry] = None

    def __reduce__(self):
        # Pickled, deep-copied or saved with the module: empty (it refills on first use).
        return (InferencePath, ())

    @property
    def filled(self) -> bool:
        return self._entry is not None

    @staticmethod
    def usable() -> bool:
        """True when the call builds no graph and is not being traced by torch.compile,
        torch.jit.trace or torch.onnx.export (which see through the plain path and must
        not bake in a cache)."""
        return not (torch.is_grad_enabled() or torch.compiler.is_compiling()
                    or torch.jit.is_tracing())

    def entry(self, x: Tensor, backend: str, sources: Sequence[Optional[Tensor]],
              derive: Callable[[], Weights]) -> Optional[_Entry]:
        """The call for x, current with the parameters; None when x needs the general path.

        ``sources``: every tensor the weights derive from; ``derive()`` returns
        ``(w1, b1, w2, b2)`` from them.
        """
        try:
            key = (x.device, x.dtype, backend, *map(_source_key, sources))
        except RuntimeError:  # inference tensors as parameters have no version counter
            return None
        entry = self._entry
        if entry is not None and entry.key == key:
            return entry
        name = resolve_backend(backend, x)
        if name == "reference":  # float64 or no kernel for this device: the general path
            return None
        w1, b1, w2, b2 = derive()
        weights = (as_matrix("w1", w1), b1, None if w2 is None else as_matrix("w2", w2), b2)
        storage = [t.detach() for t in sources if t is not None]
        self._entry = entry = _Entry(key, backend_ops(name).infer, weights, storage)
        return entry
