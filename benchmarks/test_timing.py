"""The CPU timing's round-by-round speedup."""

from __future__ import annotations

from benchmarks.timing import Timing, _quantiles, paired_speedup, time_cpu


def test_paired_speedup_cancels_drift_shared_by_a_round():
    # The machine slows 4x across the run; within each round `other` is exactly 2x faster.
    base = _quantiles([1.0, 2.0, 4.0, 2.0, 1.0])
    other = _quantiles([0.5, 1.0, 2.0, 1.0, 0.5])
    assert paired_speedup(base, other) == (2.0, 2.0, 2.0)
    # Without rounds (GPU timings): ratio of medians, crossed quantiles.
    assert paired_speedup(Timing(2.0, 1.5, 3.0), Timing(1.0, 0.5, 1.5)) == (2.0, 1.0, 6.0)


def test_time_cpu_keeps_one_sample_per_round():
    timings = time_cpu({"a": lambda: None, "b": lambda: None}, rounds=7, round_ms=0.1)
    assert [len(t.samples_ms) for t in timings.values()] == [7, 7]
    ratio, lo, hi = paired_speedup(timings["a"], timings["b"])
    assert lo <= ratio <= hi and ratio > 0
