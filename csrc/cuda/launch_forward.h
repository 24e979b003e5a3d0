// The forward op on the CUDA kernels: checks, plan, parameters, two launches. Included
// by both builds (csrc/cuda/ops.cu for GPUs, csrc/cuda_sim/ops.cpp for the emulator):
// the same host code drives the real and the emulated launches.
#pragma once

#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include "../se_dispatch.h"
#include "../se_host.h"
#include "device.h"
#include "excite.cuh"
#include "plan.h"
#include "squeeze.cuh"

namespace se_kernels::cuda {
inline namespace SE_CUDA_TARGET {

template <typename T>
View<T> view(const at::Tensor& t, const HWStrides& s, const char* name) {
  return {global_ptr<T>(t, name), s.n, s.c, s.hw};
}

// The tile geometry of one launch: HW cut into pieces of hw_per_piece (the plan's splits
// for the reduction kernels, its tiles for the streaming ones).
inline Geometry geometry(const Problem& p, const Plan& plan, int64_t hw_per_piece) {
  return {.C = static_cast<int>(p.C),
          .R1 = static_cast<int>(p.R1),
          .block_c = plan.block_c,
          .n_splits = plan.n_splits,
          .n_parts = plan.n_parts(),
          .HW = p.HW,
          .hw_per_piece = hw_per_piece,
          .inv_hw = 1.0f / static_cast<float>(p.HW),
          .channels_last = plan.channels_last};
}

// The forward kernels' parameters from tensors (shared with the split ops in
// launch_split.h, which feed the same kernels from other buffers).
template <typename T>
SqueezeParams<T> squeeze_params(const at::Tensor& x, const HWStrides& xs, const at::Tensor& w1f,
                                const at::Tensor& pooled_part, const at::Tensor& pooled_max,
                                const at::Tensor& fc1_part, const Geometry& geo, bool avgmax) {
  return {
      .x = view<const T>(x, xs, "x"),
      .w1 = global_ptr<const float>(w1f, "w1"),
      .pooled_part = global_ptr<float>(pooled_part, "pooled_part"),
      .pooled_max = global_ptr<float>(pooled_max, "pooled_max"),
      .fc1_part = global_ptr<float>(fc1_part, "fc1_part"),
      .geo = geo,
      .avgmax = avgmax,
  };
}

// What the excite kernel reads and writes, by role.
struct ExciteTensors {
  const at::Tensor &x, &residual, &y;            // residual is x when absent
  const at::Tensor &fc1_part, &pooled_part;      // [N, n_parts, R1], [N, n_splits, C]
  const at::Tensor &b1, &w2, &b2;                // float32, undefined when absent
  const at::Tensor &pooled, &fc1_out, &fc2_out;  // the small tensors it writes
};

// ECA's convolution for the streaming kernels: none when taps is undefined.
inline ChannelConv channel_conv(const at::Tensor& taps, bool circular) {
  return {global_ptr<const float>(taps, "taps"), taps.defined() ? static_cast<int>(taps.numel()) : 0,
          circular};
}

template <typename T>
ExciteParams<T> excite_params(const ExciteTensors& t, const Geometry& geo, const Options& opts,
                              bool has_fc2, bool has_residual, ChannelConv conv = {}) {
  return {
      .x = view<const T>(t.x, kernel_strides("x", t.x), "x"),
      .residual = view<const T>(t.residual, kernel_strides("residual", t.residual),
                                has_residual ? "residual" : "x"),
      .y = view<T>(t.y, kernel_strides("y", t.y), "y"),
      .fc1_part = global_ptr<const float>(t.fc1_part, "fc1_part"),
      .pooled_part = global_ptr<const float>(t.pooled_part, "pooled_part"),
      .b1 = global_ptr<const float>(t.b1, "b1"),
      .w2 = global_ptr<const float>(t.w2, "w2"),
      .b2 = global_ptr<const float>(t.b2, "b2"),
      .pooled = global_ptr<float>(t.pooled, "pooled"),
      .fc1_out = global_ptr<float>(t.fc1_out, "fc1_out"),
      .fc2_out = global_ptr<float>(t.fc2_out, "fc2_out"),
      .geo = geo,
      .opts = opts,
      .has_fc2 = has_fc2,
      .has_residual = has_residual,
      .conv = conv,
  };
}

// The forward, returning what backward needs (keep_saved) or only y, with the small
// tensors then carved from the one scratch allocation.
inline ForwardOutputs run_forward(const at::Tensor& x, const at::Tensor& w1,
                                  const std::optional<at::Tensor>& b1,
                                  const std::optional<at::Tensor>& w2,
                                  const std::optional<at::Tensor>& b2,
                                  const std::optional<at::Tensor>& residual,
                                  c10::string_view pool, c10::string_view act,
                                  c10::string_view gate, double gain, c10::string_view out_act,
                                  bool keep_saved) {
  const Options opts = parse_options(pool, act, gate, gain, out_act);
  const Problem p = check_forward(x, w1, b1, w2, b2, residual);
  if (p.N == 0) return forward_outputs(x, p, opts);

  const DeviceGuard guard(x.device());
  // y first (the plan checks its strides); for inference the small tensors come from the
  // scratch allocation below, whose size depends on the plan.
  ForwardOutputs outputs = keep_saved ? forward_outputs(x, p, opts)
                                      : ForwardOutputs(at::empty_like(x), {}, {}, {}, {});
  const at::Tensor y = std::get<0>(outputs);
  const bool has_residual = present(residual);
  const at::Tensor& res = has_residual ? *residual : x;
  const HWStrides xs = kernel_strides("x", x);
  const Plan plan = make_plan(p, xs, opts.pool == Pool::Avg, sm_count(x), {x, res, y});
  const at::Tensor w1f = as_float(w1), b1f = as_float(b1), w2f = as_float(w2), b2f = as_float(b2);
  // One scratch allocation: the partial sums, and the small tensors when not returned.
  const bool avgmax = opts.pool == Pool::AvgMax;
  const int64_t saved = keep_saved ? 0 : p.N;
  const std::vector<at::Tensor> scratch = float_buffers(
      x, {{p.N, plan.n_splits, p.C}, {p.N, plan.n_parts(), p.R1}, {saved, p.C},
          {avgmax ? saved : 0, p.C}, {saved, p.R1}, {p.has_fc2 ? saved : 0, p.C}});
  if (!keep_saved) outputs = ForwardOutputs(y, scratch[2], scratch[3], scratch[4], scratch[5]);
  const at::Tensor &pooled_part = scratch[0], &fc1_part = scratch[1];
  const auto& [y_out, pooled, pooled_max, fc1_out, fc2_out] = outputs;
  const Grid reduce_grid = plan.grid(p.N, plan.n_splits);
  const Grid stream_grid = plan.grid(p.N, plan.n_tiles);

  const ExciteTensors et{x, res, y_out, fc1_part, pooled_part, b1f, w2f, b2f, pooled, fc1_out,
                         fc2_out};

  SE_DISPATCH_FLOAT_TYPES(x.scalar_type(), "se_kernels::forward", [&] {
    using T = scalar_t;
    const SqueezeParams<T> sp = squeeze_params<T>(x, xs, w1f, pooled_part, pooled_max, fc1_part,
                                                  geometry(p, plan, plan.hw_per_split), avgmax);
    const ExciteParams<T> ep = excite_params<T>(et, geometry(p, plan, plan.hw_per_tile), opts,
                                                p.has_fc2, has_residual);
    const Stream stream = current_stream();
    with_vector_width<T>(plan, [&](auto vec) {
      constexpr int VEC = decltype(vec)::value;
      launch_kernel(squeeze_kernel<T, VEC>, "squeeze_kernel", reduce_grid, kThreads, stream, sp);
      launch_kernel(excite_kernel<T, VEC>, "excite_kernel", stream_grid, kThreads, stream, ep);
    });
  });
  return outputs;
}

inline ForwardOutputs forward(const at::Tensor& x, const at::Tensor& w1,
                              const std::optional<at::Tensor>& b1,
                              const std::optional<at::Tensor>& w2,
                              const std::optional<at::Tensor>& b2,
                              const std::optional<at::Tensor>& residual, c10::string_view pool,
                              c10::string_view act, c10::string_view gate, double gain,
                              c10::string_view out_act) {
  return run_forward(x, w1, b1, w2, b2, residual, pool, act, gate, gain, out_act, true);
}

inline at::Tensor infer(const at::Tensor& x, const at::Tensor& w1,
                        const std::optional<at::Tensor>& b1, const std::optional<at::Tensor>& w2,
                        const std::optional<at::Tensor>& b2,
                        const std::optional<at::Tensor>& residual, c10::string_view pool,
                        c10::string_view act, c10::string_view gate, double gain,
                        c10::string_view out_act) {
  return std::get<0>(
      run_forward(x, w1, b1, w2, b2, residual, pool, act, gate, gain, out_act, false));
}

}  // namespace SE_CUDA_TARGET
}  // namespace se_kernels::cuda
