"""Backward launch 1 (K1b): reduce ds = gain * sum_hw g*x and push it through the gate.

``d_logit = ds * gate'(logit)`` is linear in ds, so a program that saw only an HW
slice still writes a valid partial, and (two-FC) its partial ``W2[block, :]^T d_logit``
into ``dh_part[n, part, :]``. The dx kernel adds the parts in a fixed order.
"""

import triton
import triton.language as tl

from .math import gate_grad
from .tiles import REDUCTION_SHAPE_ARGS, masked_grad, program_tile


@triton.jit(do_not_specialize=REDUCTION_SHAPE_ARGS)
def squeeze_backward_kernel(
    g_ptr, x_ptr, out_ptr,
    w2_ptr,
    gate_in_ptr,  # [N, C] fp32 saved gate input (FC2 output, or FC1 output for eSE)
    pooled_max_ptr,  # [N, C] fp32 (avgmax)
    d_logit_part_ptr,  # out [N, n_splits, C] fp32
    max_count_ptr,  # out [N, C] fp32: number of positions equal to the max (avgmax)
    dh_part_ptr,  # out [N, n_cblocks * n_splits, R1] fp32 (two-FC)
    C, HW, R1, hw_per_split, gain,
    stride_gn, stride_gc, stride_ghw,
    stride_xn, stride_xc, stride_xhw,
    stride_on, stride_oc, stride_ohw,
    stride_w2c, stride_w2r,
    HAS_FC2: tl.constexpr, OUT_RELU: tl.constexpr, POOL_MAX: tl.constexpr, GATE: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr, BLOCK_R: tl.constexpr,
):
    n, c, c_mask, hw_start, hw_end = program_tile(C, HW, hw_per_split, BLOCK_C)
    cblock = tl.program_id(1)
    split = tl.program_id(2)
    n_splits = tl.num_programs(2)
    n_parts = tl.num_programs(1) * n_splits
    c64 = c[:, None].to(tl.int64)
    g_rows = g_ptr + n * stride_gn + c64 * stride_gc
    x_rows = x_ptr + n * stride_xn + c64 * stride_xc
    o_rows = out_ptr + n * stride_on + c64 * stride_oc
    if POOL_MAX:
        pmax = tl.load(pooled_max_ptr + n * C + c, mask=c_mask, other=0.0)

    gx = tl.zeros([BLOCK_C, BLOCK_HW], dtype=tl.float32)
    ties = tl.zeros([BLOCK_C, BLOCK_HW], dtype=tl.float32)
    for hw0 in range(hw_start, hw_end, BLOCK_HW):
        hw64 = (hw0 + tl.arange(0, BLOCK_HW))[None, :].to(tl.int64)
        mask = c_mask[:, None] & (hw64 < hw_end)
        g = masked_grad(g_rows, o_rows, hw64, stride_ghw, stride_ohw, mask, OUT_RELU)
        x = tl.load(x_rows + hw64 * stride_xhw, mask=mask, other=0.0).to(tl.float32)
        gx += g * x
        if POOL_MAX:
            ties += tl.where(mask & (x == pmax[:, None]), 1.0, 0.0)

    logit = tl.load(gate_in_ptr + n * C + c, mask=c_mask, other=0.0)
    d_logit = tl.sum(gx, axis=1) * gain * gate_grad(logit, GATE)
    d_logit = tl.where(c_mask, d_logit, 0.0)
    tl.store(d_logit_part_ptr + (n * n_splits + split) * C + c, d_logit, mask=c_mask)
    if POOL_MAX:  # never split: the count covers the whole HW range
        tl.store(max_count_ptr + n * C + c, tl.sum(ties, axis=1), mask=c_mask)

    if HAS_FC2:
        part_row = dh_part_ptr + (n * n_parts + cblock * n_splits + split) * R1
        for r0 in range(0, R1, BLOCK_R):
            r = r0 + tl.arange(0, BLOCK_R)
            r_mask = r < R1
            w2 = tl.load(w2_ptr + c[:, None] * stride_w2c + r[None, :] * stride_w2r,
                         mask=c_mask[:, None] & r_mask[None, :], other=0.0).to(tl.float32)
            tl.store(part_row + r, tl.sum(w2 * d_logit[:, None], axis=0), mask=r_mask)
