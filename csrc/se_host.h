// Host-side pieces shared by every C++ backend: input checks, strides, output allocation.
// The checks mirror se_kernels/options.py and the allocation mirrors
// se_kernels/buffers.py (the fake implementations), so every backend agrees on shapes.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <tuple>
#include <vector>

#include "se_options.h"

namespace se_kernels {

// Strides of a 4-D tensor viewed as [N, C, H*W]; valid when H and W merge into one index.
struct HWStrides {
  int64_t n, c, hw;
};

std::optional<HWStrides> hw_strides(const at::Tensor& t);
HWStrides kernel_strides(const char* name, const at::Tensor& t);  // throws if not mergeable

// An optional tensor argument that was given: a schema's None arrives as nullopt or as an
// undefined tensor.
inline bool present(const std::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

struct Problem {
  int64_t N, C, HW, R1;  // R1: FC1 output width (R, or C for single-FC eSE)
  bool has_fc2;
};

Problem check_forward(const at::Tensor& x, const at::Tensor& w1,
                      const std::optional<at::Tensor>& b1, const std::optional<at::Tensor>& w2,
                      const std::optional<at::Tensor>& b2,
                      const std::optional<at::Tensor>& residual);

// The split ops' input checks (schemas in csrc/se_ops.cpp), one per op, shared by the CPU
// and CUDA backends; se_kernels/options.py check_split_inputs mirrors them.
// Without w1, split_squeeze pools only: R1 = 0.
Problem check_split_squeeze(const at::Tensor& x, const std::optional<at::Tensor>& w1);
Problem check_split_excite(const at::Tensor& x, const at::Tensor& pooled, const at::Tensor& z1,
                           const std::optional<at::Tensor>& w2,
                           const std::optional<at::Tensor>& b2,
                           const std::optional<at::Tensor>& residual,
                           const std::optional<at::Tensor>& taps,
                           const std::optional<at::Tensor>& taps_bias);
Problem check_split_squeeze_backward(const at::Tensor& grad_y, const at::Tensor& x,
                                     const std::optional<at::Tensor>& out,
                                     const std::optional<at::Tensor>& w2,
                                     const at::Tensor& logits, const Options& opts);
Problem check_split_excite_backward(const at::Tensor& grad_y, const at::Tensor& x,
                                    const std::optional<at::Tensor>& out,
                                    const std::optional<at::Tensor>& w1,
                                    const at::Tensor& logits, const at::Tensor& grad_logits,
                                    const at::Tensor& grad_z1,
                                    const std::optional<at::Tensor>& taps, const Options& opts);

// The split ops' options: average pooling (max is not linear, so never split).
inline Options split_options(std::string_view act, std::string_view gate, double gain,
                             std::string_view out_act) {
  return parse_options("avg", act, gate, gain, out_act);
}

Problem check_backward(const at::Tensor& grad_y, const at::Tensor& x,
                       const std::optional<at::Tensor>& out, const at::Tensor& w1,
                       const std::optional<at::Tensor>& w2, const at::Tensor& pooled_max,
                       const at::Tensor& fc1_out, const at::Tensor& fc2_out,
                       const Options& opts);

using ForwardOutputs = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using BackwardOutputs = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// (y, pooled, pooled_max, fc1_out, fc2_out), as se_kernels.buffers.forward_outputs.
ForwardOutputs forward_outputs(const at::Tensor& x, const Problem& p, const Options& opts);
// (dx, d_residual, grad_fc1_out, grad_fc2_out), as se_kernels.buffers.backward_outputs.
BackwardOutputs backward_outputs(const at::Tensor& x, const Problem& p, bool write_d_residual);

// An uninitialised float32 buffer on like's device (kernel scratch and small outputs).
at::Tensor float_buffer(const at::Tensor& like, at::IntArrayRef shape);

// Several float32 buffers of the given shapes, carved from one allocation (one call into
// the allocator however many small arrays a kernel needs).
std::vector<at::Tensor> float_buffers(const at::Tensor& like,
                                      std::initializer_list<std::vector<int64_t>> shapes);

// A float32 contiguous version of a small weight/bias (no copy when it already is one);
// undefined when absent. Kernels then read weights as plain float arrays.
at::Tensor as_float(const std::optional<at::Tensor>& t);

// as_float's data for the kernels: null for an absent (undefined) weight or bias.
inline const float* float_data_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<float>() : nullptr;
}

}  // namespace se_kernels
