// The FC layers of the CPU kernels: small row-major float32 GEMMs.
//
// Hand-written rather than ATen's mm: an SE layer's FCs are tiny (C x R per sample), so
// a library call's fixed cost (~10-20 us) would exceed the work; these loops have none,
// keep a fixed summation order (deterministic), and split the output features across
// threads when the batch makes the GEMM worth it (serial inside an outer parallel task).
// Every output's summation order depends on the layer's sizes only, never on the number
// of rows in a call, so the per-sample and the batched plans give the same bits.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

#include "vec_io.h"

namespace se_kernels::cpu {

// Below this a GEMM stays on one thread. Low: at batch 1 an FC is a cold read of its
// weights (1.8 MB in MobileNetV3's last layers), faster on both cores than on one.
constexpr int64_t kParallelMacs = 1 << 15;
// Inputs this short (FC2's R) are multiplied against 16-output tiles of the transposed
// weight: a dot product that short is mostly its horizontal sum.
constexpr int64_t kNarrowMaxIn = 64;
constexpr int64_t kTileOut = 16;     // outputs per tile (one 16x16 transpose wide)
constexpr int64_t kTileRows = 4;     // input rows per pass over a tile (accumulators)

// sum_i a[i] * b[i], with four independent accumulators (FMA latency, not a chain).
inline float dot(const float* a, const float* b, int64_t len) {
  fVec acc[4] = {fVec(0.0f), fVec(0.0f), fVec(0.0f), fVec(0.0f)};
  for_vectors_x4(len, [&](int lane, int64_t i, int64_t n) {
    acc[lane] = at::vec::fmadd(load(a + i, n), load(b + i, n), acc[lane]);
  });
  return sum_lanes(combine4(acc));
}

// out[r, j0:j0+width] for every row, in_f <= kNarrowMaxIn: the weight rows [j0, j0+width)
// transposed into an L1 tile, then per output a chain of FMAs over the inputs in order.
inline void linear_narrow_tile(float* out, const float* in, const float* weight, const float* bias,
                               int64_t rows, int64_t in_f, int64_t out_f, int64_t j0, int64_t width) {
  constexpr int64_t kVecs = kTileOut / kLanes;
  alignas(64) float tile[kNarrowMaxIn * kTileOut];  // tile[k * 16 + jj] = weight[j0 + jj, k]
  if (width < kTileOut) std::fill(tile, tile + in_f * kTileOut, 0.0f);  // lanes computed, not stored
  for (int64_t k0 = 0; k0 < in_f; k0 += kTileOut) {
    const float* src = weight + j0 * in_f + k0;
    float* dst = tile + k0 * kTileOut;
    const int64_t cols = std::min(kTileOut, in_f - k0);
    if (width == kTileOut && cols == kTileOut) {
      at::vec::transpose_mxn<float, kTileOut, kTileOut>(src, in_f, dst, kTileOut);
    } else {
      at::vec::transpose_mxn<float>(src, in_f, dst, kTileOut, static_cast<int>(width),
                                    static_cast<int>(cols));
    }
  }
  for (int64_t r0 = 0; r0 < rows; r0 += kTileRows) {
    const float* row_in[kTileRows];  // rows past the end repeat the last one, unstored
    for (int64_t rr = 0; rr < kTileRows; ++rr) row_in[rr] = in + std::min(r0 + rr, rows - 1) * in_f;
    fVec acc[kTileRows][kVecs];
    for (auto& per_row : acc) for (auto& v : per_row) v = fVec(0.0f);
    for (int64_t k = 0; k < in_f; ++k) {
      for (int64_t rr = 0; rr < kTileRows; ++rr) {
        const fVec a(row_in[rr][k]);
        for (int64_t q = 0; q < kVecs; ++q) {
          acc[rr][q] = at::vec::fmadd(a, fVec::loadu(tile + k * kTileOut + q * kLanes), acc[rr][q]);
        }
      }
    }
    for (int64_t rr = 0; rr < std::min(kTileRows, rows - r0); ++rr) {
      for (int64_t q = 0; q * kLanes < width; ++q) {
        const int64_t n = std::min(kLanes, width - q * kLanes), j = j0 + q * kLanes;
        const fVec b = bias ? load(bias + j, n) : fVec(0.0f);
        store(out + (r0 + rr) * out_f + j, acc[rr][q] + b, n);
      }
    }
  }
}

// out[r, j] = in[r, :] . weight[j, :] (+ bias[j]):  in [rows, in_f], weight [out_f, in_f].
inline void linear(float* out, const float* in, const float* weight, const float* bias,
                   int64_t rows, int64_t in_f, int64_t out_f) {
  if (in_f <= kNarrowMaxIn) {
    const int64_t tiles = (out_f + kTileOut - 1) / kTileOut;
    const int64_t grain = std::max<int64_t>(1, kParallelMacs / std::max<int64_t>(1, rows * in_f * kTileOut));
    at::parallel_for(0, tiles, grain, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t j0 = t * kTileOut;
        linear_narrow_tile(out, in, weight, bias, rows, in_f, out_f, j0, std::min(kTileOut, out_f - j0));
      }
    });
    return;
  }
  const int64_t grain = std::max<int64_t>(1, kParallelMacs / std::max<int64_t>(1, rows * in_f));
  at::parallel_for(0, out_f, grain, [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j) {
      const float* w = weight + j * in_f;  // stays in L1 across the rows
      for (int64_t r = 0; r < rows; ++r) {
        out[r * out_f + j] = dot(in + r * in_f, w, in_f) + (bias ? bias[j] : 0.0f);
      }
    }
  });
}

