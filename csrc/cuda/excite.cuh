// Forward launch 2: grid (N, channel blocks, HW tiles). Adds the FC1 partials in a fixed
// order, finishes act -> FC2 -> gate for the block's own channels, and streams
// y = x * gain * gate (+ residual, ReLU) over its HW tile. CTAs of the first tile also
// write the small tensors saved for backward.
#pragma once

#include "params.h"

namespace se_kernels::cuda {
inline namespace SE_CUDA_TARGET {

template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads, kMinCtasPerSm) excite_kernel(const ExciteParams<T> p) {
  SE_SHARED(float, h_s, kRChunk);
  SE_SHARED(float, logit_s, kMaxBlockC);
  SE_SHARED(float, scale_s, kMaxBlockC);
  const Tile t = make_tile(p.geo);
  const bool first_tile = blockIdx.z == 0;
  gptr<const float> parts = p.fc1_part + t.n * p.geo.n_parts * p.geo.R1;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

  if (p.has_fc2) {
    for (int cl = threadIdx.x; cl < t.nc; cl += kThreads) logit_s[cl] = 0.0f;
    for (int r0 = 0; r0 < p.geo.R1; r0 += kRChunk) {
      const int rn = min(kRChunk, p.geo.R1 - r0);
      for (int r = threadIdx.x; r < rn; r += kThreads) {
        float z = sum_rows(parts, p.geo.n_parts, p.geo.R1, r0 + r);
        if (p.b1 != nullptr) z += p.b1[r0 + r];
        if (blockIdx.y == 0 && first_tile) p.fc1_out[t.n * p.geo.R1 + r0 + r] = z;
        h_s[r] = act_forward(z, p.opts.act, p.opts.act_slope);
      }
      __syncthreads();
      for (int cl = warp; cl < t.nc; cl += kWarps) {  // a warp per channel: fixed order
        gptr<const float> w = p.w2 + (static_cast<int64_t>(t.c0 + cl) * p.geo.R1 + r0);
        float acc = 0.0f;
        for (int r = lane; r < rn; r += 32) acc += w[r] * h_s[r];
        acc = warp_sum(acc);
        if (lane == 0) logit_s[cl] += acc;
      }
      __syncthreads();
    }
  } else {  // single-FC eSE: only this block's columns of FC1 are needed
    const bool conv = p.conv.taps != nullptr;  // ECA: the given vector's k-neighbourhood
    for (int cl = threadIdx.x; cl < t.nc; cl += kThreads) {
      const int64_t c = t.c0 + cl;
      float z = conv ? channel_conv_at(parts, p.conv.taps, p.conv.k, p.conv.circular, p.geo.C, c, 1)
                     : sum_rows(parts, p.geo.n_parts, p.geo.R1, c);
      if (p.b1 != nullptr) z += p.b1[conv ? 0 : c];
      if (first_tile) p.fc1_out[t.n * p.geo.R1 + c] = z;
      logit_s[cl] = z;
    }
    __syncthreads();
  }

  for (int cl = threadIdx.x; cl < t.nc; cl += kThreads) {
    const int64_t c = t.c0 + cl;
    float z = logit_s[cl];
    if (p.has_fc2) {
      if (p.b2 != nullptr) z += p.b2[c];
      if (first_tile) p.fc2_out[t.n * p.geo.C + c] = z;
    }
    scale_s[cl] = p.opts.gain * gate_forward(z, p.opts.gate);
    if (first_tile) {
      p.pooled[t.n * p.geo.C + c] = sum_rows(p.pooled_part + t.n * p.geo.n_splits * p.geo.C, p.geo.n_splits, p.geo.C, c);
    }
  }
  __syncthreads();

  for_each_vector<VEC>(t, p.geo.channels_last, [&](int cl, int64_t hw) {
    const int64_t c = t.c0 + cl;
    float v[VEC], r[VEC] = {};
    load<VEC>(p.x.at(t.n, c, hw), v);
    if (p.has_residual) load<VEC>(p.residual.at(t.n, c, hw), r);
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      float o = v[i] * scale_s[channel_of(cl, i, p.geo.channels_last)];
      if (p.has_residual) o += r[i];
      if (p.opts.out_relu) o = relu(o);
      v[i] = o;
    }
    store<VEC>(p.y.at(t.n, c, hw), v);
  });
}

}  // namespace SE_CUDA_TARGET
}  // namespace se_kernels::cuda
