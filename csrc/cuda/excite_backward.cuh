// Backward launch 2: grid (N, channel blocks, HW tiles). Adds the dh partials in a fixed
// order, dz1 = dh * act'(z1), dp = W1[:, block]^T dz1, and streams
// dx = g*gain*s + dp/HW (+ the max share for avgmax) and the masked residual gradient.
// CTAs of the first tile also write dL/d(FC1 out) and dL/d(FC2 out) for the weight GEMMs.
#pragma once

#include "params.h"

namespace se_kernels::cuda {
inline namespace SE_CUDA_TARGET {

template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads, kMinCtasPerSm) excite_backward_kernel(const ExciteBackwardParams<T> p) {
  SE_SHARED(float, dz_s, kRChunk);
  SE_SHARED(float, scale_s, kMaxBlockC);
  SE_SHARED(float, d_mean_s, kMaxBlockC);
  SE_SHARED(float, d_max_s, kMaxBlockC);
  SE_SHARED(float, pmax_s, kMaxBlockC);
  const Tile t = make_tile(p.geo);
  const bool first_tile = blockIdx.z == 0;
  const bool avgmax = p.opts.pool == Pool::AvgMax;
  const int tid = threadIdx.x;
  gptr<const float> d_logits = p.d_logit_part + t.n * p.geo.n_splits * p.geo.C;

  float dp = 0.0f;  // thread cl < nc accumulates dp for channel c0 + cl, rows in order
  if (p.dp_given && tid < t.nc) {  // ECA: the transpose of the convolution, from neighbours
    gptr<const float> row = p.dh_part + t.n * p.geo.C;
    dp = p.conv.taps != nullptr ? channel_conv_at(row, p.conv.taps, p.conv.k, p.conv.circular,
                                                  p.geo.C, t.c0 + tid, -1)
                                : row[t.c0 + tid];
  }
  for (int r0 = 0; r0 < (p.dp_given ? 0 : p.geo.R1); r0 += kRChunk) {
    const int rn = min(kRChunk, p.geo.R1 - r0);
    for (int r = tid; r < rn; r += kThreads) {
      float dz;
      if (p.has_fc2) {
        dz = sum_rows(p.dh_part + t.n * p.geo.n_parts * p.geo.R1, p.geo.n_parts, p.geo.R1, r0 + r) *
             act_grad(p.fc1_out[t.n * p.geo.R1 + r0 + r], p.opts.act, p.opts.act_slope);
      } else {  // single-FC: dL/d(FC1 out) is the gate-input gradient itself (R1 == C)
        dz = sum_rows(d_logits, p.geo.n_splits, p.geo.C, r0 + r);
      }
      if (blockIdx.y == 0 && first_tile) p.grad_fc1[t.n * p.geo.R1 + r0 + r] = dz;
      dz_s[r] = dz;
    }
    __syncthreads();
    if (tid < t.nc) {
      gptr<const float> w = p.w1 + (static_cast<int64_t>(r0) * p.geo.C + t.c0 + tid);
      for (int r = 0; r < rn; ++r) dp += w[static_cast<int64_t>(r) * p.geo.C] * dz_s[r];
    }
    __syncthreads();
  }

  if (tid < t.nc) {
    const int cl = tid;
    const int64_t c = t.c0 + cl;
    if (p.has_fc2 && first_tile) p.grad_fc2[t.n * p.geo.C + c] = sum_rows(d_logits, p.geo.n_splits, p.geo.C, c);
    scale_s[cl] = p.opts.gain * gate_forward(p.gate_in[t.n * p.geo.C + c], p.opts.gate);
    if (avgmax) {  // ties share the max's gradient evenly, as torch.amax's backward
      d_mean_s[cl] = 0.5f * dp * p.geo.inv_hw;
      d_max_s[cl] = 0.5f * dp / p.max_count[t.n * p.geo.C + c];
      pmax_s[cl] = p.pooled_max[t.n * p.geo.C + c];
    } else {
      d_mean_s[cl] = dp * p.geo.inv_hw;
    }
  }
  __syncthreads();

  for_each_vector<VEC>(t, p.geo.channels_last, [&](int cl, int64_t hw) {
    const int64_t c = t.c0 + cl;
    float g[VEC];
    load_masked_grad<VEC>(p.g, p.out, p.opts.out_relu, t.n, c, hw, g);
    if (p.write_d_residual) store<VEC>(p.d_residual.at(t.n, c, hw), g);
    float x[VEC] = {};
    if (avgmax) load<VEC>(p.x.at(t.n, c, hw), x);
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      const int ch = channel_of(cl, i, p.geo.channels_last);
      float d = g[i] * scale_s[ch] + d_mean_s[ch];
      if (avgmax && x[i] == pmax_s[ch]) d += d_max_s[ch];
      g[i] = d;
    }
    store<VEC>(p.dx.at(t.n, c, hw), g);
  });
}

}  // namespace SE_CUDA_TARGET
}  // namespace se_kernels::cuda
