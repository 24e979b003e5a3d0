// The fc_grads op's checks and ATen formula (csrc/fc_grads.h), and its CUDA kernel: two
// tiny GEMMs over the batch and two sums, in C++ so that the C++ autograd node's backward
// (csrc/autograd/squeeze_excite.cpp) runs no Python on the GPU either.
#include "fc_grads.h"

#include <ATen/ops/gelu.h>
#include <ATen/ops/hardswish.h>
#include <ATen/ops/leaky_relu.h>
#include <ATen/ops/mish.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/relu.h>
#include <ATen/ops/relu6.h>
#include <ATen/ops/sigmoid.h>
#include <ATen/ops/silu.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/tanh.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include "se_host.h"

namespace se_kernels {
namespace {

void check_small(const char* name, const at::Tensor& t, const at::Tensor& pooled, int64_t rows,
                 int64_t cols) {
  TORCH_CHECK_VALUE(t.device() == pooled.device() && t.scalar_type() == pooled.scalar_type() &&
                        t.dim() == 2 && t.size(0) == rows && t.size(1) == cols &&
                        t.is_contiguous(),
                    "fc_grads: ", name, " must be a contiguous ", pooled.scalar_type(),
                    " tensor on ", pooled.device(), " (pooled's) of shape [", rows, ", ", cols,
                    "], got ", t.scalar_type(), " ", t.sizes(), " on ", t.device());
}

// A parameter: [rows] (a bias, cols 0), or [rows, cols] or [rows, cols, 1, 1] (a weight).
void check_param(const char* name, const at::Tensor& t, const at::Tensor& pooled, int64_t rows,
                 int64_t cols, const char* shape) {
  const bool bias = cols == 0;
  const bool ok = bias ? t.dim() == 1 && t.size(0) == rows
                       : (t.dim() == 2 || t.dim() == 4) && t.size(0) == rows &&
                             t.size(1) == cols && t.numel() == rows * cols;
  TORCH_CHECK_VALUE(t.device() == pooled.device() && at::isFloatingType(t.scalar_type()) && ok,
                    "fc_grads: ", name, " must be a floating tensor on ", pooled.device(),
                    " (pooled's) of shape ", shape, ", got ", t.scalar_type(), " ", t.sizes(),
                    " on ", t.device());
}

// The hidden activation as the torch function se_kernels/reference.py apply_act calls.
at::Tensor hidden(const at::Tensor& z, const Options& opts, c10::string_view act) {
  switch (opts.act) {
    case Act::Identity: return z;
    case Act::Relu: return at::relu(z);
    case Act::Silu: return at::silu(z);
    case Act::Relu6: return at::relu6(z);
    case Act::Gelu: return at::gelu(z, "none");
    case Act::GeluTanh: return at::gelu(z, "tanh");
    case Act::HardSwish: return at::hardswish(z);
    case Act::Mish: return at::mish(z);
    case Act::Tanh: return at::tanh(z);
    case Act::Sigmoid: return at::sigmoid(z);
    case Act::LeakyRelu: return at::leaky_relu(z, act_negative_slope(act));
  }
  TORCH_CHECK(false, "fc_grads: unhandled act '", act, "'");
}

// A gradient in its parameter's dtype and shape.
at::Tensor shaped(const at::Tensor& grad, const at::Tensor& param) {
  const at::Tensor g = grad.to(param.scalar_type());
  return g.dim() == param.dim() ? g : g.view(param.sizes());
}

}  // namespace

FcGradsProblem check_fc_grads(const at::Tensor& grad_fc1, const at::Tensor& grad_fc2,
                              const at::Tensor& pooled, const at::Tensor& fc1_out,
                              const at::Tensor& w1, const std::optional<at::Tensor>& b1,
                              const std::optional<at::Tensor>& w2,
                              const std::optional<at::Tensor>& b2) {
  TORCH_CHECK_VALUE(pooled.dim() == 2 && at::isFloatingType(pooled.scalar_type()),
                    "fc_grads: pooled must be a floating [N, C] tensor, got ",
                    pooled.scalar_type(), " ", pooled.sizes());
  TORCH_CHECK_VALUE(w1.dim() >= 1, "fc_grads: w1 must be [R1, C] or [R1, C, 1, 1], got ",
                    w1.sizes());
  const FcGradsProblem p{pooled.size(0), pooled.size(1), w1.size(0),
                         present(b1), present(w2), present(w2) && present(b2)};
  check_small("pooled", pooled, pooled, p.N, p.C);
  check_small("grad_fc1", grad_fc1, pooled, p.N, p.R1);
  check_small("fc1_out", fc1_out, pooled, p.N, p.R1);
  check_param("w1", w1, pooled, p.R1, p.C, "[R1, C] or [R1, C, 1, 1]");
  if (p.has_b1) check_param("b1", *b1, pooled, p.R1, 0, "[R1]");
  if (p.has_fc2) {
    check_small("grad_fc2", grad_fc2, pooled, p.N, p.C);
    check_param("w2", *w2, pooled, p.C, p.R1, "[C, R1] or [C, R1, 1, 1]");
  }
  if (p.has_b2) check_param("b2", *b2, pooled, p.C, 0, "[C]");
  return p;
}

FcGrads fc_grads_formula(const at::Tensor& grad_fc1, const at::Tensor& grad_fc2,
                         const at::Tensor& pooled, const at::Tensor& fc1_out, const at::Tensor& w1,
                         const std::optional<at::Tensor>& b1, const std::optional<at::Tensor>& w2,
                         const std::optional<at::Tensor>& b2, c10::string_view act) {
  const FcGradsProblem p = check_fc_grads(grad_fc1, grad_fc2, pooled, fc1_out, w1, b1, w2, b2);
  const Options opts = parse_options("avg", act, "sigmoid", 1.0, "identity");  // checks act
  const at::Tensor gw2 = p.has_fc2 ? shaped(at::mm(grad_fc2.t(), hidden(fc1_out, opts, act)), *w2)
                                    : absent_grad(pooled);
  return {shaped(at::mm(grad_fc1.t(), pooled), w1),
          p.has_b1 ? grad_fc1.sum(0).to(b1->scalar_type()) : absent_grad(pooled), gw2,
          p.has_b2 ? grad_fc2.sum(0).to(b2->scalar_type()) : absent_grad(pooled)};
}

TORCH_LIBRARY_IMPL(se_kernels, CUDA, m) { m.impl("fc_grads", &fc_grads_formula); }

}  // namespace se_kernels
