"""Block sizes and grid splits for the Triton kernels, chosen from the shape.

The plan is a pure function of (N, C, HW, R1, layout, device kind), so one shape always
gets one summation order: results are bitwise reproducible run to run.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

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


# Interpreter cost is per program and per op, so it gets big tiles; the small
# max_block_hw still makes the test shapes (H = W = 13) exercise the HW split.
CPU_HEURISTICS = Heuristics(target_programs=4, max_tile=4096, max_block_hw=64, max_block_c=128,
                            max_weight_tile=4096)


@functools.lru_cache(maxsize=None)
def _cuda_heuristics(device_index: int) -> Heuristics:
    sms = torch.cuda.get_device_properties(device_index).multi_processor_count
    return Heuristics(target_programs=2 * sms, max_tile=2048, max_block_hw=256, max_block_c=64,
                      max_weight_tile=4096)


def heuristics_for(device: torch.device) -> Heuristics:
    if device.type == "cuda":
        return _cuda_heuristics(device.index if device.index is not None else torch.cuda.current_device())
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
    block_parts: int  # rows per tile when adding FC partials
    block_splits: int  # rows per tile when adding HW-split partials
    n_cblocks: int
    n_splits: int
    hw_per_split: int
    n_tiles: int
    hw_per_tile: int
    num_warps: int

    @property
    def reduction_meta(self) -> dict:
        """Compile-time launch arguments of squeeze / squeeze_backward."""
        return dict(BLOCK_C=self.block_c, BLOCK_HW=self.block_hw, BLOCK_R=self.block_r,
                    num_warps=self.num_warps)

    @property
    def streaming_meta(self) -> dict:
        """Compile-time launch arguments of excite / excite_backward."""
        return dict(self.reduction_meta, BLOCK_PARTS=self.block_parts,
                    BLOCK_SPLITS=self.block_splits)

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
    block_r = min(np2(R1), max(1, heur.max_weight_tile // block_c))
    n_cblocks = triton.cdiv(C, block_c)
    hw_blocks = triton.cdiv(HW, block_hw)
    wanted = triton.cdiv(heur.target_programs, max(1, N * n_cblocks))
    pieces = min(wanted, hw_blocks)
    n_splits, hw_per_split = _cut(HW, pieces if allow_split else 1, block_hw)
    n_tiles, hw_per_tile = _cut(HW, pieces, block_hw)
    cols = max(block_r, block_c)  # widest row of a partial-sum tile
    block_parts = min(np2(n_cblocks * n_splits), max(1, heur.max_weight_tile // cols))
    block_splits = min(np2(n_splits), max(1, heur.max_weight_tile // cols))
    num_warps = 8 if block_c * block_hw >= 4096 else 4
    return Plan(block_c, block_hw, block_r, block_parts, block_splits, n_cblocks, n_splits,
                hw_per_split, n_tiles, hw_per_tile, num_warps)
