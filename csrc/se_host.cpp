#include "se_host.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/Exception.h>
#include <c10/util/accumulate.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

namespace se_kernels {

namespace {

template <typename E>
using Names = std::initializer_list<std::pair<std::string_view, E>>;

// The enum value named `value`, or a ValueError listing the names (sorted, as Python does).
template <typename E>
E parse_name(const char* what, std::string_view value, Names<E> names) {
  for (const auto& [name, e] : names) {
    if (name == value) return e;
  }
  std::vector<std::string_view> sorted;
  for (const auto& entry : names) sorted.push_back(entry.first);
  std::sort(sorted.begin(), sorted.end());
  std::string list;
  for (auto name : sorted) list += (list.empty() ? "'" : ", '") + std::string(name) + "'";
  TORCH_CHECK_VALUE(false, what, " must be one of [", list, "], got '", value, "'");
  return names.begin()->second;  // not reached
}

}  // namespace

double act_negative_slope(std::string_view act) {
  if (act.substr(0, kLeakyPrefix.size()) != kLeakyPrefix) return kDefaultLeakySlope64;
  const std::string number(act.substr(kLeakyPrefix.size()));
  char* end = nullptr;
  const double slope = std::strtod(number.c_str(), &end);
  TORCH_CHECK_VALUE(!number.empty() && end == number.c_str() + number.size() && std::isfinite(slope),
                    "act 'leaky_relu:<slope>' needs a finite number after the colon, got '", act,
                    "'");
  return slope;
}

Options parse_options(std::string_view pool, std::string_view act, std::string_view gate,
                      double gain, std::string_view out_act) {
  Options o{};
  o.pool = parse_name<Pool>("pool", pool, {{"avg", Pool::Avg}, {"avgmax", Pool::AvgMax}});
  // "leaky_relu:<slope>": leaky_relu with that negative slope (plain "leaky_relu": 0.01).
  o.act_slope = static_cast<float>(act_negative_slope(act));
  if (act.substr(0, kLeakyPrefix.size()) == kLeakyPrefix) act = "leaky_relu";
  o.act = parse_name<Act>("act", act,
                          {{"identity", Act::Identity}, {"relu", Act::Relu}, {"silu", Act::Silu},
                           {"relu6", Act::Relu6}, {"gelu", Act::Gelu}, {"gelu_tanh", Act::GeluTanh},
                           {"hard_swish", Act::HardSwish}, {"mish", Act::Mish}, {"tanh", Act::Tanh},
                           {"sigmoid", Act::Sigmoid}, {"leaky_relu", Act::LeakyRelu}});
  o.gate = parse_name<Gate>("gate", gate,
                            {{"sigmoid", Gate::Sigmoid}, {"hard_sigmoid", Gate::HardSigmoid},
                             {"tanh", Gate::Tanh}});
  o.out_relu = parse_name<bool>("out_act", out_act, {{"identity", false}, {"relu", true}});
  o.gain = static_cast<float>(gain);
  return o;
}

std::optional<HWStrides> hw_strides(const at::Tensor& t) {
  const int64_t h = t.size(2), w = t.size(3);
  if (h == 1) return HWStrides{t.stride(0), t.stride(1), t.stride(3)};
  if (w == 1) return HWStrides{t.stride(0), t.stride(1), t.stride(2)};
  if (t.stride(2) == w * t.stride(3)) return HWStrides{t.stride(0), t.stride(1), t.stride(3)};
  return std::nullopt;
}

HWStrides kernel_strides(const char* name, const at::Tensor& t) {
  auto s = hw_strides(t);
  TORCH_CHECK_VALUE(s.has_value(), name, " has strides ", t.strides(), " for shape ", t.sizes(),
                    ": the kernels need H and W to merge into one index (NCHW- or "
                    "channels_last-contiguous); call .contiguous() first");
  return *s;
}

namespace {

bool is_kernel_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kHalf || t == at::kBFloat16;
}

void check_weight(const char* name, const at::Tensor& w, const at::Tensor& x) {
  TORCH_CHECK_TYPE(at::isFloatingType(w.scalar_type()), name, " must be a float tensor, got ",
                   w.scalar_type());
  TORCH_CHECK(w.device() == x.device(), name, " is on ", w.device(), " but x is on ", x.device(),
              "; all tensors must share a device");
}

void expect(const char* name, const at::Tensor& t, at::IntArrayRef shape, at::ScalarType dtype,
            const at::Tensor& x) {
  TORCH_CHECK_VALUE(t.defined() && t.sizes() == shape && t.scalar_type() == dtype &&
                        t.device() == x.device(),
                    name, " must be ", shape, " ", dtype, " on ", x.device(), ", got ",
                    t.defined() ? t.sizes() : at::IntArrayRef{}, " ",
                    t.defined() ? t.scalar_type() : dtype);
}

}  // namespace

