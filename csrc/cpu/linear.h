// The FC layers of the CPU kernels: small row-major float32 GEMMs.
//
// Hand-written rather than ATen's mm: an SE layer's FCs are tiny (C x R per sample), so
// a library call's fixed cost (~10-20 us) would exceed the work; these loops have none,
// keep a fixed summation order (deterministic), and split the output features across
// threads when the batch makes the GEMM worth it (serial inside an outer parallel task).
#pragma once

#include <ATen/Parallel.h>

#include <cstdint>

#include "vec_io.h"

namespace se_kernels::cpu {

constexpr int64_t kParallelMacs = 1 << 18;  // below this a GEMM stays on one thread

// sum_i a[i] * b[i], with four independent accumulators (FMA latency, not a chain).
inline float dot(const float* a, const float* b, int64_t len) {
  fVec acc[4] = {fVec(0.0f), fVec(0.0f), fVec(0.0f), fVec(0.0f)};
  for_vectors_x4(len, [&](int lane, int64_t i, int64_t n) {
    acc[lane] = at::vec::fmadd(load(a + i, n), load(b + i, n), acc[lane]);
  });
  return sum_lanes(combine4(acc));
}

// out[r, j] = in[r, :] . weight[j, :] (+ bias[j]):  in [rows, in_f], weight [out_f, in_f].
inline void linear(float* out, const float* in, const float* weight, const float* bias,
                   int64_t rows, int64_t in_f, int64_t out_f) {
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

// out[r, :] = sum_j grad[r, j] * weight[j, :]: the input gradient of `linear`,
// accumulated over j in order, vectorised along the contiguous in_f.
inline void linear_input_grad(float* out, const float* grad, const float* weight, int64_t rows,
                              int64_t in_f, int64_t out_f) {
  const int64_t grain = std::max<int64_t>(1, kParallelMacs / std::max<int64_t>(1, out_f * in_f));
  at::parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float* o = out + r * in_f;
      for (int64_t k = 0; k < in_f; ++k) o[k] = 0.0f;
      for (int64_t j = 0; j < out_f; ++j) {
        const fVec g(grad[r * out_f + j]);
        const float* w = weight + j * in_f;
        for_vectors(in_f, [&](int64_t i, int64_t n) {
          store(o + i, at::vec::fmadd(load(w + i, n), g, load(o + i, n)), n);
        });
      }
    }
  });
}

}  // namespace se_kernels::cpu
