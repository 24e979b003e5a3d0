// Layout and work split shared by the CPU forward and backward kernels.
//
// Both kernels have the same three stages, like the GPU's two launches:
//   reduce  (sample, channel block, HW split) -> per-channel partial sums
//   sample  (a range of samples)              -> the FC / gate maths (small GEMMs)
//   stream  (rows of the contiguous dimension) -> the full-size output
// When a whole sample fits in cache, its weights are small beside it, and there are
// enough samples for every thread, one task runs all three stages for a sample, so the
// second read of x hits cache. Otherwise the FCs run once over the whole batch.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <vector>

#include "../se_host.h"

namespace se_kernels::cpu {

// The CPU kernels index two layouts: contiguous NCHW, and channels_last.
inline bool choose_channels_last(const at::Tensor& x) {
  return !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
}

inline at::MemoryFormat memory_format(bool channels_last) {
  return channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

// t itself when it is already in the layout, else one copy (mixed layouts, expanded
// gradients, views whose H and W do not merge).
inline at::Tensor in_layout(const at::Tensor& t, bool channels_last) {
  return t.contiguous(memory_format(channels_last));
}

// An output written in the kernel's layout, copied to the caller's tensor if it differs.
// (A [0] placeholder output is left as it is.)
struct OutputInLayout {
  at::Tensor target, work;
  OutputInLayout(const at::Tensor& t, bool channels_last)
      : target(t),
        work(t.dim() != 4 || t.is_contiguous(memory_format(channels_last)) ? t
                                                                            : in_layout(t, channels_last)) {}
  void finish() {
    if (!work.is_same(target)) target.copy_(work);
  }
};

// Several float32 scratch arrays carved from one allocation. Allocating it before the
// outputs keeps the large output off the top of the heap: freeing a top-most block
// lets glibc trim it, and the next call then page-faults it back in (measured: ~100
// faults and up to 2x the time of a 3 MB layer).
class ScratchFloats {
 public:
  ScratchFloats(const at::Tensor& like, std::initializer_list<int64_t> sizes) {
    int64_t total = 0;
    for (int64_t s : sizes) {
      offsets_.push_back(total);
      total += s;
    }
    buffer_ = float_buffer(like, {total});
  }
  float* operator[](size_t i) const { return buffer_.data_ptr<float>() + offsets_[i]; }

 private:
  at::Tensor buffer_;
  std::vector<int64_t> offsets_;
};

constexpr int64_t kSampleCacheBytes = 512 * 1024;  // a sample's x this small stays in L2
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

// Runs the three stages of a kernel K, which provides
//   reduce(n, c0, c1, split, hw0, hw1), sample_range(n0, n1) and stream(row0, row1),
// where stream rows are (n, c) pairs for NCHW and (n, hw) pairs for channels_last.
template <typename K>
void run_stages(K& k, const Problem& p, const Plan& plan, bool channels_last) {
  const int64_t rows_per_sample = channels_last ? p.HW : p.C;
  const int64_t row_len = channels_last ? p.C : p.HW;
  if (plan.per_sample) {
    at::parallel_for(0, p.N, 1, [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) {
        k.reduce(n, 0, p.C, 0, 0, p.HW);
        k.sample_range(n, n + 1);
        k.stream(n * rows_per_sample, (n + 1) * rows_per_sample);
      }
    });
    return;
  }
  const int64_t tasks = p.N * plan.n_cblocks * plan.n_splits;
  at::parallel_for(0, tasks, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t split = t % plan.n_splits, cb = (t / plan.n_splits) % plan.n_cblocks;
      const int64_t n = t / (plan.n_splits * plan.n_cblocks);
      const int64_t c0 = cb * plan.cblock, hw0 = split * plan.hw_per_split;
      k.reduce(n, c0, std::min(c0 + plan.cblock, p.C), split, hw0,
               std::min(hw0 + plan.hw_per_split, p.HW));
    }
  });
  k.sample_range(0, p.N);  // the GEMMs split across threads inside
  const int64_t grain = std::max<int64_t>(1, kStreamGrain / row_len);
  at::parallel_for(0, p.N * rows_per_sample, grain,
                   [&](int64_t r0, int64_t r1) { k.stream(r0, r1); });
}

}  // namespace se_kernels::cpu
