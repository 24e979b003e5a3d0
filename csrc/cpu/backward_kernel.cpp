// Fused SE backward on the CPU, built once per ISA (see abi.h); the same three stages as
// the forward:
//   reduce: ds = sum_hw g*x (ReLU-epilogue mask applied) and, for avgmax, the tie count;
//   sample: d_logit = gain*ds*gate', dh = W2^T d_logit, dz1 = dh*act', dp = W1^T dz1
//           (small GEMMs over the samples);
//   stream: dx = g*gain*s + dp/HW (+ the max share), and the masked residual grad.
// With a ReLU epilogue and a shortcut, the fused call writes the masked g (the shortcut's
// gradient, an output anyway) in the reduce pass, and the stream pass reads that one
// tensor instead of g and the saved output: 6 passes over the activations, not 7.
// The weight and bias gradients are small GEMMs over the batch, done by the caller
// (se_kernels/fc_grads.py: the fc_grads op, fc_grads_kernel.cpp, on the CPU).
#include <algorithm>
#include <vector>

#include "../se_math.h"
#include "abi.h"
#include "gate_rows.h"
#include "linear.h"
#include "stages.h"
#include "vec_io.h"

namespace se_kernels::cpu {
namespace {

template <typename T>
struct BackwardKernel {
  const BackwardArgs& a;  // everything else follows from it (see abi.h for the arrays)
  const T *g = static_cast<const T*>(a.g), *x = static_cast<const T*>(a.x);
  const T* out = static_cast<const T*>(a.out);  // forward output, for the ReLU mask
  T *dx = static_cast<T*>(a.dx), *d_residual = static_cast<T*>(a.d_residual);
  const float *w1 = a.w1, *w2 = a.w2;
  const float *fc1_out = a.fc1_out, *gate_in = a.gate_in, *pooled_max = a.pooled_max;
  float *d_part = a.d_part, *ties = a.ties, *grad_fc1 = a.grad_fc1, *grad_fc2 = a.grad_fc2;
  float *d_pooled = a.d_pooled, *scale = a.scale, *d_mean = a.d_mean, *d_max = a.d_max;
  const Problem& p = a.problem;
  const Options& o = a.options;
  bool channels_last = a.channels_last;
  int64_t n_splits = a.plan.n_splits;

  bool avgmax() const { return o.pool == Pool::AvgMax; }
  // The whole backward in this call (not a split op's half) with a masked residual grad:
  // reduce stores it, stream reads it instead of masking g again.
  bool masked_in_reduce() const { return a.phase == Phase::All && d_residual != nullptr; }

  // The gradient at src with the epilogue's ReLU mask applied, for n elements at offset i:
  // zero where the saved output is <= 0; a NaN output keeps its gradient, as torch's relu
  // backward.
  template <bool RELU>
  fVec masked_grad(const T* src, int64_t i, int64_t n) const {
    const fVec gv = load(src + i, n);
    if constexpr (!RELU) return gv;
    const fVec zero(0.0f);
    return fVec::blendv(gv, zero, load(out + i, n) <= zero);
  }

  void reduce(int64_t n, int64_t c0, int64_t c1, int64_t split, int64_t hw0, int64_t hw1) const {
    with_static_flags(
        [&](auto cl, auto relu, auto store, auto max) {
          reduce_block<cl, relu, store, max>(n, c0, c1, split, hw0, hw1);
        },
        channels_last, o.out_relu, masked_in_reduce(), avgmax());
  }

