// Float32 vector I/O over float / bfloat16 / half arrays, for the CPU kernels.
// All arithmetic is float32 (at::vec::Vectorized<float>); reduced types convert on
// load and store. count < kLanes handles row tails without reading past the row.
#pragma once

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/macros/Macros.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

namespace se_kernels::cpu {

using fVec = at::vec::Vectorized<float>;
constexpr int64_t kLanes = fVec::size();

#if defined(CPU_CAPABILITY_AVX2)
// float32 -> bfloat16 bits, round to nearest even, NaN -> quiet NaN: c10::BFloat16's
// rounding, in registers. ATen's vector helper for this is not inlined by gcc, and the
// call cost as much as the rest of the kernel.
C10_ALWAYS_INLINE __m128i bf16_bits(const fVec& v) {
  const __m256i bits = _mm256_castps_si256(v);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
  const __m256i bias = _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff));
  __m256i top = _mm256_srli_epi32(_mm256_add_epi32(bits, bias), 16);
  const __m256 nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
  top = _mm256_blendv_epi8(top, _mm256_set1_epi32(0x7fc0), _mm256_castps_si256(nan));
  // 8 x u32 (all < 2^16) -> 8 x u16: pack the two 128-bit halves against each other.
  return _mm_packus_epi32(_mm256_castsi256_si128(top), _mm256_extracti128_si256(top, 1));
}
#endif

// Always inlined: the reduced-type conversions are a few instructions, a call is not.
template <typename T>
C10_ALWAYS_INLINE fVec load(const T* p, int64_t count = kLanes) {
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
C10_ALWAYS_INLINE void store(T* p, const fVec& v, int64_t count = kLanes) {
  if constexpr (std::is_same_v<T, float>) {
    v.store(p, count);
  } else {
#if defined(CPU_CAPABILITY_AVX2)
    if (count == kLanes) {
      const __m128i packed = std::is_same_v<T, c10::BFloat16>
                                 ? bf16_bits(v)
                                 : _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(p), packed);
      return;
    }
#endif
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

// channels_last reductions read this many rows of channels at a time and fold them into
// one running row of sums (L1-resident): one load and store of the sums per four rows.
// (The backward takes whole rows one at a time: see backward_kernel.cpp.)
constexpr int64_t kRowsAtOnce = 4;

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
