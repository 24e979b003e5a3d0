// The cuda_sim build: the CUDA kernels and launchers of csrc/cuda, compiled with the
// host compiler against the SIMT emulator, registered as sim_forward / sim_backward for
// CPU tensors (the "cuda_sim" backend). It exists to run the CUDA source under
// race/bounds/barrier checks where there is no GPU; it is slow and never picked by
// backend="auto".
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#define SE_CUDA_SIM 1
#include "../cuda/launch_backward.h"
#include "../cuda/launch_forward.h"
#include "../cuda/launch_split.h"

namespace se_kernels::cuda::sim {
namespace {

// Independent CTAs run on torch's intra-op threads; each thread runs its CTAs one at a time.
void torch_parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
  at::parallel_for(0, n, 1, fn);
}

[[maybe_unused]] const bool installed = [] {
  se_sim::set_parallel_for(torch_parallel_for);
  return true;
}();

// A checker's finding becomes a RuntimeError that names the kernel and the threads.
template <typename F>
auto reporting(F&& f) {
  try {
    return f();
  } catch (const se_sim::KernelError& e) {
    TORCH_CHECK(false, e.what());
  }
}

ForwardOutputs sim_forward(const at::Tensor& x, const at::Tensor& w1,
                           const std::optional<at::Tensor>& b1, const std::optional<at::Tensor>& w2,
                           const std::optional<at::Tensor>& b2,
                           const std::optional<at::Tensor>& residual, c10::string_view pool,
                           c10::string_view act, c10::string_view gate, double gain,
                           c10::string_view out_act) {
  return reporting([&] { return forward(x, w1, b1, w2, b2, residual, pool, act, gate, gain, out_act); });
}

at::Tensor sim_infer(const at::Tensor& x, const at::Tensor& w1, const std::optional<at::Tensor>& b1,
                     const std::optional<at::Tensor>& w2, const std::optional<at::Tensor>& b2,
                     const std::optional<at::Tensor>& residual, c10::string_view pool,
                     c10::string_view act, c10::string_view gate, double gain,
                     c10::string_view out_act) {
  return reporting([&] { return infer(x, w1, b1, w2, b2, residual, pool, act, gate, gain, out_act); });
}

BackwardOutputs sim_backward(const at::Tensor& grad_y, const at::Tensor& x,
                             const std::optional<at::Tensor>& out, const at::Tensor& w1,
                             const std::optional<at::Tensor>& w2, const at::Tensor& pooled_max,
                             const at::Tensor& fc1_out, const at::Tensor& fc2_out,
                             bool has_residual, c10::string_view pool, c10::string_view act,
                             c10::string_view gate, double gain, c10::string_view out_act) {
  return reporting([&] {
    return backward(grad_y, x, out, w1, w2, pooled_max, fc1_out, fc2_out, has_residual, pool, act,
                    gate, gain, out_act);
  });
}

// The split ops under the emulator, reporting like the fused ones.
template <auto Op>
struct Reported;

template <typename R, typename... Args, R (*Op)(Args...)>
struct Reported<Op> {
  static R call(Args... args) {
    return reporting([&] { return Op(args...); });
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(se_kernels, CPU, m) {
  m.impl("sim_forward", &sim_forward);
  m.impl("sim_infer", &sim_infer);
  m.impl("sim_backward", &sim_backward);
  m.impl("sim_split_squeeze", &Reported<&split_squeeze>::call);
  m.impl("sim_split_excite", &Reported<&split_excite>::call);
  m.impl("sim_split_squeeze_backward", &Reported<&split_squeeze_backward>::call);
  m.impl("sim_split_excite_backward", &Reported<&split_excite_backward>::call);
}

}  // namespace se_kernels::cuda::sim
