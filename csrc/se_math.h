// Element-wise activation and gate maths (float32), shared by the CPU and CUDA kernels.
#pragma once

#include <cmath>

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

SE_HOST_DEVICE float act_forward(float z, Act act) {
  if (act == Act::Relu) return relu(z);
  if (act == Act::Silu) return z * sigmoid(z);
  return z;
}

// d act / dz at the pre-activation z; relu's derivative is 0 at z == 0, as torch's.
SE_HOST_DEVICE float act_grad(float z, Act act) {
  if (act == Act::Relu) return z > 0.0f ? 1.0f : 0.0f;
  if (act == Act::Silu) {
    const float s = sigmoid(z);
    return s * (1.0f + z * (1.0f - s));
  }
  return 1.0f;
}

SE_HOST_DEVICE float gate_forward(float z, Gate gate) {
  if (gate == Gate::Sigmoid) return sigmoid(z);
  const float t = z + 3.0f;
  return (t < 0.0f ? 0.0f : (t > 6.0f ? 6.0f : t)) / 6.0f;  // relu6(z + 3) / 6
}

// d gate / dz at the gate input z; hard_sigmoid's slope is 1/6 strictly inside (-3, 3).
SE_HOST_DEVICE float gate_grad(float z, Gate gate) {
  if (gate == Gate::Sigmoid) {
    const float s = sigmoid(z);
    return s * (1.0f - s);
  }
  return (z > -3.0f && z < 3.0f) ? 1.0f / 6.0f : 0.0f;
}

}  // namespace se_kernels
