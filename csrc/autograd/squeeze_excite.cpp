// se_kernels::squeeze_excite: the fused SE with its autograd in C++, one node per call
// (as torchvision's csrc/ops/autograd), for the compiled ops: the C++ CPU and CUDA kernels
// (se_kernels::forward / backward) and their SIMT emulation (sim_forward / sim_backward).
// forward op -> saved small tensors -> backward op + fc_grads op, with no Python between
// them: the Python autograd.Function (se_kernels/autograd.py, the same formula, used for
// the Triton backend and under torch.compile) costs ~45 us more host time
// per layer and training step (benchmarks/overhead.py --train), more than a small layer's
// kernels.
//
// A backward that must itself be differentiable (create_graph=True) calls
// se_kernels::backward_with_graph, whose implementation is the differentiable torch formula
// registered from Python (se_kernels/native_autograd.py).
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <array>
#include <string>
#include <vector>

#include "../se_host.h"

namespace se_kernels {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using OptTensor = std::optional<at::Tensor>;
using Str = c10::string_view;

using ForwardSig = ForwardOutputs(const at::Tensor&, const at::Tensor&, const OptTensor&,
                                  const OptTensor&, const OptTensor&, const OptTensor&, Str, Str,
                                  Str, double, Str);
using InferSig = at::Tensor(const at::Tensor&, const at::Tensor&, const OptTensor&,
                            const OptTensor&, const OptTensor&, const OptTensor&, Str, Str, Str,
                            double, Str);
using BackwardSig = BackwardOutputs(const at::Tensor&, const at::Tensor&, const OptTensor&,
                                    const at::Tensor&, const OptTensor&, const at::Tensor&,
                                    const at::Tensor&, const at::Tensor&, bool, Str, Str, Str,
                                    double, Str);
using FcGradsSig = BackwardOutputs(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                   const at::Tensor&, const at::Tensor&, const OptTensor&,
                                   const OptTensor&, const OptTensor&, Str);
using GraphSig = std::vector<at::Tensor>(const at::Tensor&, const at::Tensor&, const OptTensor&,
                                         const at::Tensor&, const OptTensor&, const OptTensor&,
                                         const OptTensor&, Str, Str, Str, double, Str,
                                         std::array<bool, 6>);

template <typename Sig>
c10::TypedOperatorHandle<Sig> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
}

// The kernels of one build: the device-dispatched ops or their SIMT emulation.
struct KernelOps {
  c10::TypedOperatorHandle<ForwardSig> forward;
  c10::TypedOperatorHandle<InferSig> infer;
  c10::TypedOperatorHandle<BackwardSig> backward;
};

const KernelOps& kernel_ops(bool sim) {
  static const KernelOps native{find_op<ForwardSig>("se_kernels::forward"),
                                find_op<InferSig>("se_kernels::infer"),
                                find_op<BackwardSig>("se_kernels::backward")};
  static const KernelOps emulated{find_op<ForwardSig>("se_kernels::sim_forward"),
                                  find_op<InferSig>("se_kernels::sim_infer"),
                                  find_op<BackwardSig>("se_kernels::sim_backward")};
  return sim ? emulated : native;
}

// A 1x1 conv weight [out, in, 1, 1] as the [out, in] matrix the ops take (a view); any
// other shape goes to the op as it is, whose check names it.
at::Tensor as_matrix(const at::Tensor& w) {
  return w.dim() == 4 && w.size(2) == 1 && w.size(3) == 1 ? w.view({w.size(0), w.size(1)}) : w;
}
OptTensor as_matrix(const OptTensor& w) {
  return present(w) ? OptTensor(as_matrix(*w)) : OptTensor();
}

// The saved variables, in the order forward saves them.
enum Saved { kX, kOut, kW1, kW2, kB1, kB2, kPooled, kPooledMax, kFc1Out, kFc2Out };

