"""Autograd through SEFunction: first and second derivatives.

- gradcheck and gradgradcheck in float64 for every option, through SEFunction and the
  autograd rules every backend shares, on the "reference" op pair (the kernel ops'
  contract in plain torch ops, which take float64);
- on each kernel backend, the first backward stays fused, and a second backward
  (create_graph=True) matches the float64 truth;
- a WGAN-GP-style gradient penalty step on a converted model matches the original model;
- a backward makes no zero gradients for the forward op's non-differentiable outputs.
"""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import (Case, assert_within_tolerance, backend_device, make_inputs, require_backend,
                      run_se)

import se_kernels

OPTION_GRID = list(itertools.product(("avg", "avgmax"), ("relu", "silu", "identity"),
                                     ("sigmoid", "hard_sigmoid"), (True, False)))


def _se_inputs(two_fc: bool, seed: int = 1) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    d = dict(dtype=torch.float64)
    r1 = 3 if two_fc else 5
    tensors = [torch.randn(2, 5, 3, 3, generator=gen, **d), torch.randn(r1, 5, generator=gen, **d),
               torch.randn(r1, generator=gen, **d)]
    if two_fc:
        tensors += [torch.randn(5, 3, generator=gen, **d), torch.randn(5, generator=gen, **d)]
    tensors.append(torch.randn(2, 5, 3, 3, generator=gen, **d))  # residual
    return [t.requires_grad_() for t in tensors]


@pytest.mark.parametrize("pool, act, gate, two_fc", OPTION_GRID)
def test_gradcheck_and_gradgradcheck_float64(pool, act, gate, two_fc):
    def fn(*ts):
        x, w1, b1, *rest = ts
        w2, b2, res = rest if two_fc else (None, None, rest[0])
        return se_kernels.SEFunction.apply(x, w1, b1, w2, b2, res, pool, act, gate, 1.5, "relu",
                                           "reference")[0]

    inputs = _se_inputs(two_fc)
    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


# Each kernel backend's fused backward op, as the dispatcher names it.
FUSED_BACKWARD = {"cpu": "se_kernels::backward", "cuda": "se_kernels::backward",
                  "cuda_sim": "se_kernels::sim_backward", "triton": "se_kernels::triton_backward"}


class _OpLog(TorchDispatchMode):
    """Names every op that reaches the kernels, whoever calls it: Python (SEFunction) or
    the C++ autograd node (se_kernels::squeeze_excite)."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func._schema.name)
        return func(*args, **(kwargs or {}))


@pytest.fixture
def fused_backward_calls():
    """A function returning the fused backward ops run so far, while the test runs."""
    with _OpLog() as log:
        yield lambda: [n for n in log.names if n in FUSED_BACKWARD.values()]


CASES = [
    Case(N=2, C=7, H=4, W=4, R=3, act="silu", residual=True, out_act="relu", gain=2.0),
    Case(N=2, C=7, H=4, W=3, two_fc=False, act="identity", pool="avgmax", gate="hard_sigmoid",
         layout="channels_last"),
]


@pytest.mark.parametrize("case", CASES, ids=["fc2-res-relu", "ese-avgmax-cl"])
def test_second_backward_matches_the_truth(backend, case, fused_backward_calls):
    """d/dparams of ||dL/dx||^2 (a gradient penalty) on a kernel backend vs float64."""
    device = backend_device(backend)
    inputs = make_inputs(case, device)
    truth_in = inputs.converted(torch.float64, device="cpu")
    g = torch.randn((case.N, case.C, case.H, case.W), generator=torch.Generator().manual_seed(2))

    def penalty_grads(tensors, backend_name, grad_y):
        """(dL/dx depends on the residual only through the ReLU mask: not a parameter here.)"""
        y = run_se(tensors, case, backend_name)
        (gx,) = torch.autograd.grad(y, [tensors.x], grad_y, create_graph=True)
        params = [t for t in tensors.params if t is not tensors.residual]
        return torch.autograd.grad(gx.square().sum(), params)

    got = penalty_grads(inputs, backend, g.to(device))
    assert not fused_backward_calls(), (
        "create_graph=True must not run the once-differentiable fused backward")
    want = penalty_grads(truth_in, "reference", g.double())
    names = [n for n, t in zip(("x", "w1", "b1", "w2", "b2"),
                               (inputs.x, inputs.w1, inputs.b1, inputs.w2, inputs.b2)) if t is not None]
    for name, a, b in zip(names, got, want):
        assert_within_tolerance(f"second grad {name}", a, b)

    y = run_se(inputs, case, backend)  # the normal backward stays fused
    torch.autograd.grad(y, inputs.params, g.to(device))
    assert fused_backward_calls() == [FUSED_BACKWARD[backend]]


@pytest.mark.parametrize("backend_name", ["cpu", "cuda_sim"])
def test_gradient_penalty_step_on_a_converted_model(backend_name):
    """A WGAN-GP-style step (penalty on the input-gradient norm) through a converted
    seresnet18 gives the original model's parameter gradients."""
    require_backend(backend_name)
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    original = timm.create_model("seresnet18", pretrained=False, num_classes=4).eval()
    with torch.no_grad():  # timm zero-initialises the last BN of each block: wake the SEs
        for m in original.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
    converted = se_kernels.convert_model(copy.deepcopy(original), backend=backend_name)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))

    def penalty_grads(model, dtype):
        model = model.to(dtype)
        model.zero_grad()
        xi = x.to(dtype).requires_grad_()
        (gx,) = torch.autograd.grad(model(xi).sum(), [xi], create_graph=True)
        ((gx.flatten(1).norm(dim=1) - 1) ** 2).mean().backward()
        return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten().double()
                          for p in model.parameters()])

    truth = penalty_grads(copy.deepcopy(original), torch.float64)
    eager = penalty_grads(copy.deepcopy(original), torch.float32)
    got = penalty_grads(converted, torch.float32)

    def rel(v):
        return ((v - truth).norm() / truth.norm()).item()

    assert truth.norm() > 0
    assert rel(got) <= 2 * rel(eager) + 1e-5, f"error {rel(got):.2e}, eager {rel(eager):.2e}"


@pytest.mark.parametrize("node", ["SEFunctionBackward", "SqueezeExciteFunction"])
def test_backward_materialises_no_gradients_for_the_small_outputs(node):
    """The forward op's pooled / FC outputs never get a gradient: a backward builds no zero
    tensors for them (four per layer and step, each a dispatcher call), through the Python
    node (SEFunction) or the C++ one (squeeze_excite on the cpu backend)."""
    require_backend("cpu")
    case = Case(N=2, C=7, H=4, W=4, R=3, act="silu")
    inputs = make_inputs(case, "cpu")
    if node == "SEFunctionBackward":
        y = se_kernels.SEFunction.apply(*inputs.args(), None, *case.options.values(), "cpu")[0]
    else:
        y = run_se(inputs, case, "cpu")
    with torch.profiler.profile() as prof:
        y.backward(torch.ones_like(y))
    names = [e.name for e in prof.events()]
    assert any(node in n for n in names), names
    assert not [n for n in names if n.startswith("aten::zeros")], names
