// Device-side building blocks shared by the four SE kernels: strided views, 128-bit
// vector I/O, warp reductions, and the two ways a CTA walks its tile (reduce / stream).
//
// A tile is (one sample) x (a block of <= kMaxBlockC channels) x (an HW range). Both
// layouts are handled by the same code: NCHW vectors run along HW (one channel),
// channels_last vectors run along C (VEC consecutive channels).
#pragma once

#include <cmath>
#include <cstdint>

#include "../se_math.h"
#include "device.h"
#include "limits.h"

namespace se_kernels::cuda {
inline namespace SE_CUDA_TARGET {

constexpr int kWarps = kThreads / 32;

// A 4-D tensor seen as [N, C, H*W] (H and W merged, checked on the host).
template <typename T>
struct View {
  gptr<T> ptr;
  int64_t sn, sc, shw;
  __device__ __forceinline__ gptr<T> at(int64_t n, int64_t c, int64_t hw) const {
    return ptr + (n * sn + c * sc + hw * shw);
  }
};

struct Tile {
  int64_t n;
  int c0, nc;  // first channel and channel count (nc <= block size)
  int64_t hw0, hw1;
};

__device__ __forceinline__ Tile make_tile(int block_c, int C, int64_t hw_per_piece, int64_t HW) {
  Tile t;
  t.n = blockIdx.x;
  t.c0 = blockIdx.y * block_c;
  t.nc = min(block_c, C - t.c0);
  t.hw0 = static_cast<int64_t>(blockIdx.z) * hw_per_piece;
  t.hw1 = min(t.hw0 + hw_per_piece, HW);
  return t;
}

// VEC consecutive elements as float; one 16-byte transaction when VEC > 1 (the host
// only picks VEC > 1 when every pointer and offset involved is 16-byte aligned).
template <int VEC, typename T>
__device__ __forceinline__ void load(gptr<const T> p, float (&out)[VEC]) {
  if constexpr (VEC == 1) {
    out[0] = static_cast<float>(p[0]);
  } else {
    const auto pk = load_packed<VEC>(p);
#pragma unroll
    for (int i = 0; i < VEC; ++i) out[i] = static_cast<float>(pk.v[i]);
  }
}

template <int VEC, typename T>
__device__ __forceinline__ void store(gptr<T> p, const float (&in)[VEC]) {
  if constexpr (VEC == 1) {
    p[0] = static_cast<T>(in[0]);
  } else {
    Packed<T, VEC> pk;
#pragma unroll
    for (int i = 0; i < VEC; ++i) pk.v[i] = static_cast<T>(in[i]);
    store_packed<VEC>(p, pk);
  }
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v = nan_max(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// dL/dy for VEC elements at (n, c, hw), zeroed where the ReLU epilogue's saved output
// is <= 0 (both backward kernels apply the same mask). A NaN output keeps its gradient,
// as torch's relu backward (threshold_backward) does.
template <int VEC, typename T>
__device__ __forceinline__ void load_masked_grad(const View<const T>& g, const View<const T>& out,
                                                 bool relu, int64_t n, int64_t c, int64_t hw,
                                                 float (&dst)[VEC]) {
  load<VEC>(g.at(n, c, hw), dst);
  if (relu) {
    float o[VEC];
    load<VEC>(out.at(n, c, hw), o);
#pragma unroll
    for (int i = 0; i < VEC; ++i) dst[i] = o[i] <= 0.0f ? 0.0f : dst[i];
  }
}

// Channel (within the block) of element i of the vector that starts at channel cl.
__device__ __forceinline__ int channel_of(int cl, int i, bool channels_last) {
  return channels_last ? cl + i : cl;
}

// Per-channel reduction of a tile, in a fixed order (bitwise reproducible).
// fn(cl, hw, a, b) fills two per-element values for the VEC elements at (cl, hw);
// sum_s[cl] receives sum(a), aux_s[cl] receives max(b) (AUX_MAX) or sum(b).
// red must hold 2 * kThreads * VEC floats. Ends with __syncthreads().
template <int VEC, bool AUX_MAX, typename Fn>
__device__ __forceinline__ void reduce_tile(const Tile& t, bool channels_last, int block_c, Fn&& fn,
                            sptr<float> red, sptr<float> sum_s, sptr<float> aux_s) {
  const float aux_init = AUX_MAX ? -INFINITY : 0.0f;
  auto combine = [](float acc, float v) { return AUX_MAX ? nan_max(acc, v) : acc + v; };
  float a[VEC], b[VEC];
  if (!channels_last) {  // a warp per channel, lanes stride along HW
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    for (int cl = warp; cl < t.nc; cl += kWarps) {
      float s = 0.0f, x = aux_init;
      for (int64_t hw = t.hw0 + lane * VEC; hw < t.hw1; hw += 32 * VEC) {
        fn(cl, hw, a, b);
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
          s += a[i];
          x = combine(x, b[i]);
        }
      }
      s = warp_sum(s);
      x = AUX_MAX ? warp_max(x) : warp_sum(x);
      if (lane == 0) {
        sum_s[cl] = s;
        aux_s[cl] = x;
      }
    }
  } else {  // threads across channel vectors, rows of threads stride along HW
    const int cols = block_c / VEC, rows = kThreads / cols;
    const int col = threadIdx.x % cols, row = threadIdx.x / cols, cl = col * VEC;
    float s[VEC], x[VEC];
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      s[i] = 0.0f;
      x[i] = aux_init;
    }
    if (cl < t.nc) {
      for (int64_t hw = t.hw0 + row; hw < t.hw1; hw += rows) {
        fn(cl, hw, a, b);
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
          s[i] += a[i];
          x[i] = combine(x[i], b[i]);
        }
      }
    }
    sptr<float> red_sum = red;
    sptr<float> red_aux = red + kThreads * VEC;
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      red_sum[row * block_c + cl + i] = s[i];
      red_aux[row * block_c + cl + i] = x[i];
    }
    __syncthreads();
    for (int c = threadIdx.x; c < t.nc; c += kThreads) {
      float total = 0.0f, other = aux_init;
      for (int r = 0; r < rows; ++r) {
        total += red_sum[r * block_c + c];
        other = combine(other, red_aux[r * block_c + c]);
      }
      sum_s[c] = total;
      aux_s[c] = other;
    }
  }
  __syncthreads();
}

