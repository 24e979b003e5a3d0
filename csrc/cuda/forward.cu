// Fused SE forward on CUDA: two launches, no grid sync, no float atomics.
//   K1 squeeze_kernel: grid (N, channel blocks, HW splits). Pools its slice of x and
//      writes the partial FC1 product W1[:, block] @ p[block] to fc1_part[n, part, :].
//   K2 excite_kernel: grid (N, channel blocks, HW tiles). Adds the partials in a fixed
//      order, finishes the gate for its channels and streams y = x * scale (+ epilogue).
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../se_host.h"
#include "common.cuh"
#include "../se_dispatch.h"
#include "plan.h"

namespace se_kernels::cuda {
namespace {

template <typename T>
struct SqueezeParams {
  View<const T> x;
  const float* w1;     // [R1, C] fp32 contiguous
  float* pooled_part;  // [N, n_splits, C]: this split's share of the pooled value
  float* pooled_max;   // [N, C] (avgmax)
  float* fc1_part;     // [N, n_parts, R1]
  int C, R1, block_c;
  int64_t HW, hw_per_split;
  float inv_hw;
  bool avgmax, channels_last;
};

template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads) squeeze_kernel(const SqueezeParams<T> p) {
  __shared__ float red[2 * kThreads * VEC];
  __shared__ float pooled_s[kMaxBlockC], max_s[kMaxBlockC];
  const Tile t = make_tile(p.block_c, p.C, p.hw_per_split, p.HW);
  const int64_t split = blockIdx.z, n_splits = gridDim.z;
  const int64_t part = static_cast<int64_t>(blockIdx.y) * n_splits + split;
  const int64_t n_parts = static_cast<int64_t>(gridDim.y) * n_splits;

  reduce_tile<VEC, /*AUX_MAX=*/true>(
      t, p.channels_last, p.block_c,
      [&](int cl, int64_t hw, float (&a)[VEC], float (&b)[VEC]) {
        load<VEC>(p.x.at(t.n, t.c0 + cl, hw), a);
#pragma unroll
        for (int i = 0; i < VEC; ++i) b[i] = a[i];
      },
      red, pooled_s, max_s);

  for (int cl = threadIdx.x; cl < t.nc; cl += kThreads) {
    const int64_t c = t.c0 + cl;
    float pooled = pooled_s[cl] * p.inv_hw;
    if (p.avgmax) {  // never split: this CTA saw the whole HW range
      p.pooled_max[t.n * p.C + c] = max_s[cl];
      pooled = 0.5f * pooled + 0.5f * max_s[cl];
    }
    pooled_s[cl] = pooled;
    p.pooled_part[(t.n * n_splits + split) * p.C + c] = pooled;
  }
  __syncthreads();

  // Partial FC1 for this slice: one warp per output row, lanes across the block's channels.
  float* out = p.fc1_part + (t.n * n_parts + part) * p.R1;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int r = warp; r < p.R1; r += kWarps) {
    const float* w = p.w1 + static_cast<int64_t>(r) * p.C + t.c0;
    float acc = 0.0f;
    for (int cl = lane; cl < t.nc; cl += 32) acc += w[cl] * pooled_s[cl];
    acc = warp_sum(acc);
    if (lane == 0) out[r] = acc;
  }
}

template <typename T>
struct ExciteParams {
  View<const T> x, residual;
  View<T> y;
  const float* fc1_part;     // [N, n_parts, R1]
  const float* pooled_part;  // [N, n_splits, C]
  const float* b1;           // [R1] or null
  const float* w2;           // [C, R1] fp32 contiguous (two-FC)
  const float* b2;           // [C] or null
  float* pooled;             // out [N, C]
  float* fc1_out;            // out [N, R1]
  float* fc2_out;            // out [N, C] (two-FC)
  int C, R1, block_c, n_splits;
  int64_t n_parts, HW, hw_per_tile;
  Options opts;
  bool has_fc2, has_residual, channels_last;
};

template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads) excite_kernel(const ExciteParams<T> p) {
  __shared__ float h_s[kRChunk];
  __shared__ float logit_s[kMaxBlockC], scale_s[kMaxBlockC];
  const Tile t = make_tile(p.block_c, p.C, p.hw_per_tile, p.HW);
  const bool first_tile = blockIdx.z == 0;
  const float* parts = p.fc1_part + t.n * p.n_parts * p.R1;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

  if (p.has_fc2) {
    for (int cl = threadIdx.x; cl < t.nc; cl += kThreads) logit_s[cl] = 0.0f;
    for (int r0 = 0; r0 < p.R1; r0 += kRChunk) {
      const int rn = min(kRChunk, p.R1 - r0);
      for (int r = threadIdx.x; r < rn; r += kThreads) {
        float z = sum_rows(parts, p.n_parts, p.R1, r0 + r);
        if (p.b1 != nullptr) z += p.b1[r0 + r];
        if (blockIdx.y == 0 && first_tile) p.fc1_out[t.n * p.R1 + r0 + r] = z;
        h_s[r] = act_forward(z, p.opts.act);
      }
      __syncthreads();
      for (int cl = warp; cl < t.nc; cl += kWarps) {  // a warp per channel: fixed order
        const float* w = p.w2 + static_cast<int64_t>(t.c0 + cl) * p.R1 + r0;
        float acc = 0.0f;
        for (int r = lane; r < rn; r += 32) acc += w[r] * h_s[r];
        acc = warp_sum(acc);
        if (lane == 0) logit_s[cl] += acc;
      }
      __syncthreads();
    }
  } else {  // single-FC eSE: only this block's columns of FC1 are needed
    for (int cl = threadIdx.x; cl < t.nc; cl += kThreads) {
      const int64_t c = t.c0 + cl;
      float z = sum_rows(parts, p.n_parts, p.R1, c);
      if (p.b1 != nullptr) z += p.b1[c];
      if (first_tile) p.fc1_out[t.n * p.R1 + c] = z;
      logit_s[cl] = z;
    }
    __syncthreads();
  }

  for (int cl = threadIdx.x; cl < t.nc; cl += kThreads) {
    const int64_t c = t.c0 + cl;
    float z = logit_s[cl];
    if (p.has_fc2) {
      if (p.b2 != nullptr) z += p.b2[c];
      if (first_tile) p.fc2_out[t.n * p.C + c] = z;
    }
    scale_s[cl] = p.opts.gain * gate_forward(z, p.opts.gate);
    if (first_tile) {
      p.pooled[t.n * p.C + c] = sum_rows(p.pooled_part + t.n * p.n_splits * p.C, p.n_splits, p.C, c);
    }
  }
  __syncthreads();

  for_each_vector<VEC>(t, p.channels_last, [&](int cl, int64_t hw) {
    const int64_t c = t.c0 + cl;
    float v[VEC], r[VEC];
    load<VEC>(p.x.at(t.n, c, hw), v);
    if (p.has_residual) load<VEC>(p.residual.at(t.n, c, hw), r);
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      float o = v[i] * scale_s[channel_of(cl, i, p.channels_last)];
      if (p.has_residual) o += r[i];
      if (p.opts.out_relu) o = relu(o);
      v[i] = o;
    }
    store<VEC>(p.y.at(t.n, c, hw), v);
  });
}

