// The fc_grads op on the CPU (schema in csrc/se_ops.cpp): the FC weights' and biases'
// gradients of an SE layer from the backward op's small float32 outputs, in one call
// (in a backward, every torch call costs twice what it does outside one: this replaces
// seven). Each gradient comes back shaped and typed like its parameter. Small tensors of
// another dtype (float64: the reference) take the ATen formula, csrc/fc_grads.cpp.
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <tuple>

#include "../fc_grads.h"
#include "../se_host.h"
#include "abi.h"
#include "dispatch.h"
#include "layout.h"

namespace se_kernels::cpu {
namespace {

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

FcGrads fc_grads_cpu(const at::Tensor& grad_fc1, const at::Tensor& grad_fc2,
                     const at::Tensor& pooled, const at::Tensor& fc1_out, const at::Tensor& w1,
                     const std::optional<at::Tensor>& b1, const std::optional<at::Tensor>& w2,
                     const std::optional<at::Tensor>& b2, c10::string_view act) {
  if (pooled.scalar_type() != at::kFloat) {  // float64, float16, bfloat16: as ATen ops
    return fc_grads_formula(grad_fc1, grad_fc2, pooled, fc1_out, w1, b1, w2, b2, act);
  }
  const Options opts = parse_options("avg", act, "sigmoid", 1.0, "identity");
  const auto [N, C, R1, has_b1, has_fc2, has_b2] =
      check_fc_grads(grad_fc1, grad_fc2, pooled, fc1_out, w1, b1, w2, b2);

  const GradLike gw1(w1);
  const GradLike gb1(has_b1 ? *b1 : absent_grad(pooled));
  const GradLike gw2(has_fc2 ? *w2 : absent_grad(pooled));
  const GradLike gb2(has_b2 ? *b2 : absent_grad(pooled));
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
