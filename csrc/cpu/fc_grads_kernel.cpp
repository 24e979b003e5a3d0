// The FC weights' gradients of an SE layer, from the backward op's small outputs: two
// [N]-deep outer-product sums and two column sums. Hand-written (see linear.h): at these
// sizes ATen's mm costs more in fixed overhead and, on two threads, in splitting a K = N
// product than the arithmetic, and a fixed summation order keeps the result reproducible.
#include <algorithm>

#include "../se_math.h"
#include "abi.h"
#include "linear.h"

namespace se_kernels::cpu {
namespace {

// out[j, i] = in[i, j]: in [rows, cols].
void transpose(float* out, const float* in, int64_t rows, int64_t cols) {
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) out[j * rows + i] = in[i * cols + j];
  }
}

// out[j] = sum_i in[i, j], i in order.
void column_sums(float* out, const float* in, int64_t rows, int64_t cols) {
  for_vectors(cols, [&](int64_t j, int64_t n) {
    fVec acc(0.0f);
    for (int64_t i = 0; i < rows; ++i) acc = acc + load(in + i * cols + j, n);
    store(out + j, acc, n);
  });
}

}  // namespace

void fc_grads_kernel(const FcGradArgs& a) {
  // gw1[r, :] = sum_n grad_fc1[n, r] * pooled[n, :]: linear_input_grad of the transposed
  // gradient (rows r, summed over n in order).
  transpose(a.grad_fc1_t, a.grad_fc1, a.N, a.R1);
  linear_input_grad(a.gw1, a.grad_fc1_t, a.pooled, a.R1, a.C, a.N);
  if (a.gb1 != nullptr) column_sums(a.gb1, a.grad_fc1, a.N, a.R1);
  if (!a.has_fc2) return;
  for (int64_t i = 0; i < a.N * a.R1; ++i) a.hidden[i] = act_forward(a.fc1_out[i], a.act, a.act_slope);
  transpose(a.grad_fc2_t, a.grad_fc2, a.N, a.C);
  linear_input_grad(a.gw2, a.grad_fc2_t, a.hidden, a.C, a.R1, a.N);
  if (a.gb2 != nullptr) column_sums(a.gb2, a.grad_fc2, a.N, a.C);
}

}  // namespace se_kernels::cpu
