"""Shared test machinery: the tolerance rule, shape lists, backend parameters, inputs.

Without a GPU the Triton kernels run on the CPU under TRITON_INTERPRET=1, which must
be set before se_kernels defines them, i.e. here, before any test imports it. The
cuda_sim emulator runs CTAs in a random order drawn from SE_KERNELS_SIM_SEED, set here
(and printed in the header) unless the caller chose one.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, replace
from typing import Optional

import pytest
import torch

HAS_GPU = torch.cuda.is_available()
if not HAS_GPU:
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("SE_KERNELS_SIM_SEED", str(random.SystemRandom().randrange(1, 2**31)))

import se_kernels  # noqa: E402
from se_kernels.backends import unavailable_reason  # noqa: E402


def pytest_configure(config):
    # Also registered in pyproject.toml; here too for runs outside the source tree
    # (scripts/package_check.sh runs a copy of tests/ against the installed wheel).
    config.addinivalue_line("markers", "slow: large inputs; run with -m slow")


def pytest_report_header(config):
    return f"cuda_sim grid order seed: SE_KERNELS_SIM_SEED={os.environ['SE_KERNELS_SIM_SEED']}"


@pytest.fixture(autouse=True)
def _seed_torch():
    """Every test starts from the same global RNG state (tests also use explicit generators)."""
    torch.manual_seed(0)


# --- the tolerance rule (docs/DESIGN.md, "Tolerance"), in one place -----------------
# A kernel result r against its float64 truth t, computed from the very same (rounded)
# inputs, element by element:
#     |r - t| <= EPS[r.dtype] * |t|  +  ACC_RTOL * max|t|
# EPS[d]: one unit of d's precision relative to the value, i.e. twice the bound of the
#   one rounding the kernels apply to a result (all their maths is float32);
# ACC_RTOL: float32 accumulation through the pooling sums and the FC layers, relative
#   to the tensor's largest truth.
# Neither term depends on how badly eager PyTorch does in the same dtype, and the bound
# stays far below a quarter of the truth (checked), so a zeroed, sign-flipped, shifted
# or dropped result cannot pass (tests/test_checker.py proves it per dtype).
EPS = {torch.float32: 2.0 ** -23, torch.float16: 2.0 ** -10, torch.bfloat16: 2.0 ** -7,
       torch.float64: 2.0 ** -52}
ACC_RTOL = 5e-6
MAX_BOUND_FRACTION = 0.25  # no bound may reach this fraction of the truth's magnitude


def tolerance_bound(truth: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The allowed |error| per element for a result of `dtype` whose truth is `truth`."""
    truth = truth.double().cpu()
    scale = truth.abs().max() if truth.numel() else torch.zeros((), dtype=torch.float64)
    return EPS[dtype] * truth.abs() + ACC_RTOL * scale


def assert_within_tolerance(name: str, actual: torch.Tensor, truth: torch.Tensor, *,
                            zero_ok: Optional[str] = None) -> None:
    """Check one result against its float64 truth under the tolerance rule.

    zero_ok: why an all-zero (or empty) truth is right for this case; without it such a
    truth fails, because a check against zeros tests nothing.
    """
    assert actual.shape == truth.shape, f"{name}: shape {actual.shape} != {truth.shape}"
    truth = truth.double().cpu()
    if truth.numel() == 0 or truth.abs().max().item() == 0:
        assert zero_ok, f"{name}: the truth is all zero, so this case tests nothing"
    assert torch.isfinite(actual).all(), f"{name}: non-finite values"
    bound = tolerance_bound(truth, actual.dtype)
    scale = truth.abs().max().item() if truth.numel() else 0.0
    assert bound.numel() == 0 or bound.max().item() < MAX_BOUND_FRACTION * scale or scale == 0, (
        f"{name}: the bound reaches a quarter of the truth's magnitude")
    err = (actual.double().cpu() - truth).abs()
    excess = err - bound
    if excess.numel() and excess.max().item() > 0:
        i = int(excess.argmax())
        raise AssertionError(
            f"{name}: error {err.flatten()[i].item():.3e} > bound {bound.flatten()[i].item():.3e} "
            f"at flat index {i} (truth {truth.flatten()[i].item():.6g}, got "
            f"{actual.flatten()[i].item():.6g}; max |truth| {scale:.3g}, {actual.dtype})")


