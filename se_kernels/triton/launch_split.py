"""Host side of the Triton split ops (schemas in ``csrc/se_ops.cpp``): the fused op cut at
the bottleneck so that a batch-coupled step (a training-mode BatchNorm on ``[N, R]``)
runs between its launches, or without FC weights for ECA (its k-tap convolution inside
the streaming kernels). Each op is one kernel of ``launch.py``; the reduction ops add
their partial sums in a fixed order, the streaming ops read the given per-sample vectors
as a single partial. Average pooling.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..buffers import backward_outputs, float_buffers, no_fc1_weight
from ..options import check_split_inputs
from .launch import (_device_guard, launch_excite, launch_excite_backward, launch_squeeze,
                     launch_squeeze_backward, plan_for)


def _dense(taps: Optional[Tensor]) -> Optional[Tensor]:
    """The taps as a dense float32 vector (no copy when they already are), as as_float."""
    return None if taps is None else taps.to(torch.float32).contiguous()


def split_squeeze(x: Tensor, w1: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    """``(pooled [N, C], fc1 = pooled @ W1^T [N, R1])``, float32 (FC1's bias is the caller's);
    without w1, fc1 is ``[N, 0]``."""
    if w1 is None:
        w1 = no_fc1_weight(x)
    s = check_split_inputs(x, w1=w1)
    if s.N == 0:
        return x.new_empty((0, s.C), dtype=torch.float32), x.new_empty((0, s.R1), dtype=torch.float32)
    plan = plan_for(x, s.R1, "avg")
    pooled_part, fc1_part = float_buffers(x, (s.N, plan.n_splits, s.C), (s.N, plan.n_parts, s.R1))
    with _device_guard(x):
        launch_squeeze(x, w1, pooled_part, pooled_part, fc1_part, plan, s, False)
    return pooled_part.sum(1), fc1_part.sum(1)


def split_excite(x: Tensor, pooled: Tensor, z1: Tensor, w2: Optional[Tensor],
                 b2: Optional[Tensor], residual: Optional[Tensor], act: str, gate: str,
                 gain: float, out_act: str, taps: Optional[Tensor] = None,
                 taps_bias: Optional[Tensor] = None, circular: bool = False
                 ) -> tuple[Tensor, Tensor]:
    """``(y, logits)``: y = out_act(x * gain * gate(logits) + residual), logits = W2 act(z1) + b2
    (without w2: z1 itself, ``[N, C]``, or with taps ECA's convolution of z1 across the
    channels plus taps_bias)."""
    s = check_split_inputs(x, w2=w2, b2=b2, residual=residual, act=act, gate=gate, gain=gain,
                           out_act=out_act, small={"pooled": (pooled, True), "z1": (z1, False)},
                           taps=taps, taps_bias=taps_bias)
    y = torch.empty_like(x)
    logits, pooled_copy, z1_copy = float_buffers(x, (s.N, s.C), (s.N, s.C),
                                                 (s.N if s.has_fc2 else 0, s.R1))
    if s.N == 0:
        return y, logits
    plan = plan_for(x, s.R1, "avg")
    # The copies of pooled and z1 it writes for backward are scratch; without FC2 its
    # "FC1 output" is the logits.
    fc1_out, fc2_out = (z1_copy, logits) if s.has_fc2 else (logits, z1_copy)
    with _device_guard(x):
        launch_excite(x, residual, y, z1.contiguous(), pooled.contiguous(), taps_bias, w2, b2,
                      pooled_copy, fc1_out, fc2_out, plan, s, 1, 1, act, gate, gain, out_act,
                      _dense(taps), circular)
    return y, logits


def split_squeeze_backward(grad_y: Tensor, x: Tensor, out: Optional[Tensor],
                           w2: Optional[Tensor], logits: Tensor, gate: str, gain: float,
                           out_act: str) -> tuple[Tensor, Tensor]:
    """``(grad_logits = dL/d(gate input) [N, C], grad_h = grad_logits @ W2 [N, R1])``,
    float32; without w2, grad_h is ``[N, 0]``."""
    s = check_split_inputs(x, w2=w2, gate=gate, gain=gain, out_act=out_act, grad_y=grad_y,
                           out=out, small={"logits": (logits, True)})
    width_h = s.R1 if s.has_fc2 else 0
    if s.N == 0:
        return x.new_empty((0, s.C), dtype=torch.float32), x.new_empty((0, width_h), dtype=torch.float32)
    plan = plan_for(x, s.R1, "avg")
    d_logit_part, dh_part = float_buffers(x, (s.N, plan.n_splits, s.C), (s.N, plan.n_parts, width_h))
    gate_in = logits.contiguous()
    with _device_guard(x):
        launch_squeeze_backward(grad_y, x, out if out is not None else x, w2, gate_in, gate_in,
                                d_logit_part, d_logit_part, dh_part, plan, s, "avg", gate, gain,
                                out_act)
    return d_logit_part.sum(1), dh_part.sum(1)


def split_excite_backward(grad_y: Tensor, x: Tensor, out: Optional[Tensor], w1: Optional[Tensor],
                          logits: Tensor, grad_logits: Tensor, grad_z1: Tensor,
                          has_residual: bool, gate: str, gain: float, out_act: str,
                          taps: Optional[Tensor] = None,
                          circular: bool = False) -> tuple[Tensor, Tensor]:
    """``(dx, d_residual)``: dx = g * gain * gate(logits) + (grad_z1 @ W1) / HW (without w1:
    grad_z1 / HW), g masked by the ReLU epilogue; d_residual (the masked g) only with a
    residual and ReLU."""
    s = check_split_inputs(x, w1=w1, gate=gate, gain=gain, out_act=out_act, grad_y=grad_y,
                           out=out, small={"logits": (logits, True),
                                           "grad_logits": (grad_logits, True),
                                           "grad_z1": (grad_z1, False)}, taps=taps)
    write_d_residual = has_residual and out_act == "relu"
    # grad_fc1 / grad_fc2 of the fused op's outputs are rewritten copies here: scratch.
    dx, d_residual, fc1_copy, fc2_copy = backward_outputs(x, s.R1, s.has_fc2, write_d_residual)
    if s.N == 0:
        return dx, d_residual
    plan = plan_for(x, s.R1, "avg")
    dz1 = grad_z1.contiguous()
    o = out if out is not None else x
    gate_in = logits.contiguous()
    with _device_guard(x):  # act 'identity': grad_z1 is already dL/dz1
        launch_excite_backward(grad_y, x, o, dx, d_residual if write_d_residual else dx, w1, dz1,
                               gate_in, gate_in, gate_in, dz1, grad_logits.contiguous(),
                               fc1_copy, fc2_copy if s.has_fc2 else fc1_copy, plan, s, 1, 1,
                               write_d_residual, "avg", "identity", gate, gain, out_act,
                               dp_given=w1 is None, taps=_dense(taps), circular=circular)
    return dx, d_residual