  // Per-channel sum of g*x (and count of max positions) over [c0, c1) x [hw0, hw1);
  // STORE: the masked g also goes to d_residual.
  template <bool CL, bool RELU, bool STORE, bool MAX>
  void reduce_block(int64_t n, int64_t c0, int64_t c1, int64_t split, int64_t hw0, int64_t hw1) const {
    const fVec zero(0.0f);
    auto finish = [&](int64_t c, float gx, float tie_count) {
      d_part[(n * n_splits + split) * p.C + c] = gx;
      if constexpr (MAX) ties[n * p.C + c] = tie_count;  // never split
    };
    if constexpr (!CL) {
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t base = (n * p.C + c) * p.HW + hw0;
        const fVec peak(MAX ? pooled_max[n * p.C + c] : 0.0f);
        fVec gx[4] = {zero, zero, zero, zero}, count[4] = {zero, zero, zero, zero};
        for_vectors_x4(hw1 - hw0, [&](int lane, int64_t i, int64_t len) {
          const fVec xv = load(x + base + i, len), gv = masked_grad<RELU>(g, base + i, len);
          if constexpr (STORE) store(d_residual + base + i, gv, len);
          gx[lane] = at::vec::fmadd(gv, xv, gx[lane]);
          if constexpr (MAX) count[lane] += fVec::set(zero, xv.eq(peak), len);
        });
        finish(c, sum_lanes(combine4(gx)), sum_lanes(combine4(count)));
      }
    } else {  // channels_last: rows of channels, folded into one row of sums
      const int64_t width = c1 - c0, C = p.C;
      std::vector<float> gx(width, 0.0f), count(width, 0.0f);
      const float* peak = pooled_max + n * p.C + c0;
      int64_t base = (n * p.HW + hw0) * C + c0, hw = hw0;
      auto fold_row = [&](int64_t at, int64_t i, int64_t len, fVec& acc, fVec& ties) {
        const fVec xv = load(x + at + i, len), gv = masked_grad<RELU>(g, at + i, len);
        if constexpr (STORE) store(d_residual + at + i, gv, len);
        acc = at::vec::fmadd(gv, xv, acc);
        if constexpr (MAX) ties += xv.eq(load(peak + i, len));
      };
      // When the task spans every channel its rows lie end to end: taken one at a time, g
      // and x are then each read as one sequential stream. Four at a time interleaves
      // eight streams a row apart, which an AMD EPYC fetched from memory at half the
      // bandwidth (the loop alone, 8x256x56x56: 5 against 10 GB/s). Same sums, same order.
      const int64_t k = width == C ? 1 : kRowsAtOnce;
      for (int64_t rows; hw < hw1; hw += rows, base += rows * C) {
        rows = std::min(k, hw1 - hw);
        for_vectors(width, [&](int64_t i, int64_t len) {
          fVec acc = load(gx.data() + i, len), ties = load(count.data() + i, len);
          for (int64_t r = 0; r < rows; ++r) fold_row(base + r * C, i, len, acc, ties);
          store(gx.data() + i, acc, len);
          if constexpr (MAX) store(count.data() + i, ties, len);
        });
      }
      for (int64_t i = 0; i < width; ++i) finish(c0 + i, gx[i], count[i]);
    }
  }

