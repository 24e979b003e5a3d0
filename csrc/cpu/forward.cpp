// Fused SE forward on the CPU: pool, FC1 -> act -> FC2 -> gate, then y = x * scale
// (+ residual, ReLU), vectorised with at::vec and parallel with at::parallel_for.
// Deterministic for a fixed thread count (every sum runs in a fixed order in one task).
#include "../se_dispatch.h"
#include <torch/library.h>

#include <limits>
#include <vector>

#include "../se_host.h"
#include "../se_math.h"
#include "linear.h"
#include "vec_io.h"
#include "layout.h"

namespace se_kernels::cpu {
namespace {

template <typename T>
struct ForwardKernel {
  const T* x;
  const T* residual;  // null when absent
  T* y;
  const float *w1, *b1, *w2, *b2;  // float32 row-major; b1 / b2 / w2 null when absent
  float* pooled_part;  // [N, S, C] scratch: each split's share of the pooled value
  float* pooled;       // [N, C]
  float* pooled_max;   // [N, C] (avgmax)
  float* fc1_out;      // [N, R1]
  float* hidden;       // [N, R1] scratch: act(fc1_out) (two-FC)
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
    } else {  // channels_last: accumulate whole rows of channels
      const int64_t width = c1 - c0;
      std::vector<float> sum(width, 0.0f), peak(width, -std::numeric_limits<float>::infinity());
      for (int64_t hw = hw0; hw < hw1; ++hw) {
        const T* row = x + (n * p.HW + hw) * p.C + c0;
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
  // (small GEMMs over the rows), act and gate.
  void sample_range(int64_t n0, int64_t n1) const {
    for (int64_t n = n0; n < n1; ++n) {
      for (int64_t c = 0; c < p.C; ++c) {
        float total = 0.0f;
        for (int64_t s = 0; s < n_splits; ++s) total += pooled_part[(n * n_splits + s) * p.C + c];
        pooled[n * p.C + c] = total;
      }
    }
    const int64_t rows = n1 - n0;
    float* z1 = fc1_out + n0 * p.R1;
    linear(z1, pooled + n0 * p.C, w1, b1, rows, p.C, p.R1);
    const float* logits = z1;
    if (p.has_fc2) {
      float* h = hidden + n0 * p.R1;
      for (int64_t i = 0; i < rows * p.R1; ++i) h[i] = act_forward(z1[i], o.act);
      float* z2 = fc2_out + n0 * p.C;
      linear(z2, h, w2, b2, rows, p.R1, p.C);
      logits = z2;
    }
    float* s_rows = scale + n0 * p.C;
    for (int64_t i = 0; i < rows * p.C; ++i) s_rows[i] = o.gain * gate_forward(logits[i], o.gate);
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

ForwardOutputs forward_cpu(const at::Tensor& x_in, const at::Tensor& w1,
                           const std::optional<at::Tensor>& b1, const std::optional<at::Tensor>& w2,
                           const std::optional<at::Tensor>& b2,
                           const std::optional<at::Tensor>& residual, c10::string_view pool,
                           c10::string_view act, c10::string_view gate, double gain,
                           c10::string_view out_act) {
  const Options opts = parse_options(pool, act, gate, gain, out_act);
  const Problem p = check_forward(x_in, w1, b1, w2, b2, residual);
  if (p.N == 0) return forward_outputs(x_in, p, opts);

  const bool cl = choose_channels_last(x_in);
  const at::Tensor x = in_layout(x_in, cl);
  const bool has_residual = residual.has_value() && residual->defined();
  const at::Tensor res = has_residual ? in_layout(*residual, cl) : at::Tensor();
  const Plan plan = make_plan(p, cl, x.element_size(), opts.pool == Pool::Avg,
                              at::get_num_threads());
  const at::Tensor w1f = as_float(w1), b1f = as_float(b1), w2f = as_float(w2), b2f = as_float(b2);
  // One scratch allocation, made before the outputs (see ScratchFloats).
  ScratchFloats scratch(x, {p.N * plan.n_splits * p.C, p.N * p.C, (p.has_fc2 ? p.N : 0) * p.R1});
  float *pooled_part = scratch[0], *scale = scratch[1], *hidden = scratch[2];
  auto outputs = forward_outputs(x_in, p, opts);
  auto& [y_out, pooled, pooled_max, fc1_out, fc2_out] = outputs;
  OutputInLayout y(y_out, cl);

  SE_DISPATCH_FLOAT_TYPES(x.scalar_type(), "se_kernels::forward_cpu", [&] {
    ForwardKernel<scalar_t> k{x.data_ptr<scalar_t>(), has_residual ? res.data_ptr<scalar_t>() : nullptr,
                              y.work.data_ptr<scalar_t>(), w1f.data_ptr<float>(),
                              float_data_or_null(b1f), float_data_or_null(w2f),
                              float_data_or_null(b2f), pooled_part, pooled.data_ptr<float>(),
                              pooled_max.data_ptr<float>(), fc1_out.data_ptr<float>(), hidden,
                              fc2_out.data_ptr<float>(), scale, p, opts, cl, plan.n_splits};
    run_stages(k, p, plan, cl);
  });
  y.finish();
  return outputs;
}

}  // namespace

TORCH_LIBRARY_IMPL(se_kernels, CPU, m) { m.impl("forward", &forward_cpu); }

}  // namespace se_kernels::cpu
