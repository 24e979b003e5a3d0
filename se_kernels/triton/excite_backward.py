"""Backward launch 2 (K2b): finish dp for a channel block and stream dx.

Adds the FC2 partials (``dh``) in a fixed order, applies act', projects through
W1 for this block's channels (``dp = W1[:, block]^T dz1``; given as such by the split op
for ECA, ``DP_GIVEN``) and writes
``dx = g*gain*s + dp/HW`` (plus the max-position share for avgmax) over its HW tile.
Programs with ``tile == 0`` also write dz1 / dz2 for the weight-gradient GEMMs.
"""

import triton
import triton.language as tl

from .math import act_grad, channel_conv, gate_fwd, sum_parts
from .tiles import STREAMING_SHAPE_ARGS, masked_grad, program_tile


@triton.jit(do_not_specialize=STREAMING_SHAPE_ARGS)
def excite_backward_kernel(
    g_ptr, x_ptr, out_ptr,
    dx_ptr, d_residual_ptr,
    w1_ptr,
    fc1_out_ptr,  # [N, R1] fp32 saved FC1 pre-activation
    gate_in_ptr,  # [N, C] fp32 saved gate input
    pooled_max_ptr, max_count_ptr,  # [N, C] fp32 (avgmax)
    dh_part_ptr,  # [N, n_parts, R1] fp32 (two-FC)
    d_logit_part_ptr,  # [N, n_splits, C] fp32
    grad_fc1_ptr,  # out [N, R1] fp32: dL/d(FC1 output)
    grad_fc2_ptr,  # out [N, C] fp32: dL/d(FC2 output) (two-FC)
    taps_ptr,  # [k] fp32: ECA's convolution (HAS_TAPS)
    C, HW, R1, n_parts, n_splits, hw_per_tile, gain, inv_hw, n_taps,
    stride_gn, stride_gc, stride_ghw,
    stride_xn, stride_xc, stride_xhw,
    stride_on, stride_oc, stride_ohw,
    stride_dxn, stride_dxc, stride_dxhw,
    stride_drn, stride_drc, stride_drhw,
    stride_w1r, stride_w1c,
    HAS_FC2: tl.constexpr, OUT_RELU: tl.constexpr, WRITE_D_RESIDUAL: tl.constexpr,
    POOL_MAX: tl.constexpr, ACT: tl.constexpr, SLOPE: tl.constexpr, GATE: tl.constexpr,
    DP_GIVEN: tl.constexpr,
    HAS_TAPS: tl.constexpr, CIRCULAR: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr, BLOCK_R: tl.constexpr,
):
    n, c, c_mask, hw_start, hw_end = program_tile(C, HW, hw_per_tile, BLOCK_C)
    cblock = tl.program_id(1)
    first_tile = tl.program_id(2) == 0
    d_logit_rows = d_logit_part_ptr + n * n_splits * C

    dp = tl.zeros([BLOCK_C], dtype=tl.float32)
    if DP_GIVEN:  # split op without FC1 (ECA): dh_part holds dL/dpooled [N, C] ...
        if HAS_TAPS:  # ... or dL/dlogits, taken back through the convolution
            dp = channel_conv(dh_part_ptr + n * C, taps_ptr, n_taps, C, c, c_mask, -1, CIRCULAR)
        else:
            dp = tl.load(dh_part_ptr + n * C + c, mask=c_mask, other=0.0)
    else:
        for r0 in range(0, R1, BLOCK_R):
            r = r0 + tl.arange(0, BLOCK_R)
            r_mask = r < R1
            if HAS_FC2:
                dz1 = sum_parts(dh_part_ptr + n * n_parts * R1, n_parts, R1, r, r_mask)
                z1 = tl.load(fc1_out_ptr + n * R1 + r, mask=r_mask, other=0.0)
                dz1 = dz1 * act_grad(z1, ACT, SLOPE)
            else:  # single-FC: dL/d(FC1 output) is the gate-input grad itself (R1 == C)
                dz1 = sum_parts(d_logit_rows, n_splits, C, r, r_mask)
            tl.store(grad_fc1_ptr + n * R1 + r, dz1, mask=r_mask & first_tile & (cblock == 0))
            w1 = tl.load(w1_ptr + r[:, None] * stride_w1r + c[None, :] * stride_w1c,
                         mask=r_mask[:, None] & c_mask[None, :], other=0.0).to(tl.float32)
            dp += tl.sum(w1 * dz1[:, None], axis=0)

    if HAS_FC2:
        dz2 = sum_parts(d_logit_rows, n_splits, C, c, c_mask)
        tl.store(grad_fc2_ptr + n * C + c, dz2, mask=c_mask & first_tile)

    scale = gain * gate_fwd(tl.load(gate_in_ptr + n * C + c, mask=c_mask, other=0.0), GATE)
    if POOL_MAX:
        pmax = tl.load(pooled_max_ptr + n * C + c, mask=c_mask, other=0.0)
        count = tl.load(max_count_ptr + n * C + c, mask=c_mask, other=1.0)
        d_mean = 0.5 * dp * inv_hw
        d_max = 0.5 * dp / count  # ties share the max's gradient evenly, as torch.amax
    else:
        d_mean = dp * inv_hw

    c64 = c[:, None].to(tl.int64)
    g_rows = g_ptr + n * stride_gn + c64 * stride_gc
    x_rows = x_ptr + n * stride_xn + c64 * stride_xc
    o_rows = out_ptr + n * stride_on + c64 * stride_oc
    dx_rows = dx_ptr + n * stride_dxn + c64 * stride_dxc
    dr_rows = d_residual_ptr + n * stride_drn + c64 * stride_drc
    for hw0 in range(hw_start, hw_end, BLOCK_HW):
        hw64 = (hw0 + tl.arange(0, BLOCK_HW))[None, :].to(tl.int64)
        mask = c_mask[:, None] & (hw64 < hw_end)
        g = masked_grad(g_rows, o_rows, hw64, stride_ghw, stride_ohw, mask, OUT_RELU)
        if WRITE_D_RESIDUAL:
            tl.store(dr_rows + hw64 * stride_drhw, g.to(d_residual_ptr.dtype.element_ty), mask=mask)
        dx = g * scale[:, None] + d_mean[:, None]
        if POOL_MAX:
            x = tl.load(x_rows + hw64 * stride_xhw, mask=mask, other=0.0).to(tl.float32)
            dx += tl.where(x == pmax[:, None], d_max[:, None], 0.0)
        tl.store(dx_rows + hw64 * stride_dxhw, dx.to(dx_ptr.dtype.element_ty), mask=mask)
