// Fused SE backward on CUDA: two launches, no grid sync, no float atomics.
//   K1b squeeze_backward_kernel: grid (N, channel blocks, HW splits). Reduces
//       ds = gain * sum_hw g*x (ReLU-epilogue mask applied), d_logit = ds * gate'(logit)
//       (linear in ds, so HW partials are valid), and the partial dh = W2[block,:]^T d_logit.
//   K2b excite_backward_kernel: grid (N, channel blocks, HW tiles). Adds the partials in a
//       fixed order, dz1 = dh * act'(z1), dp = W1[:, block]^T dz1, and streams
//       dx = g*gain*s + dp/HW (+ the max share for avgmax).
// The weight and bias gradients are small GEMMs over the batch, done by the caller.
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
struct SqueezeBackwardParams {
  View<const T> g, x, out;
  const float* w2;          // [C, R1] fp32 contiguous (two-FC)
  const float* gate_in;     // [N, C] saved gate input
  const float* pooled_max;  // [N, C] (avgmax)
  float* d_logit_part;      // out [N, n_splits, C]
  float* max_count;         // out [N, C] (avgmax): positions equal to the max
  float* dh_part;           // out [N, n_parts, R1] (two-FC)
  int C, R1, block_c;
  int64_t HW, hw_per_split;
  Options opts;
  bool has_fc2, channels_last;
};

template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads) squeeze_backward_kernel(const SqueezeBackwardParams<T> p) {
  __shared__ float red[2 * kThreads * VEC];
  __shared__ float gx_s[kMaxBlockC], ties_s[kMaxBlockC], pmax_s[kMaxBlockC];
  const Tile t = make_tile(p.block_c, p.C, p.hw_per_split, p.HW);
  const int64_t split = blockIdx.z, n_splits = gridDim.z;
  const int64_t part = static_cast<int64_t>(blockIdx.y) * n_splits + split;
  const int64_t n_parts = static_cast<int64_t>(gridDim.y) * n_splits;
  const bool avgmax = p.opts.pool == Pool::AvgMax;
  for (int cl = threadIdx.x; cl < t.nc; cl += kThreads) {
    pmax_s[cl] = avgmax ? p.pooled_max[t.n * p.C + t.c0 + cl] : 0.0f;
  }
  __syncthreads();

  reduce_tile<VEC, /*AUX_MAX=*/false>(
      t, p.channels_last, p.block_c,
      [&](int cl, int64_t hw, float (&a)[VEC], float (&b)[VEC]) {
        const int64_t c = t.c0 + cl;
        float g[VEC], x[VEC];
        load_masked_grad<VEC>(p.g, p.out, p.opts.out_relu, t.n, c, hw, g);
        load<VEC>(p.x.at(t.n, c, hw), x);
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
          a[i] = g[i] * x[i];
          b[i] = (avgmax && x[i] == pmax_s[channel_of(cl, i, p.channels_last)]) ? 1.0f : 0.0f;
        }
      },
      red, gx_s, ties_s);

  for (int cl = threadIdx.x; cl < t.nc; cl += kThreads) {
    const int64_t c = t.c0 + cl;
    const float d_logit = gx_s[cl] * p.opts.gain * gate_grad(p.gate_in[t.n * p.C + c], p.opts.gate);
    gx_s[cl] = d_logit;
    p.d_logit_part[(t.n * n_splits + split) * p.C + c] = d_logit;
    if (avgmax) p.max_count[t.n * p.C + c] = ties_s[cl];  // never split
  }
  __syncthreads();

  if (p.has_fc2) {  // a thread per row of dh: reads of W2[c, r] coalesce across threads
    float* out = p.dh_part + (t.n * n_parts + part) * p.R1;
    for (int r = threadIdx.x; r < p.R1; r += kThreads) {
      float acc = 0.0f;
      for (int cl = 0; cl < t.nc; ++cl) acc += p.w2[static_cast<int64_t>(t.c0 + cl) * p.R1 + r] * gx_s[cl];
      out[r] = acc;
    }
  }
}

