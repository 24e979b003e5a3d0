"""Forward launch 1 (K1): pool a slice of x and apply FC1 to it, partially.

FC1 is linear in the pooled vector, and the average is linear over any split of
channels or HW, so every program can finish ``W1[:, block] @ p[block]`` on its own
slice and write it to ``fc1_part[n, part, :]``. The excite kernel adds the parts in a
fixed order: no grid-wide sync, no atomics.
"""

import triton
import triton.language as tl

from .math import nan_max
from .tiles import REDUCTION_SHAPE_ARGS, program_tile


@triton.jit(do_not_specialize=REDUCTION_SHAPE_ARGS)
def squeeze_kernel(
    x_ptr, w1_ptr,
    pooled_part_ptr,  # [N, n_splits, C] fp32: this split's share of the pooled value
    pooled_max_ptr,  # [N, C] fp32, written only for avgmax
    fc1_part_ptr,  # [N, n_cblocks * n_splits, R1] fp32
    C, HW, R1, hw_per_split, inv_hw,
    stride_xn, stride_xc, stride_xhw,
    stride_w1r, stride_w1c,
    POOL_MAX: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr, BLOCK_R: tl.constexpr,
):
    n, c, c_mask, hw_start, hw_end = program_tile(C, HW, hw_per_split, BLOCK_C)
    cblock = tl.program_id(1)
    split = tl.program_id(2)
    n_splits = tl.num_programs(2)
    n_parts = tl.num_programs(1) * n_splits
    x_rows = x_ptr + n * stride_xn + c[:, None].to(tl.int64) * stride_xc

    total = tl.zeros([BLOCK_C, BLOCK_HW], dtype=tl.float32)
    peak = tl.full([BLOCK_C, BLOCK_HW], float("-inf"), dtype=tl.float32)
    for hw0 in range(hw_start, hw_end, BLOCK_HW):
        hw = hw0 + tl.arange(0, BLOCK_HW)
        mask = c_mask[:, None] & (hw < hw_end)[None, :]
        v = tl.load(x_rows + hw[None, :].to(tl.int64) * stride_xhw, mask=mask, other=0.0)
        v = v.to(tl.float32)
        total += v
        if POOL_MAX:
            peak = nan_max(peak, tl.where(mask, v, float("-inf")))

    pooled = tl.sum(total, axis=1) * inv_hw
    if POOL_MAX:  # never split: this program saw the whole HW range
        pmax = tl.max(peak, axis=1)
        tl.store(pooled_max_ptr + n * C + c, pmax, mask=c_mask)
        pooled = 0.5 * pooled + 0.5 * pmax
    pooled = tl.where(c_mask, pooled, 0.0)
    tl.store(pooled_part_ptr + (n * n_splits + split) * C + c, pooled, mask=c_mask)

    part_row = fc1_part_ptr + (n * n_parts + cblock * n_splits + split) * R1
    for r0 in range(0, R1, BLOCK_R):
        r = r0 + tl.arange(0, BLOCK_R)
        r_mask = r < R1
        w = tl.load(w1_ptr + r[:, None] * stride_w1r + c[None, :] * stride_w1c,
                    mask=r_mask[:, None] & c_mask[None, :], other=0.0).to(tl.float32)
        tl.store(part_row + r, tl.sum(w * pooled[None, :], axis=1), mask=r_mask)
