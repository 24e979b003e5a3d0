"""What one program of the grid (N, channel blocks, HW pieces) works on, and the masked
gradient load both backward kernels share."""

import triton
import triton.language as tl

# Shape arguments only used in masks and in offsets into the small float32 buffers: Triton
# would otherwise compile a new variant for every pattern of their divisibility by 16 (and
# for the value 1), which a network's dozens of layer shapes would each trigger. The
# strides and the HW piece lengths stay specialized: they decide vectorised access.
REDUCTION_SHAPE_ARGS = ["C", "HW", "R1"]
STREAMING_SHAPE_ARGS = REDUCTION_SHAPE_ARGS + ["n_parts", "n_splits", "n_taps"]


@triton.jit
def program_tile(C, HW, hw_per_piece, BLOCK_C: tl.constexpr):
    """(sample as int64, channels, channel mask, first hw, end hw) of this program."""
    n = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    hw_start = tl.program_id(2) * hw_per_piece
    return n, c, c < C, hw_start, tl.minimum(hw_start + hw_per_piece, HW)


@triton.jit
def masked_grad(g_rows, o_rows, hw64, stride_ghw, stride_ohw, mask, OUT_RELU: tl.constexpr):
    """dL/dy as float32, zeroed where the ReLU epilogue's saved output is <= 0 (a NaN
    output keeps its gradient, as torch's relu backward does)."""
    g = tl.load(g_rows + hw64 * stride_ghw, mask=mask, other=0.0).to(tl.float32)
    if OUT_RELU:
        out = tl.load(o_rows + hw64 * stride_ohw, mask=mask, other=0.0).to(tl.float32)
        g = tl.where(out <= 0.0, 0.0, g)
    return g
