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
// Below this a GEMM stays on one thread. Low: at batch 1 an FC is a cold read of its
// weights (1.8 MB in MobileNetV3's last layers), faster on both cores than on one.
constexpr int64_t kParallelMacs = 1 << 15;

// Items per parallel task (at::parallel_for's grain): work below min_work per task stays
// on the calling thread. A parallel region costs a few us (about 3 on a 2-vCPU VM, and a
// call opens up to three), more than a tiny layer's whole stage.
inline int64_t grain_for(int64_t work_per_item, int64_t min_work) {
  return std::max<int64_t>(1, min_work / std::max<int64_t>(1, work_per_item));
}

struct Plan {
  bool per_sample;  // one task per sample runs all three stages
  int64_t cblock, n_cblocks;
  int64_t n_splits, hw_per_split;
  int64_t reduce_tasks;  // (sample, channel block, split) tasks
  // Stream rows: (n, c) pairs for NCHW, (n, hw) pairs for channels_last.
  int64_t rows_per_sample, stream_rows;
  // Grains, in samples (per-sample plan, FC stage), reduce tasks and stream rows. Which
  // thread runs a task never changes a sum's order, so the grains change no bits.
  int64_t sample_grain, reduce_grain, fc_grain, stream_grain;
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
  const int64_t row_len = channels_last ? p.C : p.HW;
  plan.reduce_tasks = p.N * plan.n_cblocks * plan.n_splits;
  plan.rows_per_sample = channels_last ? p.HW : p.C;
  plan.stream_rows = p.N * plan.rows_per_sample;
  plan.sample_grain = grain_for(p.C * p.HW, kStreamGrain);
  plan.reduce_grain = grain_for(plan.cblock * plan.hw_per_split, kStreamGrain);
  plan.fc_grain = grain_for((p.has_fc2 ? 2 : 1) * p.R1 * p.C, kParallelMacs);
  plan.stream_grain = grain_for(row_len, kStreamGrain);
  return plan;
}

// The FC stage runs across samples when there are enough for every thread (each sample's
// maths is independent, so this changes no bits), else the GEMMs split inside (linear.h).
inline bool fc_across_samples(const Problem& p, int64_t threads) {
  return p.N > 1 && p.N >= threads;
}

// How many of a full call's stage loops (run_stages) have more items than their grain, so
// may wake a second thread (the GEMMs' own split inside the FC stage not counted).
inline int64_t parallel_loops(const Problem& p, const Plan& plan, int64_t threads) {
  if (plan.per_sample) return p.N > plan.sample_grain;
  return (plan.reduce_tasks > plan.reduce_grain) +
         (fc_across_samples(p, threads) && p.N > plan.fc_grain) +
         (plan.stream_rows > plan.stream_grain);
}

}  // namespace se_kernels::cpu
