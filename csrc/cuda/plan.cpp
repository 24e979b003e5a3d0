#include "plan.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <climits>
#include <utility>

#include "limits.h"

namespace se_kernels::cuda {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

int next_pow2(int64_t v) {
  int p = 1;
  while (p < v) p <<= 1;
  return p;
}

int vector_width(const Problem& p, const HWStrides& xs, bool channels_last,
                 std::initializer_list<at::Tensor> tensors) {
  const at::Tensor& x = *tensors.begin();
  const int vec = 16 / static_cast<int>(x.element_size());
  const int64_t inner_stride = channels_last ? xs.c : xs.hw;
  const int64_t inner_extent = channels_last ? p.C : p.HW;
  if (inner_stride != 1 || inner_extent % vec != 0) return 1;
  for (const at::Tensor& t : tensors) {
    const auto s = hw_strides(t);
    if (!s || s->n != xs.n || s->c != xs.c || s->hw != xs.hw) return 1;
    if (reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 != 0) return 1;
  }
  return vec;
}

// Split HW into at most `pieces` ranges whose length is a multiple of `granule`.
std::pair<int, int64_t> cut(int64_t hw, int64_t pieces, int64_t granule) {
  const int64_t per = ceil_div(ceil_div(hw, pieces), granule) * granule;
  return {static_cast<int>(ceil_div(hw, per)), per};
}

}  // namespace

Plan make_plan(const Problem& p, const HWStrides& xs, bool allow_split, int sm_count,
               std::initializer_list<at::Tensor> tensors) {
  TORCH_CHECK(sm_count >= 1, "make_plan: sm_count must be >= 1, got ", sm_count);
  Plan plan{};
  plan.channels_last = xs.c == 1 && p.C > 1;
  plan.vec = vector_width(p, xs, plan.channels_last, tensors);
  if (plan.channels_last) {  // channels are contiguous: as many as fit, at least one vector
    plan.block_c = std::clamp(next_pow2(p.C), plan.vec, kMaxBlockC);
  } else {  // HW is contiguous: fewer channels per CTA when each channel is long
    const int wanted = p.HW >= 512 ? 8 : (p.HW >= 128 ? 16 : (p.HW >= 32 ? 32 : kMaxBlockC));
    plan.block_c = std::min(wanted, next_pow2(p.C));
  }
  plan.n_cblocks = static_cast<int>(ceil_div(p.C, plan.block_c));
  TORCH_CHECK(p.N <= INT32_MAX && plan.n_cblocks <= 65535, "x of shape [N=", p.N, ", C=", p.C,
              "] exceeds the CUDA grid limits (N < 2^31, C / ", plan.block_c, " <= 65535)");
  // Enough CTAs to fill the GPU twice over, each with at least kMinElementsPerCta
  // elements; HW ranges stay multiples of 8 elements so every range starts on a 16-byte
  // boundary in the vector path.
  const int64_t granule = 8;
  const int64_t programs = std::max<int64_t>(1, p.N * plan.n_cblocks);
  const int64_t max_pieces =
      std::min(p.HW / granule, p.HW * std::min<int64_t>(plan.block_c, p.C) / kMinElementsPerCta);
  const int64_t pieces = std::clamp<int64_t>(ceil_div(2 * sm_count, programs), 1,
                                             std::max<int64_t>(1, max_pieces));
  std::tie(plan.n_splits, plan.hw_per_split) = cut(p.HW, allow_split ? pieces : 1, granule);
  std::tie(plan.n_tiles, plan.hw_per_tile) = cut(p.HW, pieces, granule);
  return plan;
}

}  // namespace se_kernels::cuda