template <typename T, int VEC>
void launch_forward(const dim3& reduce_grid, const dim3& stream_grid,
                    const SqueezeParams<T>& sp, const ExciteParams<T>& ep, cudaStream_t stream) {
  squeeze_kernel<T, VEC><<<reduce_grid, kThreads, 0, stream>>>(sp);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  excite_kernel<T, VEC><<<stream_grid, kThreads, 0, stream>>>(ep);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

ForwardOutputs forward_cuda(const at::Tensor& x, const at::Tensor& w1,
                            const std::optional<at::Tensor>& b1, const std::optional<at::Tensor>& w2,
                            const std::optional<at::Tensor>& b2,
                            const std::optional<at::Tensor>& residual, c10::string_view pool,
                            c10::string_view act, c10::string_view gate, double gain,
                            c10::string_view out_act) {
  const Options opts = parse_options(pool, act, gate, gain, out_act);
  const Problem p = check_forward(x, w1, b1, w2, b2, residual);
  auto outputs = forward_outputs(x, p, opts);
  auto& [y, pooled, pooled_max, fc1_out, fc2_out] = outputs;
  if (p.N == 0) return outputs;

  const c10::cuda::CUDAGuard guard(x.device());
  const bool has_residual = residual.has_value() && residual->defined();
  const at::Tensor& res = has_residual ? *residual : x;
  const HWStrides xs = kernel_strides("x", x), rs = kernel_strides("residual", res),
                  ys = kernel_strides("y", y);
  const Plan plan = make_plan(p, xs, opts.pool == Pool::Avg, {x, res, y});
  const at::Tensor w1f = as_float(w1), b1f = as_float(b1), w2f = as_float(w2), b2f = as_float(b2);
  const at::Tensor pooled_part = float_buffer(x, {p.N, plan.n_splits, p.C});
  const at::Tensor fc1_part = float_buffer(x, {p.N, plan.n_parts(), p.R1});
  const dim3 reduce_grid = plan.grid(p.N, plan.n_splits);
  const dim3 stream_grid = plan.grid(p.N, plan.n_tiles);

  SE_DISPATCH_FLOAT_TYPES(x.scalar_type(), "se_kernels::forward", [&] {
    using T = scalar_t;
    const SqueezeParams<T> sp{{x.data_ptr<T>(), xs.n, xs.c, xs.hw}, w1f.data_ptr<float>(),
                              pooled_part.data_ptr<float>(), pooled_max.data_ptr<float>(),
                              fc1_part.data_ptr<float>(), static_cast<int>(p.C),
                              static_cast<int>(p.R1), plan.block_c, p.HW, plan.hw_per_split,
                              1.0f / static_cast<float>(p.HW), opts.pool == Pool::AvgMax,
                              plan.channels_last};
    const ExciteParams<T> ep{{x.data_ptr<T>(), xs.n, xs.c, xs.hw},
                             {res.data_ptr<T>(), rs.n, rs.c, rs.hw},
                             {y.data_ptr<T>(), ys.n, ys.c, ys.hw},
                             fc1_part.data_ptr<float>(), pooled_part.data_ptr<float>(),
                             float_data_or_null(b1f), float_data_or_null(w2f),
                             float_data_or_null(b2f), pooled.data_ptr<float>(),
                             fc1_out.data_ptr<float>(), fc2_out.data_ptr<float>(),
                             static_cast<int>(p.C), static_cast<int>(p.R1), plan.block_c,
                             plan.n_splits, plan.n_parts(), p.HW, plan.hw_per_tile, opts,
                             p.has_fc2, has_residual, plan.channels_last};
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    with_vector_width<T>(plan, [&](auto vec) {
      launch_forward<T, decltype(vec)::value>(reduce_grid, stream_grid, sp, ep, stream);
    });
  });
  return outputs;
}

}  // namespace

TORCH_LIBRARY_IMPL(se_kernels, CUDA, m) { m.impl("forward", &forward_cuda); }

}  // namespace se_kernels::cuda
