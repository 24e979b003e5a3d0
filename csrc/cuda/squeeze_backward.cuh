// Backward launch 1: grid (N, channel blocks, HW splits). Reduces ds = gain * sum_hw g*x
// (ReLU-epilogue mask applied), d_logit = ds * gate'(logit) (linear in ds, so HW
// partials are valid), and the partial dh = W2[block, :]^T d_logit.
#pragma once

#include "params.h"

namespace se_kernels::cuda {
inline namespace SE_CUDA_TARGET {

template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads, kMinCtasPerSm) squeeze_backward_kernel(const SqueezeBackwardParams<T> p) {
  SE_SHARED(float, red, 2 * kThreads * VEC);
  SE_SHARED(float, gx_s, kMaxBlockC);
  SE_SHARED(float, ties_s, kMaxBlockC);
  SE_SHARED(float, pmax_s, kMaxBlockC);
  const Tile t = make_tile(p.geo);
  const int64_t split = blockIdx.z, n_splits = gridDim.z;
  const int64_t part = static_cast<int64_t>(blockIdx.y) * n_splits + split;
  const int64_t n_parts = static_cast<int64_t>(gridDim.y) * n_splits;
  const bool avgmax = p.opts.pool == Pool::AvgMax;
  for (int cl = threadIdx.x; cl < t.nc; cl += kThreads) {
    pmax_s[cl] = avgmax ? static_cast<float>(p.pooled_max[t.n * p.geo.C + t.c0 + cl]) : 0.0f;
  }
  __syncthreads();

  reduce_tile<VEC, /*AUX_MAX=*/false>(
      t, p.geo.channels_last, p.geo.block_c,
      [&](int cl, int64_t hw, float (&a)[VEC], float (&b)[VEC]) {
        const int64_t c = t.c0 + cl;
        float g[VEC], x[VEC];
        load_masked_grad<VEC>(p.g, p.out, p.opts.out_relu, t.n, c, hw, g);
        load<VEC>(p.x.at(t.n, c, hw), x);
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
          a[i] = g[i] * x[i];
          b[i] = (avgmax && x[i] == pmax_s[channel_of(cl, i, p.geo.channels_last)]) ? 1.0f : 0.0f;
        }
      },
      red, gx_s, ties_s);

  for (int cl = threadIdx.x; cl < t.nc; cl += kThreads) {
    const int64_t c = t.c0 + cl;
    const float d_logit = gx_s[cl] * p.opts.gain * gate_grad(p.gate_in[t.n * p.geo.C + c], p.opts.gate);
    gx_s[cl] = d_logit;
    p.d_logit_part[(t.n * n_splits + split) * p.geo.C + c] = d_logit;
    if (avgmax) p.max_count[t.n * p.geo.C + c] = ties_s[cl];  // never split
  }
  __syncthreads();

  if (p.has_fc2) {  // a thread per row of dh: reads of W2[c, r] coalesce across threads
    gptr<float> out = p.dh_part + (t.n * n_parts + part) * p.geo.R1;
    for (int r = threadIdx.x; r < p.geo.R1; r += kThreads) {
      float acc = 0.0f;
      for (int cl = 0; cl < t.nc; ++cl) acc += p.w2[static_cast<int64_t>(t.c0 + cl) * p.geo.R1 + r] * gx_s[cl];
      out[r] = acc;
    }
  }
}

}  // namespace SE_CUDA_TARGET
}  // namespace se_kernels::cuda
