"""Host side of the Triton backend: checks, plan, and the two launches each way.

These functions are the bodies of the ``se_kernels::triton_forward`` and
``se_kernels::triton_backward`` custom ops (registered in ``se_kernels.ops``).
"""

from __future__ import annotations

import contextlib
from typing import Optional

import torch
from torch import Tensor

from ..buffers import backward_outputs, forward_outputs, infer_buffers
from ..options import ACTS, GATES, check_backward_inputs, check_inputs, kernel_strides, parse_act
from .plan import Plan, heuristics_for, make_plan
from .excite import excite_kernel
from .excite_backward import excite_backward_kernel
from .squeeze import squeeze_kernel
from .squeeze_backward import squeeze_backward_kernel


def _device_guard(x: Tensor):
    """Triton launches on the current CUDA device: make it x's device."""
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


def launch(kernel, grid: tuple, *args, **kwargs) -> None:
    """Every Triton launch of this backend goes through here (a hook point:
    scripts/static_gpu_check.py records the launches instead of running them)."""
    kernel[grid](*args, **kwargs)


def plan_for(x: Tensor, r1: int, pool: str) -> Plan:
    """The launch plan for x (exposed so tests can see which path a shape takes)."""
    n, c, h, w = x.shape
    channels_inner = kernel_strides("x", x)[1] == 1 and c > 1
    return make_plan(n, c, h * w, r1, channels_inner, allow_split=pool == "avg",
                     heur=heuristics_for(x.device))



def _act_meta(act: str) -> dict:
    """The act's constexprs: its code and leaky_relu's slope (a constexpr: one variant per
    slope in use, and the default's is the only one timm's models need)."""
    name, slope = parse_act(act)
    return dict(ACT=ACTS[name], SLOPE=slope)


# One function per kernel, shared by the fused ops below and the split ops
# (launch_split.py), which feed the streaming kernels given vectors as a single partial.

def launch_squeeze(x, w1, pooled_part, pooled_max, fc1_part, plan: Plan, s, avgmax: bool) -> None:
    launch(
        squeeze_kernel, (s.N, plan.n_cblocks, plan.n_splits),
        x, w1, pooled_part, pooled_max, fc1_part,
        s.C, s.HW, s.R1, plan.hw_per_split, 1.0 / s.HW,
        *kernel_strides("x", x), *w1.stride(),
        POOL_MAX=avgmax,
        **plan.reduction_meta,
    )


def launch_excite(x, residual, y, fc1_part, pooled_part, b1, w2, b2, pooled, fc1_out, fc2_out,
                  plan: Plan, s, n_parts: int, n_splits: int, act: str, gate: str, gain: float,
                  out_act: str, taps=None, circular: bool = False) -> None:
    res = residual if residual is not None else x
    w2_or_dummy = w2 if w2 is not None else fc1_part
    # The kernels index biases as dense vectors (an expanded one has stride 0): no copy
    # when they already are, as the C++ ops' as_float.
    b1, b2 = (None if b is None else b.contiguous() for b in (b1, b2))
    launch(
        excite_kernel, (s.N, plan.n_cblocks, plan.n_tiles),
        x, res, y, fc1_part, pooled_part,
        b1 if b1 is not None else fc1_part, w2_or_dummy, b2 if b2 is not None else fc1_part,
        taps if taps is not None else fc1_part, pooled, fc1_out, fc2_out,
        s.C, s.HW, s.R1, n_parts, n_splits, plan.hw_per_tile, float(gain),
        taps.numel() if taps is not None else 0,
        *kernel_strides("x", x), *kernel_strides("residual", res), *kernel_strides("y", y),
        *(w2.stride() if w2 is not None else (0, 0)),
        HAS_FC2=s.has_fc2, HAS_B1=b1 is not None, HAS_B2=b2 is not None,
        HAS_RESIDUAL=residual is not None, OUT_RELU=out_act == "relu",
        **_act_meta(act), GATE=GATES[gate], HAS_TAPS=taps is not None, CIRCULAR=circular,
        **plan.streaming_meta,
    )


def launch_squeeze_backward(grad_y, x, out, w2, gate_in, pooled_max, d_logit_part, max_count,
                            dh_part, plan: Plan, s, pool: str, gate: str, gain: float,
                            out_act: str) -> None:
    w2_or_dummy = w2 if w2 is not None else gate_in
    launch(
        squeeze_backward_kernel, (s.N, plan.n_cblocks, plan.n_splits),
        grad_y, x, out, w2_or_dummy, gate_in, pooled_max, d_logit_part, max_count, dh_part,
        s.C, s.HW, s.R1, plan.hw_per_split, float(gain),
        *kernel_strides("grad_y", grad_y), *kernel_strides("x", x), *kernel_strides("out", out),
        *(w2.stride() if w2 is not None else (0, 0)),
        HAS_FC2=s.has_fc2, OUT_RELU=out_act == "relu", POOL_MAX=pool == "avgmax",
        GATE=GATES[gate],
        **plan.reduction_meta,
    )


