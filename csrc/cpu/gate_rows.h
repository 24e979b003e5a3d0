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

// The sigmoid gate is vectorised (one exp per channel per sample: libm's scalar expf was
// a third of the sample stage's time outside the GEMMs at C=1152, batch 8); the other
// gates are cheap or rare.
inline void gate_rows(float* s, const float* logits, int64_t count, Gate gate, float gain) {
  if (gate == Gate::Sigmoid) {
    const fVec g(gain);
    for_vectors(count, [&](int64_t i, int64_t n) { store(s + i, g * sigmoid_vec(load(logits + i, n)), n); });
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
  if (gate == Gate::Sigmoid) {
    const fVec one(1.0f), g(gain);
    for_vectors(count, [&](int64_t i, int64_t n) {
      const fVec sig = sigmoid_vec(load(logits + i, n));
      store(s + i, g * sig, n);
      store(d + i, (load(d + i, n) * g) * (sig * (one - sig)), n);
    });
    return;
  }
  for (int64_t i = 0; i < count; ++i) {
    s[i] = gain * gate_forward(logits[i], gate);
    d[i] = d[i] * gain * gate_grad(logits[i], gate);
  }
}

}  // namespace se_kernels::cpu
