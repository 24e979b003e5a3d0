"""Every kernel backend against the float64 reference, forward and backward.

Under the tolerance rule of conftest.py, at odd shapes, both layouts, all dtypes and
every option. Runs the Triton kernels on the CPU interpreter when there is no GPU.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from conftest import (BATCHES, CHANNELS, DTYPES, HAS_GPU, KERNEL_BACKENDS, LAYOUTS, SPATIAL, Case,
                      assert_within_tolerance, backend_device, check_against_reference,
                      make_inputs, run_se)

import se_kernels


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("N", BATCHES)
@pytest.mark.parametrize("HW", SPATIAL)
@pytest.mark.parametrize("C", CHANNELS)
def test_shapes(backend, C, HW, N, layout, dtype):
    """Odd and prime sizes with default options, forward and all gradients."""
    R = max(1, C // 16)
    check_against_reference(Case(N=N, C=C, H=HW, W=HW, R=R, layout=layout, dtype=dtype), backend)


EPILOGUES = [(False, "identity"), (True, "identity"), (False, "relu"), (True, "relu")]


def _option_cases(all_dtypes: bool) -> list[Case]:
    """Every combination of options; each in both layouts.

    With all_dtypes each combination runs in every dtype; otherwise (the slow Triton CPU
    interpreter) the dtype cycles with the combination, so each dtype still meets every
    option value.
    """
    combos = [
        dict(two_fc=two_fc, bias=bias, pool=pool, act=act if two_fc else "identity", gate=gate,
             residual=res, out_act=out_act)
        for two_fc in (True, False)
        for pool, act, gate, bias, (res, out_act) in itertools.product(
            ("avg", "avgmax"), ("relu", "silu", "identity") if two_fc else ("identity",),
            ("sigmoid", "hard_sigmoid"), (True, False), EPILOGUES)
    ]
    cases = []
    for i, combo in enumerate(combos):
        for j, layout in enumerate(LAYOUTS):
            dtypes = DTYPES if all_dtypes else (DTYPES[(i + j) % len(DTYPES)],)
            for dtype in dtypes:
                cases.append(Case(N=2, C=19, H=5, W=5, R=6, layout=layout, dtype=dtype,
                                  gain=2.0 if i % 2 else 1.0, **combo))
    return cases


def _case_id(c: Case) -> str:
    return (f"{'fc2' if c.two_fc else 'ese'}-{c.pool}-{c.act}-{c.gate}-"
            f"{'bias' if c.bias else 'nobias'}-{'res' if c.residual else 'nores'}-{c.out_act}-"
            f"g{c.gain}-{c.layout}-{str(c.dtype)[6:]}")


def _option_params():
    """(backend, case) pairs: every dtype on a GPU and on the fast CPU-side backends."""
    for param in KERNEL_BACKENDS:
        (name,) = param.values
        all_dtypes = HAS_GPU or name in ("cpu", "cuda_sim")
        for case in _option_cases(all_dtypes):
            yield pytest.param(name, case, marks=param.marks, id=f"{name}-{_case_id(case)}")


@pytest.mark.parametrize("backend, case", list(_option_params()))
def test_options(backend, case):
    check_against_reference(case, backend)


def test_large_spatial(backend):
    """Many HW tiles per program (56 x 56) in both layouts."""
    for layout in LAYOUTS:
        check_against_reference(Case(N=1, C=5, H=56, W=56, R=2, layout=layout), backend)


@pytest.mark.parametrize("two_fc", [True, False])
def test_avgmax_ties_share_the_gradient(backend, two_fc):
    """Repeated maxima split the max-pool gradient evenly, as torch.amax's backward."""
    case = Case(N=2, C=9, H=6, W=6, R=4, pool="avgmax", two_fc=two_fc)
    device = backend_device(backend)
    inputs = make_inputs(case, device)
    with torch.no_grad():  # 5 distinct values: every channel's max is tied several times
        inputs.x.copy_(torch.randint(-2, 3, inputs.x.shape, generator=torch.Generator().manual_seed(3)))
        inputs.x[0, 0] = 2.0  # a whole channel of ties
    y = run_se(inputs, case, backend)
    truth_in = inputs.converted(torch.float64, device="cpu")
    truth = run_se(truth_in, case, "reference")
    (gx,) = torch.autograd.grad(y.sum(), [inputs.x])
    (tx,) = torch.autograd.grad(truth.sum(), [truth_in.x])
    assert_within_tolerance("grad x", gx, tx)