struct SqueezeExciteFunction : public torch::autograd::Function<SqueezeExciteFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w1,
                            const OptTensor& b1, const OptTensor& w2, const OptTensor& b2,
                            const OptTensor& residual, Str pool, Str act, Str gate, double gain,
                            Str out_act, bool sim) {
    // Straight to the kernels: the ops' own (Python) autograd kernels would cost ~10 us.
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [y, pooled, pooled_max, fc1_out, fc2_out] = kernel_ops(sim).forward.call(
        x, as_matrix(w1), b1, as_matrix(w2), b2, residual, pool, act, gate, gain, out_act);
    const bool relu = out_act == "relu";
    ctx->save_for_backward({x, relu ? y : at::Tensor(), w1, w2.value_or(at::Tensor()),
                            b1.value_or(at::Tensor()), b2.value_or(at::Tensor()), pooled,
                            pooled_max, fc1_out, fc2_out});
    ctx->saved_data["names"] = c10::List<std::string>(
        {std::string(pool), std::string(act), std::string(gate), std::string(out_act)});
    ctx->saved_data["gain"] = gain;
    // Which optional inputs came (autograd numbers only the tensors given), and the build.
    ctx->saved_data["flags"] = c10::List<bool>(
        {present(b1), present(w2), present(b2), present(residual), sim});
    // y's gradient may be None (gradgradcheck sends one): no zero tensor made for it.
    ctx->set_materialize_grads(false);
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list result(12);  // x, w1, b1, w2, b2, residual; the six options get none
    const at::Tensor& grad = grads[0];
    if (!grad.defined()) return result;  // a zero gradient: so are all the others
    const auto saved = ctx->get_saved_variables();
    const auto names = ctx->saved_data["names"].to<c10::List<std::string>>();
    const std::string pool = names.get(0), act = names.get(1), gate = names.get(2),
                      out_act = names.get(3);
    const double gain = ctx->saved_data["gain"].toDouble();
    const auto flags = ctx->saved_data["flags"].toBoolList();
    const bool has_b1 = flags[0], has_w2 = flags[1], has_b2 = flags[2];
    const bool has_residual = flags[3], sim = flags[4];

    // Autograd numbers only the tensors that came: x, w1, then whichever optional ones.
    std::array<bool, 6> needs{};
    std::array<bool, 6> given{true, true, has_b1, has_w2, has_b2, has_residual};
    for (size_t i = 0, edge = 0; i < needs.size(); ++i) {
      if (given[i]) needs[i] = ctx->needs_input_grad(edge++);
    }
    auto optional = [](const at::Tensor& t) { return t.defined() ? OptTensor(t) : OptTensor(); };
    const at::Tensor &x = saved[kX], &w1 = saved[kW1];
    const OptTensor out = optional(saved[kOut]), w2 = optional(saved[kW2]);
    const OptTensor b1 = optional(saved[kB1]), b2 = optional(saved[kB2]);

    if (c10::GradMode::is_enabled()) {  // create_graph=True: a differentiable backward
      static const auto graph = find_op<GraphSig>("se_kernels::backward_with_graph");
      const auto found = graph.call(grad, x, out, w1, b1, w2, b2, pool, act, gate, gain,
                                    out_act, needs);
      for (size_t i = 0; i < needs.size(); ++i) {
        if (needs[i]) result[i] = found[i];
      }
      return result;
    }

    at::AutoDispatchBelowADInplaceOrView below_autograd;
    // The kernels index H*W as one axis: a gradient whose H and W do not merge (rare: a
    // sliced view) is copied once, into x's layout.
    at::Tensor g = grad;
    if (!hw_strides(g)) {
      g = g.contiguous(x.is_contiguous(at::MemoryFormat::ChannelsLast)
                           ? at::MemoryFormat::ChannelsLast
                           : at::MemoryFormat::Contiguous);
    }
    auto [dx, d_residual, grad_fc1, grad_fc2] = kernel_ops(sim).backward.call(
        g, x, out, as_matrix(w1), as_matrix(w2), saved[kPooledMax], saved[kFc1Out],
        saved[kFc2Out], has_residual, pool, act, gate, gain, out_act);
    if (needs[0]) result[0] = dx;
    if (needs[1] || needs[2] || needs[3] || needs[4]) {  // frozen SE weights: none to compute
      static const auto fc_grads = find_op<FcGradsSig>("se_kernels::fc_grads");
      auto [gw1, gb1, gw2, gb2] = fc_grads.call(grad_fc1, grad_fc2, saved[kPooled],
                                                saved[kFc1Out], w1, b1, w2, b2, act);
      if (needs[1]) result[1] = gw1;
      if (needs[2]) result[2] = gb1;
      if (needs[3]) result[3] = gw2;
      if (needs[4]) result[4] = gb2;
    }
    if (needs[5]) result[5] = out_act == "relu" ? d_residual : grad;
    return result;
  }
};

at::Tensor squeeze_excite_autograd(const at::Tensor& x, const at::Tensor& w1, const OptTensor& b1,
                                   const OptTensor& w2, const OptTensor& b2,
                                   const OptTensor& residual, Str pool, Str act, Str gate,
                                   double gain, Str out_act, bool sim) {
  return SqueezeExciteFunction::apply(x, w1, b1, w2, b2, residual, pool, act, gate, gain,
                                      out_act, sim);
}

// No graph to build (inference_mode, or reached below autograd): the infer op.
at::Tensor squeeze_excite_plain(const at::Tensor& x, const at::Tensor& w1, const OptTensor& b1,
                                const OptTensor& w2, const OptTensor& b2,
                                const OptTensor& residual, Str pool, Str act, Str gate,
                                double gain, Str out_act, bool sim) {
  return kernel_ops(sim).infer.call(x, as_matrix(w1), b1, as_matrix(w2), b2, residual, pool, act,
                                    gate, gain, out_act);
}

}  // namespace

TORCH_LIBRARY_IMPL(se_kernels, Autograd, m) {
  m.impl("squeeze_excite", &squeeze_excite_autograd);
}

TORCH_LIBRARY_IMPL(se_kernels, CompositeExplicitAutograd, m) {
  m.impl("squeeze_excite", &squeeze_excite_plain);
}

}  // namespace se_kernels