namespace {

// x's rank, sizes and dtype: returns N, C, HW.
std::tuple<int64_t, int64_t, int64_t> check_x(const at::Tensor& x) {
  TORCH_CHECK_VALUE(x.dim() == 4, "x must be 4-D [N, C, H, W], got shape ", x.sizes());
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  TORCH_CHECK_VALUE(C >= 1 && HW >= 1, "x must have C >= 1 and H*W >= 1, got shape ", x.sizes());
  TORCH_CHECK_TYPE(is_kernel_dtype(x.scalar_type()), "x has dtype ", x.scalar_type(),
                   "; the fused kernels take float32, float16 or bfloat16 (float64 runs only on "
                   "backend='reference')");
  return {N, C, HW};
}

void check_w2(const at::Tensor& w2, int64_t C, int64_t R1, const at::Tensor& x) {
  TORCH_CHECK_VALUE(w2.dim() == 2 && w2.size(0) == C && w2.size(1) == R1, "w2 must have shape [C=",
                    C, ", R=", R1, "] to match x and w1, got ", w2.sizes());
  check_weight("w2", w2, x);
}

void check_b2_residual(const std::optional<at::Tensor>& b2,
                       const std::optional<at::Tensor>& residual, int64_t C, const at::Tensor& x) {
  if (present(b2)) {
    TORCH_CHECK_VALUE(b2->dim() == 1 && b2->size(0) == C, "b2 must have shape [C=", C, "], got ",
                      b2->sizes());
    check_weight("b2", *b2, x);
  }
  if (present(residual)) {
    TORCH_CHECK_VALUE(residual->sizes() == x.sizes(), "residual must have x's shape ", x.sizes(),
                      ", got ", residual->sizes());
    TORCH_CHECK(residual->device() == x.device(), "residual is on ", residual->device(),
                " but x is on ", x.device());
    TORCH_CHECK_TYPE(residual->scalar_type() == x.scalar_type(), "residual must have x's dtype ",
                     x.scalar_type(), ", got ", residual->scalar_type());
  }
}

}  // namespace

Problem check_forward(const at::Tensor& x, const at::Tensor& w1,
                      const std::optional<at::Tensor>& b1, const std::optional<at::Tensor>& w2,
                      const std::optional<at::Tensor>& b2,
                      const std::optional<at::Tensor>& residual) {
  const auto [N, C, HW] = check_x(x);
  TORCH_CHECK_VALUE(w1.dim() == 2 && w1.size(1) == C, "w1 must have shape [R, C=", C,
                    "] to match x, got ", w1.sizes());
  const int64_t R1 = w1.size(0);
  check_weight("w1", w1, x);
  const bool has_fc2 = present(w2);
  if (has_fc2) {
    check_w2(*w2, C, R1, x);
  } else {
    TORCH_CHECK_VALUE(R1 == C, "with w2=None (single-FC eSE) w1 must be square [C=", C, ", C=", C,
                      "], got ", w1.sizes());
    TORCH_CHECK_VALUE(!present(b2),
                      "b2 was given but w2 is None; single-FC eSE has no second bias");
  }
  if (present(b1)) {
    TORCH_CHECK_VALUE(b1->dim() == 1 && b1->size(0) == R1, "b1 must have shape [", R1,
                      "] (w1's output size), got ", b1->sizes());
    check_weight("b1", *b1, x);
  }
  check_b2_residual(b2, residual, C, x);
  return Problem{N, C, HW, R1, has_fc2};
}