@pytest.mark.parametrize("options", [
    dict(act="relu"),
    dict(act="relu", pool="avgmax", gate="hard_sigmoid"),
    dict(act="identity", residual=True, out_act="relu"),
], ids=["relu", "avgmax-hard_sigmoid", "residual-relu"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_nan_propagates_as_in_torch(backend, options, layout):
    """A NaN in x reaches y where torch's ops put it: relu, max pooling and the epilogue
    must not swallow it (that would hide it from the loss and from AMP's inf/NaN check)."""
    case = Case(N=2, C=6, H=5, W=5, R=3, layout=layout, **options)
    inputs = make_inputs(case, backend_device(backend))
    with torch.no_grad():
        inputs.x[0, 2, 1, 3] = float("nan")
        y = run_se(inputs, case, backend)
        truth = run_se(inputs.converted(torch.float64, device="cpu"), case, "reference")
    assert truth.isnan().any()
    torch.testing.assert_close(y.isnan().cpu(), truth.isnan())


@pytest.mark.parametrize("layout", LAYOUTS)
def test_nan_output_keeps_its_gradient_through_the_relu_epilogue(backend, layout):
    """A NaN in the residual gives one NaN output. torch's relu backward zeroes the
    gradient only where the output is <= 0, so that position keeps its gradient (in
    grad residual, and in grad x through sum(g * x)); every backend must do the same."""
    case = Case(N=2, C=6, H=5, W=5, R=3, layout=layout, residual=True, out_act="relu")
    inputs = make_inputs(case, backend_device(backend))
    with torch.no_grad():
        inputs.residual[1, 3, 2, 2] = float("nan")
    y = run_se(inputs, case, backend)
    truth_in = inputs.converted(torch.float64, device="cpu")
    truth = run_se(truth_in, case, "reference")
    torch.testing.assert_close(y.isnan().cpu(), truth.isnan())
    assert y.isnan().sum() == 1
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(3))
    grads = torch.autograd.grad(y, [inputs.x, inputs.residual], g.to(y))
    truth_grads = torch.autograd.grad(truth, [truth_in.x, truth_in.residual], g.double())
    for name, got, want in zip(("grad x", "grad residual"), grads, truth_grads):
        assert_within_tolerance(name, got, want)
    assert grads[1][1, 3, 2, 2] == g[1, 3, 2, 2]  # kept, not zeroed


def test_empty_batch(backend):
    case = Case(N=0)
    inputs = make_inputs(case, backend_device(backend))
    y = run_se(inputs, case, backend)
    assert y.shape == (0, case.C, case.H, case.W)
    y.sum().backward()
    assert inputs.x.grad.shape == inputs.x.shape
    assert inputs.w1.grad.abs().sum().item() == 0.0


def test_non_mergeable_input_is_copied_once(backend):
    """x whose H and W do not merge into one index (a strided slice) is still right."""
    device = backend_device(backend)
    gen = torch.Generator().manual_seed(4)
    base = torch.randn(2, 6, 10, 7, generator=gen).to(device)
    x = base[:, :, ::2].requires_grad_()  # H stride 14 != W * W stride 7: H, W do not merge
    assert se_kernels.options.hw_strides(x) is None
    w1 = torch.randn(3, 6, generator=gen).to(device).requires_grad_()
    w2 = torch.randn(6, 3, generator=gen).to(device).requires_grad_()
    y = se_kernels.squeeze_excite(x, w1, None, w2, backend=backend)
    args64 = [t.detach().double().cpu().requires_grad_() for t in (x, w1, w2)]
    ref = se_kernels.squeeze_excite_reference(args64[0], args64[1], None, args64[2])
    assert_within_tolerance("y", y, ref)
    for name, got, want in zip(("grad x", "grad w1", "grad w2"),
                               torch.autograd.grad(y.sum(), [x, w1, w2]),
                               torch.autograd.grad(ref.sum(), args64)):
        assert_within_tolerance(name, got, want)


def test_mixed_layouts_and_expanded_grad(backend):
    """channels_last x with an NCHW residual, and the stride-0 grad of y.sum()."""
    device = backend_device(backend)
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(3, 10, 5, 7, generator=gen).to(device).contiguous(memory_format=torch.channels_last)
    res = torch.randn(3, 10, 5, 7, generator=gen).to(device)
    w1 = torch.randn(4, 10, generator=gen).to(device)
    w2 = torch.randn(10, 4, generator=gen).to(device)
    tensors = [t.requires_grad_() for t in (x, res, w1, w2)]
    y = se_kernels.squeeze_excite(x, w1, None, w2, residual=res, out_act="relu", backend=backend)
    grads = torch.autograd.grad(y.sum(), tensors)
    args64 = [t.detach().double().cpu().requires_grad_() for t in tensors]
    ref = se_kernels.squeeze_excite_reference(args64[0], args64[2], None, args64[3],
                                              residual=args64[1], out_act="relu")
    ref_grads = torch.autograd.grad(ref.sum(), args64)
    assert_within_tolerance("y", y, ref)
    for name, got, want in zip(("grad x", "grad residual", "grad w1", "grad w2"), grads, ref_grads):
        assert_within_tolerance(name, got, want)


@pytest.mark.parametrize("weight_dtype", [torch.float16, torch.bfloat16, torch.float64],
                         ids=str)
def test_weight_dtypes_and_conv_shapes(backend, weight_dtype):
    """Weights in any float dtype, as [R, C, 1, 1] conv weights; grads keep their dtype
    and shape and match the truth computed from the same (rounded) weights."""
    case = Case(N=2, C=11, H=4, W=4, R=3)
    device = backend_device(backend)
    inputs = make_inputs(case, device, weight_dtype=weight_dtype)
    w1 = inputs.w1.detach().view(case.R, case.C, 1, 1).requires_grad_()
    w2 = inputs.w2.detach().view(case.C, case.R, 1, 1).requires_grad_()
    tensors = [inputs.x, w1, inputs.b1, w2, inputs.b2]
    y = se_kernels.squeeze_excite(*tensors, backend=backend)
    args64 = [t.detach().double().cpu().requires_grad_() for t in tensors]
    ref = se_kernels.squeeze_excite_reference(*args64)
    assert_within_tolerance("y", y, ref)
    names = ("grad x", "grad w1", "grad b1", "grad w2", "grad b2")
    for name, got, want, t in zip(names, torch.autograd.grad(y.sum(), tensors),
                                  torch.autograd.grad(ref.sum(), args64), tensors):
        assert got.dtype == t.dtype and got.shape == t.shape, name
        assert_within_tolerance(name, got, want)
