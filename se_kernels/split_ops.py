"""The split ops: the fused SE op cut at its bottleneck, so that a step that does not fit a
per-sample program runs between the launches: a training-mode BatchNorm on ``[N, R]``
(it couples the samples), or ECA's k-tap convolution across the channels.

Four ops per backend (schemas in ``csrc/se_ops.cpp``; average pooling, two FCs), each one
launch of the fused op's kernels:

- ``split_squeeze(x, w1) -> (pooled [N, C], fc1 [N, R])``: pool, FC1 without its bias
  (``w1=None``: pool only, fc1 ``[N, 0]``);
- ``split_excite(x, pooled, z1, w2, b2, residual, act, gate, gain, out_act, taps=None,
  taps_bias=None, circular=False) -> (y, logits)``: ``logits = W2 act(z1) + b2``
  (``w2=None``: z1 is the logits, ``[N, C]``; with ``taps``, ECA: z1 convolved across the
  channels, k taps, zero or circular padding, plus taps_bias);
- ``split_squeeze_backward(grad_y, x, out, w2, logits, gate, gain, out_act)
  -> (grad_logits [N, C], grad_h [N, R])``, ``grad_h = grad_logits @ W2`` before act'
  (``w2=None``: ``[N, 0]``);
- ``split_excite_backward(grad_y, x, out, w1, logits, grad_logits, grad_z1, has_residual,
  gate, gain, out_act, taps=None, circular=False) -> (dx, d_residual)``,
  ``dp = grad_z1 @ W1`` (``w1=None``: grad_z1 is dp itself, or with ``taps`` dL/d logits,
  which the kernel takes back through the convolution).

The small tensors are float32 (float64 on the reference). No autograd of their own:
``batchnorm_se`` (a BatchNorm on the bottleneck) and ``eca`` (ECA's channel convolution)
compose them with what runs between into one autograd.Function each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

from .backends import PROBE
from .buffers import backward_outputs, no_fc1_weight
from .options import check_split_inputs
from .reference import apply_act, apply_gate, channel_conv, channel_conv_transpose
from .reference_ops import _accumulation_dtype, _derivative


@dataclass(frozen=True)
class SplitOps:
    squeeze: Callable
    excite: Callable
    squeeze_backward: Callable
    excite_backward: Callable


# Fakes: the same checks as the ops, then the output shapes.
def _squeeze_fake(x, w1):
    s = check_split_inputs(x, w1=no_fc1_weight(x) if w1 is None else w1)
    return x.new_empty((s.N, s.C), dtype=torch.float32), x.new_empty((s.N, s.R1), dtype=torch.float32)


def _excite_fake(x, pooled, z1, w2, b2, residual, act, gate, gain, out_act, taps=None,
                 taps_bias=None, circular=False):
    s = check_split_inputs(x, w2=w2, b2=b2, residual=residual, act=act, gate=gate, gain=gain,
                           out_act=out_act, small={"pooled": (pooled, True), "z1": (z1, False)},
                           taps=taps, taps_bias=taps_bias)
    return torch.empty_like(x), x.new_empty((s.N, s.C), dtype=torch.float32)


def _squeeze_backward_fake(grad_y, x, out, w2, logits, gate, gain, out_act):
    s = check_split_inputs(x, w2=w2, gate=gate, gain=gain, out_act=out_act, grad_y=grad_y,
                           out=out, small={"logits": (logits, True)})
    return (x.new_empty((s.N, s.C), dtype=torch.float32),
            x.new_empty((s.N, s.R1 if s.has_fc2 else 0), dtype=torch.float32))


def _excite_backward_fake(grad_y, x, out, w1, logits, grad_logits, grad_z1, has_residual, gate,
                          gain, out_act, taps=None, circular=False):
    s = check_split_inputs(x, w1=w1, gate=gate, gain=gain, out_act=out_act, grad_y=grad_y,
                           out=out, small={"logits": (logits, True),
                                           "grad_logits": (grad_logits, True),
                                           "grad_z1": (grad_z1, False)}, taps=taps)
    return backward_outputs(x, s.R1, s.has_fc2, has_residual and out_act == "relu")[:2]


# The reference: the same contract in plain torch ops, any float dtype.
def _masked(grad_y: Tensor, out: Optional[Tensor], out_act: str, acc: torch.dtype) -> Tensor:
    g = grad_y.to(acc)
    return torch.where(out <= 0, torch.zeros_like(g), g) if out_act == "relu" else g


def _squeeze_reference(x, w1):
    pooled = x.to(_accumulation_dtype(x)).mean((2, 3))
    w1 = no_fc1_weight(x) if w1 is None else w1
    return pooled, pooled @ w1.to(pooled.dtype).t()


def _excite_reference(x, pooled, z1, w2, b2, residual, act, gate, gain, out_act, taps=None,
                      taps_bias=None, circular=False):
    logits = z1 if taps is None else channel_conv(z1, taps, taps_bias, circular)
    if w2 is not None:
        logits = apply_act(z1, act) @ w2.to(z1.dtype).t()
        if b2 is not None:
            logits = logits + b2.to(z1.dtype)
    y = x * (gain * apply_gate(logits, gate)).to(x.dtype)[:, :, None, None]
    if residual is not None:
        y = y + residual
    return (torch.relu(y) if out_act == "relu" else y), logits.clone()


def _squeeze_backward_reference(grad_y, x, out, w2, logits, gate, gain, out_act):
    acc = _accumulation_dtype(x)
    g = _masked(grad_y, out, out_act, acc)
    grad_logits = gain * (g * x.to(acc)).sum((2, 3)) * _derivative(lambda z: apply_gate(z, gate),
                                                                   logits)
    grad_h = grad_logits @ w2.to(acc) if w2 is not None else grad_logits[:, :0]
    return grad_logits, grad_h.clone()


def _excite_backward_reference(grad_y, x, out, w1, logits, grad_logits, grad_z1, has_residual,
                               gate, gain, out_act, taps=None, circular=False):
    acc = _accumulation_dtype(x)
    g = _masked(grad_y, out, out_act, acc)
    if w1 is not None:
        d_pooled = grad_z1 @ w1.to(acc)
    else:
        d_pooled = grad_z1 if taps is None else channel_conv_transpose(grad_z1, taps, circular)
    dx = g * (gain * apply_gate(logits, gate))[:, :, None, None] + (
        d_pooled[:, :, None, None] / (x.shape[2] * x.shape[3]))
    if has_residual and out_act == "relu":
        d_residual = torch.empty_like(x).copy_(g)
    else:
        d_residual = x.new_empty((0,), dtype=torch.float32)
    return torch.empty_like(x).copy_(dx), d_residual


TABLE: dict[str, SplitOps] = {
    "reference": SplitOps(_squeeze_reference, _excite_reference, _squeeze_backward_reference,
                          _excite_backward_reference),
}

_FAKES = (_squeeze_fake, _excite_fake, _squeeze_backward_fake, _excite_backward_fake)
_NAMES = ("split_squeeze", "split_excite", "split_squeeze_backward", "split_excite_backward")


def _with_fakes(ops: list) -> SplitOps:
    for op, fake in zip(ops, _FAKES):
        torch.library.register_fake(op, fake)
    return SplitOps(*ops)


if PROBE.triton is None:
    from .triton import launch_split as _triton_split

    TABLE["triton"] = _with_fakes([
        torch.library.custom_op(f"se_kernels::triton_{name}", getattr(_triton_split, name),
                                mutates_args=())
        for name in _NAMES
    ])

_se = torch.ops.se_kernels
if PROBE.extension is None:
    TABLE["cuda"] = TABLE["cpu"] = _with_fakes([getattr(_se, name).default for name in _NAMES])
if PROBE.sim_kernels:
    TABLE["cuda_sim"] = _with_fakes([getattr(_se, f"sim_{name}").default for name in _NAMES])


def split_ops(backend: str) -> SplitOps:
    """The split ops of a resolved backend name."""
    return TABLE[backend]
