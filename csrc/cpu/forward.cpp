// Fused SE forward on the CPU: pool, FC1 -> act -> FC2 -> gate, then y = x * scale
// (+ residual, ReLU), vectorised with at::vec and parallel with at::parallel_for.
// Deterministic for a fixed thread count (every sum runs in a fixed order in one task).
#include "../se_dispatch.h"
#include <torch/library.h>

#include <limits>
#include <vector>

#include "../se_host.h"
#include "../se_math.h"
#include "dense.h"
#include "layout.h"

namespace se_kernels::cpu {
namespace {

template <typename T>
struct ForwardKernel {
  const T* x;
  const T* residual;  // null when absent
  T* y;
  const float *w1, *b1, *w2, *b2;  // b1 / b2 / w2 may be null
  float* pooled_part;  // [N, S, C] scratch: each split's share of the pooled value
  float* pooled;       // [N, C]
  float* pooled_max;   // [N, C] (avgmax)
  float* fc1_out;      // [N, R1]
  float* fc2_out;      // [N, C] (two-FC)
  float* scale;        // [N, C] scratch: gain * gate
  Problem p;
  Options o;
  bool channels_last;
  int64_t n_splits;

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
    const fVec neg_inf(-std::numeric_limits<float>::infinity());
    if (!channels_last) {  // each channel is a contiguous run of HW
      for (int64_t c = c0; c < c1; ++c) {
        const T* row = x + (n * p.C + c) * p.HW;
        fVec sum(0.0f), peak = neg_inf;
        for_vectors(hw1 - hw0, [&](int64_t i, int64_t len) {
          const fVec v = load(row + hw0 + i, len);
          sum += v;
          if (avgmax()) peak = at::vec::maximum(peak, fVec::set(neg_inf, v, len));
        });
        finish_channel(n, c, split, sum_lanes(sum), max_lanes(peak));
      }
      return;
    }
    const int64_t width = c1 - c0;  // channels_last: accumulate whole rows of channels
    std::vector<float> sum(width, 0.0f), peak(width, -std::numeric_limits<float>::infinity());
    for (int64_t hw = hw0; hw < hw1; ++hw) {
      const T* row = x + (n * p.HW + hw) * p.C + c0;
      for_vectors(width, [&](int64_t i, int64_t len) {
        const fVec v = load(row + i, len);
        store(sum.data() + i, load(sum.data() + i, len) + v, len);
        if (avgmax()) store(peak.data() + i, at::vec::maximum(load(peak.data() + i, len), v), len);
      });
    }
    for (int64_t i = 0; i < width; ++i) finish_channel(n, c0 + i, split, sum[i], peak[i]);
  }

  void sample(int64_t n) const {
    float* p_n = pooled + n * p.C;
    for (int64_t c = 0; c < p.C; ++c) {
      float total = 0.0f;
      for (int64_t s = 0; s < n_splits; ++s) total += pooled_part[(n * n_splits + s) * p.C + c];
      p_n[c] = total;
    }
    float* z1 = fc1_out + n * p.R1;
    for (int64_t r = 0; r < p.R1; ++r) {
      z1[r] = dot(w1 + r * p.C, p_n, p.C) + (b1 ? b1[r] : 0.0f);
    }
    float* s_n = scale + n * p.C;
    if (!p.has_fc2) {  // single-FC eSE: the gate takes FC1's output
      for (int64_t c = 0; c < p.C; ++c) s_n[c] = o.gain * gate_forward(z1[c], o.gate);
      return;
    }
    std::vector<float> h(p.R1);
    for (int64_t r = 0; r < p.R1; ++r) h[r] = act_forward(z1[r], o.act);
    float* z2 = fc2_out + n * p.C;
    for (int64_t c = 0; c < p.C; ++c) {
      z2[c] = dot(w2 + c * p.R1, h.data(), p.R1) + (b2 ? b2[c] : 0.0f);
      s_n[c] = o.gain * gate_forward(z2[c], o.gate);
    }
  }

  void stream(int64_t row0, int64_t row1) const {
    const int64_t len = channels_last ? p.C : p.HW;
    const fVec zero(0.0f);
    for (int64_t row = row0; row < row1; ++row) {
      const int64_t base = row * len;
      // NCHW: one scale for the row; channels_last: the sample's scale vector.
      const float* s_row = scale + (channels_last ? (row / p.HW) * p.C : 0);
      const fVec s_scalar(channels_last ? 0.0f : scale[row]);
      for_vectors(len, [&](int64_t i, int64_t n) {
        fVec v = load(x + base + i, n) * (channels_last ? load(s_row + i, n) : s_scalar);
        if (residual) v += load(residual + base + i, n);
        if (o.out_relu) v = fVec::blendv(zero, v, v > zero);
        store(y + base + i, v, n);
      });
    }
  }
};

ForwardOutputs forward_cpu(const at::Tensor& x_in, const at::Tensor& w1,
                           const std::optional<at::Tensor>& b1, const std::optional<at::Tensor>& w2,
                           const std::optional<at::Tensor>& b2,
                           const std::optional<at::Tensor>& residual, c10::string_view pool,
                           c10::string_view act, c10::string_view gate, double gain,
                           c10::string_view out_act) {
  const Options opts = parse_options(pool, act, gate, gain, out_act);
  const Problem p = check_forward(x_in, w1, b1, w2, b2, residual);
  auto outputs = forward_outputs(x_in, p, opts);
  auto& [y_out, pooled, pooled_max, fc1_out, fc2_out] = outputs;
  if (p.N == 0) return outputs;

  const bool cl = choose_channels_last(x_in);
  const at::Tensor x = in_layout(x_in, cl);
  const bool has_residual = residual.has_value() && residual->defined();
  const at::Tensor res = has_residual ? in_layout(*residual, cl) : at::Tensor();
  OutputInLayout y(y_out, cl);
  const Plan plan = make_plan(p, cl, x.element_size(), opts.pool == Pool::Avg);
  const at::Tensor w1f = as_float(w1), b1f = as_float(b1), w2f = as_float(w2), b2f = as_float(b2);
  const at::Tensor pooled_part = float_buffer(x, {p.N, plan.n_splits, p.C});
  const at::Tensor scale = float_buffer(x, {p.N, p.C});
  const auto ptr = [](const at::Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; };

  SE_DISPATCH_FLOAT_TYPES(x.scalar_type(), "se_kernels::forward_cpu", [&] {
    ForwardKernel<scalar_t> k{x.data_ptr<scalar_t>(), has_residual ? res.data_ptr<scalar_t>() : nullptr,
                              y.work.data_ptr<scalar_t>(), w1f.data_ptr<float>(), ptr(b1f), ptr(w2f),
                              ptr(b2f), pooled_part.data_ptr<float>(), pooled.data_ptr<float>(),
                              pooled_max.data_ptr<float>(), fc1_out.data_ptr<float>(),
                              fc2_out.data_ptr<float>(), scale.data_ptr<float>(), p, opts, cl,
                              plan.n_splits};
    run_stages(k, p, plan, cl);
  });
  y.finish();
  return outputs;
}

}  // namespace

TORCH_LIBRARY_IMPL(se_kernels, CPU, m) { m.impl("forward", &forward_cpu); }

}  // namespace se_kernels::cpu
