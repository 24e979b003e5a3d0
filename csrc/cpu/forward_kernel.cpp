// Fused SE forward on the CPU, built once per ISA (see abi.h): pool, FC1 -> act -> FC2
// -> gate, then y = x * scale (+ residual, ReLU), vectorised with at::vec and parallel
// with at::parallel_for. Bitwise deterministic: every sum runs in an order the shape
// fixes, in one task.
#include <limits>
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
struct ForwardKernel {
  const ForwardArgs& a;  // everything else follows from it (see abi.h for the arrays)
  const T* x = static_cast<const T*>(a.x);
  const T* residual = static_cast<const T*>(a.residual);  // null when absent
  T* y = static_cast<T*>(a.y);
  const float *w1 = a.w1, *b1 = a.b1, *w2 = a.w2, *b2 = a.b2;
  float *pooled_part = a.pooled_part, *pooled = a.pooled, *pooled_max = a.pooled_max;
  float *fc1_out = a.fc1_out, *hidden = a.hidden, *fc2_out = a.fc2_out, *scale = a.scale;
  const Problem& p = a.problem;
  const Options& o = a.options;
  bool channels_last = a.channels_last;
  int64_t n_splits = a.plan.n_splits;

  bool avgmax() const { return o.pool == Pool::AvgMax; }

  void finish_channel(int64_t n, int64_t c, int64_t split, float sum, float peak) const {
    float v = sum / static_cast<float>(p.HW);
    if (avgmax()) {  // avgmax is never split: the task saw the whole HW range
      pooled_max[n * p.C + c] = peak;
      v = 0.5f * v + 0.5f * peak;
    }
    pooled_part[(n * n_splits + split) * p.C + c] = v;
  }

  void reduce(int64_t n, int64_t c0, int64_t c1, int64_t split, int64_t hw0, int64_t hw1) const {
    with_static_flags([&](auto cl, auto max) { reduce_block<cl, max>(n, c0, c1, split, hw0, hw1); },
                      channels_last, avgmax());
  }

  // Per-channel sum (and max) of x over [c0, c1) x [hw0, hw1) of sample n.
  template <bool CL, bool MAX>
  void reduce_block(int64_t n, int64_t c0, int64_t c1, int64_t split, int64_t hw0, int64_t hw1) const {
    const fVec neg_inf(-std::numeric_limits<float>::infinity());
    if constexpr (!CL) {  // each channel is a contiguous run of HW
      for (int64_t c = c0; c < c1; ++c) {
        const T* row = x + (n * p.C + c) * p.HW + hw0;
        fVec sum[4] = {fVec(0.0f), fVec(0.0f), fVec(0.0f), fVec(0.0f)};
        fVec peak[4] = {neg_inf, neg_inf, neg_inf, neg_inf};
        for_vectors_x4(hw1 - hw0, [&](int lane, int64_t i, int64_t len) {
          const fVec v = load(row + i, len);
          sum[lane] += v;
          if constexpr (MAX) peak[lane] = at::vec::maximum(peak[lane], fVec::set(neg_inf, v, len));
        });
        finish_channel(n, c, split, sum_lanes(combine4(sum)), MAX ? max_lanes(max4(peak)) : 0.0f);
      }
    } else {  // channels_last: whole rows of channels, kRowsAtOnce at a time
      const int64_t width = c1 - c0, C = p.C;
      std::vector<float> sum(width, 0.0f), peak(width, -std::numeric_limits<float>::infinity());
      const T* row = x + (n * p.HW + hw0) * C + c0;
      int64_t hw = hw0;
      for (; hw + kRowsAtOnce <= hw1; hw += kRowsAtOnce, row += kRowsAtOnce * C) {
        for_vectors(width, [&](int64_t i, int64_t len) {
          const fVec a = load(row + i, len), b = load(row + C + i, len);
          const fVec c = load(row + 2 * C + i, len), d = load(row + 3 * C + i, len);
          store(sum.data() + i, load(sum.data() + i, len) + ((a + b) + (c + d)), len);
          if constexpr (MAX) {
            const fVec m = at::vec::maximum(at::vec::maximum(a, b), at::vec::maximum(c, d));
            store(peak.data() + i, at::vec::maximum(load(peak.data() + i, len), m), len);
          }
        });
      }
      for (; hw < hw1; ++hw, row += C) {
        for_vectors(width, [&](int64_t i, int64_t len) {
          const fVec v = load(row + i, len);
          store(sum.data() + i, load(sum.data() + i, len) + v, len);
          if constexpr (MAX) store(peak.data() + i, at::vec::maximum(load(peak.data() + i, len), v), len);
        });
      }
      for (int64_t i = 0; i < width; ++i) finish_channel(n, c0 + i, split, sum[i], peak[i]);
    }
  }

