// Forward launch 1: grid (N, channel blocks, HW splits). Pools a slice of x and applies
// FC1 to it partially: FC1 is linear in the pooled vector, so each CTA writes
// W1[:, block] @ p[block] for its slice and the excite kernel adds the parts in a fixed
// order (no grid sync, no atomics). avgmax is never split (max is not linear).
#pragma once

#include "params.h"

namespace se_kernels::cuda {
inline namespace SE_CUDA_TARGET {

template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads, kMinCtasPerSm) squeeze_kernel(const SqueezeParams<T> p) {
  SE_SHARED(float, red, 2 * kThreads * VEC);
  SE_SHARED(float, pooled_s, kMaxBlockC);
  SE_SHARED(float, max_s, kMaxBlockC);
  const Tile t = make_tile(p.geo);
  const int64_t split = blockIdx.z, n_splits = gridDim.z;
  const int64_t part = static_cast<int64_t>(blockIdx.y) * n_splits + split;
  const int64_t n_parts = static_cast<int64_t>(gridDim.y) * n_splits;

  reduce_tile<VEC, /*AUX_MAX=*/true>(
      t, p.geo.channels_last, p.geo.block_c,
      [&](int cl, int64_t hw, float (&a)[VEC], float (&b)[VEC]) {
        load<VEC>(p.x.at(t.n, t.c0 + cl, hw), a);
#pragma unroll
        for (int i = 0; i < VEC; ++i) b[i] = a[i];
      },
      red, pooled_s, max_s);

  for (int cl = threadIdx.x; cl < t.nc; cl += kThreads) {
    const int64_t c = t.c0 + cl;
    float pooled = pooled_s[cl] * p.geo.inv_hw;
    if (p.avgmax) {  // never split: this CTA saw the whole HW range
      p.pooled_max[t.n * p.geo.C + c] = max_s[cl];
      pooled = 0.5f * pooled + 0.5f * max_s[cl];
    }
    pooled_s[cl] = pooled;
    p.pooled_part[(t.n * n_splits + split) * p.geo.C + c] = pooled;
  }
  __syncthreads();

  // Partial FC1 for this slice: one warp per output row, lanes across the block's channels.
  gptr<float> out = p.fc1_part + (t.n * n_parts + part) * p.geo.R1;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int r = warp; r < p.geo.R1; r += kWarps) {
    gptr<const float> w = p.w1 + (static_cast<int64_t>(r) * p.geo.C + t.c0);
    float acc = 0.0f;
    for (int cl = lane; cl < t.nc; cl += 32) acc += w[cl] * pooled_s[cl];
    acc = warp_sum(acc);
    if (lane == 0) out[r] = acc;
  }
}

}  // namespace SE_CUDA_TARGET
}  // namespace se_kernels::cuda