// Calls fn(cl, hw) once for every VEC-wide vector of the tile, spreading all threads of
// the CTA over it (the host guarantees the vectorised extent divides by VEC).
template <int VEC, typename Fn>
__device__ __forceinline__ void for_each_vector(const Tile& t, bool channels_last, Fn&& fn) {
  const int64_t hw_len = t.hw1 - t.hw0;
  if (!channels_last) {
    const int64_t vcols = hw_len / VEC;
    const int64_t total = t.nc * vcols;
    for (int64_t i = threadIdx.x; i < total; i += kThreads) {
      const int64_t cl = i / vcols;
      fn(static_cast<int>(cl), t.hw0 + (i - cl * vcols) * VEC);
    }
  } else {
    const int vcols = t.nc / VEC;
    const int64_t total = hw_len * vcols;
    for (int64_t i = threadIdx.x; i < total; i += kThreads) {
      const int64_t row = i / vcols;
      fn(static_cast<int>(i - row * vcols) * VEC, t.hw0 + row);
    }
  }
}

// sum over rows [0, n_rows) of buf[row * row_stride + col], in row order.
__device__ __forceinline__ float sum_rows(gptr<const float> buf, int64_t n_rows, int64_t row_stride,
                                          int64_t col) {
  float total = 0.0f;
  for (int64_t r = 0; r < n_rows; ++r) total += buf[r * row_stride + col];
  return total;
}

}  // namespace SE_CUDA_TARGET
}  // namespace se_kernels::cuda
