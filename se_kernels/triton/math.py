"""Element-wise activation and gate functions (and derivatives) shared by the kernels.

The kernels take the option as an integer constexpr (ACT, GATE); the named codes below
come from the option tables in ``se_kernels.options``. All arithmetic is float32.
"""

import triton
import triton.language as tl

from ..options import ACTS, GATES

ACT_RELU = tl.constexpr(ACTS["relu"])
ACT_SILU = tl.constexpr(ACTS["silu"])
ACT_RELU6 = tl.constexpr(ACTS["relu6"])
ACT_GELU = tl.constexpr(ACTS["gelu"])
ACT_GELU_TANH = tl.constexpr(ACTS["gelu_tanh"])
ACT_HARD_SWISH = tl.constexpr(ACTS["hard_swish"])
ACT_MISH = tl.constexpr(ACTS["mish"])
ACT_TANH = tl.constexpr(ACTS["tanh"])
ACT_SIGMOID = tl.constexpr(ACTS["sigmoid"])
ACT_LEAKY_RELU = tl.constexpr(ACTS["leaky_relu"])
GATE_SIGMOID = tl.constexpr(GATES["sigmoid"])
GATE_TANH = tl.constexpr(GATES["tanh"])
SQRT_HALF = tl.constexpr(0.70710678118654752)  # 1/sqrt(2)
INV_SQRT_2PI = tl.constexpr(0.39894228040143268)  # 1/sqrt(2 pi)
SQRT_2_OVER_PI = tl.constexpr(0.79788456080286536)  # sqrt(2/pi)
GELU_KAPPA = tl.constexpr(0.044715)


@triton.jit
def relu(z):
    """max(z, 0) that lets NaN through, as torch.relu."""
    return tl.where(z < 0.0, 0.0, z)


@triton.jit
def nan_max(a, b):
    """Element-wise max that propagates NaN, as torch.amax."""
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def relu6(z):
    """min(max(z, 0), 6) that lets NaN through, as F.relu6."""
    return tl.where(z > 6.0, 6.0, relu(z))


@triton.jit
def tanh(z):
    """tanh from exp (Triton has no tanh that also runs on the interpreter); exact to a
    few float32 ulps of 1, which is what the tolerance rule allows for a hidden value."""
    e = tl.exp(-2.0 * tl.abs(z))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(z < 0.0, -t, t)


@triton.jit
def softplus(z):
    """log(1 + exp(z)) with torch's threshold 20, as inside F.mish."""
    return tl.where(z > 20.0, z, tl.log(1.0 + tl.exp(tl.minimum(z, 20.0))))


@triton.jit
def act_fwd(z, ACT: tl.constexpr, SLOPE: tl.constexpr):
    if ACT == ACT_RELU:
        z = relu(z)
    elif ACT == ACT_SILU:
        z = z * tl.sigmoid(z)
    elif ACT == ACT_RELU6:
        z = relu6(z)
    elif ACT == ACT_GELU:
        z = 0.5 * z * (1.0 + tl.math.erf(z * SQRT_HALF))
    elif ACT == ACT_GELU_TANH:
        z = 0.5 * z * (1.0 + tanh((z + z * z * z * GELU_KAPPA) * SQRT_2_OVER_PI))
    elif ACT == ACT_HARD_SWISH:
        z = z * relu6(z + 3.0) / 6.0
    elif ACT == ACT_MISH:
        z = z * tanh(softplus(z))
    elif ACT == ACT_TANH:
        z = tanh(z)
    elif ACT == ACT_SIGMOID:
        z = tl.sigmoid(z)
    elif ACT == ACT_LEAKY_RELU:
        z = tl.where(z > 0.0, z, z * SLOPE)
    return z


@triton.jit
def act_grad(z, ACT: tl.constexpr, SLOPE: tl.constexpr):
    """d act / dz at the pre-activation z, with torch's conventions at the kinks (relu: 0
    at 0; relu6: 0 at 0 and 6; hard_swish: z/3 + 1/2 inside (-3, 3), 0 at -3, 1 at 3)."""
    if ACT == ACT_RELU:
        d = tl.where(z > 0.0, 1.0, 0.0)
    elif ACT == ACT_SILU:
        sig = tl.sigmoid(z)
        d = sig * (1.0 + z * (1.0 - sig))
    elif ACT == ACT_RELU6:
        d = tl.where((z > 0.0) & (z < 6.0), 1.0, 0.0)
    elif ACT == ACT_GELU:
        d = 0.5 * (1.0 + tl.math.erf(z * SQRT_HALF)) + z * INV_SQRT_2PI * tl.exp(-0.5 * z * z)
    elif ACT == ACT_GELU_TANH:
        # constexprs on the right: constexpr * tensor does not make a tensor
        t = tanh((z + z * z * z * GELU_KAPPA) * SQRT_2_OVER_PI)
        d = 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + z * z * GELU_KAPPA * 3.0)
    elif ACT == ACT_HARD_SWISH:
        d = tl.where(z <= -3.0, 0.0, tl.where(z < 3.0, z / 3.0 + 0.5, 1.0))
    elif ACT == ACT_MISH:
        t = tanh(softplus(z))
        d = t + z * tl.sigmoid(z) * (1.0 - t * t)
    elif ACT == ACT_TANH:
        t = tanh(z)
        d = 1.0 - t * t
    elif ACT == ACT_SIGMOID:
        sig = tl.sigmoid(z)
        d = sig * (1.0 - sig)
    elif ACT == ACT_LEAKY_RELU:
        d = tl.where(z > 0.0, 1.0, SLOPE)  # the slope at 0, as torch
    else:
        d = tl.full(z.shape, 1.0, tl.float32)
    return d


@triton.jit
def gate_fwd(z, GATE: tl.constexpr):
    if GATE == GATE_SIGMOID:
        s = tl.sigmoid(z)
    elif GATE == GATE_TANH:
        s = tanh(z)
    else:
        s = relu6(z + 3.0) / 6.0
    return s


@triton.jit
def gate_grad(z, GATE: tl.constexpr):
    """d gate / dz at the gate input z (hard_sigmoid: 1/6 strictly inside (-3, 3))."""
    if GATE == GATE_SIGMOID:
        s = tl.sigmoid(z)
        d = s * (1.0 - s)
    elif GATE == GATE_TANH:
        t = tanh(z)
        d = 1.0 - t * t
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


@triton.jit
def channel_conv(row_ptr, taps_ptr, n_taps, C, cols, col_mask, DIRECTION: tl.constexpr,
                 CIRCULAR: tl.constexpr):
    """ECA's convolution across the channel axis at channels ``cols`` of the float32 vector
    at ``row_ptr``: ``sum_j taps[j] * v[c + DIRECTION * (j - pad)]``, zero or circular
    padding; DIRECTION +1 is the Conv1d, -1 its transpose (the gradient for v). Taps in
    ascending order (csrc/se_math.h channel_conv_at is the same sum)."""
    pad = (n_taps - 1) // 2
    total = tl.zeros(cols.shape, dtype=tl.float32)
    for j in range(0, n_taps):
        src = cols + DIRECTION * (j - pad)
        if CIRCULAR:
            src = ((src % C) + C) % C
            valid = col_mask
        else:
            valid = col_mask & (src >= 0) & (src < C)
        total += tl.load(taps_ptr + j) * tl.load(row_ptr + src, mask=valid, other=0.0)
    return total
