"""Shared test machinery: the tolerance rule, shape lists, backend parameters, inputs.

Without a GPU the Triton kernels run on the CPU under TRITON_INTERPRET=1, which must
be set before se_kernels defines them, i.e. here, before any test imports it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Optional

import pytest
import torch

HAS_GPU = torch.cuda.is_available()
if not HAS_GPU:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import se_kernels  # noqa: E402
from se_kernels.backends import unavailable_reason  # noqa: E402

# --- the tolerance rule (DESIGN.md section 5), in one place -------------------------
# |kernel - ref64| <= 2 * |eager in the same dtype - ref64| + ATOL[dtype] * max(1, |ref64|)
ATOL = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 1e-2, torch.float64: 1e-12}


def assert_within_tolerance(name: str, actual: torch.Tensor, truth: torch.Tensor,
                            eager: torch.Tensor, dtype: torch.dtype) -> None:
    """Check one result against the float64 truth under the tolerance rule."""
    assert actual.shape == truth.shape, f"{name}: shape {actual.shape} != {truth.shape}"
    assert torch.isfinite(actual).all(), f"{name}: non-finite values"
    truth = truth.double()
    err = (actual.double().cpu() - truth.cpu()).abs().max().item() if truth.numel() else 0.0
    eager_err = (eager.double().cpu() - truth.cpu()).abs().max().item() if truth.numel() else 0.0
    scale = max(1.0, truth.abs().max().item()) if truth.numel() else 1.0
    bound = 2 * eager_err + ATOL[dtype] * scale
    assert err <= bound, (f"{name}: max error {err:.3e} > bound {bound:.3e} "
                          f"(eager {dtype} error {eager_err:.3e}, |truth| {scale:.3g})")


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


def make_inputs(case: Case, device, seed: int = 0, weight_dtype=torch.float32) -> Inputs:
    """Random inputs for a case; every tensor requires grad."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0, dtype=torch.float32):
        return (torch.randn(*shape, generator=gen) * scale).to(device=device, dtype=dtype)

    x = randn(case.N, case.C, case.H, case.W, dtype=case.dtype)
    residual = randn(case.N, case.C, case.H, case.W, dtype=case.dtype) if case.residual else None
    if case.layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
        if residual is not None:
            residual = residual.contiguous(memory_format=torch.channels_last)
    r1 = case.R if case.two_fc else case.C
    w1 = randn(r1, case.C, scale=case.C ** -0.5, dtype=weight_dtype)
    b1 = randn(r1, scale=0.5, dtype=weight_dtype) if case.bias else None
    w2 = randn(case.C, case.R, scale=case.R ** -0.5, dtype=weight_dtype) if case.two_fc else None
    b2 = randn(case.C, scale=0.5, dtype=weight_dtype) if case.two_fc and case.bias else None
    tensors = Inputs(x, w1, b1, w2, b2, residual)
    for t in tensors.params:
        t.requires_grad_(True)
    return tensors


# --- backends -----------------------------------------------------------------------
def backend_device(backend: str) -> str:
    """Where a backend's tests run: Triton on the GPU if any, else the CPU interpreter."""
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


KERNEL_BACKENDS = [_backend_param(b) for b in ("triton", "cuda", "cpu")]


@pytest.fixture(params=KERNEL_BACKENDS)
def backend(request) -> str:
    return request.param


def run_se(inputs: Inputs, case: Case, backend: str) -> torch.Tensor:
    return se_kernels.squeeze_excite(*inputs.args(), residual=inputs.residual, backend=backend,
                                     **case.options)


def check_against_reference(case: Case, backend: str, seed: int = 0, grad=True) -> None:
    """Forward and (optionally) every gradient of one case against the float64 truth."""
    device = backend_device(backend)
    inputs = make_inputs(case, device, seed)
    y = run_se(inputs, case, backend)
    truth_in = inputs.converted(torch.float64, device="cpu")
    eager_in = inputs.converted()
    truth = run_se(truth_in, case, "reference")
    eager = run_se(eager_in, case, "reference")
    assert y.dtype == case.dtype and y.shape == truth.shape
    if case.layout == "channels_last":
        assert y.is_contiguous(memory_format=torch.channels_last)
    assert_within_tolerance("y", y, truth, eager, case.dtype)
    if not grad:
        return
    gen = torch.Generator().manual_seed(seed + 1)
    g = torch.randn(y.shape, generator=gen)
    grads = torch.autograd.grad(y, inputs.params, g.to(device=device, dtype=y.dtype))
    truth_grads = torch.autograd.grad(truth, truth_in.params, g.double())
    eager_grads = torch.autograd.grad(eager, eager_in.params, g.to(device=device, dtype=y.dtype))
    names = [n for n, t in zip(("x", "w1", "b1", "w2", "b2", "residual"),
                               (inputs.x, inputs.w1, inputs.b1, inputs.w2, inputs.b2,
                                inputs.residual)) if t is not None]
    for name, got, want, ref in zip(names, grads, truth_grads, eager_grads):
        assert got.dtype == ref.dtype, f"grad {name}: dtype {got.dtype} != {ref.dtype}"
        assert_within_tolerance(f"grad {name}", got, want, ref, case.dtype)


def pytest_sessionfinish(session, exitstatus):
    """A run in which no test passed is a failure, not a silent success."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    passed = len(reporter.stats.get("passed", [])) if reporter else 1
    if exitstatus == 0 and passed == 0:
        session.exitstatus = 1
