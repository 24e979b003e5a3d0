// The split ops on the CUDA kernels (schemas in csrc/se_ops.cpp): the fused op cut at the
// bottleneck so that a batch-coupled step (a training-mode BatchNorm on [N, R]) runs
// between its launches, or without FC weights for ECA (its k-tap convolution inside the
// streaming kernels). Each op is one of the four kernels: the reduction ops return their
// partial sums added in a fixed order; the streaming ops read the given per-sample
// vectors as a single partial (n_parts = n_splits = 1). Average pooling. Included by
// both builds, like launch_forward.h.
#pragma once

#include <ATen/ops/empty_like.h>
#include <ATen/ops/sum.h>

#include "launch_backward.h"
#include "launch_forward.h"

namespace se_kernels::cuda {
inline namespace SE_CUDA_TARGET {

// The streaming kernels' geometry when the given vectors are the only partial.
inline Geometry single_part_geometry(const Problem& p, const Plan& plan) {
  Geometry geo = geometry(p, plan, plan.hw_per_tile);
  geo.n_splits = 1;
  geo.n_parts = 1;
  return geo;
}

// (pooled [N, C], fc1 = pooled @ W1^T [N, R1]), float32; FC1's bias is the caller's.
// Without w1: pooled, and fc1 [N, 0].
inline std::tuple<at::Tensor, at::Tensor> split_squeeze(const at::Tensor& x,
                                                        const std::optional<at::Tensor>& w1) {
  const Problem p = check_split_squeeze(x, w1);
  if (p.N == 0) return {float_buffer(x, {0, p.C}), float_buffer(x, {0, p.R1})};
  const DeviceGuard guard(x.device());
  const HWStrides xs = kernel_strides("x", x);
  const Plan plan = make_plan(p, xs, true, sm_count(x), {x});
  // Without w1 the kernel's FC1 has no rows; it still gets a (zero-size) weight array.
  const bool has_w1 = present(w1);
  const at::Tensor w1f = has_w1 ? as_float(w1) : float_buffer(x, {0, p.C});
  const std::vector<at::Tensor> scratch = float_buffers(
      x, {{p.N, plan.n_splits, p.C}, {p.N, plan.n_parts(), p.R1}, {0}});
  SE_DISPATCH_FLOAT_TYPES(x.scalar_type(), "se_kernels::split_squeeze", [&] {
    using T = scalar_t;
    const SqueezeParams<T> sp = squeeze_params<T>(x, xs, w1f, scratch[0], scratch[2], scratch[1],
                                                  geometry(p, plan, plan.hw_per_split), false);
    with_vector_width<T>(plan, [&](auto vec) {
      launch_kernel(squeeze_kernel<T, decltype(vec)::value>, "squeeze_kernel",
                    plan.grid(p.N, plan.n_splits), kThreads, current_stream(), sp);
    });
  });
  return {scratch[0].sum(1), scratch[1].sum(1)};
}

// (y, logits): y = out_act(x * gain * gate(logits) + residual), logits = W2 act(z1) + b2
// from a given z1 (without w2: logits = z1, or with taps ECA's convolution of z1 across
// the channels plus taps_bias).
inline std::tuple<at::Tensor, at::Tensor> split_excite(
    const at::Tensor& x, const at::Tensor& pooled, const at::Tensor& z1,
    const std::optional<at::Tensor>& w2,
    const std::optional<at::Tensor>& b2, const std::optional<at::Tensor>& residual,
    c10::string_view act, c10::string_view gate, double gain, c10::string_view out_act,
    const std::optional<at::Tensor>& taps, const std::optional<at::Tensor>& taps_bias,
    bool circular) {
  const Options opts = split_options(act, gate, gain, out_act);
  const Problem p = check_split_excite(x, pooled, z1, w2, b2, residual, taps, taps_bias);
  at::Tensor y = at::empty_like(x), logits = float_buffer(x, {p.N, p.C});
  if (p.N == 0) return {y, logits};
  const DeviceGuard guard(x.device());
  const bool has_residual = present(residual);
  const at::Tensor& res = has_residual ? *residual : x;
  const Plan plan = make_plan(p, kernel_strides("x", x), true, sm_count(x), {x, res, y});
  const at::Tensor pooled_f = as_float(pooled), z1_f = as_float(z1), w2f = as_float(w2),
                   b2f = as_float(b2), taps_f = as_float(taps), bias_f = as_float(taps_bias);
  // The copies of pooled and z1 it writes for backward are not needed: scratch (without
  // FC2 its "FC1 output" is the logits).
  const std::vector<at::Tensor> scratch =
      float_buffers(x, {{p.N, p.C}, {p.has_fc2 ? p.N : 0, p.R1}, {0}});
  const ExciteTensors et{x,          res,    y,          z1_f,
                         pooled_f,   bias_f, w2f,        b2f,
                         scratch[0], p.has_fc2 ? scratch[1] : logits,
                         p.has_fc2 ? logits : scratch[2]};
  SE_DISPATCH_FLOAT_TYPES(x.scalar_type(), "se_kernels::split_excite", [&] {
    using T = scalar_t;
    const ExciteParams<T> ep =
        excite_params<T>(et, single_part_geometry(p, plan), opts, p.has_fc2, has_residual,
                         channel_conv(taps_f, circular));
    with_vector_width<T>(plan, [&](auto vec) {
      launch_kernel(excite_kernel<T, decltype(vec)::value>, "excite_kernel",
                    plan.grid(p.N, plan.n_tiles), kThreads, current_stream(), ep);
    });
  });
  return {y, logits};
}

// (grad_logits = dL/d(gate input) [N, C], grad_h = grad_logits @ W2 [N, R1]), float32;
// without w2, grad_h is [N, 0].
inline std::tuple<at::Tensor, at::Tensor> split_squeeze_backward(
    const at::Tensor& grad_y, const at::Tensor& x, const std::optional<at::Tensor>& out,
    const std::optional<at::Tensor>& w2, const at::Tensor& logits, c10::string_view gate,
    double gain, c10::string_view out_act) {
  const Options opts = split_options("identity", gate, gain, out_act);
  const Problem p = check_split_squeeze_backward(grad_y, x, out, w2, logits, opts);
  const int64_t width_h = p.has_fc2 ? p.R1 : 0;
  if (p.N == 0) return {float_buffer(x, {0, p.C}), float_buffer(x, {0, width_h})};
  const DeviceGuard guard(x.device());
  const at::Tensor& o = opts.out_relu ? *out : x;
  const Plan plan = make_plan(p, kernel_strides("x", x), true, sm_count(x), {x, grad_y, o});
  const at::Tensor w2f = as_float(w2), gate_in = as_float(logits);
  const std::vector<at::Tensor> scratch = float_buffers(
      x, {{p.N, plan.n_splits, p.C}, {p.N, plan.n_parts(), width_h}, {0}});
  const SqueezeBackwardTensors st{grad_y, x, o, w2f, gate_in, scratch[2], scratch[0], scratch[2],
                                  scratch[1]};
  SE_DISPATCH_FLOAT_TYPES(x.scalar_type(), "se_kernels::split_squeeze_backward", [&] {
    using T = scalar_t;
    const SqueezeBackwardParams<T> sp =
        squeeze_backward_params<T>(st, geometry(p, plan, plan.hw_per_split), opts, p.has_fc2);
    with_vector_width<T>(plan, [&](auto vec) {
      launch_kernel(squeeze_backward_kernel<T, decltype(vec)::value>, "squeeze_backward_kernel",
                    plan.grid(p.N, plan.n_splits), kThreads, current_stream(), sp);
    });
  });
  return {scratch[0].sum(1), scratch[1].sum(1)};
}

// (dx, d_residual): dx = g * gain * gate(logits) + (grad_z1 @ W1) / HW (without w1:
// grad_z1 / HW, or with taps the convolution's transpose of grad_z1 / HW), g masked by
// the ReLU epilogue; d_residual is the masked g (written only with a residual and ReLU).
inline std::tuple<at::Tensor, at::Tensor> split_excite_backward(
    const at::Tensor& grad_y, const at::Tensor& x, const std::optional<at::Tensor>& out,
    const std::optional<at::Tensor>& w1, const at::Tensor& logits, const at::Tensor& grad_logits,
    const at::Tensor& grad_z1, bool has_residual, c10::string_view gate, double gain,
    c10::string_view out_act, const std::optional<at::Tensor>& taps, bool circular) {
  // act 'identity': grad_z1 is already dL/dz1, the kernel's act' is 1.
  const Options opts = split_options("identity", gate, gain, out_act);
  const Problem p =
      check_split_excite_backward(grad_y, x, out, w1, logits, grad_logits, grad_z1, taps, opts);
  const bool write_d_residual = has_residual && opts.out_relu;
  // grad_fc1 / grad_fc2 of the fused op's outputs are rewritten copies here: scratch.
  auto [dx, d_residual, grad_fc1_copy, grad_fc2_copy] = backward_outputs(x, p, write_d_residual);
  if (p.N == 0) return {dx, d_residual};
  const DeviceGuard guard(x.device());
  const at::Tensor& o = opts.out_relu ? *out : x;
  const at::Tensor& dr = write_d_residual ? d_residual : dx;
  const Plan plan =
      make_plan(p, kernel_strides("x", x), true, sm_count(x), {x, grad_y, o, dx, dr});
  const at::Tensor w1f = as_float(w1), gate_in = as_float(logits),
                   d_logit = as_float(grad_logits), dz1 = as_float(grad_z1),
                   taps_f = as_float(taps), none = float_buffer(x, {0});
  const ExciteBackwardTensors et{grad_y, x,    o,    dx,  dr,      w1f,           dz1,
                                 gate_in, none, none, dz1, d_logit, grad_fc1_copy, grad_fc2_copy};
  SE_DISPATCH_FLOAT_TYPES(x.scalar_type(), "se_kernels::split_excite_backward", [&] {
    using T = scalar_t;
    const ExciteBackwardParams<T> ep = excite_backward_params<T>(
        et, single_part_geometry(p, plan), opts, p.has_fc2, write_d_residual, !p.has_fc2,
        channel_conv(taps_f, circular));
    with_vector_width<T>(plan, [&](auto vec) {
      launch_kernel(excite_backward_kernel<T, decltype(vec)::value>, "excite_backward_kernel",
                    plan.grid(p.N, plan.n_tiles), kThreads, current_stream(), ep);
    });
  });
  return {dx, d_residual};
}

}  // namespace SE_CUDA_TARGET
}  // namespace se_kernels::cuda
