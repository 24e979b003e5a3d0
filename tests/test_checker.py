"""The tolerance rule can fail: it rejects wrong answers in every dtype.

For a handful of option mixes and each dtype, the correct output and every gradient pass,
and five corruptions of each are rejected: zeroed, sign-flipped, shifted by one channel,
one channel dropped (zeroed), and one element off by 10% of the tensor's scale.
"""

from __future__ import annotations

import pytest
import torch

from conftest import (DTYPES, GRAD_NAMES, MAX_BOUND_FRACTION, Case, assert_within_tolerance,
                      make_inputs, run_se, tolerance_bound)

from se_kernels.backends import unavailable_reason

MIXES = [
    Case(N=2, C=9, H=5, W=5, R=4),
    Case(N=2, C=9, H=5, W=5, R=4, pool="avgmax", act="silu", gate="hard_sigmoid", gain=2.0,
         residual=True, out_act="relu", layout="channels_last"),
    Case(N=2, C=9, H=4, W=3, two_fc=False, act="identity", bias=False, residual=True),
    Case(N=3, C=6, H=3, W=3, R=3, act="identity", gate="hard_sigmoid", out_act="relu"),
]
# The dimension that holds channels (or hidden units) in each result.
CHANNEL_DIM = {"y": 1, "grad x": 1, "grad residual": 1, "grad w1": 1, "grad w2": 0,
               "grad b1": 0, "grad b2": 0}


def corruptions(actual: torch.Tensor, truth: torch.Tensor, dim: int) -> dict[str, torch.Tensor]:
    scale = truth.abs().max().item()
    # The channel with the most signal: dropping a dead channel would change nothing.
    loudest = int(truth.abs().amax(dim=[d for d in range(truth.dim()) if d != dim]).argmax())
    dropped = actual.clone()
    dropped.select(dim, loudest).zero_()
    nudged = actual.clone()
    i = int(torch.randint(actual.numel(), (1,), generator=torch.Generator().manual_seed(7)))
    nudged[torch.unravel_index(torch.tensor(i), actual.shape)] += 0.1 * scale
    return {
        "zeroed": torch.zeros_like(actual),
        "sign-flipped": -actual,
        "shifted by one channel": torch.roll(actual, 1, dims=dim),
        "one channel dropped": dropped,
        "one element off by 10% of the scale": nudged,
    }


def results(case: Case) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, a correct result, its float64 truth) for y and every gradient. The correct
    result comes from the compiled CPU kernel when built, else it is the truth rounded."""
    backend = "cpu" if unavailable_reason("cpu", "cpu") is None else None
    inputs = make_inputs(case, "cpu")
    truth_in = inputs.converted(torch.float64)
    truth = run_se(truth_in, case, "reference")
    g = torch.randn(truth.shape, generator=torch.Generator().manual_seed(1)).to(case.dtype)
    truth_grads = torch.autograd.grad(truth, truth_in.params, g.double())
    if backend:
        y = run_se(inputs, case, backend)
        grads = torch.autograd.grad(y, inputs.params, g)
    else:
        y = truth.to(case.dtype)
        grads = [t.to(p.dtype) for t, p in zip(truth_grads, inputs.params)]
    tensors = (inputs.x, inputs.w1, inputs.b1, inputs.w2, inputs.b2, inputs.residual)
    names = ["y"] + [f"grad {n}" for n, t in zip(GRAD_NAMES, tensors) if t is not None]
    return list(zip(names, [y.detach(), *grads], [truth.detach(), *truth_grads]))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", MIXES, ids=lambda c: f"{c.pool}-{c.act}-{c.gate}-fc{2 if c.two_fc else 1}")
def test_every_corruption_is_rejected(case, dtype):
    for name, actual, truth in results(case.but(dtype=dtype)):
        assert_within_tolerance(name, actual, truth)  # the right answer passes
        for what, bad in corruptions(actual, truth, CHANNEL_DIM[name]).items():
            with pytest.raises(AssertionError):
                assert_within_tolerance(name, bad, truth)
                pytest.fail(f"{name} ({dtype}): the checker accepted a result {what}")


@pytest.mark.parametrize("dtype", DTYPES + (torch.float64,), ids=str)
def test_bound_stays_far_below_the_truth(dtype):
    truth = torch.randn(4, 9, 5, 5, dtype=torch.float64)
    bound = tolerance_bound(truth, dtype)
    assert bound.max() < 0.05 * truth.abs().max() < MAX_BOUND_FRACTION * truth.abs().max()


def test_all_zero_truth_needs_a_reason():
    zero = torch.zeros(3, 4)
    with pytest.raises(AssertionError, match="tests nothing"):
        assert_within_tolerance("grad w1", zero, zero)
    assert_within_tolerance("grad w1", zero, zero, zero_ok="the gate is saturated everywhere")
