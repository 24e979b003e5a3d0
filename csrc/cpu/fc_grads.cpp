// The fc_grads op on the CPU (schema in csrc/se_ops.cpp): the FC weights' and biases'
// gradients of an SE layer from the backward op's small float32 outputs, in one call
// (in a backward, every torch call costs twice what it does outside one: this replaces
// seven). Each gradient comes back shaped and typed like its parameter.
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <tuple>

#include "../se_host.h"
#include "abi.h"
#include "dispatch.h"
#include "layout.h"

namespace se_kernels::cpu {
namespace {

void check_small(const char* name, const at::Tensor& t, int64_t rows, int64_t cols) {
  TORCH_CHECK_VALUE(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.dim() == 2 &&
                        t.size(0) == rows && t.size(1) == cols && t.is_contiguous(),
                    "fc_grads: ", name, " must be a contiguous float32 CPU tensor of shape [", rows,
                    ", ", cols, "], got ", t.scalar_type(), " ", t.sizes(), " on ", t.device());
}

// A parameter: [rows] (a bias, cols 0), or [rows, cols] or [rows, cols, 1, 1] (a weight).
void check_param(const char* name, const at::Tensor& t, int64_t rows, int64_t cols,
                 const char* shape) {
  const bool bias = cols == 0;
  const bool ok = bias ? t.dim() == 1 && t.size(0) == rows
                       : (t.dim() == 2 || t.dim() == 4) && t.size(0) == rows &&
                             t.size(1) == cols && t.numel() == rows * cols;
  TORCH_CHECK_VALUE(t.device().is_cpu() && ok, "fc_grads: ", name, " must be a CPU tensor of shape ",
                    shape, ", got ", t.sizes(), " on ", t.device());
}

// A float32 buffer for a parameter's gradient (its own storage when the parameter is
// float32), and the gradient in the parameter's shape and dtype once it is filled.
struct GradLike {
  at::Tensor work;
  explicit GradLike(const at::Tensor& param)
      : work(at::empty(param.sizes(), param.options().dtype(at::kFloat))) {}
  at::Tensor finish(const at::Tensor& param) const {
    return param.scalar_type() == at::kFloat ? work : work.to(param.scalar_type());
  }
};

using FcGrads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

FcGrads fc_grads_cpu(const at::Tensor& grad_fc1, const at::Tensor& grad_fc2,
                     const at::Tensor& pooled, const at::Tensor& fc1_out, const at::Tensor& w1,
                     const std::optional<at::Tensor>& b1, const std::optional<at::Tensor>& w2,
                     const std::optional<at::Tensor>& b2, c10::string_view act) {
  const Options opts = parse_options("avg", act, "sigmoid", 1.0, "identity");
  TORCH_CHECK_VALUE(pooled.dim() == 2, "fc_grads: pooled must be [N, C], got ", pooled.sizes());
  const int64_t N = pooled.size(0), C = pooled.size(1);
  TORCH_CHECK_VALUE(w1.dim() >= 1, "fc_grads: w1 must be [R1, C] or [R1, C, 1, 1]");
  const int64_t R1 = w1.size(0);
  const bool has_fc2 = w2.has_value() && w2->defined();
  const bool has_b1 = b1.has_value() && b1->defined();
  const bool has_b2 = has_fc2 && b2.has_value() && b2->defined();
  check_small("pooled", pooled, N, C);
  check_small("grad_fc1", grad_fc1, N, R1);
  check_small("fc1_out", fc1_out, N, R1);
  check_param("w1", w1, R1, C, "[R1, C] or [R1, C, 1, 1]");
  if (has_b1) check_param("b1", *b1, R1, 0, "[R1]");
  if (has_fc2) {
    check_small("grad_fc2", grad_fc2, N, C);
    check_param("w2", *w2, C, R1, "[C, R1] or [C, R1, 1, 1]");
  }
  if (has_b2) check_param("b2", *b2, C, 0, "[C]");

  // An absent parameter's gradient: a fresh [0] tensor each (outputs may not alias).
  const auto none = [&] { return pooled.new_empty({0}); };
  const GradLike gw1(w1);
  const GradLike gb1(has_b1 ? *b1 : none()), gw2(has_fc2 ? *w2 : none()), gb2(has_b2 ? *b2 : none());
  // One scratch allocation: grad_fc1^T, grad_fc2^T, act(fc1_out).
  const int64_t fc2_rows = has_fc2 ? N : 0;
  ScratchFloats scratch(pooled, {R1 * N, C * fc2_rows, fc2_rows * R1});
  kernel_table().fc_grads(FcGradArgs{
      .grad_fc1 = grad_fc1.data_ptr<float>(),
      .grad_fc2 = has_fc2 ? grad_fc2.data_ptr<float>() : nullptr,
      .pooled = pooled.data_ptr<float>(),
      .fc1_out = fc1_out.data_ptr<float>(),
      .gw1 = gw1.work.data_ptr<float>(),
      .gb1 = has_b1 ? gb1.work.data_ptr<float>() : nullptr,
      .gw2 = has_fc2 ? gw2.work.data_ptr<float>() : nullptr,
      .gb2 = has_b2 ? gb2.work.data_ptr<float>() : nullptr,
      .grad_fc1_t = scratch[0],
      .grad_fc2_t = scratch[1],
      .hidden = scratch[2],
      .N = N,
      .C = C,
      .R1 = R1,
      .has_fc2 = has_fc2,
      .act = opts.act,
      .act_slope = opts.act_slope,
  });
  return {gw1.finish(w1), has_b1 ? gb1.finish(*b1) : gb1.work, has_fc2 ? gw2.finish(*w2) : gw2.work,
          has_b2 ? gb2.finish(*b2) : gb2.work};
}

}  // namespace

TORCH_LIBRARY_IMPL(se_kernels, CPU, m) { m.impl("fc_grads", &fc_grads_cpu); }

}  // namespace se_kernels::cpu
