// The CUDA build of the kernels in this folder: registers the forward and backward ops
// for CUDA tensors. (csrc/cuda_sim/ops.cpp builds the same source for the emulator.)
#include <c10/cuda/CUDAFunctions.h>

#include <array>

#include "launch_backward.h"
#include "launch_forward.h"
#include "launch_split.h"

namespace se_kernels::cuda {
inline namespace gpu {

int sm_count(const at::Tensor& x) {
  static std::array<int, 64> cache{};  // per device, filled on first use
  const int dev = x.get_device();
  TORCH_CHECK(dev >= 0 && dev < static_cast<int>(cache.size()), "unexpected CUDA device ", dev);
  if (cache[dev] == 0) {
    int sms = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    cache[dev] = sms;
  }
  return cache[dev];
}

}  // namespace gpu

TORCH_LIBRARY_IMPL(se_kernels, CUDA, m) {
  m.impl("forward", &forward);
  m.impl("infer", &infer);
  m.impl("backward", &backward);
  m.impl("split_squeeze", &split_squeeze);
  m.impl("split_excite", &split_excite);
  m.impl("split_squeeze_backward", &split_squeeze_backward);
  m.impl("split_excite_backward", &split_excite_backward);
}

}  // namespace se_kernels::cuda
