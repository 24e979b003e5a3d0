"""Forward launch 2 (K2): finish the gate for a channel block and stream y = x * scale.

Each program re-adds the FC1 partials of its sample in a fixed order (cheap, L2
resident), computes the gate for its own channels only, then scales its HW tile and
applies the optional residual add and ReLU. Programs with ``tile == 0`` also write the
small tensors saved for backward.
"""

import triton
import triton.language as tl

from .math import act_fwd, channel_conv, gate_fwd, relu, sum_parts
from .tiles import STREAMING_SHAPE_ARGS, program_tile


@triton.jit(do_not_specialize=STREAMING_SHAPE_ARGS)
def excite_kernel(
    x_ptr, residual_ptr, y_ptr,
    fc1_part_ptr,  # [N, n_parts, R1] fp32 from the squeeze kernel
    pooled_part_ptr,  # [N, n_splits, C] fp32
    b1_ptr, w2_ptr, b2_ptr,
    taps_ptr,  # [k] fp32: ECA's convolution (HAS_TAPS)
    pooled_ptr,  # out [N, C] fp32
    fc1_out_ptr,  # out [N, R1] fp32: FC1 pre-activation (the gate input when single-FC)
    fc2_out_ptr,  # out [N, C] fp32: FC2 output, the gate input (two-FC only)
    C, HW, R1, n_parts, n_splits, hw_per_tile, gain, n_taps,
    stride_xn, stride_xc, stride_xhw,
    stride_rn, stride_rc, stride_rhw,
    stride_yn, stride_yc, stride_yhw,
    stride_w2c, stride_w2r,
    HAS_FC2: tl.constexpr, HAS_B1: tl.constexpr, HAS_B2: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr, OUT_RELU: tl.constexpr,
    ACT: tl.constexpr, SLOPE: tl.constexpr, GATE: tl.constexpr, HAS_TAPS: tl.constexpr,
    CIRCULAR: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr, BLOCK_R: tl.constexpr,
):
    n, c, c_mask, hw_start, hw_end = program_tile(C, HW, hw_per_tile, BLOCK_C)
    cblock = tl.program_id(1)
    first_tile = tl.program_id(2) == 0
    part_rows = fc1_part_ptr + n * n_parts * R1

    if HAS_FC2:
        logit = tl.zeros([BLOCK_C], dtype=tl.float32)
        for r0 in range(0, R1, BLOCK_R):
            r = r0 + tl.arange(0, BLOCK_R)
            r_mask = r < R1
            z1 = sum_parts(part_rows, n_parts, R1, r, r_mask)
            if HAS_B1:
                z1 += tl.load(b1_ptr + r, mask=r_mask, other=0.0).to(tl.float32)
            tl.store(fc1_out_ptr + n * R1 + r, z1, mask=r_mask & first_tile & (cblock == 0))
            h = tl.where(r_mask, act_fwd(z1, ACT, SLOPE), 0.0)
            w2 = tl.load(w2_ptr + c[:, None] * stride_w2c + r[None, :] * stride_w2r,
                         mask=c_mask[:, None] & r_mask[None, :], other=0.0).to(tl.float32)
            logit += tl.sum(w2 * h[None, :], axis=1)
        if HAS_B2:
            logit += tl.load(b2_ptr + c, mask=c_mask, other=0.0).to(tl.float32)
        tl.store(fc2_out_ptr + n * C + c, logit, mask=c_mask & first_tile)
    elif HAS_TAPS:  # ECA (split op): the given vector's k-neighbourhood, any block's
        logit = channel_conv(part_rows, taps_ptr, n_taps, C, c, c_mask, 1, CIRCULAR)
        if HAS_B1:  # the convolution's one bias
            logit += tl.load(b1_ptr).to(tl.float32)
        tl.store(fc1_out_ptr + n * R1 + c, logit, mask=c_mask & first_tile)
    else:  # single-FC eSE: only this block's columns of FC1 are needed
        logit = sum_parts(part_rows, n_parts, R1, c, c_mask)
        if HAS_B1:
            logit += tl.load(b1_ptr + c, mask=c_mask, other=0.0).to(tl.float32)
        tl.store(fc1_out_ptr + n * R1 + c, logit, mask=c_mask & first_tile)

    pooled = sum_parts(pooled_part_ptr + n * n_splits * C, n_splits, C, c, c_mask)
    tl.store(pooled_ptr + n * C + c, pooled, mask=c_mask & first_tile)

    scale = gain * gate_fwd(logit, GATE)
    c64 = c[:, None].to(tl.int64)
    x_rows = x_ptr + n * stride_xn + c64 * stride_xc
    r_rows = residual_ptr + n * stride_rn + c64 * stride_rc
    y_rows = y_ptr + n * stride_yn + c64 * stride_yc
    for hw0 in range(hw_start, hw_end, BLOCK_HW):
        hw = (hw0 + tl.arange(0, BLOCK_HW))[None, :]
        mask = c_mask[:, None] & (hw < hw_end)
        hw64 = hw.to(tl.int64)
        out = tl.load(x_rows + hw64 * stride_xhw, mask=mask, other=0.0).to(tl.float32) * scale[:, None]
        if HAS_RESIDUAL:
            out += tl.load(r_rows + hw64 * stride_rhw, mask=mask, other=0.0).to(tl.float32)
        if OUT_RELU:
            out = relu(out)
        tl.store(y_rows + hw64 * stride_yhw, out.to(y_ptr.dtype.element_ty), mask=mask)
