// The boundary between the CPU ops (csrc/cpu/ops.cpp, built once, for the baseline ISA)
// and the CPU kernels, which are built once per ISA (baseline x86-64, AVX2 + FMA,
// AVX-512) into libraries of their own and picked at first use (csrc/cpu/dispatch.cpp).
// Plain data only: nothing here depends on the ISA a side was built for.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <type_traits>

#include "../se_host.h"
#include "plan.h"

namespace se_kernels::cpu {

constexpr uint32_t kAbiVersion = 4;

enum class DType : int { Float, Half, BFloat16 };

// Calls f(std::type_identity<T>{}) with the element type of `dtype`.
template <typename F>
void with_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::Float: return f(std::type_identity<float>{});
    case DType::Half: return f(std::type_identity<c10::Half>{});
    case DType::BFloat16: return f(std::type_identity<c10::BFloat16>{});
  }
}

// Which stages a call runs: all three (the fused ops), or one side of the split ops
// (csrc/se_ops.cpp): Squeeze = reduce + the FC maths up to FC1 (forward) or dL/dh
// (backward); Excite = the rest of the FC maths from the given vectors + stream.
enum class Phase : int { All, Squeeze, Excite };

// Every array is row-major: x / residual / y / g / out / dx / d_residual in the kernel's
// layout (NCHW or channels_last, as `channels_last` says), the rest float32.
struct ForwardArgs {
  DType dtype;
  const void* x;
  const void* residual;  // null when absent
  void* y;
  const float *w1, *b1, *w2, *b2;  // b1 / w2 / b2 null when absent; with taps b1 is [1]
  float* pooled_part;  // [N, S, C] scratch
  float* pooled;       // [N, C]
  float* pooled_max;   // [N, C] (avgmax)
  float* fc1_out;      // [N, R1] (Phase::Excite: the given z1, read only)
  float* hidden;       // [N, R1] scratch (two-FC)
  float* fc2_out;      // [N, C] (two-FC; with taps: the convolution's output)
  float* scale;        // [N, C] scratch
  Problem problem;
  Options options;
  bool channels_last;
  Plan plan;
  Phase phase;
  // ECA (Phase::Excite without FC weights): the k-tap convolution across the channels of
  // the given vector; null taps: none.
  const float* taps;
  int n_taps;
  bool circular;
};

struct BackwardArgs {
  DType dtype;
  const void* g;
  const void* x;
  const void* out;  // the forward output (ReLU epilogue), else null
  void* dx;
  void* d_residual;  // null unless written
  const float *w1, *w2;  // w2 null for single-FC; w1 null: Phase::Excite of ECA (dp given)
  const float *fc1_out, *gate_in, *pooled_max;
  float* d_part;    // [N, S, C] scratch
  float* ties;      // [N, C] scratch (avgmax)
  float* grad_fc1;  // [N, R1] (Phase::Squeeze: dL/dh; Phase::Excite: the given dL/dz1)
  float* grad_fc2;  // [N, C] (two-FC)
  float* d_pooled;  // [N, C] scratch
  float* scale;     // [N, C] scratch
  float* d_mean;    // [N, C] scratch
  float* d_max;     // [N, C] scratch (avgmax)
  Problem problem;
  Options options;
  bool channels_last;
  Plan plan;
  Phase phase;
  // ECA (Phase::Excite without FC weights): the k-tap convolution across the channels of
  // the given vector; null taps: none.
  const float* taps;
  int n_taps;
  bool circular;
};

// The FC weights' gradients from the backward op's small outputs (the fc_grads op):
// gw1 = grad_fc1^T pooled, gb1 = sum_n grad_fc1, gw2 = grad_fc2^T act(fc1_out),
// gb2 = sum_n grad_fc2. All row-major float32.
struct FcGradArgs {
  const float* grad_fc1;  // [N, R1]
  const float* grad_fc2;  // [N, C] (two-FC)
  const float* pooled;    // [N, C]
  const float* fc1_out;   // [N, R1]
  float* gw1;             // [R1, C]
  float* gb1;             // [R1] or null
  float* gw2;             // [C, R1] (two-FC)
  float* gb2;             // [C] or null
  float* grad_fc1_t;      // [R1, N] scratch
  float* grad_fc2_t;      // [C, N] scratch (two-FC)
  float* hidden;          // [N, R1] scratch (two-FC)
  int64_t N, C, R1;
  bool has_fc2;  // false: single FC, no gw2 / gb2
  Act act;
  float act_slope;
};

struct KernelTable {
  uint32_t abi_version;
  const char* isa;
  void (*forward)(const ForwardArgs&);
  void (*backward)(const BackwardArgs&);
  void (*fc_grads)(const FcGradArgs&);
};

// Defined in each kernel library (forward_kernel.cpp, backward_kernel.cpp,
// fc_grads_kernel.cpp).
void forward_kernel(const ForwardArgs& args);
void backward_kernel(const BackwardArgs& args);
void fc_grads_kernel(const FcGradArgs& args);

}  // namespace se_kernels::cpu

// Exported by each kernel library (the only symbol it exports).
extern "C" const se_kernels::cpu::KernelTable* se_kernels_cpu_kernel_table();
