"""Element-wise activation and gate functions (and derivatives) shared by the kernels.

The kernels take the option as an integer constexpr (ACT, GATE); the named codes below
come from the option tables in ``se_kernels.options``. All arithmetic is float32.
"""

import triton
import triton.language as tl

from ..options import ACTS, GATES

ACT_RELU = tl.constexpr(ACTS["relu"])
ACT_SILU = tl.constexpr(ACTS["silu"])
GATE_SIGMOID = tl.constexpr(GATES["sigmoid"])


@triton.jit
def relu(z):
    """max(z, 0) that lets NaN through, as torch.relu."""
    return tl.where(z < 0.0, 0.0, z)


@triton.jit
def nan_max(a, b):
    """Element-wise max that propagates NaN, as torch.amax."""
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def act_fwd(z, ACT: tl.constexpr):
    if ACT == ACT_RELU:
        z = relu(z)
    elif ACT == ACT_SILU:
        z = z * tl.sigmoid(z)
    return z


@triton.jit
def act_grad(z, ACT: tl.constexpr):
    """d act / dz at the pre-activation z (relu: 0 at z == 0, as torch)."""
    if ACT == ACT_RELU:
        d = tl.where(z > 0.0, 1.0, 0.0)
    elif ACT == ACT_SILU:
        sig = tl.sigmoid(z)
        d = sig * (1.0 + z * (1.0 - sig))
    else:
        d = tl.full(z.shape, 1.0, tl.float32)
    return d


@triton.jit
def gate_fwd(z, GATE: tl.constexpr):
    if GATE == GATE_SIGMOID:
        s = tl.sigmoid(z)
    else:
        s = tl.where(z > 3.0, 6.0, relu(z + 3.0)) / 6.0  # relu6(z + 3) / 6, NaN passes
    return s


@triton.jit
def gate_grad(z, GATE: tl.constexpr):
    """d gate / dz at the gate input z (hard_sigmoid: 1/6 strictly inside (-3, 3))."""
    if GATE == GATE_SIGMOID:
        s = tl.sigmoid(z)
        d = s * (1.0 - s)
    else:
        d = tl.where((z > -3.0) & (z < 3.0), 1.0 / 6.0, 0.0)
    return d


# Elements of one tile of partial sums: a [PART_TILE // cols, cols] tile is at most 8
# registers per thread at 4 warps, however many partials there are.
PART_TILE = tl.constexpr(1024)


@triton.jit
def sum_parts(ptr, n_rows, row_stride, cols, col_mask):
    """Sum rows ``ptr[0:n_rows, cols]`` of a float32 buffer in a fixed order.

    Walks the rows in ``[ROWS, len(cols)]`` chunks whose size depends only on len(cols),
    so many partials cost few instructions and few registers; the order is fixed by the
    shape, so the result is bitwise reproducible (no atomics).
    """
    COLS: tl.constexpr = cols.shape[0]
    ROWS: tl.constexpr = (PART_TILE + COLS - 1) // COLS
    total = tl.zeros(cols.shape, dtype=tl.float32)
    for row0 in range(0, n_rows, ROWS):
        rows = row0 + tl.arange(0, ROWS)
        tile = tl.load(ptr + rows[:, None] * row_stride + cols[None, :],
                       mask=(rows < n_rows)[:, None] & col_mask[None, :], other=0.0)
        total += tl.sum(tile, axis=0)
    return total