// out[i0:i0+V*kLanes) of one row of `linear_input_grad` (the last vector `tail` wide):
// V vectors of sums held in registers across the whole j loop.
template <int V>
inline void input_grad_block(float* out, const float* g_row, const float* weight, int64_t in_f,
                             int64_t out_f, int64_t tail) {
  fVec acc[V];
  for (auto& v : acc) v = fVec(0.0f);
  for (int64_t j = 0; j < out_f; ++j) {
    const fVec g(g_row[j]);
    const float* w = weight + j * in_f;
    for (int q = 0; q < V; ++q) acc[q] = at::vec::fmadd(load(w + q * kLanes, q == V - 1 ? tail : kLanes), g, acc[q]);
  }
  for (int q = 0; q < V; ++q) store(out + q * kLanes, acc[q], q == V - 1 ? tail : kLanes);
}

// out[r, :] = sum_j grad[r, j] * weight[j, :]: the input gradient of `linear`,
// accumulated over j in order, vectorised along the contiguous in_f, up to four vectors
// at a time.
inline void linear_input_grad(float* out, const float* grad, const float* weight, int64_t rows,
                              int64_t in_f, int64_t out_f) {
  const int64_t grain = std::max<int64_t>(1, kParallelMacs / std::max<int64_t>(1, out_f * in_f));
  at::parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t i0 = 0; i0 < in_f; i0 += 4 * kLanes) {
        const int64_t block = std::min(4 * kLanes, in_f - i0);
        const int64_t vecs = (block + kLanes - 1) / kLanes, tail = block - (vecs - 1) * kLanes;
        float* o = out + r * in_f + i0;
        const float *g_row = grad + r * out_f, *w = weight + i0;
        switch (vecs) {
          case 1: input_grad_block<1>(o, g_row, w, in_f, out_f, tail); break;
          case 2: input_grad_block<2>(o, g_row, w, in_f, out_f, tail); break;
          case 3: input_grad_block<3>(o, g_row, w, in_f, out_f, tail); break;
          default: input_grad_block<4>(o, g_row, w, in_f, out_f, tail); break;
        }
      }
    }
  });
}

}  // namespace se_kernels::cpu