template <typename T>
struct ExciteBackwardParams {
  View<const T> g, x, out;
  View<T> dx, d_residual;
  const float* w1;            // [R1, C] fp32 contiguous
  const float* fc1_out;       // [N, R1] saved FC1 pre-activation
  const float* gate_in;       // [N, C] saved gate input
  const float* pooled_max;    // [N, C] (avgmax)
  const float* max_count;     // [N, C] (avgmax)
  const float* dh_part;       // [N, n_parts, R1] (two-FC)
  const float* d_logit_part;  // [N, n_splits, C]
  float* grad_fc1;            // out [N, R1]
  float* grad_fc2;            // out [N, C] (two-FC)
  int C, R1, block_c, n_splits;
  int64_t n_parts, HW, hw_per_tile;
  float inv_hw;
  Options opts;
  bool has_fc2, write_d_residual, channels_last;
};

template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads) excite_backward_kernel(const ExciteBackwardParams<T> p) {
  __shared__ float dz_s[kRChunk];
  __shared__ float scale_s[kMaxBlockC], d_mean_s[kMaxBlockC], d_max_s[kMaxBlockC],
      pmax_s[kMaxBlockC];
  const Tile t = make_tile(p.block_c, p.C, p.hw_per_tile, p.HW);
  const bool first_tile = blockIdx.z == 0;
  const bool avgmax = p.opts.pool == Pool::AvgMax;
  const float* d_logits = p.d_logit_part + t.n * p.n_splits * p.C;

  float dp = 0.0f;  // thread cl < nc accumulates dp for channel c0 + cl, rows in order
  for (int r0 = 0; r0 < p.R1; r0 += kRChunk) {
    const int rn = min(kRChunk, p.R1 - r0);
    for (int r = threadIdx.x; r < rn; r += kThreads) {
      float dz;
      if (p.has_fc2) {
        dz = sum_rows(p.dh_part + t.n * p.n_parts * p.R1, p.n_parts, p.R1, r0 + r) *
             act_grad(p.fc1_out[t.n * p.R1 + r0 + r], p.opts.act);
      } else {  // single-FC: dL/d(FC1 out) is the gate-input gradient itself (R1 == C)
        dz = sum_rows(d_logits, p.n_splits, p.C, r0 + r);
      }
      if (blockIdx.y == 0 && first_tile) p.grad_fc1[t.n * p.R1 + r0 + r] = dz;
      dz_s[r] = dz;
    }
    __syncthreads();
    if (threadIdx.x < t.nc) {
      const float* w = p.w1 + static_cast<int64_t>(r0) * p.C + t.c0 + threadIdx.x;
      for (int r = 0; r < rn; ++r) dp += w[static_cast<int64_t>(r) * p.C] * dz_s[r];
    }
    __syncthreads();
  }

  if (threadIdx.x < t.nc) {
    const int cl = threadIdx.x;
    const int64_t c = t.c0 + cl;
    if (p.has_fc2 && first_tile) p.grad_fc2[t.n * p.C + c] = sum_rows(d_logits, p.n_splits, p.C, c);
    scale_s[cl] = p.opts.gain * gate_forward(p.gate_in[t.n * p.C + c], p.opts.gate);
    if (avgmax) {  // ties share the max's gradient evenly, as torch.amax's backward
      d_mean_s[cl] = 0.5f * dp * p.inv_hw;
      d_max_s[cl] = 0.5f * dp / p.max_count[t.n * p.C + c];
      pmax_s[cl] = p.pooled_max[t.n * p.C + c];
    } else {
      d_mean_s[cl] = dp * p.inv_hw;
    }
  }
  __syncthreads();

  for_each_vector<VEC>(t, p.channels_last, [&](int cl, int64_t hw) {
    const int64_t c = t.c0 + cl;
    float g[VEC];
    load_masked_grad<VEC>(p.g, p.out, p.opts.out_relu, t.n, c, hw, g);
    if (p.write_d_residual) store<VEC>(p.d_residual.at(t.n, c, hw), g);
    float x[VEC];
    if (avgmax) load<VEC>(p.x.at(t.n, c, hw), x);
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      const int ch = channel_of(cl, i, p.channels_last);
      float d = g[i] * scale_s[ch] + d_mean_s[ch];
      if (avgmax && x[i] == pmax_s[ch]) d += d_max_s[ch];
      g[i] = d;
    }
    store<VEC>(p.dx.at(t.n, c, hw), g);
  });
}

