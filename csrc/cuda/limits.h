// Launch constants shared by the host plan (plan.cpp) and the device code (common.cuh).
#pragma once

namespace se_kernels::cuda {

constexpr int kThreads = 256;   // threads per CTA, every kernel
constexpr int kMaxBlockC = 64;  // channels per CTA; sizes the per-channel shared arrays
constexpr int kRChunk = 1024;   // FC rows staged in shared memory at a time
static_assert(kMaxBlockC <= kThreads, "one thread per channel of a block");

}  // namespace se_kernels::cuda