  // The gate for samples [n0, n1): pooled = sum of the split partials, then the two FCs
  // (small GEMMs over the rows), act and gate. Phase::Squeeze stops at FC1 (its bias
  // null); Phase::Excite starts from the given FC1 output.
  void sample_range(int64_t n0, int64_t n1) const {
    const int64_t rows = n1 - n0;
    float* z1 = fc1_out + n0 * p.R1;
    if (a.phase != Phase::Excite) {
      for (int64_t n = n0; n < n1; ++n) {
        for (int64_t c = 0; c < p.C; ++c) {
          float total = 0.0f;
          for (int64_t s = 0; s < n_splits; ++s) total += pooled_part[(n * n_splits + s) * p.C + c];
          pooled[n * p.C + c] = total;
        }
      }
      linear(z1, pooled + n0 * p.C, w1, b1, rows, p.C, p.R1);
      if (a.phase == Phase::Squeeze) return;
    }
    const float* logits = z1;
    if (p.has_fc2) {
      float* h = hidden + n0 * p.R1;
      for (int64_t i = 0; i < rows * p.R1; ++i) h[i] = act_forward(z1[i], o.act, o.act_slope);
      float* z2 = fc2_out + n0 * p.C;
      linear(z2, h, w2, b2, rows, p.R1, p.C);
      logits = z2;
    } else if (a.taps != nullptr) {  // ECA: the given vector convolved across the channels
      float* conv = fc2_out + n0 * p.C;
      const float bias = b1 != nullptr ? b1[0] : 0.0f;
      for (int64_t i = 0; i < rows; ++i) {
        for (int64_t c = 0; c < p.C; ++c) {
          conv[i * p.C + c] =
              channel_conv_at(z1 + i * p.C, a.taps, a.n_taps, a.circular, p.C, c, 1) + bias;
        }
      }
      logits = conv;
    }
    gate_rows(scale + n0 * p.C, logits, rows * p.C, o.gate, o.gain);
  }

  void stream(int64_t row0, int64_t row1) const {
    with_static_flags(
        [&](auto cl, auto has_residual, auto relu) { stream_rows<cl, has_residual, relu>(row0, row1); },
        channels_last, residual != nullptr, o.out_relu);
  }

  // y = x * scale (+ residual) (ReLU) over rows of the contiguous dimension: (n, c) rows
  // of HW for NCHW, (n, hw) rows of C for channels_last.
  template <bool CL, bool RESIDUAL, bool RELU>
  void stream_rows(int64_t row0, int64_t row1) const {
    const int64_t len = CL ? p.C : p.HW;
    const fVec zero(0.0f);
    for (int64_t row = row0; row < row1; ++row) {
      const T* xr = x + row * len;
      const T* rr = RESIDUAL ? residual + row * len : nullptr;
      T* yr = y + row * len;
      const float* s_vec = scale + (row / p.HW) * p.C;  // channels_last: the sample's scales
      const fVec s_row(CL ? 0.0f : scale[row]);          // NCHW: one scale per row
      for_vectors(len, [&](int64_t i, int64_t n) {
        fVec v = load(xr + i, n) * (CL ? load(s_vec + i, n) : s_row);
        if constexpr (RESIDUAL) v += load(rr + i, n);
        if constexpr (RELU) v = fVec::blendv(v, zero, v < zero);  // NaN passes, as torch.relu
        store(yr + i, v, n);
      });
    }
  }
};

}  // namespace

void forward_kernel(const ForwardArgs& args) { run_kernel<ForwardKernel>(args); }

}  // namespace se_kernels::cpu