def assert_close_to_model_truth(name: str, actual: torch.Tensor, truth: torch.Tensor,
                                eager: torch.Tensor) -> None:
    """A whole model's output: the model's other layers run eagerly in both versions, so
    the allowance is twice eager's own error (plus a float32 floor), capped as above."""
    truth = truth.double().cpu()
    scale = truth.abs().max().item()
    assert scale > 0, f"{name}: the truth is all zero"
    eager_err = (eager.double().cpu() - truth).abs().max().item()
    bound = 2 * eager_err + 1e-5 * scale
    assert bound < MAX_BOUND_FRACTION * scale, f"{name}: bound {bound:.3e} vs |truth| {scale:.3e}"
    err = (actual.double().cpu() - truth).abs().max().item()
    assert err <= bound, f"{name}: max error {err:.3e} > bound {bound:.3e} (eager {eager_err:.3e})"


# --- shapes and options -------------------------------------------------------------
CHANNELS = (3, 67, 1000)
SPATIAL = (1, 7, 13)
BATCHES = (1, 3)
LAYOUTS = ("nchw", "channels_last")
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class Case:
    """One SE call: shape, layout, dtype and every option."""

    N: int = 3
    C: int = 67
    H: int = 7
    W: int = 7
    R: int = 8
    layout: str = "nchw"
    dtype: torch.dtype = torch.float32
    two_fc: bool = True
    bias: bool = True
    pool: str = "avg"
    act: str = "relu"
    gate: str = "sigmoid"
    gain: float = 1.0
    residual: bool = False
    out_act: str = "identity"

    def but(self, **changes) -> "Case":
        return replace(self, **changes)

    @property
    def options(self) -> dict:
        return dict(pool=self.pool, act=self.act, gate=self.gate, gain=self.gain,
                    out_act=self.out_act)


@dataclass
class Inputs:
    x: torch.Tensor
    w1: torch.Tensor
    b1: Optional[torch.Tensor]
    w2: Optional[torch.Tensor]
    b2: Optional[torch.Tensor]
    residual: Optional[torch.Tensor]

    @property
    def params(self) -> list[torch.Tensor]:
        """Differentiable tensors, in a fixed order."""
        return [t for t in (self.x, self.w1, self.b1, self.w2, self.b2, self.residual)
                if t is not None]

    def args(self) -> tuple:
        return (self.x, self.w1, self.b1, self.w2, self.b2)

    def converted(self, dtype: Optional[torch.dtype] = None, device=None) -> "Inputs":
        """A detached copy (float64 for the truth), leaves requiring grad again."""

        def conv(t, floating_dtype):
            if t is None:
                return None
            out = t.detach().to(device=device or t.device, dtype=floating_dtype or t.dtype)
            return out.requires_grad_(t.requires_grad)

        act_dtype = dtype
        w_dtype = dtype if dtype == torch.float64 else None
        return Inputs(conv(self.x, act_dtype), conv(self.w1, w_dtype), conv(self.b1, w_dtype),
                      conv(self.w2, w_dtype), conv(self.b2, w_dtype), conv(self.residual, act_dtype))


def _hidden_preact(inputs: "Inputs", case: "Case") -> torch.Tensor:
    """FC1's float64 output for the inputs as given (rounded to their dtypes)."""
    x = inputs.x.detach().double()
    pooled = x.mean((2, 3))
    if case.pool == "avgmax":
        pooled = 0.5 * pooled + 0.5 * x.amax((2, 3))
    z = pooled @ inputs.w1.detach().double().t()
    return z if inputs.b1 is None else z + inputs.b1.detach().double()


def _keep_inputs_off_kinks(inputs: "Inputs", case: "Case") -> None:
    """Choose inputs whose gradients are all non-zero and far from a kink.

    - act relu: a hidden unit negative for every sample has zero gradient everywhere
      (its FC1 row, its bias, its FC2 column); flip its FC1 row and bias so it is alive.
    - residual + relu epilogue: an output within rounding of 0 could fall on either side
      of the ReLU in the kernel and in the truth; push such residuals away from it.
    """
    with torch.no_grad():
        if case.two_fc and case.act == "relu":
            dead = (_hidden_preact(inputs, case) <= 0).all(0)
            inputs.w1[dead] *= -1
            if inputs.b1 is not None:
                inputs.b1[dead] *= -1
        if inputs.residual is not None and case.out_act == "relu":
            for _ in range(4):
                kw = dict(case.options, out_act="identity")
                pre = se_kernels.squeeze_excite_reference(
                    *inputs.converted(torch.float64).args(),
                    residual=inputs.residual.detach().double(), **kw)
                near = pre.abs() < 1e-2
                if not near.any():
                    break
                shift = torch.where(pre >= 0, 0.05, -0.05).to(inputs.residual.dtype)
                inputs.residual[near] += shift[near]


