// Host-side layout handling of the CPU ops: which layout the kernels index, copies into
// it when needed, outputs written in it, and one scratch allocation.
#pragma once

#include <ATen/core/Tensor.h>

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

}  // namespace se_kernels::cpu
