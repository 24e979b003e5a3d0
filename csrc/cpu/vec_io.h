// Float32 vector I/O over float / bfloat16 / half arrays, for the CPU kernels.
// All arithmetic is float32 (at::vec::Vectorized<float>); reduced types convert on
// load and store. count < kLanes handles row tails without reading past the row.
#pragma once

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

namespace se_kernels::cpu {

using fVec = at::vec::Vectorized<float>;
constexpr int64_t kLanes = fVec::size();

template <typename T>
inline fVec load(const T* p, int64_t count = kLanes) {
  if constexpr (std::is_same_v<T, float>) {
    return count == kLanes ? fVec::loadu(p) : fVec::loadu(p, count);
  } else {
    if (count == kLanes) {
      fVec out;
      at::vec::load_to_float<T>(p, out);
      return out;
    }
    float tmp[kLanes] = {};
    for (int64_t i = 0; i < count; ++i) tmp[i] = static_cast<float>(p[i]);
    return fVec::loadu(tmp);
  }
}

template <typename T>
inline void store(T* p, const fVec& v, int64_t count = kLanes) {
  if constexpr (std::is_same_v<T, float>) {
    v.store(p, count);
  } else {
    float tmp[kLanes];
    v.store(tmp);
    for (int64_t i = 0; i < count; ++i) p[i] = static_cast<T>(tmp[i]);
  }
}

inline float sum_lanes(const fVec& v) {
  return at::vec::vec_reduce_all<float>([](fVec a, fVec b) { return a + b; }, v);
}

inline float max_lanes(const fVec& v) {
  return at::vec::vec_reduce_all<float>([](fVec a, fVec b) { return at::vec::maximum(a, b); }, v);
}

// Calls fn(offset, count) over [0, len) in vector-sized steps (count < kLanes at the tail).
template <typename Fn>
inline void for_vectors(int64_t len, Fn&& fn) {
  for (int64_t i = 0; i < len; i += kLanes) fn(i, std::min(kLanes, len - i));
}

// Like for_vectors, for reductions: fn(lane, offset, count) with lane in 0..3 cycling
// over consecutive vectors, so four accumulators break the add/FMA latency chain.
// Combine them as (a0 + a1) + (a2 + a3): the order is fixed, the result reproducible.
template <typename Fn>
inline void for_vectors_x4(int64_t len, Fn&& fn) {
  int64_t i = 0;
  for (; i + 4 * kLanes <= len; i += 4 * kLanes) {
    fn(0, i, kLanes);
    fn(1, i + kLanes, kLanes);
    fn(2, i + 2 * kLanes, kLanes);
    fn(3, i + 3 * kLanes, kLanes);
  }
  for (; i < len; i += kLanes) fn(0, i, std::min(kLanes, len - i));
}

inline fVec combine4(const fVec (&acc)[4]) { return (acc[0] + acc[1]) + (acc[2] + acc[3]); }

inline fVec max4(const fVec (&acc)[4]) {
  return at::vec::maximum(at::vec::maximum(acc[0], acc[1]), at::vec::maximum(acc[2], acc[3]));
}

}  // namespace se_kernels::cpu

namespace se_kernels::cpu {

// Calls fn(std::bool_constant<f0>{}, std::bool_constant<f1>{}, ...) for run-time flags,
// so inner loops test them with `if constexpr` and compile to straight-line code.
template <typename Fn>
inline void with_static_flags(Fn&& fn) {
  fn();
}

template <typename Fn, typename... Flags>
inline void with_static_flags(Fn&& fn, bool flag, Flags... rest) {
  if (flag) {
    with_static_flags([&](auto... fs) { fn(std::true_type{}, fs...); }, rest...);
  } else {
    with_static_flags([&](auto... fs) { fn(std::false_type{}, fs...); }, rest...);
  }
}

}  // namespace se_kernels::cpu
