// Element-wise activation and gate maths (float32), shared by the CPU and CUDA kernels.
#pragma once

#include <cmath>
#include <cstdint>

#include "se_options.h"

#if defined(__CUDACC__)
#define SE_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define SE_HOST_DEVICE inline
#endif

namespace se_kernels {

// The correctly rounded 1/v. On the GPU __frcp_rn gives the same bits as 1.0f / v
// without the division's slow-path subroutine call, whose register save was the only
// stack use of the CUDA kernels (sm_80).
SE_HOST_DEVICE float reciprocal(float v) {
#if defined(__CUDA_ARCH__)
  return __frcp_rn(v);
#else
  return 1.0f / v;
#endif
}

SE_HOST_DEVICE float sigmoid(float z) { return reciprocal(1.0f + ::expf(-z)); }

// ReLU and max that let NaN through, as torch.relu and torch.amax do (fmaxf and
// `z > 0 ? z : 0` would hide a NaN from the loss and from AMP's overflow check).
SE_HOST_DEVICE float relu(float z) { return z < 0.0f ? 0.0f : z; }
SE_HOST_DEVICE float nan_max(float a, float b) { return (a > b || a != a) ? a : b; }

SE_HOST_DEVICE float relu6(float z) { return z < 0.0f ? 0.0f : (z > 6.0f ? 6.0f : z); }

// softplus with torch's threshold (beta 1, threshold 20), as inside F.mish.
SE_HOST_DEVICE float softplus(float z) { return z > 20.0f ? z : ::log1pf(::expf(z)); }

constexpr float kSqrtHalf = 0.70710678118654752f;     // 1/sqrt(2)
constexpr float kInvSqrt2Pi = 0.39894228040143268f;   // 1/sqrt(2 pi)
constexpr float kSqrt2OverPi = 0.79788456080286536f;  // sqrt(2/pi)
constexpr float kGeluKappa = 0.044715f;

// slope: leaky_relu's negative slope (Options::act_slope).
SE_HOST_DEVICE float act_forward(float z, Act act, float slope = kDefaultLeakySlope) {
  switch (act) {
    case Act::Relu: return relu(z);
    case Act::Silu: return z * sigmoid(z);
    case Act::Relu6: return relu6(z);
    case Act::Gelu: return 0.5f * z * (1.0f + ::erff(z * kSqrtHalf));
    case Act::GeluTanh:
      return 0.5f * z * (1.0f + ::tanhf(kSqrt2OverPi * (z + kGeluKappa * z * z * z)));
    case Act::HardSwish: return z * relu6(z + 3.0f) / 6.0f;
    case Act::Mish: return z * ::tanhf(softplus(z));
    case Act::Tanh: return ::tanhf(z);
    case Act::Sigmoid: return sigmoid(z);
    case Act::LeakyRelu: return z > 0.0f ? z : z * slope;
    default: return z;
  }
}

// d act / dz at the pre-activation z, with torch's conventions at the kinks: relu 0 at 0,
// relu6 0 at 0 and 6 (hardtanh), hard_swish z/3 + 1/2 strictly inside (-3, 3), 0 at -3
// and 1 at 3 (measured on torch 2.14's hardswish_backward).
SE_HOST_DEVICE float act_grad(float z, Act act, float slope = kDefaultLeakySlope) {
  switch (act) {
    case Act::Relu: return z > 0.0f ? 1.0f : 0.0f;
    case Act::Silu: {
      const float s = sigmoid(z);
      return s * (1.0f + z * (1.0f - s));
    }
    case Act::Relu6: return (z > 0.0f && z < 6.0f) ? 1.0f : 0.0f;
    case Act::Gelu:
      return 0.5f * (1.0f + ::erff(z * kSqrtHalf)) + z * kInvSqrt2Pi * ::expf(-0.5f * z * z);
    case Act::GeluTanh: {
      const float t = ::tanhf(kSqrt2OverPi * (z + kGeluKappa * z * z * z));
      return 0.5f * (1.0f + t) +
             0.5f * z * (1.0f - t * t) * kSqrt2OverPi * (1.0f + 3.0f * kGeluKappa * z * z);
    }
    case Act::HardSwish: return z <= -3.0f ? 0.0f : (z < 3.0f ? z / 3.0f + 0.5f : 1.0f);
    case Act::Mish: {
      const float t = ::tanhf(softplus(z));
      return t + z * sigmoid(z) * (1.0f - t * t);
    }
    case Act::Tanh: {
      const float t = ::tanhf(z);
      return 1.0f - t * t;
    }
    case Act::Sigmoid: {
      const float s = sigmoid(z);
      return s * (1.0f - s);
    }
    case Act::LeakyRelu: return z > 0.0f ? 1.0f : slope;  // the slope at 0, as torch
    default: return 1.0f;
  }
}

SE_HOST_DEVICE float gate_forward(float z, Gate gate) {
  if (gate == Gate::Sigmoid) return sigmoid(z);
  if (gate == Gate::Tanh) return ::tanhf(z);
  return relu6(z + 3.0f) / 6.0f;
}

// d gate / dz at the gate input z; hard_sigmoid's slope is 1/6 strictly inside (-3, 3).
SE_HOST_DEVICE float gate_grad(float z, Gate gate) {
  if (gate == Gate::Sigmoid) {
    const float s = sigmoid(z);
    return s * (1.0f - s);
  }
  if (gate == Gate::Tanh) {
    const float t = ::tanhf(z);
    return 1.0f - t * t;
  }
  return (z > -3.0f && z < 3.0f) ? 1.0f / 6.0f : 0.0f;
}

// ECA's convolution across the channel axis at channel c of a per-channel vector v:
// sum_j taps[j] * v[c + dir * (j - pad)], pad = (k - 1) / 2, zero or circular padding
// (CECA); dir = +1 is the Conv1d (forward), -1 its transpose (backward, the gradient
// for v). Taps in ascending order: a fixed summation order. Ptr: float* or a checked
// pointer of the emulator.
template <typename Ptr, typename TapPtr>
SE_HOST_DEVICE float channel_conv_at(Ptr v, TapPtr taps, int k, bool circular, int64_t C,
                                     int64_t c, int dir) {
  const int pad = (k - 1) / 2;
  float acc = 0.0f;
  for (int j = 0; j < k; ++j) {
    int64_t src = c + dir * (j - pad);
    if (circular) {
      src = ((src % C) + C) % C;
    } else if (src < 0 || src >= C) {
      continue;
    }
    acc += taps[j] * v[src];
  }
  return acc;
}

}  // namespace se_kernels