def launch_excite_backward(grad_y, x, out, dx, d_residual, w1, fc1_out, gate_in, pooled_max,
                           max_count, dh_part, d_logit_part, grad_fc1, grad_fc2, plan: Plan, s,
                           n_parts: int, n_splits: int, write_d_residual: bool, pool: str,
                           act: str, gate: str, gain: float, out_act: str,
                           dp_given: bool = False, taps=None, circular: bool = False) -> None:
    launch(
        excite_backward_kernel, (s.N, plan.n_cblocks, plan.n_tiles),
        grad_y, x, out, dx, d_residual, w1 if w1 is not None else dh_part, fc1_out, gate_in,
        pooled_max, max_count, dh_part, d_logit_part, grad_fc1, grad_fc2,
        taps if taps is not None else dh_part,
        s.C, s.HW, s.R1, n_parts, n_splits, plan.hw_per_tile, float(gain), 1.0 / s.HW,
        taps.numel() if taps is not None else 0,
        *kernel_strides("grad_y", grad_y), *kernel_strides("x", x), *kernel_strides("out", out),
        *kernel_strides("dx", dx), *kernel_strides("d_residual", d_residual),
        *(w1.stride() if w1 is not None else (0, 0)),
        HAS_FC2=s.has_fc2, OUT_RELU=out_act == "relu", WRITE_D_RESIDUAL=write_d_residual,
        POOL_MAX=pool == "avgmax", **_act_meta(act), GATE=GATES[gate], DP_GIVEN=dp_given,
        HAS_TAPS=taps is not None, CIRCULAR=circular,
        **plan.streaming_meta,
    )


def _forward(
    x: Tensor,
    w1: Tensor,
    b1: Optional[Tensor],
    w2: Optional[Tensor],
    b2: Optional[Tensor],
    residual: Optional[Tensor],
    pool: str,
    act: str,
    gate: str,
    gain: float,
    out_act: str,
    keep_saved: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The forward; the small outputs are scratch from one allocation unless keep_saved."""
    s = check_inputs(x, w1, b1, w2, b2, residual, pool, act, gate, gain, out_act, kernel=True)
    if s.N == 0:
        return forward_outputs(x, s.R1, s.has_fc2, pool)
    plan = plan_for(x, s.R1, pool)
    partial_shapes = ((s.N, plan.n_splits, s.C), (s.N, plan.n_parts, s.R1))
    if keep_saved:
        outputs = forward_outputs(x, s.R1, s.has_fc2, pool)
        f32 = dict(device=x.device, dtype=torch.float32)
        pooled_part, fc1_part = (torch.empty(shape, **f32) for shape in partial_shapes)
    else:
        outputs, (pooled_part, fc1_part) = infer_buffers(x, s.R1, s.has_fc2, pool, *partial_shapes)
    y, pooled, pooled_max, fc1_out, fc2_out = outputs
    with _device_guard(x):
        launch_squeeze(x, w1, pooled_part, pooled_max if pool == "avgmax" else pooled, fc1_part,
                       plan, s, pool == "avgmax")
        launch_excite(x, residual, y, fc1_part, pooled_part, b1, w2, b2, pooled, fc1_out,
                      fc2_out if s.has_fc2 else fc1_out, plan, s, plan.n_parts, plan.n_splits,
                      act, gate, gain, out_act)
    return outputs


def forward(x: Tensor, w1: Tensor, b1: Optional[Tensor], w2: Optional[Tensor],
            b2: Optional[Tensor], residual: Optional[Tensor], pool: str, act: str, gate: str,
            gain: float, out_act: str) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Fused SE forward: returns ``(y, pooled, pooled_max, fc1_out, fc2_out)``."""
    return _forward(x, w1, b1, w2, b2, residual, pool, act, gate, gain, out_act, True)


def infer(x: Tensor, w1: Tensor, b1: Optional[Tensor], w2: Optional[Tensor],
          b2: Optional[Tensor], residual: Optional[Tensor], pool: str, act: str, gate: str,
          gain: float, out_act: str) -> Tensor:
    """Fused SE forward for inference: returns y only (nothing is kept for backward)."""
    return _forward(x, w1, b1, w2, b2, residual, pool, act, gate, gain, out_act, False)[0]


def backward(
    grad_y: Tensor,
    x: Tensor,
    out: Optional[Tensor],
    w1: Tensor,
    w2: Optional[Tensor],
    pooled_max: Tensor,
    fc1_out: Tensor,
    fc2_out: Tensor,
    has_residual: bool,
    pool: str,
    act: str,
    gate: str,
    gain: float,
    out_act: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Fused SE backward: returns ``(dx, d_residual, grad_fc1_out, grad_fc2_out)``.

    ``out`` (the forward output) is needed only for the ReLU epilogue's mask.
    """
    s = check_backward_inputs(grad_y, x, out, w1, w2, pooled_max, fc1_out, fc2_out,
                              pool, act, gate, gain, out_act)
    write_d_residual = has_residual and out_act == "relu"
    outputs = backward_outputs(x, s.R1, s.has_fc2, write_d_residual)
    dx, d_residual, grad_fc1, grad_fc2 = outputs
    if s.N == 0:
        return outputs
    plan = plan_for(x, s.R1, pool)
    f32 = dict(device=x.device, dtype=torch.float32)
    d_logit_part = torch.empty((s.N, plan.n_splits, s.C), **f32)
    max_count = torch.empty((s.N, s.C), **f32) if pool == "avgmax" else d_logit_part
    dh_part = torch.empty((s.N, plan.n_parts, s.R1), **f32) if s.has_fc2 else d_logit_part
    gate_in = fc2_out if s.has_fc2 else fc1_out
    o = out if out is not None else x
    d_res = d_residual if write_d_residual else dx
    pmax = pooled_max if pool == "avgmax" else gate_in
    with _device_guard(x):
        launch_squeeze_backward(grad_y, x, o, w2, gate_in, pmax, d_logit_part, max_count, dh_part,
                                plan, s, pool, gate, gain, out_act)
        launch_excite_backward(grad_y, x, o, dx, d_res, w1, fc1_out, gate_in, pmax, max_count,
                               dh_part, d_logit_part, grad_fc1,
                               grad_fc2 if s.has_fc2 else grad_fc1, plan, s, plan.n_parts,
                               plan.n_splits, write_d_residual, pool, act, gate, gain, out_act)
    return outputs
