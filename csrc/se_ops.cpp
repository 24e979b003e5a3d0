// The op schemas, in one place. Implementations register per device and build:
// csrc/cuda/ops.cu (CUDA), csrc/cpu/*.cpp (CPU) and csrc/cuda_sim/ops.cpp (the CUDA
// kernels under the SIMT emulator, for CPU tensors, as sim_forward / sim_backward).
// Fakes and autograd are registered from Python (se_kernels/ops.py), shared with the
// Triton ops of the same signature (tests/test_ops.py checks that they agree).
#include <torch/library.h>

#define SE_FORWARD_ARGS                                                                     \
  "(Tensor x, Tensor w1, Tensor? b1, Tensor? w2, Tensor? b2, Tensor? residual, str pool, " \
  "str act, str gate, float gain, str out_act)"
// Returns (y, pooled [N,C] f32, pooled_max [N,C] f32 (avgmax) or [0],
//          fc1_out [N,R1] f32, fc2_out [N,C] f32 (two-FC) or [0]): y and what backward needs.
#define SE_FORWARD_SIGNATURE SE_FORWARD_ARGS " -> (Tensor, Tensor, Tensor, Tensor, Tensor)"
// Returns y only: inference, where nothing is saved (and the op has no autograd).
#define SE_INFER_SIGNATURE SE_FORWARD_ARGS " -> Tensor"
// Returns (dx, d_residual (relu epilogue with residual) or [0],
//          grad_fc1_out [N,R1] f32, grad_fc2_out [N,C] f32 (two-FC) or [0]).
#define SE_BACKWARD_SIGNATURE                                                           \
  "(Tensor grad_y, Tensor x, Tensor? out, Tensor w1, Tensor? w2, Tensor pooled_max, "   \
  "Tensor fc1_out, Tensor fc2_out, bool has_residual, str pool, str act, str gate, "    \
  "float gain, str out_act) -> (Tensor, Tensor, Tensor, Tensor)"

// The SE op split at the bottleneck, so that something outside the kernels runs between
// the launches: a training-mode BatchNorm on [N, R] (it couples the samples), or ECA's
// k-tap convolution across the channels. The same kernels, one launch each, average
// pooling. split_squeeze: pool, and FC1 without its bias (w1 None: pool only);
// split_excite: act(z1) -> FC2 -> gate -> scale from a given z1 (w2 None: z1 is the gate's
// input, [N, C]; with taps, ECA: the gate's input is z1 convolved across the channels, k
// taps, zero or circular padding, plus taps_bias); split_squeeze_backward: dL/d(gate input), and dL/dh = that @ W2 before
// act' (w2 None: [N, 0]); split_excite_backward: dx from a given dL/dz1 (w1 None: the
// given tensor is dL/d(pooled) itself, or with taps dL/d(gate input), taken back through
// the convolution in the kernel).
#define SE_SPLIT_OPS(prefix)                                                                \
  m.def(prefix "split_squeeze(Tensor x, Tensor? w1) -> (Tensor pooled, Tensor fc1)");       \
  m.def(prefix "split_excite(Tensor x, Tensor pooled, Tensor z1, Tensor? w2, Tensor? b2, "  \
               "Tensor? residual, str act, str gate, float gain, str out_act, "             \
               "Tensor? taps=None, Tensor? taps_bias=None, bool circular=False) "           \
               "-> (Tensor y, Tensor logits)");                                             \
  m.def(prefix "split_squeeze_backward(Tensor grad_y, Tensor x, Tensor? out, Tensor? w2, "  \
               "Tensor logits, str gate, float gain, str out_act) "                         \
               "-> (Tensor grad_logits, Tensor grad_h)");                                   \
  m.def(prefix "split_excite_backward(Tensor grad_y, Tensor x, Tensor? out, Tensor? w1, "   \
               "Tensor logits, Tensor grad_logits, Tensor grad_z1, bool has_residual, "     \
               "str gate, float gain, str out_act, Tensor? taps=None, bool circular=False) " \
               "-> (Tensor dx, Tensor d_residual)")

// The FC weights' and biases' gradients from the backward op's grad_fc1_out / grad_fc2_out
// and the forward's pooled / fc1_out (act recomputes FC2's input), each shaped and typed
// like its parameter, [0] when the parameter is absent. CPU (csrc/cpu/fc_grads.cpp) and
// CUDA (csrc/fc_grads.cpp: ATen ops); elsewhere se_kernels/fc_grads.py uses torch ops.
#define SE_FC_GRADS_SIGNATURE                                                                \
  "(Tensor grad_fc1, Tensor grad_fc2, Tensor pooled, Tensor fc1_out, Tensor w1, Tensor? b1, " \
  "Tensor? w2, Tensor? b2, str act) -> (Tensor, Tensor, Tensor, Tensor)"

// The fused SE as one op with its autograd in C++ (csrc/autograd/squeeze_excite.cpp), on
// the ops above (sim: on their SIMT emulation, sim_forward / sim_backward): returns y.
#define SE_AUTOGRAD_SIGNATURE                                                               \
  "(Tensor x, Tensor w1, Tensor? b1, Tensor? w2, Tensor? b2, Tensor? residual, str pool, " \
  "str act, str gate, float gain, str out_act, bool sim=False) -> Tensor"
// Its backward when that must be differentiable (create_graph=True): gradients for x, w1,
// b1, w2, b2, residual where needs says so (an empty tensor elsewhere), as differentiable
// torch ops; implemented in Python (se_kernels/native_autograd.py).
#define SE_GRAPH_BACKWARD_SIGNATURE                                                         \
  "(Tensor grad_y, Tensor x, Tensor? out, Tensor w1, Tensor? b1, Tensor? w2, Tensor? b2, " \
  "str pool, str act, str gate, float gain, str out_act, bool[6] needs) -> Tensor[]"

TORCH_LIBRARY(se_kernels, m) {
  m.def("squeeze_excite" SE_AUTOGRAD_SIGNATURE);
  m.def("backward_with_graph" SE_GRAPH_BACKWARD_SIGNATURE);
  m.def("forward" SE_FORWARD_SIGNATURE);
  m.def("infer" SE_INFER_SIGNATURE);
  m.def("backward" SE_BACKWARD_SIGNATURE);
  m.def("fc_grads" SE_FC_GRADS_SIGNATURE);
  m.def("sim_forward" SE_FORWARD_SIGNATURE);
  m.def("sim_infer" SE_INFER_SIGNATURE);
  m.def("sim_backward" SE_BACKWARD_SIGNATURE);
  SE_SPLIT_OPS("");
  SE_SPLIT_OPS("sim_");
}
