// How a CUDA launch cuts the problem: channel blocks, HW splits, vector width.
//
// Host code only (no CUDA headers): the CUDA launchers, the cuda_sim build and the
// plan binding that tests and scripts/static_gpu_check.py read all call this one
// make_plan, so the emulator and the checks see exactly the launches a GPU gets.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "../se_host.h"

namespace se_kernels::cuda {

// A launch grid (converted to dim3 by the CUDA launcher).
struct Grid {
  unsigned x, y, z;
};

struct Plan {
  int vec;             // elements per 128-bit access (1: scalar path)
  bool channels_last;  // C is the contiguous dimension of x
  int block_c;         // channels per CTA (<= kMaxBlockC)
  int n_cblocks;
  int n_splits;        // reduction kernels: HW ranges per (sample, channel block)
  int64_t hw_per_split;
  int n_tiles;         // streaming kernels: HW tiles per (sample, channel block)
  int64_t hw_per_tile;
  int64_t n_parts() const { return static_cast<int64_t>(n_cblocks) * n_splits; }
  // (sample, channel block, HW piece): N rides on x, the only axis allowed past 65535.
  Grid grid(int64_t N, int pieces) const {
    return {static_cast<unsigned>(N), static_cast<unsigned>(n_cblocks),
            static_cast<unsigned>(pieces)};
  }
};

// Calls f(std::integral_constant<int, VEC>{}) with the plan's vector width for element
// type T: 16 bytes per access, or 1 element (the scalar path).
template <typename T, typename F>
void with_vector_width(const Plan& plan, F&& f) {
  constexpr int kVec = 16 / static_cast<int>(sizeof(T));
  if (plan.vec == kVec) {
    f(std::integral_constant<int, kVec>{});
  } else {
    f(std::integral_constant<int, 1>{});
  }
}

// tensors: every full-size tensor the kernels touch (x first). 128-bit access is used
// only when they all share x's strides, the contiguous extent divides by the vector
// width, and every pointer is 16-byte aligned; otherwise the scalar path handles any
// mergeable strides (mixed layouts, expanded gradients). sm_count: the device's SMs
// (the grid aims at two CTAs per SM).
Plan make_plan(const Problem& p, const HWStrides& xs, bool allow_split, int sm_count,
               std::initializer_list<at::Tensor> tensors);

}  // namespace se_kernels::cuda
