// Runs a CPU kernel's three stages over the plan (see plan.h), in parallel.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

#include "abi.h"
#include "plan.h"

namespace se_kernels::cpu {

// Runs the three stages of a kernel K, which provides
//   reduce(n, c0, c1, split, hw0, hw1), sample_range(n0, n1) and stream(row0, row1),
// with stream rows as the plan counts them (Plan::rows_per_sample). A split phase runs its
// side only (the kernel's sample_range knows which half of the FC maths); its plan is never
// per_sample.
template <typename K>
void run_stages(K& k, const Problem& p, const Plan& plan, Phase phase) {
  if (plan.per_sample) {
    at::parallel_for(0, p.N, plan.sample_grain, [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) {
        k.reduce(n, 0, p.C, 0, 0, p.HW);
        k.sample_range(n, n + 1);
        k.stream(n * plan.rows_per_sample, (n + 1) * plan.rows_per_sample);
      }
    });
    return;
  }
  const int64_t tasks = phase == Phase::Excite ? 0 : plan.reduce_tasks;
  at::parallel_for(0, tasks, plan.reduce_grain, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t split = t % plan.n_splits, cb = (t / plan.n_splits) % plan.n_cblocks;
      const int64_t n = t / (plan.n_splits * plan.n_cblocks);
      const int64_t c0 = cb * plan.cblock, hw0 = split * plan.hw_per_split;
      k.reduce(n, c0, std::min(c0 + plan.cblock, p.C), split, hw0,
               std::min(hw0 + plan.hw_per_split, p.HW));
    }
  });
  if (fc_across_samples(p, at::get_num_threads())) {
    at::parallel_for(0, p.N, plan.fc_grain, [&](int64_t n0, int64_t n1) { k.sample_range(n0, n1); });
  } else {
    k.sample_range(0, p.N);
  }
  if (phase == Phase::Squeeze) return;
  at::parallel_for(0, plan.stream_rows, plan.stream_grain,
                   [&](int64_t r0, int64_t r1) { k.stream(r0, r1); });
}

// Runs Kernel<T> (built from the args alone) for the args' element type.
template <template <typename> class Kernel, typename Args>
void run_kernel(const Args& args) {
  with_dtype(args.dtype, [&](auto tag) {
    Kernel<typename decltype(tag)::type> k{.a = args};
    run_stages(k, args.problem, args.plan, args.phase);
  });
}

}  // namespace se_kernels::cpu
