"""The kernel ops' contract in plain PyTorch ops: a forward op and a backward op with the
same arguments and outputs as the compiled and Triton ops (csrc/se_ops.cpp), in any float
dtype, float64 included.

They are backend "reference" of the op table, so SEFunction and the autograd rules run
end to end in float64 (tests/test_autograd.py: gradcheck and gradgradcheck); the
differentiable backward that a second backward needs is built from the same formula.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from .buffers import forward_outputs
from .reference import apply_act, apply_gate, se_stages


def _accumulation_dtype(x: Tensor) -> torch.dtype:
    """The dtype of the small saved tensors: float32, as the kernels, or float64."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def forward(x: Tensor, w1: Tensor, b1: Optional[Tensor], w2: Optional[Tensor],
            b2: Optional[Tensor], residual: Optional[Tensor], pool: str, act: str, gate: str,
            gain: float, out_act: str) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(y, pooled, pooled_max, fc1_out, fc2_out)``, as the forward op."""
    y, pooled, pooled_max, fc1_out, fc2_out = forward_outputs(x, w1.shape[0], w2 is not None, pool)
    acc = _accumulation_dtype(x)
    s = se_stages(x.to(acc), w1, b1, w2, b2, pool=pool, act=act, gate=gate, gain=gain)
    out = x * s.scale.to(x.dtype)[:, :, None, None]
    if residual is not None:
        out = out + residual
    if out_act == "relu":
        out = torch.relu(out)
    return (y.copy_(out), s.pooled, s.peak if s.peak is not None else pooled_max, s.fc1_out,
            s.fc2_out if s.fc2_out is not None else fc2_out)


def infer(x: Tensor, w1: Tensor, b1: Optional[Tensor], w2: Optional[Tensor],
          b2: Optional[Tensor], residual: Optional[Tensor], pool: str, act: str, gate: str,
          gain: float, out_act: str) -> Tensor:
    """y only, as the infer op."""
    return forward(x, w1, b1, w2, b2, residual, pool, act, gate, gain, out_act)[0]


def _derivative(fn: Callable[[Tensor], Tensor], z: Tensor) -> Tensor:
    """d fn / dz element-wise, by torch's own autograd (so its convention at the kinks)."""
    with torch.enable_grad():
        z = z.detach().requires_grad_()
        return torch.autograd.grad(fn(z).sum(), z)[0]


def backward(grad_y: Tensor, x: Tensor, out: Optional[Tensor], w1: Tensor, w2: Optional[Tensor],
             pooled_max: Tensor, fc1_out: Tensor, fc2_out: Tensor, has_residual: bool, pool: str,
             act: str, gate: str, gain: float, out_act: str
             ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(dx, d_residual, grad_fc1_out, grad_fc2_out)``, as the backward op."""
    acc = _accumulation_dtype(x)
    g = grad_y.to(acc)
    if out_act == "relu":  # <= 0, not > 0: a NaN output keeps its gradient, as torch.relu
        g = torch.where(out <= 0, torch.zeros_like(g), g)
    xf = x.to(acc)
    gate_in = fc2_out if w2 is not None else fc1_out
    d_logit = gain * (g * xf).sum((2, 3)) * _derivative(lambda z: apply_gate(z, gate), gate_in)
    empty = x.new_empty((0,), dtype=acc)
    if w2 is not None:
        grad_fc2 = d_logit
        grad_fc1 = (d_logit @ w2.to(acc)) * _derivative(lambda z: apply_act(z, act), fc1_out)
    else:
        grad_fc1, grad_fc2 = d_logit, empty
    d_pooled = (grad_fc1 @ w1.to(acc))[:, :, None, None]
    d = g * (gain * apply_gate(gate_in, gate))[:, :, None, None]
    hw = x.shape[2] * x.shape[3]
    if pool == "avgmax":  # ties share the max's gradient evenly, as torch.amax's backward
        at_max = (xf == pooled_max[:, :, None, None]).to(acc)
        d = d + 0.5 * d_pooled / hw + at_max * 0.5 * d_pooled / at_max.sum((2, 3), keepdim=True)
    else:
        d = d + d_pooled / hw
    write_d_residual = has_residual and out_act == "relu"
    d_residual = torch.empty_like(x).copy_(g) if write_d_residual else empty
    return torch.empty_like(x).copy_(d), d_residual, grad_fc1, grad_fc2
