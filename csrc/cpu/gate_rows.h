// The gate over rows of logits, and its derivative, for the CPU kernels' sample stage.
#pragma once

#include <cstdint>

#include "../se_math.h"
#include "vec_io.h"

namespace se_kernels::cpu {

// The sigmoid gate is vectorised (one exp per channel per sample: libm's scalar expf was
// a third of the sample stage's time outside the GEMMs at C=1152, batch 8); the other
// gates are cheap or rare.
inline void gate_rows(float* s, const float* logits, int64_t count, Gate gate, float gain) {
  if (gate == Gate::Sigmoid) {
    const fVec one(1.0f), g(gain);
    for_vectors(count, [&](int64_t i, int64_t n) {
      store(s + i, g * (one / (one + load(logits + i, n).neg().exp())), n);
    });
    return;
  }
  for (int64_t i = 0; i < count; ++i) s[i] = gain * gate_forward(logits[i], gate);
}

// d[i] = d[i] * gain * gate'(logits[i]) in place: dL/dlogit from dL/ds. Vectorised for
// the sigmoid like gate_rows: the scalar loop, a libm expf per element, made the whole
// backward op 7-18% slower at 7x7 layers (batch 1-64).
inline void gate_grad_rows(float* d, const float* logits, int64_t count, Gate gate, float gain) {
  if (gate == Gate::Sigmoid) {
    const fVec one(1.0f), g(gain);
    for_vectors(count, [&](int64_t i, int64_t n) {
      const fVec s = one / (one + load(logits + i, n).neg().exp());
      store(d + i, (load(d + i, n) * g) * (s * (one - s)), n);
    });
    return;
  }
  for (int64_t i = 0; i < count; ++i) d[i] = d[i] * gain * gate_grad(logits[i], gate);
}

}  // namespace se_kernels::cpu
