// Fused SE backward on the CPU, the same three stages as the forward:
//   reduce: ds = sum_hw g*x (ReLU-epilogue mask applied) and, for avgmax, the tie count;
//   sample: d_logit = gain*ds*gate', dh = W2^T d_logit, dz1 = dh*act', dp = W1^T dz1
//           (small GEMMs over the samples);
//   stream: dx = g*gain*s + dp/HW (+ the max share), and the masked residual grad.
// The weight and bias gradients are small GEMMs over the batch, done by the caller.
#include <torch/library.h>

#include <vector>

#include "../se_dispatch.h"
#include "../se_host.h"
#include "../se_math.h"
#include "linear.h"
#include "vec_io.h"
#include "layout.h"

namespace se_kernels::cpu {
namespace {

template <typename T>
struct BackwardKernel {
  const T *g, *x, *out;  // out: forward output, for the ReLU mask (null otherwise)
  T *dx, *d_residual;    // d_residual null unless written
  const float *w1, *w2;  // float32 [R1, C] and [C, R1] (w2 null for single-FC)
  const float *fc1_out, *gate_in, *pooled_max;
  float* d_part;    // [N, S, C] scratch: sum of g*x over each split
  float* ties;      // [N, C] scratch (avgmax): positions equal to the max
  float* grad_fc1;  // [N, R1]
  float* grad_fc2;  // [N, C] (two-FC)
  float* d_pooled;  // [N, C] scratch: dL/d(pooled)
  float* scale;     // [N, C] scratch: gain * gate
  float* d_mean;     // [N, C] scratch: dp / HW share of every position
  float* d_max;      // [N, C] scratch (avgmax): share of each max position
  Problem p;
  Options o;
  bool channels_last;
  int64_t n_splits;

  bool avgmax() const { return o.pool == Pool::AvgMax; }

  // g with the epilogue's ReLU mask applied, for n elements at offset i.
  template <bool RELU>
  fVec masked_grad(int64_t i, int64_t n) const {
    const fVec gv = load(g + i, n);
    if constexpr (!RELU) return gv;
    const fVec zero(0.0f);
    return fVec::blendv(zero, gv, load(out + i, n) > zero);
  }

  void reduce(int64_t n, int64_t c0, int64_t c1, int64_t split, int64_t hw0, int64_t hw1) const {
    with_static_flags(
        [&](auto cl, auto relu, auto max) { reduce_block<cl, relu, max>(n, c0, c1, split, hw0, hw1); },
        channels_last, o.out_relu, avgmax());
  }

