"""torch.library contract: opcheck on every op, torch.compile without graph breaks,
and bitwise determinism."""

from __future__ import annotations

import pytest
import torch

from conftest import Case, backend_device, make_inputs, run_se

import se_kernels
from se_kernels.ops import TABLE, backend_ops

OPCHECK_CASES = [
    Case(N=2, C=7, H=3, W=5, R=3),
    Case(N=2, C=7, H=3, W=5, R=3, layout="channels_last", pool="avgmax", act="silu",
         gate="hard_sigmoid", residual=True, out_act="relu", gain=2.0),
    Case(N=2, C=7, H=3, W=5, two_fc=False, bias=False, pool="avgmax", gate="hard_sigmoid",
         residual=True),
    Case(N=0, C=7, H=3, W=5, R=3),
]


def _forward_args(inputs, case):
    return (*inputs.args(), inputs.residual, case.pool, case.act, case.gate, case.gain,
            case.out_act)


@pytest.mark.parametrize("case", OPCHECK_CASES, ids=lambda c: f"{c.pool}-{c.two_fc}-{c.N}")
def test_opcheck(backend, case):
    ops = backend_ops(backend)
    inputs = make_inputs(case, backend_device(backend))
    fwd_args = _forward_args(inputs, case)
    torch.library.opcheck(ops.forward, fwd_args)
    with torch.no_grad():
        y, pooled, pooled_max, fc1_out, fc2_out = ops.forward(*fwd_args)
    if backend != "reference":
        torch.library.opcheck(ops.infer, tuple(a.detach() if isinstance(a, torch.Tensor) else a
                                               for a in fwd_args))
    # The same kernels on the same plan: y only, bit for bit.
    assert torch.equal(ops.infer(*fwd_args), y)
    grad_y = torch.randn(y.shape, generator=torch.Generator().manual_seed(2)).to(y)
    bwd_args = (grad_y, inputs.x.detach(), y if case.out_act == "relu" else None,
                inputs.w1.detach(), None if inputs.w2 is None else inputs.w2.detach(),
                pooled_max, fc1_out, fc2_out, case.residual, case.pool, case.act, case.gate,
                case.gain, case.out_act)
    torch.library.opcheck(ops.backward, bwd_args)


def test_compile_fullgraph(backend):
    """A module using the op traces with no graph break and matches eager, fwd and bwd."""
    device = backend_device(backend)
    module = se_kernels.SqueezeExcite(24, rd_channels=6, backend=backend).to(device)
    # Inductor on CPU tensors would spend minutes compiling C++; on CUDA tensors it is the
    # compiler users get.
    compiler = "inductor" if device == "cuda" else "aot_eager"
    compiled = torch.compile(module, fullgraph=True, backend=compiler)
    x = torch.randn(2, 24, 5, 5, generator=torch.Generator().manual_seed(1)).to(device)
    x.requires_grad_()
    y_eager = module(x)
    (g_eager,) = torch.autograd.grad(y_eager.sum(), [x])
    torch._dynamo.reset()
    y = compiled(x)
    (g,) = torch.autograd.grad(y.sum(), [x])
    torch.testing.assert_close(y, y_eager, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(g, g_eager, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", [
    Case(N=1, C=67, H=13, W=13, R=8),  # HW split in the reductions
    Case(N=3, C=67, H=7, W=7, R=8, layout="channels_last", pool="avgmax", residual=True,
         out_act="relu"),
    Case(N=3, C=33, H=7, W=7, two_fc=False, dtype=torch.float16),
], ids=["split", "avgmax-epilogue", "ese-fp16"])
def test_bitwise_deterministic(backend, case):
    """Two runs give bitwise-identical outputs and gradients (no float atomics)."""

    def run():
        inputs = make_inputs(case, backend_device(backend), seed=5)
        y = run_se(inputs, case, backend)
        g = torch.randn(y.shape, generator=torch.Generator().manual_seed(6)).to(y)
        return [y.detach()] + list(torch.autograd.grad(y, inputs.params, g))

    for first, second in zip(run(), run()):
        assert torch.equal(first, second)