  // For samples [n0, n1): d_logit = gain * ds * gate', then back through the FCs as
  // small GEMMs: dh = d_logit @ W2, dz1 = dh * act', dp = dz1 @ W1. Phase::Squeeze stops
  // at dh (left in grad_fc1); Phase::Excite starts from the given dz1 in grad_fc1.
  void sample_range(int64_t n0, int64_t n1) const {
    const int64_t rows = n1 - n0;
    // dL/d(gate input), written straight into the output it ends up in.
    float* d_logit = (p.has_fc2 ? grad_fc2 : grad_fc1) + n0 * p.C;
    // The scale as forward's gate_rows computes it, and with it (one sigmoid) dL/dlogit.
    if (a.phase == Phase::Excite) {
      gate_rows(scale + n0 * p.C, gate_in + n0 * p.C, rows * p.C, o.gate, o.gain);
    } else {
      for (int64_t n = n0; n < n1; ++n) {
        for (int64_t c = 0; c < p.C; ++c) {
          float ds = 0.0f;
          for (int64_t s = 0; s < n_splits; ++s) ds += d_part[(n * n_splits + s) * p.C + c];
          d_logit[(n - n0) * p.C + c] = ds;
        }
      }
      gate_and_grad_rows(scale + n0 * p.C, d_logit, gate_in + n0 * p.C, rows * p.C, o.gate, o.gain);
    }
    float* dz1 = grad_fc1 + n0 * p.R1;
    if (p.has_fc2 && a.phase != Phase::Excite) {
      linear_input_grad(dz1, d_logit, w2, rows, p.R1, p.C);  // dh
      if (a.phase == Phase::Squeeze) return;
      const float* z1 = fc1_out + n0 * p.R1;
      for (int64_t i = 0; i < rows * p.R1; ++i) dz1[i] *= act_grad(z1[i], o.act, o.act_slope);
    }
    if (a.phase == Phase::Squeeze) return;
    float* dp = d_pooled + n0 * p.C;
    if (w1 != nullptr) {
      linear_input_grad(dp, dz1, w1, rows, p.C, p.R1);
    } else if (a.taps != nullptr) {  // ECA: grad_fc1 holds dL/dlogits; the conv's transpose
      for (int64_t i = 0; i < rows; ++i) {
        for (int64_t c = 0; c < p.C; ++c) {
          dp[i * p.C + c] = channel_conv_at(dz1 + i * p.C, a.taps, a.n_taps, a.circular, p.C, c, -1);
        }
      }
    } else {  // split op without FC1: grad_fc1 holds dL/dpooled itself
      std::copy(dz1, dz1 + rows * p.C, dp);
    }
    const float inv_hw = 1.0f / static_cast<float>(p.HW);
    for (int64_t i = 0; i < rows * p.C; ++i) {
      const int64_t at = n0 * p.C + i;
      if (avgmax()) {  // ties share the max's gradient evenly, as torch.amax's backward
        d_mean[at] = 0.5f * dp[i] * inv_hw;
        d_max[at] = 0.5f * dp[i] / ties[at];
      } else {
        d_mean[at] = dp[i] * inv_hw;
      }
    }
  }

  void stream(int64_t row0, int64_t row1) const {
    // Masked in the reduce pass: read that back, already masked and already written.
    const bool reread = masked_in_reduce();
    const T* src = reread ? d_residual : g;
    with_static_flags(
        [&](auto cl, auto relu, auto write_res, auto max) {
          stream_rows<cl, relu, write_res, max>(src, row0, row1);
        },
        channels_last, o.out_relu && !reread, d_residual != nullptr && !reread, avgmax());
  }

  // dx (and the masked residual grad) over rows of the contiguous dimension, from the
  // gradient at src.
  template <bool CL, bool RELU, bool WRITE_RESIDUAL, bool MAX>
  void stream_rows(const T* src, int64_t row0, int64_t row1) const {
    const int64_t len = CL ? p.C : p.HW;
    const fVec zero(0.0f);
    for (int64_t row = row0; row < row1; ++row) {
      const int64_t base = row * len;
      // Per-channel values: NCHW rows are one channel (broadcast), channels_last rows
      // run along the sample's channel vector.
      const int64_t first = CL ? (row / p.HW) * p.C : row;
      auto channel_vec = [&](const float* v, int64_t i, int64_t n) {
        return CL ? load(v + first + i, n) : fVec(v[first]);
      };
      for_vectors(len, [&](int64_t i, int64_t n) {
        const fVec gv = masked_grad<RELU>(src, base + i, n);
        if constexpr (WRITE_RESIDUAL) store(d_residual + base + i, gv, n);
        fVec d = at::vec::fmadd(gv, channel_vec(scale, i, n), channel_vec(d_mean, i, n));
        if constexpr (MAX) {
          const fVec at_max = load(x + base + i, n) == channel_vec(pooled_max, i, n);
          d += fVec::blendv(zero, channel_vec(d_max, i, n), at_max);
        }
        store(dx + base + i, d, n);
      });
    }
  }
};

}  // namespace

void backward_kernel(const BackwardArgs& args) { run_kernel<BackwardKernel>(args); }

}  // namespace se_kernels::cpu
