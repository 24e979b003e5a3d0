// The CPU forward and backward ops (host side, built for the baseline ISA): checks, the
// kernels' layout, scratch and outputs, the plan, then one call into the CPU kernel
// library picked for this machine (dispatch.cpp).
#include <ATen/Parallel.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <array>
#include <limits>
#include <tuple>

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
  const bool has_residual = present(residual);
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
      .phase = Phase::All,
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
      .phase = Phase::All,
  });
  dx.finish();
  if (write_d_residual) d_res.finish();
  return outputs;
}

// The split ops (csrc/se_ops.cpp): one side of the same kernels, average pooling, two
// FCs. Their plan never runs a sample's three stages in one task (per_sample: a side
// stops or starts at the FC maths), which is the plan for "more threads than samples".
Plan split_plan(const Problem& p, bool cl, const at::Tensor& x) {
  return make_plan(p, cl, x.element_size(), true, std::numeric_limits<int64_t>::max());
}

std::tuple<at::Tensor, at::Tensor> split_squeeze_cpu(const at::Tensor& x_in,
                                                     const std::optional<at::Tensor>& w1) {
  const Problem p = check_split_squeeze(x_in, w1);
  at::Tensor pooled = float_buffer(x_in, {p.N, p.C}), fc1 = float_buffer(x_in, {p.N, p.R1});
  if (p.N == 0) return {pooled, fc1};
  const bool cl = choose_channels_last(x_in);
  const at::Tensor x = in_layout(x_in, cl), w1f = as_float(w1);
  const Plan plan = split_plan(p, cl, x);
  ScratchFloats scratch(x, {plan.n_splits * p.N * p.C});
  kernel_table().forward(ForwardArgs{
      .dtype = dtype_of(x), .x = x.data_ptr(), .w1 = data_or_null<const float>(w1f),
      .pooled_part = scratch[0], .pooled = pooled.data_ptr<float>(),
      .fc1_out = fc1.data_ptr<float>(), .problem = p,
      .options = split_options("identity", "sigmoid", 1.0, "identity"), .channels_last = cl,
      .plan = plan, .phase = Phase::Squeeze});
  return {pooled, fc1};
}

std::tuple<at::Tensor, at::Tensor> split_excite_cpu(
    const at::Tensor& x_in, const at::Tensor& pooled, const at::Tensor& z1,
    const std::optional<at::Tensor>& w2, const std::optional<at::Tensor>& b2,
    const std::optional<at::Tensor>& residual, c10::string_view act, c10::string_view gate,
    double gain, c10::string_view out_act, const std::optional<at::Tensor>& taps,
    const std::optional<at::Tensor>& taps_bias, bool circular) {
  const Options opts = split_options(act, gate, gain, out_act);
  const Problem p = check_split_excite(x_in, pooled, z1, w2, b2, residual, taps, taps_bias);
  const bool cl = choose_channels_last(x_in);
  const at::Tensor x = in_layout(x_in, cl);
  const bool has_residual = present(residual);
  const at::Tensor res = has_residual ? in_layout(*residual, cl) : at::Tensor();
  const at::Tensor z1f = as_float(z1), w2f = as_float(w2), b2f = as_float(b2),
                   taps_f = as_float(taps), bias_f = as_float(taps_bias);
  ScratchFloats scratch(x, {p.N * p.C, p.N * p.R1});  // scale, hidden
  // The kernel writes the logits with FC2 or taps; without either they are z1 itself (a
  // fresh tensor all the same: outputs never alias inputs).
  const bool writes_logits = p.has_fc2 || taps_f.defined();
  at::Tensor logits = writes_logits ? float_buffer(x_in, {p.N, p.C}) : z1f.clone();
  OutputInLayout y(at::empty_like(x_in), cl);
  if (p.N == 0) return {y.target, logits};
  kernel_table().forward(ForwardArgs{
      .dtype = dtype_of(x), .x = x.data_ptr(), .residual = data_or_null(res),
      .y = y.work.data_ptr(), .b1 = data_or_null<const float>(bias_f),
      .w2 = data_or_null<const float>(w2f), .b2 = data_or_null<const float>(b2f),
      .fc1_out = const_cast<float*>(z1f.data_ptr<float>()), .hidden = scratch[1],
      .fc2_out = writes_logits ? logits.data_ptr<float>() : nullptr, .scale = scratch[0],
      .problem = p, .options = opts, .channels_last = cl, .plan = split_plan(p, cl, x),
      .phase = Phase::Excite, .taps = data_or_null<const float>(taps_f),
      .n_taps = taps_f.defined() ? static_cast<int>(taps_f.numel()) : 0, .circular = circular});
  y.finish();
  return {y.target, logits};
}

