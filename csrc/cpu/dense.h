// The small per-sample FC maths of the CPU kernels (float32, fixed summation order).
#pragma once

#include <cstdint>

#include "vec_io.h"

namespace se_kernels::cpu {

// sum_i a[i] * b[i]
inline float dot(const float* a, const float* b, int64_t len) {
  fVec acc(0.0f);
  for_vectors(len, [&](int64_t i, int64_t n) { acc = at::vec::fmadd(load(a + i, n), load(b + i, n), acc); });
  return sum_lanes(acc);
}

// out[j] = sum_i alpha[i] * m[i * cols + j] for a row-major [rows, cols] matrix m,
// i.e. m^T alpha, accumulated row by row (vectorised along the contiguous rows).
inline void transposed_matvec(const float* m, const float* alpha, int64_t rows, int64_t cols,
                              float* out) {
  for (int64_t j = 0; j < cols; ++j) out[j] = 0.0f;
  for (int64_t i = 0; i < rows; ++i) {
    const fVec a(alpha[i]);
    const float* row = m + i * cols;
    for_vectors(cols, [&](int64_t j, int64_t n) {
      store(out + j, at::vec::fmadd(load(row + j, n), a, load(out + j, n)), n);
    });
  }
}

}  // namespace se_kernels::cpu
