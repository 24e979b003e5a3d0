"""Kernel paths, each proven taken before its values are checked.

Every case names the path it is meant to reach and asserts it from the backend's own
launch plan (se_kernels.plans: csrc/cuda/plan.cpp for cuda and cuda_sim, csrc/cpu/layout.h
for cpu, se_kernels/triton/plan.py for triton), then checks y and every gradient
against the float64 truth. Each path is crossed with the acts, gates, epilogues and
reduced dtypes (cycled, to keep the interpreters' time in bounds), at the smallest shape
that reaches it. A backend without such a path (Triton has no explicit vector width, the
CPU no HW tiles) still runs the case for its values; `expect` says what is asserted where.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Optional

import pytest
import torch

from conftest import Case, backend_device, check_against_reference, make_inputs

from se_kernels.plans import KernelPath, kernel_path

Expect = Callable[[KernelPath, Case], bool]
VEC_WIDTH = {torch.float32: 4, torch.float16: 8, torch.bfloat16: 8}


@dataclass(frozen=True)
class Path:
    name: str
    shape: Case
    # per backend family ("cuda" covers cuda and cuda_sim): what its plan must show
    cuda: Optional[Expect] = None
    triton: Optional[Expect] = None
    cpu: Optional[Expect] = None


PATHS = [
    Path("vector-nchw", Case(N=2, C=12, H=4, W=4, R=4),
         cuda=lambda p, c: p.vec == VEC_WIDTH[c.dtype] and p.vec > 1),
    Path("vector-channels-last", Case(N=2, C=16, H=3, W=3, R=4, layout="channels_last"),
         cuda=lambda p, c: p.vec == VEC_WIDTH[c.dtype] and p.vec > 1),
    Path("scalar-odd-extent", Case(N=2, C=13, H=3, W=3, R=4),
         cuda=lambda p, c: p.vec == 1),
    Path("avgmax-tiles-and-blocks", Case(N=1, C=67, H=16, W=16, R=5, pool="avgmax"),
         cuda=lambda p, c: p.n_cblocks > 1 and p.n_tiles > 1 and p.n_splits == 1,
         triton=lambda p, c: p.n_cblocks > 1 and p.n_tiles > 1 and p.n_splits == 1),
    Path("fc-rows-past-one-chunk", Case(N=2, C=8, H=3, W=3, R=1030),
         cuda=lambda p, c: p.r_chunks == 2, triton=lambda p, c: p.r_chunks > 1),
    Path("ese-rows-past-one-chunk", Case(N=1, C=1030, H=2, W=2, two_fc=False),
         cuda=lambda p, c: p.r_chunks == 2, triton=lambda p, c: p.r_chunks > 1),
    # CPU: FC2 (in_f = R <= 64) on transposed 16-output tiles, a tail tile and a tail
    # block of inputs; FC1 (in_f = C > 64) as dot products; the sigmoid gate vectorised
    # with a tail vector
    Path("fc-narrow-tiles", Case(N=3, C=100, H=3, W=3, R=40)),
    Path("backward-rows-past-the-threads", Case(N=2, C=8, H=3, W=3, R=300),
         cuda=lambda p, c: c.R > p.threads),
    Path("several-channel-blocks", Case(N=2, C=130, H=3, W=3, R=8, layout="channels_last"),
         cuda=lambda p, c: p.n_cblocks == 3, triton=lambda p, c: p.n_cblocks > 1),
    Path("hw-split", Case(N=1, C=5, H=40, W=40, R=2),
         cuda=lambda p, c: p.n_splits > 1, triton=lambda p, c: p.n_splits > 1,
         cpu=lambda p, c: p.n_splits > 1 and not p.per_sample),
]

# Cycled over each path: every act, gate, epilogue and reduced dtype appears.
OPTIONS = [
    dict(act="relu", gate="sigmoid", residual=True, out_act="relu", dtype=torch.float16),
    dict(act="silu", gate="hard_sigmoid", residual=False, out_act="relu", dtype=torch.bfloat16),
    dict(act="identity", gate="sigmoid", residual=True, out_act="identity", dtype=torch.bfloat16),
    dict(act="relu", gate="hard_sigmoid", residual=False, out_act="identity", dtype=torch.float16),
    dict(act="silu", gate="sigmoid", residual=True, out_act="relu", dtype=torch.float32, gain=2.0),
]


def _cases():
    for path, (i, options) in itertools.product(PATHS, enumerate(OPTIONS)):
        case = path.shape.but(**options)
        if not case.two_fc:
            case = case.but(act="identity")
        yield pytest.param(path, case, id=f"{path.name}-{i}")


def assert_path(path: Path, case: Case, backend: str) -> None:
    family = "cuda" if backend in ("cuda", "cuda_sim") else backend
    expect = getattr(path, family)
    if expect is None:
        return
    inputs = make_inputs(case, backend_device(backend))
    r1 = case.R if case.two_fc else case.C
    plan = kernel_path(backend, inputs.x, r1, case.two_fc, case.pool, others=[inputs.x])
    assert expect(plan, case), f"{path.name}: {backend} takes another path: {plan}"


@pytest.mark.parametrize("path, case", list(_cases()))
def test_path(backend, path, case):
    assert_path(path, case, backend)
    check_against_reference(case, backend)


@pytest.mark.parametrize("threads", [2, 3])
def test_cpu_small_work_stays_on_the_calling_thread(threads):
    """The CPU plan's grains: a tiny layer runs every stage on the calling thread (a parallel
    region costs a few us, more than its whole stage), a real layer splits each stage."""
    from conftest import require_backend

    require_backend("cpu")

    def parallel_stages(n, c, hw, r, layout=torch.contiguous_format):
        x = torch.empty(n, c, hw, hw).to(memory_format=layout)
        return kernel_path("cpu", x, r, True, "avg").parallel_stages

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        assert parallel_stages(1, 72, 2, 24) == 0  # the overhead benchmark's layer
        assert parallel_stages(8, 64, 2, 16, torch.channels_last) == 0
        assert parallel_stages(8, 16, 6, 4) == 0  # per-sample plan, 576-element samples
        # EfficientNet-B0's last SE layer at batch 8: reduce, FC and stream stages
        assert parallel_stages(8, 1152, 7, 48, torch.channels_last) == 3
        assert parallel_stages(8, 240, 14, 10) == 1  # per-sample plan, one loop
    finally:
        torch.set_num_threads(before)