@pytest.mark.parametrize("case", [
    Case(N=1, C=5, H=128, W=128, R=2),  # HW split (the CPU splits whatever its thread count)
    Case(N=8, C=16, H=24, W=24, R=4, layout="channels_last", pool="avgmax"),  # per sample
    # FC2 on 16-output tiles (R <= 64) with a tail tile and a tail k block, FC1 as dot
    # products (C > 64); the FC stage gets 6 rows on one thread, 3 + 3 on three (its grain)
    Case(N=6, C=100, H=3, W=3, R=40, layout="channels_last"),
    # the wide FCs and their input gradients take rows four at a time (AVX-512): 4 + 3
    # rows on one thread, 3 + 3 + 1 on three, every row-block size against another
    Case(N=7, C=100, H=3, W=3, R=72),
    # fc_grads splits the weight gradients' rows across threads (16 tasks each here)
    Case(N=8, C=1000, H=2, W=2, R=64, act="silu"),
], ids=["split", "per-sample", "fc-row-blocks", "fc-row-tails", "weight-grad-rows"])
def test_cpu_result_does_not_depend_on_thread_count(case):
    """The CPU plan's summation order depends on the shape only, so one and three threads
    give bitwise-identical results: y, the input gradient, and the weight and bias
    gradients (the fc_grads op: each output summed over the batch in order, whichever
    thread computes it; ATen's matmul, used before, changed bits with the thread count for
    [100, 6] @ [6, 40]). Every case is big enough that three threads do split a stage
    (small work stays on the calling thread: see the plan's grains)."""
    from conftest import require_backend

    from se_kernels.plans import kernel_path

    require_backend("cpu")
    before = torch.get_num_threads()

    def run(threads):
        torch.set_num_threads(threads)
        inputs = make_inputs(case, "cpu", seed=5)
        if threads > 1:
            path = kernel_path("cpu", inputs.x, case.R, case.two_fc, case.pool)
            assert path.parallel_stages > 0, path
        y = run_se(inputs, case, "cpu")
        g = torch.randn(y.shape, generator=torch.Generator().manual_seed(6)).to(y)
        grads = dict(zip(["x", "w1", "b1", "w2", "b2"], torch.autograd.grad(y, inputs.params, g)))
        return dict(y=y.detach(), **grads)

    try:
        one, three = run(1), run(3)
    finally:
        torch.set_num_threads(before)
    for name in one:
        assert torch.equal(one[name], three[name]), name


def _signature(op) -> tuple:
    schema = getattr(op, "_opoverload", op)._schema  # custom_op (Triton) or OpOverload (C++)
    return ([(a.name, str(a.type), a.default_value) for a in schema.arguments],
            [str(r.type) for r in schema.returns])


@pytest.mark.parametrize("which", ["forward", "backward", "infer", "split_squeeze", "split_excite",
                                   "split_squeeze_backward", "split_excite_backward"])
def test_every_backend_op_has_the_same_schema(which):
    """The Triton custom ops take their schema from the type hints of launch.py and
    launch_split.py, the C++ ops from csrc/se_ops.cpp; autograd_rules (and the split ops'
    Functions) unpack both by position, so names, types, defaults and returns must agree."""
    from se_kernels.split_ops import TABLE as SPLIT_TABLE

    table, field = (SPLIT_TABLE, which.removeprefix("split_")) if which.startswith("split_") \
        else (TABLE, which)
    schemas = {name: _signature(getattr(ops, field)) for name, ops in table.items()
               if name != "reference"}  # plain torch functions, not an op
    if len(schemas) < 2:
        pytest.skip(f"only {list(schemas)} registered here")
    first = next(iter(schemas.values()))
    for name, schema in schemas.items():
        assert schema == first, f"{which}: {name} differs from {next(iter(schemas))}"
