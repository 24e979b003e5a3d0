"""The Triton launch plan: block sizes and grid splits, chosen from the shape.

The plan is a pure function of (N, C, HW, R1, layout, device kind), so one shape always
gets one summation order: results are bitwise reproducible run to run.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Iterator, Optional

import torch
import triton


@dataclass(frozen=True)
class Heuristics:
    """Per-device limits; the CPU row keeps interpreter runs small and still splits."""

    target_programs: int  # enough CTAs to fill the device
    max_tile: int  # elements of x in one [BLOCK_C, BLOCK_HW] tile
    max_block_hw: int
    max_block_c: int
    max_weight_tile: int  # elements of a [BLOCK_R, BLOCK_C] weight tile
    num_warps: int
    # ptxas register cap (Triton's maxnreg). Without one ptxas picks its own, lower,
    # target for some variants and spills a register to meet it (seen on sm_90).
    max_registers: Optional[int] = None


# Interpreter cost is per program and per op, so it gets big tiles; the small
# max_block_hw still makes the test shapes (H = W = 13) exercise the HW split.
CPU_HEURISTICS = Heuristics(target_programs=4, max_tile=4096, max_block_hw=64, max_block_c=128,
                            max_weight_tile=4096, num_warps=4)


@functools.lru_cache(maxsize=None)
def cuda_heuristics(sm_count: int) -> Heuristics:
    """Limits for a GPU with `sm_count` SMs.

    Tiles of 1024 elements of x over 8 warps (4 per thread) and weight tiles of 2048
    keep every specialization within the register budget of scripts/static_gpu_check.py
    (no spills; <= 128 registers and >= 16 warps per SM for the streaming kernels) on
    sm_80 and sm_90: at 2048-element tiles over 4 warps the backward with avgmax, the
    ReLU epilogue and a residual (five full-tile streams) needed up to 255 registers.
    """
    return Heuristics(target_programs=2 * sm_count, max_tile=1024, max_block_hw=256,
                      max_block_c=64, max_weight_tile=2048, num_warps=8, max_registers=128)


# Set by assume_gpu(): plan every call as for a GPU with this many SMs.
_ASSUMED_SM_COUNT: Optional[int] = None


@contextlib.contextmanager
def assume_gpu(sm_count: int) -> Iterator[None]:
    """Plan as for a GPU with `sm_count` SMs whatever the tensors' device (meta tensors
    included): scripts/static_gpu_check.py lists real-GPU specializations this way."""
    global _ASSUMED_SM_COUNT
    before, _ASSUMED_SM_COUNT = _ASSUMED_SM_COUNT, sm_count
    try:
        yield
    finally:
        _ASSUMED_SM_COUNT = before


def heuristics_for(device: torch.device) -> Heuristics:
    if _ASSUMED_SM_COUNT is not None:
        return cuda_heuristics(_ASSUMED_SM_COUNT)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return cuda_heuristics(torch.cuda.get_device_properties(index).multi_processor_count)
    return CPU_HEURISTICS


@dataclass(frozen=True)
class Plan:
    """How one call is cut into programs.

    Reduction kernels (squeeze, squeeze_backward): grid ``(N, n_cblocks, n_splits)``, each
    program reducing ``hw_per_split`` positions of ``block_c`` channels.
    Streaming kernels (excite, excite_backward): grid ``(N, n_cblocks, n_tiles)``, each
    program writing ``hw_per_tile`` positions of ``block_c`` channels.
    """

    block_c: int
    block_hw: int
    block_r: int
    n_cblocks: int
    n_splits: int
    hw_per_split: int
    n_tiles: int
    hw_per_tile: int
    num_warps: int
    max_registers: Optional[int] = None

    @property
    def reduction_meta(self) -> dict:
        """Compile-time launch arguments of squeeze / squeeze_backward."""
        meta = dict(BLOCK_C=self.block_c, BLOCK_HW=self.block_hw, BLOCK_R=self.block_r,
                    num_warps=self.num_warps)
        if self.max_registers is not None:
            meta["maxnreg"] = self.max_registers
        return meta

    @property
    def streaming_meta(self) -> dict:
        """Compile-time launch arguments of excite / excite_backward."""
        return self.reduction_meta

    @property
    def n_parts(self) -> int:
        """Number of partial FC results a reduction kernel writes per sample."""
        return self.n_cblocks * self.n_splits


def _cut(hw: int, pieces: int, block_hw: int) -> tuple[int, int]:
    """Split ``hw`` into at most ``pieces`` ranges that are multiples of ``block_hw``."""
    per_piece = triton.cdiv(triton.cdiv(hw, pieces), block_hw) * block_hw
    return triton.cdiv(hw, per_piece), per_piece


def make_plan(N: int, C: int, HW: int, R1: int, channels_inner: bool, allow_split: bool,
              heur: Heuristics) -> Plan:
    """Choose tiles: contiguous dimension widest, then enough programs to fill the device.

    ``allow_split`` is False for avgmax pooling (max is not linear, so it cannot be
    finished from HW partials).
    """
    np2 = triton.next_power_of_2
    if channels_inner:  # channels_last: C is contiguous, give it the wide side
        block_c = min(np2(C), heur.max_block_c)
        block_hw = min(np2(HW), heur.max_block_hw, max(1, heur.max_tile // block_c))
    else:  # NCHW: HW is contiguous
        block_hw = min(np2(HW), heur.max_block_hw)
        block_c = min(np2(C), heur.max_block_c, max(1, heur.max_tile // block_hw))
    block_r = min(np2(max(R1, 1)), max(1, heur.max_weight_tile // block_c))
    n_cblocks = triton.cdiv(C, block_c)
    hw_blocks = triton.cdiv(HW, block_hw)
    wanted = triton.cdiv(heur.target_programs, max(1, N * n_cblocks))
    pieces = min(wanted, hw_blocks)
    n_splits, hw_per_split = _cut(HW, pieces if allow_split else 1, block_hw)
    n_tiles, hw_per_tile = _cut(HW, pieces, block_hw)
    return Plan(block_c, block_hw, block_r, n_cblocks, n_splits,
                hw_per_split, n_tiles, hw_per_tile, heur.num_warps, heur.max_registers)
