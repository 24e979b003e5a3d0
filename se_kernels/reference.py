"""Plain-PyTorch SE: the ground truth (run it in float64) and the unfused baseline."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .options import as_matrix, check_inputs


def apply_act(z: torch.Tensor, act: str) -> torch.Tensor:
    """The hidden activation by name (``identity`` | ``relu`` | ``silu``)."""
    if act == "relu":
        return F.relu(z)
    if act == "silu":
        return F.silu(z)
    return z


def apply_gate(z: torch.Tensor, gate: str) -> torch.Tensor:
    """The gate by name (``sigmoid`` | ``hard_sigmoid``, as F.hardsigmoid)."""
    return torch.sigmoid(z) if gate == "sigmoid" else F.hardsigmoid(z)


def squeeze_excite_reference(
    x: torch.Tensor,
    w1: torch.Tensor,
    b1: Optional[torch.Tensor] = None,
    w2: Optional[torch.Tensor] = None,
    b2: Optional[torch.Tensor] = None,
    *,
    pool: str = "avg",
    act: str = "relu",
    gate: str = "sigmoid",
    gain: float = 1.0,
    residual: Optional[torch.Tensor] = None,
    out_act: str = "identity",
) -> torch.Tensor:
    """Squeeze-and-Excitation in eager PyTorch ops (DESIGN.md section 1).

    Args:
        x: ``[N, C, H, W]`` activations, any float dtype, any memory format.
        w1: ``[R, C]`` or ``[R, C, 1, 1]`` (``[C, C]`` for single-FC eSE).
        b1: ``[R]`` or None.
        w2: ``[C, R]`` or ``[C, R, 1, 1]``; None selects single-FC eSE, where the gate
            is applied to FC1's output directly and ``act`` is not used.
        b2: ``[C]`` or None.
        pool: ``"avg"`` or ``"avgmax"`` (0.5*mean + 0.5*amax, timm ``add_maxpool``).
        act, gate: hidden activation and gate names.
        gain: multiplies the gate (NFNet uses 2.0).
        residual: optional ``[N, C, H, W]`` added after scaling.
        out_act: ``"identity"`` or ``"relu"`` applied after the residual add.

    Weights are cast to ``x.dtype`` so that this is "eager PyTorch in x's dtype";
    pass float64 tensors to get the ground truth.

    Returns:
        ``[N, C, H, W]`` in ``x.dtype``.
    """
    w1 = as_matrix("w1", w1)
    w2 = None if w2 is None else as_matrix("w2", w2)
    check_inputs(x, w1, b1, w2, b2, residual, pool, act, gate, gain, out_act, kernel=False)

    def cast(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        return None if t is None else t.to(x.dtype)

    pooled = x.mean((2, 3))
    if pool == "avgmax":
        pooled = 0.5 * pooled + 0.5 * x.amax((2, 3))
    z = F.linear(pooled, cast(w1), cast(b1))
    if w2 is not None:
        z = F.linear(apply_act(z, act), cast(w2), cast(b2))
    scale = apply_gate(z, gate)
    if gain != 1.0:
        scale = scale * gain
    y = x * scale[:, :, None, None]
    if residual is not None:
        y = y + residual
    if out_act == "relu":
        y = F.relu(y)
    return y