std::tuple<at::Tensor, at::Tensor> split_squeeze_backward_cpu(
    const at::Tensor& grad_y, const at::Tensor& x_in, const std::optional<at::Tensor>& out,
    const std::optional<at::Tensor>& w2, const at::Tensor& logits, c10::string_view gate,
    double gain, c10::string_view out_act) {
  const Options opts = split_options("identity", gate, gain, out_act);
  const Problem p = check_split_squeeze_backward(grad_y, x_in, out, w2, logits, opts);
  at::Tensor grad_logits = float_buffer(x_in, {p.N, p.C});
  at::Tensor grad_h = float_buffer(x_in, {p.N, p.has_fc2 ? p.R1 : 0});
  if (p.N == 0) return {grad_logits, grad_h};
  const bool cl = choose_channels_last(x_in);
  const at::Tensor x = in_layout(x_in, cl), g = in_layout(grad_y, cl);
  const at::Tensor o = opts.out_relu ? in_layout(*out, cl) : at::Tensor();
  const at::Tensor w2f = as_float(w2), gate_in = as_float(logits);
  const Plan plan = split_plan(p, cl, x);
  ScratchFloats scratch(x, {plan.n_splits * p.N * p.C, p.N * p.C});  // d_part, scale
  // The kernel writes dL/d(gate input) to grad_fc2 with FC2, else to grad_fc1.
  float* const d_logit = grad_logits.data_ptr<float>();
  kernel_table().backward(BackwardArgs{
      .dtype = dtype_of(x), .g = g.data_ptr(), .x = x.data_ptr(), .out = data_or_null(o),
      .w2 = data_or_null<const float>(w2f), .gate_in = gate_in.data_ptr<float>(),
      .d_part = scratch[0], .grad_fc1 = p.has_fc2 ? grad_h.data_ptr<float>() : d_logit,
      .grad_fc2 = p.has_fc2 ? d_logit : nullptr, .scale = scratch[1], .problem = p,
      .options = opts, .channels_last = cl, .plan = plan, .phase = Phase::Squeeze});
  return {grad_logits, grad_h};
}

std::tuple<at::Tensor, at::Tensor> split_excite_backward_cpu(
    const at::Tensor& grad_y, const at::Tensor& x_in, const std::optional<at::Tensor>& out,
    const std::optional<at::Tensor>& w1, const at::Tensor& logits,
    const at::Tensor& grad_logits, const at::Tensor& grad_z1, bool has_residual,
    c10::string_view gate, double gain, c10::string_view out_act,
    const std::optional<at::Tensor>& taps, bool circular) {
  const Options opts = split_options("identity", gate, gain, out_act);
  const Problem p =
      check_split_excite_backward(grad_y, x_in, out, w1, logits, grad_logits, grad_z1, taps, opts);
  const bool write_d_residual = has_residual && opts.out_relu;
  if (p.N == 0) {
    auto empty = backward_outputs(x_in, p, write_d_residual);
    return {std::get<0>(empty), std::get<1>(empty)};
  }
  const bool cl = choose_channels_last(x_in);
  const at::Tensor x = in_layout(x_in, cl), g = in_layout(grad_y, cl);
  const at::Tensor o = opts.out_relu ? in_layout(*out, cl) : at::Tensor();
  const at::Tensor w1f = as_float(w1), gate_in = as_float(logits), dz1 = as_float(grad_z1),
                   taps_f = as_float(taps);
  // Before the outputs, as in every other op here (see ScratchFloats): allocated after
  // dx, it left dx on top of the heap, which glibc trimmed on free and the next call
  // page-faulted back in.
  ScratchFloats scratch(x, {p.N * p.C, p.N * p.C, p.N * p.C});  // scale, d_pooled, d_mean
  auto outputs = backward_outputs(x_in, p, write_d_residual);
  auto& [dx_out, d_residual_out, unused_fc1, unused_fc2] = outputs;
  OutputInLayout dx(dx_out, cl), d_res(d_residual_out, cl);
  kernel_table().backward(BackwardArgs{
      .dtype = dtype_of(x), .g = g.data_ptr(), .x = x.data_ptr(), .out = data_or_null(o),
      .dx = dx.work.data_ptr(), .d_residual = write_d_residual ? d_res.work.data_ptr() : nullptr,
      .w1 = data_or_null<const float>(w1f), .gate_in = gate_in.data_ptr<float>(),
      .grad_fc1 = const_cast<float*>(dz1.data_ptr<float>()), .d_pooled = scratch[1],
      .scale = scratch[0], .d_mean = scratch[2], .problem = p, .options = opts,
      .channels_last = cl, .plan = split_plan(p, cl, x), .phase = Phase::Excite,
      .taps = data_or_null<const float>(taps_f),
      .n_taps = taps_f.defined() ? static_cast<int>(taps_f.numel()) : 0, .circular = circular});
  dx.finish();
  if (write_d_residual) d_res.finish();
  return {dx_out, d_residual_out};
}

}  // namespace

TORCH_LIBRARY_IMPL(se_kernels, CPU, m) {
  m.impl("forward", &forward_cpu);
  m.impl("infer", &infer_cpu);
  m.impl("backward", &backward_cpu);
  m.impl("split_squeeze", &split_squeeze_cpu);
  m.impl("split_excite", &split_excite_cpu);
  m.impl("split_squeeze_backward", &split_squeeze_backward_cpu);
  m.impl("split_excite_backward", &split_excite_backward_cpu);
}

}  // namespace se_kernels::cpu
