// The backward op on the CUDA kernels: checks, plan, parameters, two launches. Included
// by both builds, like launch_forward.h. The weight and bias gradients are small GEMMs
// over the batch, done by the caller with the fc_grads op (csrc/fc_grads.cpp on the GPU).
#pragma once

#include "excite_backward.cuh"
#include "launch_forward.h"
#include "squeeze_backward.cuh"

namespace se_kernels::cuda {
inline namespace SE_CUDA_TARGET {

// The backward kernels' parameters from tensors (shared with launch_split.h).
struct SqueezeBackwardTensors {
  const at::Tensor &g, &x, &out;                      // out is x without the ReLU epilogue
  const at::Tensor &w2, &gate_in, &pooled_max;        // float32
  const at::Tensor &d_logit_part, &max_count, &dh_part;  // what it writes
};

template <typename T>
SqueezeBackwardParams<T> squeeze_backward_params(const SqueezeBackwardTensors& t,
                                                 const Geometry& geo, const Options& opts,
                                                 bool has_fc2) {
  return {
      .g = view<const T>(t.g, kernel_strides("grad_y", t.g), "grad_y"),
      .x = view<const T>(t.x, kernel_strides("x", t.x), "x"),
      .out = view<const T>(t.out, kernel_strides("out", t.out), opts.out_relu ? "out" : "x"),
      .w2 = global_ptr<const float>(t.w2, "w2"),
      .gate_in = global_ptr<const float>(t.gate_in, "gate_in"),
      .pooled_max = global_ptr<const float>(t.pooled_max, "pooled_max"),
      .d_logit_part = global_ptr<float>(t.d_logit_part, "d_logit_part"),
      .max_count = global_ptr<float>(t.max_count, "max_count"),
      .dh_part = global_ptr<float>(t.dh_part, "dh_part"),
      .geo = geo,
      .opts = opts,
      .has_fc2 = has_fc2,
  };
}

struct ExciteBackwardTensors {
  const at::Tensor &g, &x, &out, &dx, &d_residual;  // d_residual is dx when not written
  const at::Tensor &w1, &fc1_out, &gate_in, &pooled_max, &max_count, &dh_part, &d_logit_part;
  const at::Tensor &grad_fc1, &grad_fc2;  // what it writes besides dx
};

template <typename T>
ExciteBackwardParams<T> excite_backward_params(const ExciteBackwardTensors& t, const Geometry& geo,
                                               const Options& opts, bool has_fc2,
                                               bool write_d_residual, bool dp_given = false,
                                               ChannelConv conv = {}) {
  return {
      .g = view<const T>(t.g, kernel_strides("grad_y", t.g), "grad_y"),
      .x = view<const T>(t.x, kernel_strides("x", t.x), "x"),
      .out = view<const T>(t.out, kernel_strides("out", t.out), opts.out_relu ? "out" : "x"),
      .dx = view<T>(t.dx, kernel_strides("dx", t.dx), "dx"),
      .d_residual = view<T>(t.d_residual, kernel_strides("d_residual", t.d_residual),
                            write_d_residual ? "d_residual" : "dx"),
      .w1 = global_ptr<const float>(t.w1, "w1"),
      .fc1_out = global_ptr<const float>(t.fc1_out, "fc1_out"),
      .gate_in = global_ptr<const float>(t.gate_in, "gate_in"),
      .pooled_max = global_ptr<const float>(t.pooled_max, "pooled_max"),
      .max_count = global_ptr<const float>(t.max_count, "max_count"),
      .dh_part = global_ptr<const float>(t.dh_part, "dh_part"),
      .d_logit_part = global_ptr<const float>(t.d_logit_part, "d_logit_part"),
      .grad_fc1 = global_ptr<float>(t.grad_fc1, "grad_fc1"),
      .grad_fc2 = global_ptr<float>(t.grad_fc2, "grad_fc2"),
      .geo = geo,
      .opts = opts,
      .has_fc2 = has_fc2,
      .write_d_residual = write_d_residual,
      .dp_given = dp_given,
      .conv = conv,
  };
}

inline BackwardOutputs backward(const at::Tensor& grad_y, const at::Tensor& x,
                                const std::optional<at::Tensor>& out, const at::Tensor& w1,
                                const std::optional<at::Tensor>& w2,
                                const at::Tensor& pooled_max, const at::Tensor& fc1_out,
                                const at::Tensor& fc2_out, bool has_residual,
                                c10::string_view pool, c10::string_view act,
                                c10::string_view gate, double gain, c10::string_view out_act) {
  const Options opts = parse_options(pool, act, gate, gain, out_act);
  const Problem p = check_backward(grad_y, x, out, w1, w2, pooled_max, fc1_out, fc2_out, opts);
  const bool write_d_residual = has_residual && opts.out_relu;
  auto outputs = backward_outputs(x, p, write_d_residual);
  auto& [dx, d_residual, grad_fc1, grad_fc2] = outputs;
  if (p.N == 0) return outputs;

  const DeviceGuard guard(x.device());
  const at::Tensor& o = opts.out_relu ? *out : x;
  const at::Tensor& dr = write_d_residual ? d_residual : dx;
  const HWStrides xs = kernel_strides("x", x);
  const Plan plan = make_plan(p, xs, opts.pool == Pool::Avg, sm_count(x), {x, grad_y, o, dx, dr});
  const at::Tensor w1f = as_float(w1), w2f = as_float(w2);
  const at::Tensor d_logit_part = float_buffer(x, {p.N, plan.n_splits, p.C});
  const at::Tensor max_count = float_buffer(x, {opts.pool == Pool::AvgMax ? p.N : 0, p.C});
  const at::Tensor dh_part = float_buffer(x, {p.has_fc2 ? p.N : 0, plan.n_parts(), p.R1});
  const at::Tensor& gate_in = p.has_fc2 ? fc2_out : fc1_out;
  const Grid reduce_grid = plan.grid(p.N, plan.n_splits);
  const Grid stream_grid = plan.grid(p.N, plan.n_tiles);

  const SqueezeBackwardTensors st{grad_y, x,       o,        w2f, gate_in, pooled_max,
                                  d_logit_part, max_count, dh_part};
  const ExciteBackwardTensors et{grad_y,  x,          o,         dx,      dr,
                                 w1f,     fc1_out,    gate_in,   pooled_max, max_count,
                                 dh_part, d_logit_part, grad_fc1, grad_fc2};

  SE_DISPATCH_FLOAT_TYPES(x.scalar_type(), "se_kernels::backward", [&] {
    using T = scalar_t;
    const SqueezeBackwardParams<T> sp = squeeze_backward_params<T>(
        st, geometry(p, plan, plan.hw_per_split), opts, p.has_fc2);
    const ExciteBackwardParams<T> ep = excite_backward_params<T>(
        et, geometry(p, plan, plan.hw_per_tile), opts, p.has_fc2, write_d_residual);
    const Stream stream = current_stream();
    with_vector_width<T>(plan, [&](auto vec) {
      constexpr int VEC = decltype(vec)::value;
      launch_kernel(squeeze_backward_kernel<T, VEC>, "squeeze_backward_kernel", reduce_grid,
                    kThreads, stream, sp);
      launch_kernel(excite_backward_kernel<T, VEC>, "excite_backward_kernel", stream_grid,
                    kThreads, stream, ep);
    });
  });
  return outputs;
}

}  // namespace SE_CUDA_TARGET
}  // namespace se_kernels::cuda
