// Launch constants shared by the host plan (plan.cpp) and the device code (common.cuh).
#pragma once

#include <cstdint>

namespace se_kernels::cuda {

constexpr int kThreads = 256;   // threads per CTA, every kernel
constexpr int kMaxBlockC = 64;  // channels per CTA; sizes the per-channel shared arrays
constexpr int kRChunk = 1024;   // FC rows staged in shared memory at a time
// A CTA gets at least this many elements of x when HW is cut into pieces (8 per thread):
// below it the CTA's fixed work (re-adding the FC partials, its block of FC2) dominates.
constexpr int64_t kMinElementsPerCta = 2048;
// __launch_bounds__ minimum of resident CTAs per SM: caps registers at 85 per thread,
// which is also the hint ptxas needs not to spill a register to fit a smaller count
// of its own choosing (it did, on sm_80, without one).
constexpr int kMinCtasPerSm = 3;
static_assert(kMaxBlockC <= kThreads, "one thread per channel of a block");

}  // namespace se_kernels::cuda
