"""Pooling several e2e runs' rounds (benchmarks.e2e_pool) and the per-round times e2e keeps."""

from __future__ import annotations

import argparse
import csv
import json

import pytest

from benchmarks import e2e, e2e_pool


def _row(variant: str, round_ms: list[float], model: str = "m", mode: str = "inference", batch: int = 1):
    return dict(model=model, mode=mode, variant=variant, batch=batch, dtype="float32",
                median_ms=0.0, p20_ms=0.0, p80_ms=0.0,
                img_per_s=0.0, speedup=0.0, speedup_p20_p80=(0.0, 0.0), se_share=None,
                captured=None, round_ms=round_ms)


def _write_run(tmp_path, name: str, original: list[float], fused_ratio: float, without_ratio: float):
    """An e2e output dir whose converted model is fused_ratio times faster in every round."""
    rows = [_row("original", original),
            _row("se_kernels", [t / fused_ratio for t in original]),
            _row("without SE", [t / without_ratio for t in original])]
    args = argparse.Namespace(out=tmp_path / name)
    e2e.write_results(rows, {}, {"device": "test"}, args)
    return args.out / "e2e.json"


def test_e2e_keeps_round_times_in_the_json_only(tmp_path):
    path = _write_run(tmp_path, "run", [10.0, 20.0, 40.0], 2.0, 4.0)
    rows = json.loads(path.read_text())["rows"]
    assert rows[1]["round_ms"] == [5.0, 10.0, 20.0]
    with open(path.parent / "e2e.csv") as f:
        header = next(csv.reader(f))
    assert "round_ms" not in header and "speedup" in header


def test_pool_takes_the_median_over_every_round_of_every_run(tmp_path):
    # Run 1: three rounds at 2.0x (the machine drifting 4x); run 2: four rounds at 1.5x.
    run1 = _write_run(tmp_path, "a", [10.0, 20.0, 40.0], 2.0, 4.0)
    run2 = _write_run(tmp_path, "b", [12.0, 11.0, 13.0, 12.0], 1.5, 4.0)
    rows = {r["variant"]: r for r in e2e_pool.main([str(run1), str(run2), "--out", str(tmp_path / "p.csv")])}
    fused = rows["se_kernels"]
    assert fused["rounds"] == 7 and fused["runs"] == 2
    assert fused["run_medians"] == pytest.approx([2.0, 1.5])
    assert fused["speedup"] == pytest.approx(1.5)  # 4 of the 7 pooled ratios are 1.5
    assert 1.5 <= fused["ci90_lo"] <= fused["speedup"] <= fused["ci90_hi"] <= 2.0
    assert fused["se_share"] == pytest.approx(0.75)  # without SE: 4x, so 1 - 1/4
    assert fused["captured"] == pytest.approx((1 - 1 / 1.5) / 0.75)
    assert rows["original"]["speedup"] == pytest.approx(1.0)
    with open(tmp_path / "p.csv") as f:
        assert len(list(csv.DictReader(f))) == 3


def test_pool_refuses_runs_without_round_times(tmp_path):
    path = tmp_path / "old.json"
    row = _row("original", [])
    path.write_text(json.dumps({"rows": [row]}))
    with pytest.raises(ValueError, match="m inference b1 original has no per-round times"):
        e2e_pool.load_run(path)
