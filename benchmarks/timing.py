"""Timing that can be trusted: synchronised GPU timing, interleaved CPU timing.

GPU: triton.testing.do_bench (CUDA events, warm-up, cache flush), median and the
20th/80th percentiles. CPU: shared machines drift by 2x within a minute, so providers
are timed in interleaved rounds and every quantile is taken over rounds; a speedup is then
taken round by round (:func:`paired_speedup`), between calls timed a fraction of a second
apart.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Timing:
    median_ms: float
    p20_ms: float
    p80_ms: float
    samples_ms: tuple[float, ...] = ()  # per round, CPU only


def _quantiles(samples_ms: list[float]) -> Timing:
    if len(samples_ms) == 1:
        return Timing(samples_ms[0], samples_ms[0], samples_ms[0], tuple(samples_ms))
    q = statistics.quantiles(samples_ms, n=10, method="inclusive")
    return Timing(statistics.median(samples_ms), q[1], q[7], tuple(samples_ms))


def paired_speedup(base: Timing, other: Timing) -> tuple[float, float, float]:
    """(median, p20, p80) of base / other. With interleaved rounds, of the ratio in each
    round: drift that slows both calls of a round cancels, where a ratio of medians with
    crossed quantiles would count it twice. Without rounds (GPU), the ratio of medians and
    of crossed quantiles."""
    if base.samples_ms and len(base.samples_ms) == len(other.samples_ms):
        r = _quantiles([b / o for b, o in zip(base.samples_ms, other.samples_ms)])
        return r.median_ms, r.p20_ms, r.p80_ms
    return base.median_ms / other.median_ms, base.p20_ms / other.p80_ms, base.p80_ms / other.p20_ms


def time_gpu(fns: dict[str, Callable[[], object]], rep_ms: int = 100) -> dict[str, Timing]:
    from triton.testing import do_bench

    out = {}
    for name, fn in fns.items():
        med, p20, p80 = do_bench(fn, warmup=25, rep=rep_ms, quantiles=[0.5, 0.2, 0.8])
        out[name] = Timing(med, p20, p80)
    return out


def time_cpu(fns: dict[str, Callable[[], object]], rounds: int = 9,
             round_ms: float = 20.0) -> dict[str, Timing]:
    """Interleaved: each round runs every provider for about round_ms."""
    iters = {}
    for name, fn in fns.items():  # warm up, and size each provider's batch of calls
        fn()
        start = time.perf_counter()
        fn()
        once_ms = (time.perf_counter() - start) * 1e3
        iters[name] = max(1, int(round_ms / max(once_ms, 1e-3)))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(iters[name]):
                fn()
            samples[name].append((time.perf_counter() - start) * 1e3 / iters[name])
    return {name: _quantiles(s) for name, s in samples.items()}


def time_all(fns: dict[str, Callable[[], object]], device: str, quick: bool) -> dict[str, Timing]:
    if device == "cuda":
        return time_gpu(fns, rep_ms=40 if quick else 100)
    return time_cpu(fns, rounds=5 if quick else 9, round_ms=10.0 if quick else 25.0)