def make_inputs(case: Case, device, seed: int = 0, weight_dtype=torch.float32) -> Inputs:
    """Random inputs for a case, kept away from kinks; every tensor requires grad."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0, dtype=torch.float32):
        return (torch.randn(*shape, generator=gen) * scale).to(dtype=dtype)

    x = randn(case.N, case.C, case.H, case.W, dtype=case.dtype)
    residual = randn(case.N, case.C, case.H, case.W, dtype=case.dtype) if case.residual else None
    r1 = case.R if case.two_fc else case.C
    w1 = randn(r1, case.C, scale=case.C ** -0.5, dtype=weight_dtype)
    b1 = randn(r1, scale=0.5, dtype=weight_dtype) if case.bias else None
    w2 = randn(case.C, case.R, scale=case.R ** -0.5, dtype=weight_dtype) if case.two_fc else None
    b2 = randn(case.C, scale=0.5, dtype=weight_dtype) if case.two_fc and case.bias else None
    tensors = Inputs(x, w1, b1, w2, b2, residual)
    if case.N > 0:
        _keep_inputs_off_kinks(tensors, case)
    fmt = torch.channels_last if case.layout == "channels_last" else torch.contiguous_format
    tensors = Inputs(*(None if t is None else t.to(device) for t in
                       (x, w1, b1, w2, b2, residual)))
    tensors.x = tensors.x.contiguous(memory_format=fmt)
    if tensors.residual is not None:
        tensors.residual = tensors.residual.contiguous(memory_format=fmt)
    for t in tensors.params:
        t.requires_grad_(True)
    return tensors


# --- backends -----------------------------------------------------------------------
def backend_device(backend: str) -> str:
    """Where a backend's tests run: Triton on the GPU if any, else the CPU interpreter;
    cuda_sim always on CPU tensors."""
    if backend == "cuda" or (backend == "triton" and HAS_GPU):
        return "cuda"
    return "cpu"


def _backend_param(name: str):
    reason = unavailable_reason(name, backend_device(name))
    return pytest.param(name, marks=pytest.mark.skipif(reason is not None,
                                                       reason=f"{name}: {reason}"))


def require_backend(name: str) -> None:
    """Skip the calling test, with the reason, when a backend cannot run here."""
    if name != "reference":
        reason = unavailable_reason(name, backend_device(name))
        if reason is not None:
            pytest.skip(f"{name}: {reason}")


KERNEL_BACKEND_NAMES = ("triton", "cuda", "cpu", "cuda_sim")
KERNEL_BACKENDS = [_backend_param(b) for b in KERNEL_BACKEND_NAMES]


@pytest.fixture(params=KERNEL_BACKENDS)
def backend(request) -> str:
    return request.param


def run_se(inputs: Inputs, case: Case, backend: str) -> torch.Tensor:
    return se_kernels.squeeze_excite(*inputs.args(), residual=inputs.residual, backend=backend,
                                     **case.options)


GRAD_NAMES = ("x", "w1", "b1", "w2", "b2", "residual")


def check_against_reference(case: Case, backend: str, seed: int = 0, grad=True) -> None:
    """Forward and (optionally) every gradient of one case against the float64 truth,
    computed from the same rounded inputs and the same rounded incoming gradient."""
    device = backend_device(backend)
    inputs = make_inputs(case, device, seed)
    y = run_se(inputs, case, backend)
    truth_in = inputs.converted(torch.float64, device="cpu")
    truth = run_se(truth_in, case, "reference")
    assert y.dtype == case.dtype and y.shape == truth.shape
    if case.layout == "channels_last":
        assert y.is_contiguous(memory_format=torch.channels_last)
    assert_within_tolerance("y", y, truth)
    if not grad:
        return
    gen = torch.Generator().manual_seed(seed + 1)
    fmt = torch.channels_last if case.layout == "channels_last" else torch.contiguous_format
    g = torch.randn(y.shape, generator=gen).to(y.dtype).contiguous(memory_format=fmt)
    grads = torch.autograd.grad(y, inputs.params, g.to(device))
    truth_grads = torch.autograd.grad(truth, truth_in.params, g.double())
    tensors = (inputs.x, inputs.w1, inputs.b1, inputs.w2, inputs.b2, inputs.residual)
    names = [n for n, t in zip(GRAD_NAMES, tensors) if t is not None]
    params = [t for t in tensors if t is not None]
    for name, got, want, param in zip(names, grads, truth_grads, params):
        assert got.dtype == param.dtype, f"grad {name}: dtype {got.dtype} != {param.dtype}"
        assert_within_tolerance(f"grad {name}", got, want)


def pytest_sessionfinish(session, exitstatus):
    """A run in which no test passed is a failure, not a silent success."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    passed = len(reporter.stats.get("passed", [])) if reporter else 1
    if exitstatus == 0 and passed == 0:
        session.exitstatus = 1
