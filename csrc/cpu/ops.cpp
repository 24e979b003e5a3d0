// The CPU forward and backward ops (host side, built for the baseline ISA): checks, the
// kernels' layout, scratch and outputs, the plan, then one call into the CPU kernel
// library picked for this machine (dispatch.cpp).
#include <ATen/Parallel.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <array>

#include "../se_host.h"
#include "abi.h"
#include "dispatch.h"
#include "layout.h"
#include "plan.h"

namespace se_kernels::cpu {
namespace {

DType dtype_of(const at::Tensor& x) {
  switch (x.scalar_type()) {
    case at::kHalf: return DType::Half;
    case at::kBFloat16: return DType::BFloat16;
    default: return DType::Float;  // check_forward allows only these three
  }
}

template <typename T = void>
T* data_or_null(const at::Tensor& t) {
  return t.defined() ? static_cast<T*>(t.data_ptr()) : nullptr;
}

// The forward, returning what backward needs (keep_saved) or only y, with the small
// tensors then carved from the one scratch allocation.
ForwardOutputs run_forward(const at::Tensor& x_in, const at::Tensor& w1,
                           const std::optional<at::Tensor>& b1, const std::optional<at::Tensor>& w2,
                           const std::optional<at::Tensor>& b2,
                           const std::optional<at::Tensor>& residual, c10::string_view pool,
                           c10::string_view act, c10::string_view gate, double gain,
                           c10::string_view out_act, bool keep_saved) {
  const Options opts = parse_options(pool, act, gate, gain, out_act);
  const Problem p = check_forward(x_in, w1, b1, w2, b2, residual);
  if (p.N == 0) return forward_outputs(x_in, p, opts);
  const KernelTable& kernels = kernel_table();

  const bool cl = choose_channels_last(x_in);
  const at::Tensor x = in_layout(x_in, cl);
  const bool has_residual = residual.has_value() && residual->defined();
  const at::Tensor res = has_residual ? in_layout(*residual, cl) : at::Tensor();
  const Plan plan = make_plan(p, cl, x.element_size(), opts.pool == Pool::Avg,
                              at::get_num_threads());
  const at::Tensor w1f = as_float(w1), b1f = as_float(b1), w2f = as_float(w2), b2f = as_float(b2);
  // One scratch allocation, made before the outputs (see ScratchFloats), holding the
  // small tensors too when they are not returned.
  const bool avgmax = opts.pool == Pool::AvgMax;
  const int64_t nc = p.N * p.C, saved = keep_saved ? 0 : 1;
  enum { kPooledPart, kScale, kHidden, kPooled, kPooledMax, kFc1Out, kFc2Out };
  ScratchFloats scratch(x, {plan.n_splits * nc, nc, (p.has_fc2 ? p.N : 0) * p.R1, saved * nc,
                            (avgmax ? saved : 0) * nc, saved * p.N * p.R1,
                            (p.has_fc2 ? saved : 0) * nc});
  ForwardOutputs outputs;
  // pooled, pooled_max, fc1_out, fc2_out
  std::array<float*, 4> small{scratch[kPooled], scratch[kPooledMax], scratch[kFc1Out],
                              scratch[kFc2Out]};
  if (keep_saved) {
    outputs = forward_outputs(x_in, p, opts);
    const auto& [y_out, pooled, pooled_max, fc1_out, fc2_out] = outputs;
    small = {pooled.data_ptr<float>(), pooled_max.data_ptr<float>(), fc1_out.data_ptr<float>(),
             fc2_out.data_ptr<float>()};
  } else {
    std::get<0>(outputs) = at::empty_like(x_in);
  }
  OutputInLayout y(std::get<0>(outputs), cl);

  kernels.forward(ForwardArgs{
      .dtype = dtype_of(x),
      .x = x.data_ptr(),
      .residual = data_or_null(res),
      .y = y.work.data_ptr(),
      .w1 = data_or_null<const float>(w1f),
      .b1 = data_or_null<const float>(b1f),
      .w2 = data_or_null<const float>(w2f),
      .b2 = data_or_null<const float>(b2f),
      .pooled_part = scratch[kPooledPart],
      .pooled = small[0],
      .pooled_max = small[1],
      .fc1_out = small[2],
      .hidden = scratch[kHidden],
      .fc2_out = small[3],
      .scale = scratch[kScale],
      .problem = p,
      .options = opts,
      .channels_last = cl,
      .plan = plan,
  });
  y.finish();
  return outputs;
}

ForwardOutputs forward_cpu(const at::Tensor& x, const at::Tensor& w1,
                           const std::optional<at::Tensor>& b1, const std::optional<at::Tensor>& w2,
                           const std::optional<at::Tensor>& b2,
                           const std::optional<at::Tensor>& residual, c10::string_view pool,
                           c10::string_view act, c10::string_view gate, double gain,
                           c10::string_view out_act) {
  return run_forward(x, w1, b1, w2, b2, residual, pool, act, gate, gain, out_act, true);
}

at::Tensor infer_cpu(const at::Tensor& x, const at::Tensor& w1, const std::optional<at::Tensor>& b1,
                     const std::optional<at::Tensor>& w2, const std::optional<at::Tensor>& b2,
                     const std::optional<at::Tensor>& residual, c10::string_view pool,
                     c10::string_view act, c10::string_view gate, double gain,
                     c10::string_view out_act) {
  return std::get<0>(run_forward(x, w1, b1, w2, b2, residual, pool, act, gate, gain, out_act, false));
}

BackwardOutputs backward_cpu(const at::Tensor& grad_y, const at::Tensor& x_in,
                             const std::optional<at::Tensor>& out, const at::Tensor& w1,
                             const std::optional<at::Tensor>& w2, const at::Tensor& pooled_max,
                             const at::Tensor& fc1_out, const at::Tensor& fc2_out,
                             bool has_residual, c10::string_view pool, c10::string_view act,
                             c10::string_view gate, double gain, c10::string_view out_act) {
  const Options opts = parse_options(pool, act, gate, gain, out_act);
  const Problem p = check_backward(grad_y, x_in, out, w1, w2, pooled_max, fc1_out, fc2_out, opts);
  const bool write_d_residual = has_residual && opts.out_relu;
  if (p.N == 0) return backward_outputs(x_in, p, write_d_residual);
  const KernelTable& kernels = kernel_table();

  const bool cl = choose_channels_last(x_in);
  const at::Tensor x = in_layout(x_in, cl), g = in_layout(grad_y, cl);
  const at::Tensor o = opts.out_relu ? in_layout(*out, cl) : at::Tensor();
  const Plan plan = make_plan(p, cl, x.element_size(), opts.pool == Pool::Avg,
                              at::get_num_threads());
  const at::Tensor w1f = as_float(w1), w2f = as_float(w2);
  const int64_t nc = p.N * p.C;
  // One scratch allocation, made before the outputs (see ScratchFloats).
  enum { kDPart, kTies, kScale, kDMean, kDMax, kDPooled };
  ScratchFloats scratch(x, {plan.n_splits * nc, nc, nc, nc, nc, nc});
  auto outputs = backward_outputs(x_in, p, write_d_residual);
  auto& [dx_out, d_residual_out, grad_fc1, grad_fc2] = outputs;
  OutputInLayout dx(dx_out, cl), d_res(d_residual_out, cl);
  const at::Tensor& gate_in = p.has_fc2 ? fc2_out : fc1_out;

  kernels.backward(BackwardArgs{
      .dtype = dtype_of(x),
      .g = g.data_ptr(),
      .x = x.data_ptr(),
      .out = data_or_null(o),
      .dx = dx.work.data_ptr(),
      .d_residual = write_d_residual ? d_res.work.data_ptr() : nullptr,
      .w1 = data_or_null<const float>(w1f),
      .w2 = data_or_null<const float>(w2f),
      .fc1_out = fc1_out.data_ptr<float>(),
      .gate_in = gate_in.data_ptr<float>(),
      .pooled_max = pooled_max.data_ptr<float>(),
      .d_part = scratch[kDPart],
      .ties = scratch[kTies],
      .grad_fc1 = grad_fc1.data_ptr<float>(),
      .grad_fc2 = grad_fc2.data_ptr<float>(),
      .d_pooled = scratch[kDPooled],
      .scale = scratch[kScale],
      .d_mean = scratch[kDMean],
      .d_max = scratch[kDMax],
      .problem = p,
      .options = opts,
      .channels_last = cl,
      .plan = plan,
  });
  dx.finish();
  if (write_d_residual) d_res.finish();
  return outputs;
}

}  // namespace

TORCH_LIBRARY_IMPL(se_kernels, CPU, m) {
  m.impl("forward", &forward_cpu);
  m.impl("infer", &infer_cpu);
  m.impl("backward", &backward_cpu);
}

}  // namespace se_kernels::cpu
