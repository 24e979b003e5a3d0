// The gate over rows of logits, for the CPU kernels' sample stage: s = gain * gate(z).
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

}  // namespace se_kernels::cpu
