// Parameters of the four CUDA kernels, one struct each, passed by value. The launchers
// fill them with designated initialisers, so every field is set by name.
#pragma once

#include <cstdint>

#include "../se_options.h"
#include "common.cuh"

namespace se_kernels::cuda {
inline namespace SE_CUDA_TARGET {

// Where every CTA's tile lies, shared by the four kernels (see make_tile).
struct Geometry {
  int C, R1, block_c, n_splits;
  int64_t n_parts, HW;
  int64_t hw_per_piece;  // HW positions per split (reduction kernels) or tile (streaming)
  float inv_hw;
  bool channels_last;
};

__device__ __forceinline__ Tile make_tile(const Geometry& g) {
  return make_tile(g.block_c, g.C, g.hw_per_piece, g.HW);
}

// ECA's k-tap convolution across the channels (split ops without FC weights); taps null:
// none.
struct ChannelConv {
  gptr<const float> taps;  // [k]
  int k;
  bool circular;
};

template <typename T>
struct SqueezeParams {
  View<const T> x;
  gptr<const float> w1;     // [R1, C] fp32 contiguous
  gptr<float> pooled_part;  // out [N, n_splits, C]: this split's share of the pooled value
  gptr<float> pooled_max;   // out [N, C] (avgmax)
  gptr<float> fc1_part;     // out [N, n_parts, R1]
  Geometry geo;
  bool avgmax;
};

template <typename T>
struct ExciteParams {
  View<const T> x, residual;
  View<T> y;
  gptr<const float> fc1_part;     // [N, n_parts, R1]
  gptr<const float> pooled_part;  // [N, n_splits, C]
  gptr<const float> b1;           // [R1] or null; with conv.taps the convolution's one bias
  gptr<const float> w2;           // [C, R1] fp32 contiguous (two-FC)
  gptr<const float> b2;           // [C] or null
  gptr<float> pooled;             // out [N, C]
  gptr<float> fc1_out;            // out [N, R1]
  gptr<float> fc2_out;            // out [N, C] (two-FC)
  Geometry geo;
  Options opts;
  bool has_fc2, has_residual;
  ChannelConv conv;  // single-FC split op (ECA): logits = conv(the given vector)
};

template <typename T>
struct SqueezeBackwardParams {
  View<const T> g, x, out;
  gptr<const float> w2;          // [C, R1] fp32 contiguous (two-FC)
  gptr<const float> gate_in;     // [N, C] saved gate input
  gptr<const float> pooled_max;  // [N, C] (avgmax)
  gptr<float> d_logit_part;      // out [N, n_splits, C]
  gptr<float> max_count;         // out [N, C] (avgmax): positions equal to the max
  gptr<float> dh_part;           // out [N, n_parts, R1] (two-FC)
  Geometry geo;
  Options opts;
  bool has_fc2;
};

template <typename T>
struct ExciteBackwardParams {
  View<const T> g, x, out;
  View<T> dx, d_residual;
  gptr<const float> w1;            // [R1, C] fp32 contiguous
  gptr<const float> fc1_out;       // [N, R1] saved FC1 pre-activation
  gptr<const float> gate_in;       // [N, C] saved gate input
  gptr<const float> pooled_max;    // [N, C] (avgmax)
  gptr<const float> max_count;     // [N, C] (avgmax)
  gptr<const float> dh_part;       // [N, n_parts, R1] (two-FC); [N, C] dL/dpooled (dp_given)
  gptr<const float> d_logit_part;  // [N, n_splits, C]
  gptr<float> grad_fc1;            // out [N, R1]
  gptr<float> grad_fc2;            // out [N, C] (two-FC)
  Geometry geo;
  Options opts;
  bool has_fc2, write_d_residual;
  bool dp_given;     // split op without FC1 (ECA): dh_part holds dL/dpooled, no W1 to apply
  ChannelConv conv;  // with dp_given: dh_part holds dL/dlogits, dp is conv's transpose of it
};

}  // namespace SE_CUDA_TARGET
}  // namespace se_kernels::cuda
