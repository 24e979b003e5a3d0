"""Pool the per-round speedups of several ``benchmarks.e2e`` runs (CPU).

    python -m benchmarks.e2e_pool run1/e2e.json run2/e2e.json run3/e2e.json [--out pooled.csv]

On a noisy VM one run's median ratio is uncertain by about +-1.5% (31 rounds whose ratios
spread +-5%), about the size of the differences the whole-model targets turn on. Pooling
the rounds of n runs narrows that by about sqrt(n). For each (model, mode, batch, variant)
this prints each run's median ratio, the median and 20th-80th percentiles of all rounds'
ratios together, and a 90% bootstrap interval for that pooled median (rounds resampled
within each run, so each run keeps its weight). Rounds of one run share that run's state
of the machine, so the interval is a lower bound on the uncertainty; the per-run medians
show the rest. SE share and captured follow e2e's definitions, from the pooled medians.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from .e2e import captured, se_share, share_text

Key = tuple[str, str, int, str]  # model, mode, batch, variant


def load_run(path: Path) -> dict[Key, list[float]]:
    """Per-round step times (ms) of one e2e JSON, by (model, mode, batch, variant)."""
    rows = json.loads(Path(path).read_text())["rows"]
    out = {}
    for r in rows:
        if not r.get("round_ms"):
            raise ValueError(f"{path}: row {r['model']} {r['mode']} b{r['batch']} {r['variant']} "
                             "has no per-round times (a GPU run, or e2e before they were kept)")
        out[(r["model"], r["mode"], r["batch"], r["variant"])] = r["round_ms"]
    return out


def round_ratios(run: dict[Key, list[float]], key: Key) -> np.ndarray:
    """original / variant in each round of one run: the speedup round by round."""
    base = np.asarray(run[key[:3] + ("original",)])
    return base / np.asarray(run[key])


def bootstrap_median(per_run: list[np.ndarray], resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """5th and 95th percentiles of the pooled median, each run's rounds resampled within it."""
    rng = np.random.default_rng(seed)
    drawn = [r[rng.integers(0, len(r), size=(resamples, len(r)))] for r in per_run]
    medians = np.median(np.concatenate(drawn, axis=1), axis=1)
    lo, hi = np.percentile(medians, [5, 95])
    return float(lo), float(hi)


def pool(runs: list[dict[Key, list[float]]]) -> list[dict]:
    """One row per key present in every run, in the first run's order."""
    keys = [k for k in runs[0] if all(k in r for r in runs[1:])]
    rows = []
    for key in keys:
        per_run = [round_ratios(r, key) for r in runs]
        ratios = np.concatenate(per_run)
        lo, hi = bootstrap_median(per_run)
        rows.append(dict(model=key[0], mode=key[1], batch=key[2], variant=key[3], runs=len(runs),
                         rounds=len(ratios), speedup=float(np.median(ratios)),
                         p20=float(np.percentile(ratios, 20)), p80=float(np.percentile(ratios, 80)),
                         ci90_lo=lo, ci90_hi=hi,
                         run_medians=[float(np.median(r)) for r in per_run]))
    speedup = {(r["model"], r["mode"], r["batch"], r["variant"]): r["speedup"] for r in rows}
    for r in rows:
        r["se_share"] = se_share(speedup.get((r["model"], r["mode"], r["batch"], "without SE")))
        r["captured"] = captured(r["speedup"], r["se_share"])
    return rows


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="e2e.json files of the same cases")
    p.add_argument("--out", type=Path, help="write the pooled rows as CSV")
    args = p.parse_args(argv)
    rows = pool([load_run(path) for path in args.runs])
    for r in rows:
        runs = " / ".join(f"{m:.3f}" for m in r["run_medians"])
        print(f"{r['model']:24s} {r['mode']:9s} b{r['batch']:<3d} {r['variant']:24s} "
              f"x{r['speedup']:.3f} (90% x{r['ci90_lo']:.3f}-x{r['ci90_hi']:.3f}; "
              f"p20/p80 x{r['p20']:.3f}-x{r['p80']:.3f}; {r['rounds']} rounds; runs {runs})"
              f"{share_text(r)}")
    if args.out:
        with open(args.out, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return rows


if __name__ == "__main__":
    main()
