"""Which kernel path a call takes, per backend, from the backends' own plan code.

Tests use it to prove that a shape reaches the path it is meant to test (vector width,
HW splits, channel blocks, FC row chunks) before comparing values, and
``scripts/static_gpu_check.py`` uses it to list the specializations real workloads get.
The CUDA plan is ``csrc/cuda/plan.cpp`` (through a binding), the CPU plan
``csrc/cpu/plan.h``, the Triton plan ``se_kernels/triton/plan.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch



@dataclass(frozen=True)
class KernelPath:
    """How a backend cuts one SE call.

    vec: elements per vector access in the CUDA kernels (1: scalar path; 1 elsewhere).
    n_cblocks: channel blocks. n_splits: HW ranges the reductions split into.
    n_tiles: HW tiles of the streaming kernels (CUDA and Triton).
    r_chunks: passes over the FC rows in the streaming kernels (CUDA: kRChunk rows per
        pass; Triton: BLOCK_R). per_sample: the CPU runs all stages per sample.
    parallel_stages: CPU only, of the forward's parallel loops (reduce, FC, stream; one
        in the per-sample plan) those with enough work for a second thread (0: the whole
        call runs on the calling thread, with no parallel region).
    """

    backend: str
    vec: int = 1
    n_cblocks: int = 1
    n_splits: int = 1
    n_tiles: int = 1
    r_chunks: int = 1
    per_sample: bool = False
    block_c: int = 0
    threads: int = 0  # CUDA threads per CTA
    parallel_stages: int = 0


def cuda_sm_count(backend: str, x: torch.Tensor) -> int:
    """The SM count the CUDA plan sees: the GPU's, or the emulated one for cuda_sim."""
    if backend == "cuda_sim":
        return int(torch.ops.se_kernels.sim_sm_count())
    return torch.cuda.get_device_properties(x.device).multi_processor_count


def cuda_plan(x: torch.Tensor, r1: int, has_fc2: bool, pool: str, sm_count: int,
              others: Sequence[torch.Tensor] = ()) -> KernelPath:
    """The plan of ``csrc/cuda/plan.cpp`` for x (and the other full-size tensors)."""
    vec, _cl, block_c, n_cblocks, n_splits, _hws, n_tiles, _hwt, r_chunk, threads = (
        torch.ops.se_kernels.cuda_plan([x, *others], r1, has_fc2, pool == "avg", sm_count))
    return KernelPath("cuda", vec=vec, n_cblocks=n_cblocks, n_splits=n_splits, n_tiles=n_tiles,
                      r_chunks=math.ceil(r1 / r_chunk), block_c=block_c, threads=threads)


def kernel_path(backend: str, x: torch.Tensor, r1: int, has_fc2: bool, pool: str,
                others: Sequence[torch.Tensor] = (), sm_count: Optional[int] = None) -> KernelPath:
    """The path ``backend`` takes for x with FC1 width r1 (x's layout and dtype count)."""
    if backend in ("cuda", "cuda_sim"):
        sms = sm_count or cuda_sm_count(backend, x)
        path = cuda_plan(x, r1, has_fc2, pool, sms, others)
        return KernelPath(backend, **{k: v for k, v in vars(path).items() if k != "backend"})
    if backend == "cpu":
        per_sample, _cblock, n_cblocks, n_splits, _hws, parallel = torch.ops.se_kernels.cpu_plan(
            x, r1, has_fc2, pool == "avg")
        return KernelPath("cpu", n_cblocks=n_cblocks, n_splits=n_splits,
                          per_sample=bool(per_sample), parallel_stages=parallel)
    if backend == "triton":
        from .triton.launch import plan_for

        plan = plan_for(x, r1, pool)
        return KernelPath("triton", n_cblocks=plan.n_cblocks, n_splits=plan.n_splits,
                          n_tiles=plan.n_tiles, r_chunks=math.ceil(r1 / plan.block_r),
                          block_c=plan.block_c)
    raise ValueError(f"no kernel plan for backend {backend!r}")


