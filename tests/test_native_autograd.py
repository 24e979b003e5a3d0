"""se_kernels::squeeze_excite, the fused op with its autograd in C++, against SEFunction.

Both run the same kernel ops with the same inputs, so they must agree bit for bit: the
output and every gradient, for every option, layout, dtype and weight shape, with any
subset of the inputs requiring grad. (The tolerance-rule matrix of test_kernels.py then
holds for both: squeeze_excite, which it calls, takes this op on cpu and cuda_sim.)
Also: the create_graph backward, the op's contract (opcheck), the no-graph kernel,
layouts of the incoming gradient, and which node squeeze_excite builds.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from conftest import Case, make_inputs, require_backend

import se_kernels
from se_kernels.native_autograd import NATIVE_SIM_FLAG, native_op, python_autograd_only

NATIVE_BACKENDS = ["cpu", "cuda_sim"]
FUSED_BACKWARD = {"cpu": "se_kernels::backward", "cuda_sim": "se_kernels::sim_backward"}
OP = torch.ops.se_kernels.squeeze_excite.default if hasattr(torch.ops.se_kernels,
                                                              "squeeze_excite") else None

CASES = [
    Case(N=2, C=19, H=5, W=3, R=4),
    Case(N=3, C=33, H=4, W=4, R=5, layout="channels_last", act="silu", gate="hard_sigmoid",
         residual=True, out_act="relu", gain=2.0),
    Case(N=1, C=8, H=7, W=1, R=3, pool="avgmax", act="gelu", residual=True),
    Case(N=2, C=12, H=3, W=5, two_fc=False, act="identity", gate="tanh", bias=False,
         layout="channels_last"),
    Case(N=2, C=16, H=6, W=6, R=4, dtype=torch.float16, act="hard_swish", residual=True,
         out_act="relu"),
    Case(N=2, C=16, H=5, W=6, R=4, dtype=torch.bfloat16, pool="avgmax", act="leaky_relu:0.2",
         layout="channels_last"),
]
IDS = ["plain", "cl-res-relu", "avgmax-res", "ese-nobias-cl", "fp16-res-relu", "bf16-avgmax-cl"]


def _backend(name: str) -> str:
    require_backend(name)
    if native_op(name) is None:
        pytest.skip(f"{name}: the compiled ops are not built")
    return name


def _conv_shaped(inputs):
    """The same weights as 1x1 conv weights [out, in, 1, 1], leaves of their own."""
    for name in ("w1", "w2"):
        w = getattr(inputs, name)
        if w is not None:
            setattr(inputs, name, w.detach()[:, :, None, None].requires_grad_())
    return inputs


def _layout(case):
    return torch.channels_last if case.layout == "channels_last" else torch.contiguous_format


def _run_both(inputs, case, backend, grad_of):
    """(y, grads) from the C++ node and from SEFunction, for the same inputs."""
    g = torch.randn((case.N, case.C, case.H, case.W), generator=torch.Generator().manual_seed(3))
    g = g.to(case.dtype).contiguous(memory_format=_layout(case))
    results = []
    for path in ("native", "python"):
        args = (*inputs.args(), inputs.residual, *case.options.values())
        if path == "native":
            y = OP(*args, NATIVE_SIM_FLAG[backend])
            assert "SqueezeExciteFunction" in y.grad_fn.name()
        else:
            y = se_kernels.SEFunction.apply(*args, backend)[0]
        results.append((y, torch.autograd.grad(y, grad_of, g)))
    return results


@pytest.mark.parametrize("backend", NATIVE_BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("conv_weights", [False, True], ids=["linear", "conv"])
def test_same_bits_as_sefunction(backend, case, conv_weights):
    inputs = make_inputs(case, "cpu")
    if conv_weights:
        inputs = _conv_shaped(inputs)
    (y, grads), (y_ref, grads_ref) = _run_both(inputs, case, _backend(backend), inputs.params)
    assert torch.equal(y, y_ref)
    assert y.is_contiguous(memory_format=_layout(case))
    for t, a, b in zip(inputs.params, grads, grads_ref):
        assert a.shape == t.shape and a.dtype == t.dtype
        assert torch.equal(a, b)


# Which inputs require grad: frozen SE weights, a frozen input, weights only, and so on.
SUBSETS = [("x",), ("w1", "b2"), ("x", "residual"), ("w2",), ("b1", "residual")]


@pytest.mark.parametrize("backend", NATIVE_BACKENDS)
@pytest.mark.parametrize("subset", SUBSETS, ids=["-".join(s) for s in SUBSETS])
def test_gradients_for_any_subset_of_inputs(backend, subset):
    case = Case(N=2, C=10, H=3, W=4, R=3, act="silu", residual=True, out_act="relu")
    inputs = make_inputs(case, "cpu")
    for name in ("x", "w1", "b1", "w2", "b2", "residual"):
        getattr(inputs, name).requires_grad_(name in subset)
    wanted = [getattr(inputs, name) for name in subset]
    (y, grads), (_, grads_ref) = _run_both(inputs, case, _backend(backend), wanted)
    for a, b in zip(grads, grads_ref):
        assert torch.equal(a, b)


@pytest.mark.parametrize("backend", NATIVE_BACKENDS)
@pytest.mark.parametrize("node", ["native", "python"])
def test_frozen_weights_skip_the_weight_gradients(backend, node):
    """Only dx asked for: the backward op runs, the fc_grads op does not, in either node
    (squeeze_excite now builds the C++ one, so SEFunction's skip is tested here)."""
    case = Case(N=2, C=10, H=3, W=4, R=3)
    inputs = make_inputs(case, "cpu")
    for w in (inputs.w1, inputs.b1, inputs.w2, inputs.b2):
        w.requires_grad_(False)
    args = (*inputs.args(), None, *case.options.values())
    if node == "native":
        y = OP(*args, NATIVE_SIM_FLAG[_backend(backend)])
    else:
        y = se_kernels.SEFunction.apply(*args, _backend(backend))[0]
    with torch.profiler.profile() as prof:
        y.backward(torch.ones_like(y))
    names = {e.name for e in prof.events()}
    assert FUSED_BACKWARD[backend] in names
    assert "se_kernels::fc_grads" not in names
    assert inputs.x.grad is not None


@pytest.mark.parametrize("backend", NATIVE_BACKENDS)
@pytest.mark.parametrize("case", CASES[:3], ids=IDS[:3])
def test_second_backward_same_as_sefunction(backend, case):
    """create_graph=True goes through se_kernels::backward_with_graph (the torch formula):
    the same first gradients, and the same gradient of a penalty on them."""
    inputs = make_inputs(case, "cpu")
    args = (*inputs.args(), inputs.residual, *case.options.values())
    got = []
    for y in (OP(*args, NATIVE_SIM_FLAG[_backend(backend)]),
              se_kernels.SEFunction.apply(*args, backend)[0]):
        (gx,) = torch.autograd.grad(y.square().sum(), [inputs.x], create_graph=True)
        assert gx.grad_fn is not None
        got.append((gx, torch.autograd.grad(gx.square().sum(), inputs.params, allow_unused=True)))
    (gx, second), (gx_ref, second_ref) = got
    assert torch.equal(gx, gx_ref)
    for a, b in zip(second, second_ref):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.equal(a, b)


@pytest.mark.parametrize("backend", NATIVE_BACKENDS)
@pytest.mark.parametrize("grad_layout", ["expanded", "sliced", "nchw-for-cl"])
def test_any_layout_of_the_incoming_gradient(backend, grad_layout):
    """y.sum()'s expanded gradient goes in as it is, a gradient whose H and W do not merge
    is copied once, a gradient in the other layout is the op's to handle: same bits as
    SEFunction each time."""
    case = Case(N=2, C=9, H=4, W=5, R=3, layout="channels_last")
    inputs = make_inputs(case, "cpu")
    shape = (case.N, case.C, case.H, case.W)
    if grad_layout == "expanded":
        g = torch.ones(()).expand(shape)
    elif grad_layout == "sliced":
        g = torch.randn(case.N, case.C, case.H, 2 * case.W)[..., ::2]
    else:
        g = torch.randn(shape)
    args = (*inputs.args(), None, *case.options.values())
    y = OP(*args, NATIVE_SIM_FLAG[_backend(backend)])
    y_ref = se_kernels.SEFunction.apply(*args, backend)[0]
    for a, b in zip(torch.autograd.grad(y, inputs.params, g),
                    torch.autograd.grad(y_ref, inputs.params, g)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("backend", NATIVE_BACKENDS)
@pytest.mark.parametrize("conv_weights", [False, True], ids=["linear", "conv"])
def test_opcheck(backend, conv_weights):
    case = Case(N=2, C=12, H=3, W=5, R=4, residual=True, out_act="relu", act="silu")
    inputs = make_inputs(case, "cpu")
    if conv_weights:
        inputs = _conv_shaped(inputs)
    args = (*inputs.args(), inputs.residual, *case.options.values(),
            NATIVE_SIM_FLAG[_backend(backend)])
    torch.library.opcheck(OP, args)


@pytest.mark.parametrize("backend", NATIVE_BACKENDS)
def test_without_a_graph_the_op_runs_the_infer_kernel(backend):
    """Under inference_mode the op skips its autograd: y as the autograd path gives it."""
    case = Case(N=2, C=12, H=3, W=5, R=4, pool="avgmax", residual=True, out_act="relu")
    inputs = make_inputs(case, "cpu")
    args = (*inputs.args(), inputs.residual, *case.options.values(),
            NATIVE_SIM_FLAG[_backend(backend)])
    with torch.inference_mode():
        y_plain = OP(*args)
    assert torch.equal(y_plain, OP(*args).detach())


@pytest.mark.parametrize("backend, node", [("cpu", "SqueezeExciteFunction"),
                                           ("cuda_sim", "SqueezeExciteFunction"),
                                           ("triton", "SEFunction")])
def test_squeeze_excite_builds_the_cpp_node_for_compiled_ops_only(backend, node):
    """The C++ node for the compiled ops; SEFunction (Python) for Triton (and, under
    torch.compile, for every backend: test_ops.py compiles these calls with fullgraph)."""
    require_backend(backend)
    case = Case(N=2, C=8, H=3, W=3, R=2)
    inputs = make_inputs(case, "cpu")
    y = se_kernels.squeeze_excite(*inputs.args(), backend=backend, **case.options)
    assert node in y.grad_fn.name()


@pytest.mark.parametrize("backend", NATIVE_BACKENDS)
def test_bad_weights_named_before_any_kernel(backend):
    case = Case(N=2, C=8, H=3, W=3, R=2)
    inputs = make_inputs(case, "cpu")
    bad = torch.randn(2, 8, 3, 3, requires_grad=True)  # a 3x3 conv weight
    with pytest.raises(ValueError, match="w1"):
        OP(inputs.x, bad, inputs.b1, inputs.w2, inputs.b2, None, *case.options.values(),
           NATIVE_SIM_FLAG[_backend(backend)])


def test_python_autograd_only_switches_to_sefunction_and_back():
    """The benchmarks' A/B switch (e2e --python-autograd)."""
    backend = _backend("cpu")
    case = Case(N=2, C=8, H=3, W=3, R=2)
    inputs = make_inputs(case, "cpu")

    def node():
        return se_kernels.squeeze_excite(*inputs.args(), backend=backend, **case.options).grad_fn

    with python_autograd_only():
        assert "SEFunction" in node().name()
    assert "SqueezeExciteFunction" in node().name()
