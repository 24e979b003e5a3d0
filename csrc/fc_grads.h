// The fc_grads op (schema in csrc/se_ops.cpp) on every device: its input checks, and its
// maths as ATen ops. The CPU kernel (csrc/cpu/fc_grads.cpp) runs its own loops on float32.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <string_view>
#include <tuple>

namespace se_kernels {

using FcGrads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// An absent parameter's gradient: a fresh [0] tensor for each (op outputs may not alias).
inline at::Tensor absent_grad(const at::Tensor& pooled) { return pooled.new_empty({0}); }

struct FcGradsProblem {
  int64_t N, C, R1;  // R1: FC1 output width
  bool has_b1, has_fc2, has_b2;
};

// Throws a ValueError naming the argument unless: pooled [N, C], grad_fc1 and fc1_out
// [N, R1], grad_fc2 [N, C] (with w2) are contiguous, of one floating dtype, on one device;
// the parameters are on that device, floating, w1 [R1, C] or [R1, C, 1, 1], w2 [C, R1] or
// [C, R1, 1, 1], b1 [R1], b2 [C].
FcGradsProblem check_fc_grads(const at::Tensor& grad_fc1, const at::Tensor& grad_fc2,
                              const at::Tensor& pooled, const at::Tensor& fc1_out,
                              const at::Tensor& w1, const std::optional<at::Tensor>& b1,
                              const std::optional<at::Tensor>& w2,
                              const std::optional<at::Tensor>& b2);

// The gradients as ATen ops, value for value what se_kernels/fc_grads.py fc_grads_torch
// computes: the op's kernel on CUDA tensors, and on CPU tensors of a dtype other than float32.
FcGrads fc_grads_formula(const at::Tensor& grad_fc1, const at::Tensor& grad_fc2,
                         const at::Tensor& pooled, const at::Tensor& fc1_out, const at::Tensor& w1,
                         const std::optional<at::Tensor>& b1, const std::optional<at::Tensor>& w2,
                         const std::optional<at::Tensor>& b2, c10::string_view act);

}  // namespace se_kernels