  // Per-channel sum of g*x (and count of max positions) over [c0, c1) x [hw0, hw1).
  template <bool CL, bool RELU, bool MAX>
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
          const fVec xv = load(x + base + i, len);
          gx[lane] = at::vec::fmadd(masked_grad<RELU>(base + i, len), xv, gx[lane]);
          if constexpr (MAX) count[lane] += fVec::set(zero, xv.eq(peak), len);
        });
        finish(c, sum_lanes(combine4(gx)), sum_lanes(combine4(count)));
      }
    } else {
      const int64_t width = c1 - c0;
      std::vector<float> gx(width, 0.0f), count(width, 0.0f);
      const float* peak = pooled_max + n * p.C + c0;
      for (int64_t hw = hw0; hw < hw1; ++hw) {
        const int64_t base = (n * p.HW + hw) * p.C + c0;
        for_vectors(width, [&](int64_t i, int64_t len) {
          const fVec xv = load(x + base + i, len);
          store(gx.data() + i, at::vec::fmadd(masked_grad<RELU>(base + i, len), xv, load(gx.data() + i, len)), len);
          if constexpr (MAX) store(count.data() + i, load(count.data() + i, len) + xv.eq(load(peak + i, len)), len);
        });
      }
      for (int64_t i = 0; i < width; ++i) finish(c0 + i, gx[i], count[i]);
    }
  }

  // For samples [n0, n1): d_logit = gain * ds * gate', then back through the FCs as
  // small GEMMs: dh = d_logit @ W2, dz1 = dh * act', dp = dz1 @ W1.
  void sample_range(int64_t n0, int64_t n1) const {
    const int64_t rows = n1 - n0;
    // dL/d(gate input), written straight into the output it ends up in.
    float* d_logit = (p.has_fc2 ? grad_fc2 : grad_fc1) + n0 * p.C;
    for (int64_t n = n0; n < n1; ++n) {
      for (int64_t c = 0; c < p.C; ++c) {
        float ds = 0.0f;
        for (int64_t s = 0; s < n_splits; ++s) ds += d_part[(n * n_splits + s) * p.C + c];
        const float z = gate_in[n * p.C + c];
        d_logit[(n - n0) * p.C + c] = ds * o.gain * gate_grad(z, o.gate);
        scale[n * p.C + c] = o.gain * gate_forward(z, o.gate);
      }
    }
    float* dz1 = grad_fc1 + n0 * p.R1;
    if (p.has_fc2) {
      linear_input_grad(dz1, d_logit, w2, rows, p.R1, p.C);  // dh
      const float* z1 = fc1_out + n0 * p.R1;
      for (int64_t i = 0; i < rows * p.R1; ++i) dz1[i] *= act_grad(z1[i], o.act);
    }
    float* dp = d_pooled + n0 * p.C;
    linear_input_grad(dp, dz1, w1, rows, p.C, p.R1);
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
    with_static_flags(
        [&](auto cl, auto relu, auto write_res, auto max) {
          stream_rows<cl, relu, write_res, max>(row0, row1);
        },
        channels_last, o.out_relu, d_residual != nullptr, avgmax());
  }

  // dx (and the masked residual grad) over rows of the contiguous dimension.
  template <bool CL, bool RELU, bool WRITE_RESIDUAL, bool MAX>
  void stream_rows(int64_t row0, int64_t row1) const {
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
        const fVec gv = masked_grad<RELU>(base + i, n);
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

BackwardOutputs backward_cpu(const at::Tensor& grad_y, const at::Tensor& x_in,
                             const std::optional<at::Tensor>& out, const at::Tensor& w1,
                             const std::optional<at::Tensor>& w2, const at::Tensor& pooled_max,
                             const at::Tensor& fc1_out, const at::Tensor& fc2_out,
                             bool has_residual, c10::string_view pool, c10::string_view act,
                             c10::string_view gate, double gain, c10::string_view out_act) {
  const Options opts = parse_options(pool, act, gate, gain, out_act);
  const Problem p = check_backward(grad_y, x_in, out, w1, w2, pooled_max, fc1_out, fc2_out, opts);
  const bool write_d_residual = has_residual && opts.out_relu;
  if (p.N == 0) return backward_outputs(x_in, p, write_d_residual);

  const bool cl = choose_channels_last(x_in);
  const at::Tensor x = in_layout(x_in, cl), g = in_layout(grad_y, cl);
  const at::Tensor o = opts.out_relu ? in_layout(*out, cl) : at::Tensor();
  const Plan plan = make_plan(p, cl, x.element_size(), opts.pool == Pool::Avg,
                              at::get_num_threads());
  const at::Tensor w1f = as_float(w1), w2f = as_float(w2);
  const int64_t nc = p.N * p.C;
  // d_part, ties, scale, d_mean, d_max, d_pooled: one allocation, before the outputs.
  ScratchFloats scratch(x, {plan.n_splits * nc, nc, nc, nc, nc, nc});
  auto outputs = backward_outputs(x_in, p, write_d_residual);
  auto& [dx_out, d_residual_out, grad_fc1, grad_fc2] = outputs;
  OutputInLayout dx(dx_out, cl), d_res(d_residual_out, cl);
  const at::Tensor& gate_in = p.has_fc2 ? fc2_out : fc1_out;

  SE_DISPATCH_FLOAT_TYPES(x.scalar_type(), "se_kernels::backward_cpu", [&] {
    using T = scalar_t;
    BackwardKernel<T> k{g.data_ptr<T>(), x.data_ptr<T>(), o.defined() ? o.data_ptr<T>() : nullptr,
                        dx.work.data_ptr<T>(), write_d_residual ? d_res.work.data_ptr<T>() : nullptr,
                        w1f.data_ptr<float>(), float_data_or_null(w2f),
                        fc1_out.data_ptr<float>(), gate_in.data_ptr<float>(),
                        pooled_max.data_ptr<float>(), scratch[0], scratch[1],
                        grad_fc1.data_ptr<float>(), grad_fc2.data_ptr<float>(), scratch[5],
                        scratch[2], scratch[3], scratch[4], p, opts, cl, plan.n_splits};
    run_stages(k, p, plan, cl);
  });
  dx.finish();
  if (write_d_residual) d_res.finish();
  return outputs;
}

}  // namespace

TORCH_LIBRARY_IMPL(se_kernels, CPU, m) { m.impl("backward", &backward_cpu); }

}  // namespace se_kernels::cpu
