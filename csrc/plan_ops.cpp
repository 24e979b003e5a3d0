// Bindings that expose the launch plans to Python (se_kernels/plans.py): tests assert
// which kernel path a shape takes, and scripts/static_gpu_check.py enumerates the CUDA
// specializations real workloads get, all from the plan code the kernels use.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "cpu/layout.h"
#include "cpu/plan.h"
#include "cuda/limits.h"
#include "cuda/plan.h"
#include "se_host.h"

namespace se_sim {
int emulated_sm_count();  // csrc/cuda_sim/runtime.cpp
}  // namespace se_sim

namespace se_kernels {
namespace {

Problem problem_of(const at::Tensor& x, int64_t r1, bool has_fc2) {
  TORCH_CHECK_VALUE(x.dim() == 4, "x must be 4-D [N, C, H, W], got shape ", x.sizes());
  return Problem{x.size(0), x.size(1), x.size(2) * x.size(3), r1, has_fc2};
}

// [vec, channels_last, block_c, n_cblocks, n_splits, hw_per_split, n_tiles, hw_per_tile,
//  r_chunk, threads]; tensors[0] is x, the rest the other full-size tensors of the call.
std::vector<int64_t> cuda_plan(const std::vector<at::Tensor>& tensors, int64_t r1, bool has_fc2,
                               bool allow_split, int64_t sm_count) {
  TORCH_CHECK_VALUE(!tensors.empty(), "cuda_plan: tensors must start with x");
  const at::Tensor& x = tensors[0];
  const Problem p = problem_of(x, r1, has_fc2);
  const HWStrides xs = kernel_strides("x", x);
  // make_plan takes an initializer_list: the tests pass at most five tensors.
  TORCH_CHECK_VALUE(tensors.size() <= 5, "cuda_plan: at most 5 tensors");
  const auto t = [&](size_t i) { return tensors[i < tensors.size() ? i : 0]; };
  const cuda::Plan plan =
      cuda::make_plan(p, xs, allow_split, static_cast<int>(sm_count), {t(0), t(1), t(2), t(3), t(4)});
  return {plan.vec,     plan.channels_last, plan.block_c,     plan.n_cblocks,
          plan.n_splits, plan.hw_per_split, plan.n_tiles,     plan.hw_per_tile,
          cuda::kRChunk, cuda::kThreads};
}

// [per_sample, cblock, n_cblocks, n_splits, hw_per_split, parallel_stages] at the current
// thread count (parallel_stages: cpu::parallel_loops).
std::vector<int64_t> cpu_plan(const at::Tensor& x, int64_t r1, bool has_fc2, bool allow_split) {
  const Problem p = problem_of(x, r1, has_fc2);
  const int64_t threads = at::get_num_threads();
  const cpu::Plan plan = cpu::make_plan(p, cpu::choose_channels_last(x), x.element_size(),
                                        allow_split, threads);
  return {plan.per_sample, plan.cblock,       plan.n_cblocks,
          plan.n_splits,   plan.hw_per_split, cpu::parallel_loops(p, plan, threads)};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(se_kernels, m) {
  m.def("cuda_plan(Tensor[] tensors, int r1, bool has_fc2, bool allow_split, int sm_count) -> int[]",
        &cuda_plan);
  m.def("cpu_plan(Tensor x, int r1, bool has_fc2, bool allow_split) -> int[]", &cpu_plan);
  m.def("sim_sm_count() -> int", [] { return static_cast<int64_t>(se_sim::emulated_sm_count()); });
}

}  // namespace se_kernels