namespace {

// A given per-sample float32 input of the split ops: [N, C] (channels) or [N, R1].
struct SmallInput {
  const char* name;
  const at::Tensor& tensor;
  bool channels;
};

// x, whichever FC weight the op takes (w1 [R, C] or w2 [C, R]; with neither, R1 = C and
// has_fc2 is false), b2, residual, and the given small tensors.
Problem check_split(const at::Tensor& x, const std::optional<at::Tensor>& w1,
                    const std::optional<at::Tensor>& w2, const std::optional<at::Tensor>& b2,
                    const std::optional<at::Tensor>& residual,
                    std::initializer_list<SmallInput> small) {
  const auto [N, C, HW] = check_x(x);
  // No FC weight: the gate's input is per channel (R1 = C), as single-FC eSE.
  int64_t R1 = C;
  const bool has_w1 = present(w1), has_w2 = present(w2);
  if (has_w1) {
    TORCH_CHECK_VALUE(w1->dim() == 2 && w1->size(1) == C, "w1 must have shape [R, C=", C,
                      "] to match x, got ", w1->sizes());
    check_weight("w1", *w1, x);
    R1 = w1->size(0);
  } else if (has_w2) {
    TORCH_CHECK_VALUE(w2->dim() == 2, "w2 must be 2-D [C, R], got ", w2->sizes());
    R1 = w2->size(1);
    check_w2(*w2, C, R1, x);
  } else {
    TORCH_CHECK_VALUE(!present(b2),
                      "b2 was given but w2 is None; the gate takes z1 itself");
  }
  check_b2_residual(b2, residual, C, x);
  for (const SmallInput& t : small) {
    expect(t.name, t.tensor, {N, t.channels ? C : R1}, at::kFloat, x);
  }
  return Problem{N, C, HW, R1, has_w1 || has_w2};
}

// ECA's convolution taps ([k], k odd) and their optional one-element bias, for a split
// op without FC weights.
void check_taps(const std::optional<at::Tensor>& taps, const std::optional<at::Tensor>& bias,
                const Problem& p, const at::Tensor& x) {
  const bool has_taps = present(taps);
  if (!has_taps) {
    TORCH_CHECK_VALUE(!present(bias), "taps_bias was given without taps");
    return;
  }
  TORCH_CHECK_VALUE(!p.has_fc2, "taps (ECA's convolution) take the place of the FC weights; "
                    "w1 / w2 must be None");
  TORCH_CHECK_VALUE(taps->dim() == 1 && taps->size(0) % 2 == 1, "taps must be 1-D of odd size k, got ",
                    taps->sizes());
  check_weight("taps", *taps, x);
  if (present(bias)) {
    TORCH_CHECK_VALUE(bias->numel() == 1, "taps_bias must have one element, got ", bias->sizes());
    check_weight("taps_bias", *bias, x);
  }
}

// grad_y like x, and the forward output like x when the ReLU epilogue needs it.
void check_grad_and_out(const at::Tensor& grad_y, const std::optional<at::Tensor>& out,
                        const at::Tensor& x, const Options& opts) {
  expect("grad_y", grad_y, x.sizes(), x.scalar_type(), x);
  if (opts.out_relu) {
    expect("out (the forward output, needed by out_act='relu')",
           out.has_value() ? *out : at::Tensor(), x.sizes(), x.scalar_type(), x);
  }
}

}  // namespace

Problem check_split_squeeze(const at::Tensor& x, const std::optional<at::Tensor>& w1) {
  Problem p = check_split(x, w1, std::nullopt, std::nullopt, std::nullopt, {});
  if (!present(w1)) p.R1 = 0;
  return p;
}

Problem check_split_excite(const at::Tensor& x, const at::Tensor& pooled, const at::Tensor& z1,
                           const std::optional<at::Tensor>& w2,
                           const std::optional<at::Tensor>& b2,
                           const std::optional<at::Tensor>& residual,
                           const std::optional<at::Tensor>& taps,
                           const std::optional<at::Tensor>& taps_bias) {
  const Problem p = check_split(x, std::nullopt, w2, b2, residual,
                                {{"pooled", pooled, true}, {"z1", z1, false}});
  check_taps(taps, taps_bias, p, x);
  return p;
}

