// cuda_sim: a small SIMT emulator for the kernels in csrc/cuda, built with the host
// compiler. It provides the subset of CUDA those kernels use, with CUDA's semantics:
//   - every CTA runs its threads as fibers, so __syncthreads() waits for the whole CTA
//     and __shfl_xor_sync() exchanges values between the lanes of a warp at the same
//     point of the program;
//   - the grid runs CTA by CTA (independent CTAs may run on several OS threads), in an
//     order the kernels must not depend on (shuffled when a seed is set);
// and checks, in the spirit of compute-sanitizer, that report an error naming the
// kernel, the block and the threads instead of hanging or corrupting memory:
//   - barrier divergence: threads of a CTA at different barriers, or exiting while
//     others wait at one;
//   - shared-memory races: two threads touch one shared element in one barrier
//     interval and at least one writes; reads of shared memory never written;
//   - global out-of-bounds: every global access is checked against the extent of the
//     tensor its pointer came from, and vector accesses against their alignment;
//   - shuffles whose mask leaves out a lane that takes part, or names a lane that does
//     not (deadlocks between shuffles and barriers are reported too).
// It does not depend on torch: tests/sim_checks builds it alone with broken kernels.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace se_sim {

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};

// A checker's finding (or a misuse of the emulator), thrown by launch() on the host.
class KernelError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// --- the running thread ------------------------------------------------------------
const dim3& thread_idx();
const dim3& block_idx();
const dim3& block_dim();
const dim3& grid_dim();

// Ends the CTA with an error from inside a kernel thread; launch() throws it.
[[noreturn]] void fail(const std::string& what);

void syncthreads(const char* file, int line);
float shfl_xor(unsigned mask, float value, int lane_mask, const char* file, int line);

// --- shared memory -----------------------------------------------------------------
struct SharedArray;
// The calling thread's next __shared__ array (every thread of a CTA declares the same
// arrays in the same order; the first one to get there allocates it, poisoned).
SharedArray* shared_alloc(const char* name, std::size_t elem_size, int64_t count, void** data);
// Bounds and race check of one access to element `index`.
void shared_access(SharedArray* array, int64_t index, bool write);

template <typename T>
class SharedRef {
 public:
  SharedRef(SharedArray* array, T* data, int64_t index) : array_(array), data_(data), index_(index) {}
  operator T() const {
    shared_access(array_, index_, false);
    return data_[index_];
  }
  SharedRef& operator=(T value) {
    shared_access(array_, index_, true);
    data_[index_] = value;
    return *this;
  }
  SharedRef& operator=(const SharedRef& other) { return *this = static_cast<T>(other); }
  SharedRef& operator+=(T value) { return *this = static_cast<T>(*this) + value; }
  SharedRef& operator-=(T value) { return *this = static_cast<T>(*this) - value; }
  SharedRef& operator*=(T value) { return *this = static_cast<T>(*this) * value; }

 private:
  SharedArray* array_;
  T* data_;
  int64_t index_;
};

// A pointer into one __shared__ array; element accesses go through the race checker.
template <typename T>
class Shared {
 public:
  Shared(SharedArray* array, T* data, int64_t offset) : array_(array), data_(data), offset_(offset) {}
  SharedRef<T> operator[](int64_t i) const { return {array_, data_, offset_ + i}; }
  Shared operator+(int64_t d) const { return {array_, data_, offset_ + d}; }

 private:
  SharedArray* array_;
  T* data_;  // the array's first element
  int64_t offset_;
};

template <typename T>
Shared<T> shared_array(const char* name, int64_t count) {
  static_assert(std::is_trivially_copyable_v<T>);
  void* data = nullptr;
  SharedArray* array = shared_alloc(name, sizeof(T), count, &data);
  return {array, static_cast<T*>(data), 0};
}

// --- global memory -----------------------------------------------------------------
[[noreturn]] void global_fault(const char* name, int64_t extent, int64_t index);
[[noreturn]] void misaligned(const char* name, int64_t index, std::size_t bytes);

// A pointer into a tensor: [base, base + extent) is what the tensor's strides reach.
template <typename T>
class Global {
 public:
  Global() = default;
  Global(std::nullptr_t) {}
  Global(T* base, int64_t extent, const char* name) : base_(base), extent_(extent), name_(name) {}
  template <typename U, typename = std::enable_if_t<std::is_same_v<const U, T> && !std::is_const_v<U>>>
  Global(const Global<U>& other)
      : base_(other.base_), extent_(other.extent_), offset_(other.offset_), name_(other.name_) {}

  T& operator[](int64_t i) const {
    const int64_t at = offset_ + i;
    if (base_ == nullptr || at < 0 || at >= extent_) global_fault(name_, extent_, at);
    return base_[at];
  }
  Global operator+(int64_t d) const {
    Global out = *this;
    out.offset_ += d;
    return out;
  }
  bool operator==(std::nullptr_t) const { return base_ == nullptr; }
  bool operator!=(std::nullptr_t) const { return base_ != nullptr; }
  // A `bytes`-wide vector access of `count` elements at this pointer.
  void check_aligned(std::size_t bytes, int count) const {
    (*this)[0];
    (*this)[count - 1];
    if (reinterpret_cast<uintptr_t>(base_ + offset_) % bytes != 0) misaligned(name_, offset_, bytes);
  }

 private:
  template <typename>
  friend class Global;
  T* base_ = nullptr;
  int64_t extent_ = 0;
  int64_t offset_ = 0;
  const char* name_ = "null";
};

// --- launching ---------------------------------------------------------------------
// Runs body() in every thread of every CTA of the grid; throws KernelError on a finding.
void launch(const char* kernel, dim3 grid, dim3 block, const std::function<void()>& body);

// Runs fn(begin, end) over [0, n) on several OS threads (torch's pool in the extension);
// serial by default.
using ParallelFor = void (*)(int64_t n, const std::function<void(int64_t, int64_t)>& fn);
void set_parallel_for(ParallelFor parallel_for);
// 0: CTAs in grid order; otherwise a permutation drawn from the seed, new per launch.
// Default: the SE_KERNELS_SIM_SEED environment variable, or 0.
void set_grid_order_seed(uint64_t seed);
// The SM count the emulated GPU reports to the launch plan (SE_KERNELS_SIM_SM_COUNT, or
// an H100's 132).
int emulated_sm_count();

// Device-side min/max of the integer types the kernels mix.
inline int min(int a, int b) { return a < b ? a : b; }
inline int64_t min(int64_t a, int64_t b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline int64_t max(int64_t a, int64_t b) { return a > b ? a : b; }

}  // namespace se_sim

// The CUDA spellings, mapped onto the emulator.
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define threadIdx (::se_sim::thread_idx())
#define blockIdx (::se_sim::block_idx())
#define blockDim (::se_sim::block_dim())
#define gridDim (::se_sim::grid_dim())
#define __syncthreads() ::se_sim::syncthreads(__FILE__, __LINE__)
#define __shfl_xor_sync(mask, value, lane_mask) \
  ::se_sim::shfl_xor((mask), (value), (lane_mask), __FILE__, __LINE__)
// `__shared__ T name[count];`, as a checked pointer into the CTA's shared memory.
#define SE_SIM_SHARED(T, name, count) \
  ::se_sim::Shared<T> name = ::se_sim::shared_array<T>(#name, (count))
