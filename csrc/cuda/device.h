// What the kernels in csrc/cuda need from the machine they run on, for two builds of
// the same source:
//   nvcc      (csrc/cuda/ops.cu):     real CUDA; pointers are raw, launches use <<<>>>.
//   cuda_sim  (csrc/cuda_sim/ops.cpp, SE_CUDA_SIM defined): the host compiler and the
//             SIMT emulator in csrc/cuda_sim, whose pointers check every access.
// Kernel code uses only the names below for memory and launches, so both builds
// compile it unchanged. Each build's types live in its own inline namespace
// (SE_CUDA_TARGET), so the two can share one shared library without ODR clashes.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "plan.h"

#if defined(SE_CUDA_SIM)
#include "../cuda_sim/runtime.h"
#define SE_CUDA_TARGET sim
#else
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#define SE_CUDA_TARGET gpu
#endif

namespace se_kernels::cuda {
inline namespace SE_CUDA_TARGET {

#if defined(SE_CUDA_SIM)

// A global-memory pointer that knows the extent of the tensor it came from.
template <typename T>
using gptr = se_sim::Global<T>;
// A pointer into the CTA's shared memory, with race tracking.
template <typename T>
using sptr = se_sim::Shared<T>;
#define SE_SHARED(T, name, count) SE_SIM_SHARED(T, name, count)

using se_sim::max;
using se_sim::min;

template <typename T, int VEC>
struct Packed {
  T v[VEC];
};

// VEC consecutive elements: every element bounds-checked, and the 16-byte alignment
// that a real vector access needs is checked too.
template <int VEC, typename T>
inline Packed<std::remove_const_t<T>, VEC> load_packed(gptr<T> p) {
  p.check_aligned(sizeof(T) * VEC, VEC);
  Packed<std::remove_const_t<T>, VEC> out;
  for (int i = 0; i < VEC; ++i) out.v[i] = p[i];
  return out;
}

template <int VEC, typename T>
inline void store_packed(gptr<T> p, const Packed<T, VEC>& value) {
  p.check_aligned(sizeof(T) * VEC, VEC);
  for (int i = 0; i < VEC; ++i) p[i] = value.v[i];
}

// Host side.
struct DeviceGuard {
  explicit DeviceGuard(const at::Device&) {}
};
using Stream = int;
inline Stream current_stream() { return 0; }
// The emulated GPU's SM count (the plan aims at two CTAs per SM): an H100's by default,
// SE_KERNELS_SIM_SM_COUNT to mimic another GPU.
inline int sm_count(const at::Tensor&) { return se_sim::emulated_sm_count(); }

template <typename T>
gptr<T> global_ptr(const at::Tensor& t, const char* name) {
  if (!t.defined() || t.numel() == 0) return gptr<T>(nullptr, 0, name);
  // Every element the strides can reach, from the tensor's first element.
  int64_t span = 1;
  for (int64_t d = 0; d < t.dim(); ++d) span += (t.size(d) - 1) * t.stride(d);
  return gptr<T>(static_cast<T*>(t.data_ptr()), span, name);
}

template <typename P>
void launch_kernel(void (*kernel)(P), const char* name, Grid grid, int threads, Stream,
                   const P& params) {
  se_sim::launch(name, {grid.x, grid.y, grid.z}, {static_cast<unsigned>(threads), 1, 1},
                 [&] { kernel(params); });
}

#else  // nvcc

template <typename T>
using gptr = T*;
template <typename T>
using sptr = T*;
#define SE_SHARED(T, name, count) __shared__ T name[count]

template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Packed {
  T v[VEC];
};

// One 16-byte transaction (the plan picks VEC > 1 only for aligned pointers).
template <int VEC, typename T>
__device__ __forceinline__ Packed<std::remove_const_t<T>, VEC> load_packed(const T* p) {
  return *reinterpret_cast<const Packed<std::remove_const_t<T>, VEC>*>(p);
}

template <int VEC, typename T>
__device__ __forceinline__ void store_packed(T* p, const Packed<T, VEC>& value) {
  *reinterpret_cast<Packed<T, VEC>*>(p) = value;
}

// Host side.
using DeviceGuard = c10::cuda::CUDAGuard;
using Stream = cudaStream_t;
inline Stream current_stream() { return c10::cuda::getCurrentCUDAStream(); }
int sm_count(const at::Tensor& x);  // csrc/cuda/ops.cu, cached per device

template <typename T>
T* global_ptr(const at::Tensor& t, const char*) {
  return t.defined() && t.numel() > 0 ? static_cast<T*>(t.data_ptr()) : nullptr;
}

template <typename P>
void launch_kernel(void (*kernel)(P), const char*, Grid grid, int threads, Stream stream,
                   const P& params) {
  kernel<<<dim3(grid.x, grid.y, grid.z), threads, 0, stream>>>(params);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

#endif

}  // namespace SE_CUDA_TARGET
}  // namespace se_kernels::cuda
