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
#include <type_traits>

#include "plan.h"
#include "vec_io.h"

namespace se_kernels::cpu {

// Inputs this short (FC2's R) are multiplied against 16-output tiles of the transposed
// weight: a dot product that short is mostly its horizontal sum.
constexpr int64_t kNarrowMaxIn = 64;
constexpr int64_t kTileOut = 16;     // outputs per tile (one 16x16 transpose wide)
constexpr int64_t kTileRows = 4;     // input rows per pass over a tile (accumulators)
// Rows per pass over a weight row in the wide FCs and their input gradients: four rows'
// sums fit AVX-512's 32 registers beside the loaded weights; AVX2 has 16.
constexpr int64_t kRowsPerPass = kLanes >= 16 ? 4 : 2;

// Calls fn(std::integral_constant<int64_t, n>{}) for a row count 1 <= n <= kRowsPerPass,
// so the passes keep their accumulators in registers.
template <typename Fn>
inline void with_row_count(int64_t n, Fn&& fn) {
  static_assert(kRowsPerPass == 2 || kRowsPerPass == 4);
  if (n == 1) fn(std::integral_constant<int64_t, 1>{});
  else if (n == 2) fn(std::integral_constant<int64_t, 2>{});
  if constexpr (kRowsPerPass == 4) {
    if (n == 3) fn(std::integral_constant<int64_t, 3>{});
    else if (n == 4) fn(std::integral_constant<int64_t, 4>{});
  }
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

// out[r0 + rr, j] = in[r0 + rr, :] . w (+ b) for rr < kRows: one pass over the weight
// row w for kRows input rows, so each weight vector is loaded once per kRows rows (a dot
// at a time loaded it once per row: two loads per FMA). Per output the sum runs over four
// accumulators of consecutive vectors, combined as (a0 + a1) + (a2 + a3): an order that
// the layer's sizes fix, whatever kRows.
template <int64_t kRows>
inline void wide_output_rows(float* out, const float* in, const float* w, float b, int64_t r0,
                             int64_t in_f, int64_t out_f, int64_t j) {
  fVec acc[kRows][4];
  for (auto& per_row : acc) for (auto& v : per_row) v = fVec(0.0f);
  for_vectors_x4(in_f, [&](int lane, int64_t i, int64_t n) {
    const fVec wv = load(w + i, n);
    for (int64_t rr = 0; rr < kRows; ++rr) {
      acc[rr][lane] = at::vec::fmadd(load(in + (r0 + rr) * in_f + i, n), wv, acc[rr][lane]);
    }
  });
  for (int64_t rr = 0; rr < kRows; ++rr) out[(r0 + rr) * out_f + j] = sum_lanes(combine4(acc[rr])) + b;
}

// Outputs [j0, j1) of `linear` for every row, in_f > kNarrowMaxIn: kRowsPerPass rows per
// pass over each weight row (L1-resident across the passes), then the last rows; the
// last pass's size is dispatched once, outside the loop over outputs.
inline void linear_wide_outputs(float* out, const float* in, const float* weight, const float* bias,
                                int64_t rows, int64_t in_f, int64_t out_f, int64_t j0, int64_t j1) {
  const int64_t full_rows = rows - rows % kRowsPerPass;
  auto each_output = [&](auto last_rows) {
    for (int64_t j = j0; j < j1; ++j) {
      const float* w = weight + j * in_f;
      const float b = bias ? bias[j] : 0.0f;
      for (int64_t r0 = 0; r0 < full_rows; r0 += kRowsPerPass) {
        wide_output_rows<kRowsPerPass>(out, in, w, b, r0, in_f, out_f, j);
      }
      if constexpr (decltype(last_rows)::value > 0) {
        wide_output_rows<decltype(last_rows)::value>(out, in, w, b, full_rows, in_f, out_f, j);
      }
    }
  };
  if (full_rows == rows) {
    each_output(std::integral_constant<int64_t, 0>{});
  } else {
    with_row_count(rows - full_rows, each_output);
  }
}

// out[r, j] = in[r, :] . weight[j, :] (+ bias[j]):  in [rows, in_f], weight [out_f, in_f].
inline void linear(float* out, const float* in, const float* weight, const float* bias,
                   int64_t rows, int64_t in_f, int64_t out_f) {
  if (in_f <= kNarrowMaxIn) {
    const int64_t tiles = (out_f + kTileOut - 1) / kTileOut;
    const int64_t grain = grain_for(rows * in_f * kTileOut, kParallelMacs);
    at::parallel_for(0, tiles, grain, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t j0 = t * kTileOut;
        linear_narrow_tile(out, in, weight, bias, rows, in_f, out_f, j0, std::min(kTileOut, out_f - j0));
      }
    });
    return;
  }
  const int64_t grain = grain_for(rows * in_f, kParallelMacs);
  at::parallel_for(0, out_f, grain, [&](int64_t j0, int64_t j1) {
    linear_wide_outputs(out, in, weight, bias, rows, in_f, out_f, j0, j1);
  });
}

