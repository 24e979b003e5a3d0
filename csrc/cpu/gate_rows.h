// The gate over rows of logits, and its derivative, for the CPU kernels' sample stage.
#pragma once

#include <cstdint>

#include "../se_math.h"
#include "vec_io.h"

namespace se_kernels::cpu {

// 1 / (1 + exp(-z)) in vectors, as se_math.h's sigmoid.
C10_ALWAYS_INLINE fVec sigmoid_vec(const fVec& z) {
  const fVec one(1.0f);
  return one / (one + z.neg().exp());
}

// relu6(z + 3) / 6 in vectors, as se_math.h's gate_forward (compares and blends, so NaN
// passes as in the scalar code, and the result is bitwise the same).
C10_ALWAYS_INLINE fVec hard_sigmoid_vec(const fVec& z) {
  const fVec zero(0.0f), six(6.0f);
  fVec t = z + fVec(3.0f);
  t = fVec::blendv(t, zero, t < zero);
  t = fVec::blendv(t, six, t > six);
  return t / six;
}

// hard_sigmoid's slope, 1/6 strictly inside (-3, 3), else 0 (se_math.h's gate_grad).
C10_ALWAYS_INLINE fVec hard_sigmoid_grad_vec(const fVec& z) {
  return fVec::blendv(fVec(0.0f), fVec(1.0f / 6.0f), (z > fVec(-3.0f)) & (z < fVec(3.0f)));
}

// The sigmoid and hard_sigmoid gates are vectorised (the sigmoid: one exp per channel per
// sample, libm's scalar expf was a third of the sample stage's time outside the GEMMs at
// C=1152, batch 8; hard_sigmoid: MobileNetV3's gate, a scalar loop of compares). tanh, rare,
// stays scalar: a vector tanh would change its last bits against the other backends'.
inline void gate_rows(float* s, const float* logits, int64_t count, Gate gate, float gain) {
  const fVec g(gain);
  if (gate == Gate::Sigmoid) {
    for_vectors(count, [&](int64_t i, int64_t n) { store(s + i, g * sigmoid_vec(load(logits + i, n)), n); });
    return;
  }
  if (gate == Gate::HardSigmoid) {
    for_vectors(count, [&](int64_t i, int64_t n) { store(s + i, g * hard_sigmoid_vec(load(logits + i, n)), n); });
    return;
  }
  for (int64_t i = 0; i < count; ++i) s[i] = gain * gate_forward(logits[i], gate);
}

// The backward's gate_rows: s as gate_rows writes it, and d[i] = d[i] * gain *
// gate'(logits[i]) in place (dL/dlogit from dL/ds), from one sigmoid per element. The
// scalar derivative, a libm expf per element, made the whole backward op 7-18% slower at
// 7x7 layers (batch 1-64).
inline void gate_and_grad_rows(float* s, float* d, const float* logits, int64_t count, Gate gate,
                               float gain) {
  const fVec one(1.0f), g(gain);
  if (gate == Gate::Sigmoid) {
    for_vectors(count, [&](int64_t i, int64_t n) {
      const fVec sig = sigmoid_vec(load(logits + i, n));
      store(s + i, g * sig, n);
      store(d + i, (load(d + i, n) * g) * (sig * (one - sig)), n);
    });
    return;
  }
  if (gate == Gate::HardSigmoid) {
    for_vectors(count, [&](int64_t i, int64_t n) {
      const fVec z = load(logits + i, n);
      store(s + i, g * hard_sigmoid_vec(z), n);
      store(d + i, (load(d + i, n) * g) * hard_sigmoid_grad_vec(z), n);
    });
    return;
  }
  for (int64_t i = 0; i < count; ++i) {
    s[i] = gain * gate_forward(logits[i], gate);
    d[i] = d[i] * gain * gate_grad(logits[i], gate);
  }
}

}  // namespace se_kernels::cpu
