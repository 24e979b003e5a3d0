"""The FC weights' gradients: the CPU ``se_kernels::fc_grads`` op against the float64
formula, its torch.library contract and errors, and the backward graph of a layer with
1x1 conv weights (no view nodes between the kernel and the parameters)."""

from __future__ import annotations

import itertools
import re

import pytest
import torch

from conftest import assert_within_tolerance, require_backend

import se_kernels
from se_kernels.fc_grads import fc_grads, fc_grads_torch
from se_kernels.options import ACTS

NAMES = ("gw1", "gb1", "gw2", "gb2")


def _fc_inputs(N, C, R, *, two_fc=True, bias=True, conv=False, weight_dtype=torch.float32):
    gen = torch.Generator().manual_seed(N * 1000 + C + R)

    def randn(*shape, dtype=torch.float32):
        return torch.randn(*shape, generator=gen).to(dtype)

    r1 = R if two_fc else C
    w1 = randn(r1, C, dtype=weight_dtype)
    w2 = randn(C, r1, dtype=weight_dtype) if two_fc else None
    if conv:
        w1 = w1[:, :, None, None]
        w2 = None if w2 is None else w2[:, :, None, None]
    return dict(grad_fc1=randn(N, r1), grad_fc2=randn(N, C) if two_fc else torch.empty(0),
                pooled=randn(N, C), fc1_out=randn(N, r1) * 2, w1=w1,
                b1=randn(r1, dtype=weight_dtype) if bias else None, w2=w2,
                b2=randn(C, dtype=weight_dtype) if bias and two_fc else None)


def _float64(args: dict) -> dict:
    return {k: v.double() if isinstance(v, torch.Tensor) else v for k, v in args.items()}


def _check_against_float64(args: dict, act: str) -> None:
    got = fc_grads(**args, act=act)
    truth = fc_grads_torch(**_float64(args), act=act)
    params = (args["w1"], args["b1"], args["w2"], args["b2"])
    for name, g, t, param in zip(NAMES, got, truth, params):
        if param is None:
            assert g is None and t is None, name
            continue
        assert g.shape == param.shape and g.dtype == param.dtype, (name, g.shape, g.dtype)
        assert g.is_contiguous(), name
        empty_batch = args["pooled"].shape[0] == 0
        assert_within_tolerance(name, g, t, zero_ok="no samples" if empty_batch else None)


@pytest.fixture(autouse=True)
def _cpu_ops():
    require_backend("cpu")


@pytest.mark.parametrize("act", [*ACTS, "leaky_relu:0.2"])
def test_every_act_matches_float64(act):
    _check_against_float64(_fc_inputs(3, 37, 5), act)


@pytest.mark.parametrize("N,C,R", [(1, 3, 1), (2, 67, 8), (5, 1000, 63), (8, 2048, 128), (0, 7, 3)])
@pytest.mark.parametrize("two_fc,bias,conv", [
    (True, True, True), (True, False, False), (False, True, True), (False, False, False)])
def test_shapes_and_parameters_match_float64(N, C, R, two_fc, bias, conv):
    """Odd sizes (vector tails; the threaded split of the rows at the large ones), single
    FC (eSE: no gw2 / gb2), no biases, 2-D and 1x1 conv weights, an empty batch."""
    _check_against_float64(_fc_inputs(N, C, R, two_fc=two_fc, bias=bias, conv=conv), "silu")


@pytest.mark.parametrize("weight_dtype", [torch.float16, torch.bfloat16])
def test_reduced_precision_parameters_get_gradients_of_their_dtype(weight_dtype):
    _check_against_float64(_fc_inputs(4, 67, 8, conv=True, weight_dtype=weight_dtype), "relu")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_op_is_used_and_deterministic(dtype):
    """fc_grads calls the op on CPU tensors of any dtype (float64: the ATen formula)."""
    args = {k: v.to(dtype) if isinstance(v, torch.Tensor) else v
            for k, v in _fc_inputs(8, 1000, 63).items()}
    op = torch.ops.se_kernels.fc_grads.default
    first = op(**args, act="gelu")
    with torch.profiler.profile() as prof:
        second = fc_grads(**args, act="gelu")
    assert "se_kernels::fc_grads" in [e.name for e in prof.events()]
    for name, a, b in zip(NAMES, first, second):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("two_fc,bias,conv", [(True, True, True), (False, False, False)])
def test_opcheck(two_fc, bias, conv):
    args = _fc_inputs(3, 19, 4, two_fc=two_fc, bias=bias, conv=conv)
    torch.library.opcheck(torch.ops.se_kernels.fc_grads.default, (), {**args, "act": "silu"})