// out[rr, 0:V*kLanes) for rr < kRows (rows of `linear_input_grad`): V vectors of sums
// per row in registers across the whole j loop, each weight vector loaded once for the
// kRows rows. The sum over j runs in order, whatever kRows. kFull: every vector is
// kLanes wide; otherwise V == 1 and it is `tail` wide. (A run-time width inside the j
// loop made gcc keep the sums on the stack; a call per block, with its aligned stack
// frame, made fc_grads at batch 1 22-30% slower: hence always inlined.)
template <int V, int64_t kRows, bool kFull>
C10_ALWAYS_INLINE void input_grad_block(float* out, const float* grad, const float* weight,
                                        int64_t in_f, int64_t out_f, int64_t tail) {
  static_assert(kFull || V == 1);
  const int64_t width = kFull ? kLanes : tail;
  fVec acc[kRows][V];
  for (auto& per_row : acc) for (auto& v : per_row) v = fVec(0.0f);
  for (int64_t j = 0; j < out_f; ++j) {
    const float* w_row = weight + j * in_f;
    fVec w[V];
    for (int q = 0; q < V; ++q) w[q] = load(w_row + q * kLanes, width);
    for (int64_t rr = 0; rr < kRows; ++rr) {
      const fVec g(grad[rr * out_f + j]);
      for (int q = 0; q < V; ++q) acc[rr][q] = at::vec::fmadd(w[q], g, acc[rr][q]);
    }
  }
  for (int64_t rr = 0; rr < kRows; ++rr) {
    for (int q = 0; q < V; ++q) store(out + rr * in_f + q * kLanes, acc[rr][q], width);
  }
}

// Rows [0, kRows) of `linear_input_grad` (out and grad point at the first): full blocks
// of four vectors, then the remaining full vectors, then a partial one.
template <int64_t kRows>
inline void input_grad_rows(float* out, const float* grad, const float* weight, int64_t in_f,
                            int64_t out_f) {
  int64_t i0 = 0;
  for (; i0 + 4 * kLanes <= in_f; i0 += 4 * kLanes) {
    input_grad_block<4, kRows, true>(out + i0, grad, weight + i0, in_f, out_f, kLanes);
  }
  switch ((in_f - i0) / kLanes) {
    case 3: input_grad_block<3, kRows, true>(out + i0, grad, weight + i0, in_f, out_f, kLanes); break;
    case 2: input_grad_block<2, kRows, true>(out + i0, grad, weight + i0, in_f, out_f, kLanes); break;
    case 1: input_grad_block<1, kRows, true>(out + i0, grad, weight + i0, in_f, out_f, kLanes); break;
    default: break;
  }
  i0 += (in_f - i0) / kLanes * kLanes;
  if (i0 < in_f) input_grad_block<1, kRows, false>(out + i0, grad, weight + i0, in_f, out_f, in_f - i0);
}

// out[r, :] = sum_j grad[r, j] * weight[j, :]: the input gradient of `linear`,
// accumulated over j in order, vectorised along the contiguous in_f, up to four vectors
// at a time, kRowsPerPass rows per pass over the weight.
inline void linear_input_grad(float* out, const float* grad, const float* weight, int64_t rows,
                              int64_t in_f, int64_t out_f) {
  const int64_t passes = (rows + kRowsPerPass - 1) / kRowsPerPass;
  const int64_t grain = grain_for(kRowsPerPass * out_f * in_f, kParallelMacs);
  at::parallel_for(0, passes, grain, [&](int64_t p0, int64_t p1) {
    for (int64_t r = p0 * kRowsPerPass; r < std::min(rows, p1 * kRowsPerPass); r += kRowsPerPass) {
      with_row_count(std::min(kRowsPerPass, rows - r), [&](auto n) {
        input_grad_rows<decltype(n)::value>(out + r * in_f, grad + r * out_f, weight, in_f, out_f);
      });
    }
  });
}

}  // namespace se_kernels::cpu