Problem check_split_squeeze_backward(const at::Tensor& grad_y, const at::Tensor& x,
                                     const std::optional<at::Tensor>& out,
                                     const std::optional<at::Tensor>& w2,
                                     const at::Tensor& logits, const Options& opts) {
  const Problem p = check_split(x, std::nullopt, w2, std::nullopt, std::nullopt,
                                {{"logits", logits, true}});
  check_grad_and_out(grad_y, out, x, opts);
  return p;
}

Problem check_split_excite_backward(const at::Tensor& grad_y, const at::Tensor& x,
                                    const std::optional<at::Tensor>& out,
                                    const std::optional<at::Tensor>& w1,
                                    const at::Tensor& logits, const at::Tensor& grad_logits,
                                    const at::Tensor& grad_z1,
                                    const std::optional<at::Tensor>& taps, const Options& opts) {
  const Problem p = check_split(x, w1, std::nullopt, std::nullopt, std::nullopt,
                                {{"logits", logits, true},
                                 {"grad_logits", grad_logits, true},
                                 {"grad_z1", grad_z1, false}});
  check_taps(taps, std::nullopt, p, x);
  check_grad_and_out(grad_y, out, x, opts);
  return p;
}

Problem check_backward(const at::Tensor& grad_y, const at::Tensor& x,
                       const std::optional<at::Tensor>& out, const at::Tensor& w1,
                       const std::optional<at::Tensor>& w2, const at::Tensor& pooled_max,
                       const at::Tensor& fc1_out, const at::Tensor& fc2_out,
                       const Options& opts) {
  const Problem p = check_forward(x, w1, std::nullopt, w2, std::nullopt, std::nullopt);
  check_grad_and_out(grad_y, out, x, opts);
  expect("fc1_out", fc1_out, {p.N, p.R1}, at::kFloat, x);
  expect("fc2_out", fc2_out, p.has_fc2 ? at::IntArrayRef{p.N, p.C} : at::IntArrayRef{0},
         at::kFloat, x);
  expect("pooled_max", pooled_max,
         opts.pool == Pool::AvgMax ? at::IntArrayRef{p.N, p.C} : at::IntArrayRef{0}, at::kFloat,
         x);
  return p;
}

at::Tensor float_buffer(const at::Tensor& like, at::IntArrayRef shape) {
  return at::empty(shape, like.options().dtype(at::kFloat));
}

std::vector<at::Tensor> float_buffers(const at::Tensor& like,
                                      std::initializer_list<std::vector<int64_t>> shapes) {
  int64_t total = 0;
  for (const auto& shape : shapes) total += c10::multiply_integers(shape);
  const at::Tensor buffer = float_buffer(like, {total});
  std::vector<at::Tensor> out;
  int64_t offset = 0;
  for (const auto& shape : shapes) {
    const int64_t n = c10::multiply_integers(shape);
    out.push_back(buffer.narrow(0, offset, n).view(shape));
    offset += n;
  }
  return out;
}

ForwardOutputs forward_outputs(const at::Tensor& x, const Problem& p, const Options& opts) {
  const bool avgmax = opts.pool == Pool::AvgMax;
  return {at::empty_like(x), float_buffer(x, {p.N, p.C}), float_buffer(x, avgmax ? at::IntArrayRef{p.N, p.C} : at::IntArrayRef{0}),
          float_buffer(x, {p.N, p.R1}), float_buffer(x, p.has_fc2 ? at::IntArrayRef{p.N, p.C} : at::IntArrayRef{0})};
}

BackwardOutputs backward_outputs(const at::Tensor& x, const Problem& p, bool write_d_residual) {
  return {at::empty_like(x), write_d_residual ? at::empty_like(x) : float_buffer(x, {0}),
          float_buffer(x, {p.N, p.R1}), float_buffer(x, p.has_fc2 ? at::IntArrayRef{p.N, p.C} : at::IntArrayRef{0})};
}

at::Tensor as_float(const std::optional<at::Tensor>& t) {
  if (!t.has_value() || !t->defined()) return at::Tensor();
  return t->to(at::kFloat).contiguous();
}

}  // namespace se_kernels