template <typename T, int VEC>
void launch_backward(const dim3& reduce_grid, const dim3& stream_grid,
                     const SqueezeBackwardParams<T>& sp, const ExciteBackwardParams<T>& ep,
                     cudaStream_t stream) {
  squeeze_backward_kernel<T, VEC><<<reduce_grid, kThreads, 0, stream>>>(sp);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  excite_backward_kernel<T, VEC><<<stream_grid, kThreads, 0, stream>>>(ep);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

BackwardOutputs backward_cuda(const at::Tensor& grad_y, const at::Tensor& x,
                              const std::optional<at::Tensor>& out, const at::Tensor& w1,
                              const std::optional<at::Tensor>& w2, const at::Tensor& pooled_max,
                              const at::Tensor& fc1_out, const at::Tensor& fc2_out,
                              bool has_residual, c10::string_view pool, c10::string_view act,
                              c10::string_view gate, double gain, c10::string_view out_act) {
  const Options opts = parse_options(pool, act, gate, gain, out_act);
  const Problem p = check_backward(grad_y, x, out, w1, w2, pooled_max, fc1_out, fc2_out, opts);
  const bool write_d_residual = has_residual && opts.out_relu;
  auto outputs = backward_outputs(x, p, write_d_residual);
  auto& [dx, d_residual, grad_fc1, grad_fc2] = outputs;
  if (p.N == 0) return outputs;

  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor& o = opts.out_relu ? *out : x;
  const at::Tensor& dr = write_d_residual ? d_residual : dx;
  const HWStrides gs = kernel_strides("grad_y", grad_y), xs = kernel_strides("x", x),
                  os = kernel_strides("out", o), dxs = kernel_strides("dx", dx),
                  drs = kernel_strides("d_residual", dr);
  const Plan plan = make_plan(p, xs, opts.pool == Pool::Avg, {x, grad_y, o, dx, dr});
  const at::Tensor w1f = as_float(w1), w2f = as_float(w2);
  const at::Tensor d_logit_part = float_buffer(x, {p.N, plan.n_splits, p.C});
  const at::Tensor max_count = float_buffer(x, {opts.pool == Pool::AvgMax ? p.N : 0, p.C});
  const at::Tensor dh_part = float_buffer(x, {p.has_fc2 ? p.N : 0, plan.n_parts(), p.R1});
  const at::Tensor& gate_in = p.has_fc2 ? fc2_out : fc1_out;

  SE_DISPATCH_FLOAT_TYPES(x.scalar_type(), "se_kernels::backward", [&] {
    using T = scalar_t;
    const View<const T> gv{grad_y.data_ptr<T>(), gs.n, gs.c, gs.hw},
        xv{x.data_ptr<T>(), xs.n, xs.c, xs.hw}, ov{o.data_ptr<T>(), os.n, os.c, os.hw};
    const SqueezeBackwardParams<T> sp{gv, xv, ov, float_data_or_null(w2f),
                                      gate_in.data_ptr<float>(),
                                      pooled_max.data_ptr<float>(), d_logit_part.data_ptr<float>(),
                                      max_count.data_ptr<float>(), dh_part.data_ptr<float>(),
                                      static_cast<int>(p.C), static_cast<int>(p.R1), plan.block_c,
                                      p.HW, plan.hw_per_split, opts, p.has_fc2, plan.channels_last};
    const ExciteBackwardParams<T> ep{gv, xv, ov,
                                     {dx.data_ptr<T>(), dxs.n, dxs.c, dxs.hw},
                                     {dr.data_ptr<T>(), drs.n, drs.c, drs.hw},
                                     w1f.data_ptr<float>(), fc1_out.data_ptr<float>(),
                                     gate_in.data_ptr<float>(), pooled_max.data_ptr<float>(),
                                     max_count.data_ptr<float>(), dh_part.data_ptr<float>(),
                                     d_logit_part.data_ptr<float>(), grad_fc1.data_ptr<float>(),
                                     grad_fc2.data_ptr<float>(), static_cast<int>(p.C),
                                     static_cast<int>(p.R1), plan.block_c, plan.n_splits,
                                     plan.n_parts(), p.HW, plan.hw_per_tile,
                                     1.0f / static_cast<float>(p.HW), opts, p.has_fc2,
                                     write_d_residual, plan.channels_last};
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    const dim3 reduce_grid = plan.grid(p.N, plan.n_splits), stream_grid = plan.grid(p.N, plan.n_tiles);
    with_vector_width<T>(plan, [&](auto vec) {
      launch_backward<T, decltype(vec)::value>(reduce_grid, stream_grid, sp, ep, stream);
    });
  });
  return outputs;
}

}  // namespace

TORCH_LIBRARY_IMPL(se_kernels, CUDA, m) { m.impl("backward", &backward_cuda); }

}  // namespace se_kernels::cuda