@pytest.mark.parametrize("change,message", [
    (dict(grad_fc1=torch.randn(3, 5, dtype=torch.float16)),
     "grad_fc1 must be a contiguous Float tensor on cpu \\(pooled's\\) of shape \\[3, 5\\], got Half"),
    (dict(pooled=torch.randn(37)), "pooled must be a floating \\[N, C\\] tensor"),
    (dict(pooled=torch.ones(3, 37, dtype=torch.int64)), "pooled must be a floating"),
    (dict(grad_fc1=torch.randn(3, 6)),
     "grad_fc1 must be a contiguous Float tensor on cpu \\(pooled's\\) of shape \\[3, 5\\]"),
    (dict(fc1_out=torch.randn(5, 3).t()), "fc1_out must be a contiguous"),
    (dict(w1=torch.randn(5, 36)), "w1 must be a floating tensor on cpu \\(pooled's\\) of shape"),
    (dict(w1=torch.randn(5, 37, 1)), "w1 must be a floating tensor on cpu \\(pooled's\\) of shape "
                                     "\\[R1, C\\] or"),
    (dict(w1=torch.ones(5, 37, dtype=torch.int64)), "w1 must be a floating tensor"),
    (dict(w2=torch.randn(37, 5).t()), "w2 must be a floating tensor on cpu \\(pooled's\\) of shape "
                                      "\\[C, R1\\]"),
    (dict(b1=torch.randn(4)), "b1 must be a floating tensor on cpu \\(pooled's\\) of shape \\[R1\\]"),
    (dict(grad_fc2=torch.randn(3, 36)), "grad_fc2 must be"),
    (dict(b2=torch.randn(36)), "b2 must be a floating tensor on cpu \\(pooled's\\) of shape \\[C\\]"),
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bad_inputs_name_the_argument(change, message, dtype):
    """The same checks whichever path runs (float32: the CPU loops; float64: the ATen
    formula that is also the CUDA kernel)."""
    args = _fc_inputs(3, 37, 5)
    if dtype != torch.float32:
        args = {k: v.to(dtype) if isinstance(v, torch.Tensor) else v for k, v in args.items()}
        change = {k: v.to(dtype) if v.dtype == torch.float32 else v for k, v in change.items()}
        message = message.replace("Float", "Double")
    with pytest.raises(ValueError, match=message):
        torch.ops.se_kernels.fc_grads(**{**args, **change}, act="silu")
    with pytest.raises(ValueError, match="act must be one of"):
        torch.ops.se_kernels.fc_grads(**args, act="swish")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("act", [*ACTS, "leaky_relu:0.2"])
def test_aten_formula_is_value_identical_to_the_torch_formula(act, dtype):
    """Small tensors other than float32 take the C++ ATen formula (csrc/fc_grads.cpp),
    the op's CUDA kernel: the same values as fc_grads_torch, bit for bit, for every act
    (leaky_relu's slope applied in double), every parameter set and both weight shapes."""
    op = torch.ops.se_kernels.fc_grads.default
    for two_fc, bias, conv in [(True, True, True), (True, False, False), (False, True, True)]:
        args = {k: v.to(dtype) if isinstance(v, torch.Tensor) else v
                for k, v in _fc_inputs(3, 37, 5, two_fc=two_fc, bias=bias, conv=conv).items()}
        got = op(**args, act=act)
        truth = fc_grads_torch(**args, act=act)
        for name, g, t in zip(NAMES, got, truth):
            if t is None:
                assert g.shape == (0,) and g.dtype == dtype, name
            else:
                assert g.dtype == t.dtype and g.shape == t.shape, name
                assert torch.equal(g, t), (name, (g - t).abs().max())


def test_cuda_kernel_is_the_cpp_formula():
    """The C++ autograd node's backward calls fc_grads by dispatcher: on CUDA tensors its
    kernel is the C++ formula above, not a Python function (which would run the
    interpreter on every training step of a GPU model)."""
    dump = torch._C._dispatch_dump("se_kernels::fc_grads")
    cuda = [line for line in dump.splitlines() if line.startswith("CUDA:")]
    assert len(cuda) == 1 and re.search(r"registered at \S*csrc/fc_grads\.cpp:\d+ ::", cuda[0]), dump


def test_conv_weights_reach_their_parameters_without_view_nodes():
    """A module's [R, C, 1, 1] weights go into SEFunction as they are: the backward graph
    links the SE node straight to the parameters' AccumulateGrad (four view nodes fewer
    per layer and step), and the gradients have the parameters' shapes and values."""
    module = se_kernels.SqueezeExcite(37, rd_channels=5, act="silu", backend="cpu")
    x = torch.randn(3, 37, 4, 5, requires_grad=True)
    y = module(x)
    edges = {id(fn.variable): type(fn).__name__
             for fn, _ in y.grad_fn.next_functions if fn is not None and hasattr(fn, "variable")}
    for p in module.parameters():
        assert edges.get(id(p)) == "AccumulateGrad", [
            type(fn).__name__ for fn, _ in y.grad_fn.next_functions]
    grad = torch.randn_like(y)
    y.backward(grad)
    ref = [p.detach().double().requires_grad_() for p in module.parameters()]
    x64 = x.detach().double().requires_grad_()
    y64 = se_kernels.squeeze_excite_reference(x64, *ref, act="silu")
    truth = torch.autograd.grad(y64, [x64, *ref], grad.double())
    for name, p, t in zip(("dx", *NAMES), itertools.chain([x], module.parameters()), truth):
        assert p.grad.shape == p.shape, name
        assert_within_tolerance(name, p.grad, t)


def test_frozen_weights_skip_the_weight_gradients():
    """With the SE weights frozen only dx is computed (no fc_grads call), the same bits."""
    module = se_kernels.SqueezeExcite(37, rd_channels=5, backend="cpu")
    x = torch.randn(3, 37, 4, 5, requires_grad=True)
    grad = torch.randn(3, 37, 4, 5)
    module(x).backward(grad)
    dx_trained = x.grad
    x.grad = None
    module.requires_grad_(False)
    y = module(x)
    with torch.profiler.profile() as prof:
        y.backward(grad)
    assert "se_kernels::fc_grads" not in [e.name for e in prof.events()]
    assert torch.equal(x.grad, dx_trained)
