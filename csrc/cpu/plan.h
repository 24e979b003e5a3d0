// How the CPU kernels cut one call into tasks (the CPU launch plan).
//
// Both kernels (forward and backward) have the same three stages, like the GPU's two
// launches:
//   reduce  (sample, channel block, HW split) -> per-channel partial sums
//   sample  (a range of samples)              -> the FC / gate maths (small GEMMs)
//   stream  (rows of the contiguous dimension) -> the full-size output
// When a whole sample fits in cache, its weights are small beside it, and there are
// enough samples for every thread, one task runs all three stages for a sample, so the
// second read of x hits cache. Otherwise the FCs run once over the whole batch.
#pragma once

#include <algorithm>
#include <cstdint>

#include "../se_host.h"

namespace se_kernels::cpu {

constexpr int64_t kSampleCacheBytes = 1024 * 1024;  // a sample's x this small stays in cache
constexpr int64_t kStreamGrain = 16384;            // elements per streaming task, at least
// HW splits aim at this many reduction tasks whatever the thread count, so a shape gets
// one summation order, and bitwise the same result, on any machine.
constexpr int64_t kTargetTasks = 64;
constexpr int64_t kMinSplitHW = 256;  // positions per split, at least
constexpr int64_t kPerSampleBatch = 8;  // batches this large keep cache-sized samples whole

struct Plan {
  bool per_sample;  // one task per sample runs all three stages
  int64_t cblock, n_cblocks;
  int64_t n_splits, hw_per_split;
};

// The thread count only decides per_sample, which does not change any sum's order.
inline Plan make_plan(const Problem& p, bool channels_last, int64_t element_size, bool allow_split,
                      int64_t threads) {
  const int64_t sample_bytes = p.C * p.HW * element_size;
  const int64_t weight_bytes = (p.has_fc2 ? 2 : 1) * p.R1 * p.C * static_cast<int64_t>(sizeof(float));
  // NCHW: a few channel rows per task; channels_last: wide vectors of channels.
  const int64_t split_cblock = channels_last ? std::min<int64_t>(p.C, 256) : 8;
  const int64_t tasks = p.N * ((p.C + split_cblock - 1) / split_cblock);
  const bool fits = sample_bytes <= kSampleCacheBytes && 4 * weight_bytes <= sample_bytes;
  int64_t splits = 1;
  if (allow_split && tasks < kTargetTasks && !(fits && p.N >= kPerSampleBatch)) {
    splits = std::min((kTargetTasks + tasks - 1) / tasks, std::max<int64_t>(1, p.HW / kMinSplitHW));
  }
  Plan plan{};
  plan.per_sample = splits == 1 && fits && p.N >= threads;
  plan.cblock = plan.per_sample ? p.C : split_cblock;
  plan.n_cblocks = (p.C + plan.cblock - 1) / plan.cblock;
  plan.hw_per_split = (p.HW + splits - 1) / splits;
  plan.n_splits = (p.HW + plan.hw_per_split - 1) / plan.hw_per_split;
  return plan;
}

}  // namespace se_kernels::cpu
