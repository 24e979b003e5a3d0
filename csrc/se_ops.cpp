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

TORCH_LIBRARY(se_kernels, m) {
  m.def("forward" SE_FORWARD_SIGNATURE);
  m.def("infer" SE_INFER_SIGNATURE);
  m.def("backward" SE_BACKWARD_SIGNATURE);
  m.def("sim_forward" SE_FORWARD_SIGNATURE);
  m.def("sim_infer" SE_INFER_SIGNATURE);
  m.def("sim_backward" SE_BACKWARD_SIGNATURE);
}
