// The op schemas, in one place. Implementations register per device:
// csrc/cuda/*.cu (CUDA) and csrc/cpu/*.cpp (CPU); fakes and autograd are registered from
// Python (se_kernels/ops.py), shared with the Triton ops of the same signature.
#include <torch/library.h>

TORCH_LIBRARY(se_kernels, m) {
  // Returns (y, pooled [N,C] f32, pooled_max [N,C] f32 (avgmax) or [0],
  //          fc1_out [N,R1] f32, fc2_out [N,C] f32 (two-FC) or [0]).
  m.def(
      "forward(Tensor x, Tensor w1, Tensor? b1, Tensor? w2, Tensor? b2, Tensor? residual, "
      "str pool, str act, str gate, float gain, str out_act) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  // Returns (dx, d_residual (relu epilogue with residual) or [0],
  //          grad_fc1_out [N,R1] f32, grad_fc2_out [N,C] f32 (two-FC) or [0]).
  m.def(
      "backward(Tensor grad_y, Tensor x, Tensor? out, Tensor w1, Tensor? w2, Tensor pooled_max, "
      "Tensor fc1_out, Tensor fc2_out, bool has_residual, str pool, str act, str gate, "
      "float gain, str out_act) -> (Tensor, Tensor, Tensor, Tensor)");
}
