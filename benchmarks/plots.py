"""PNG plots of a se_layer run: speedup vs batch per network, % of copy bandwidth."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _geomean(values):
    values = [v for v in values if v and v > 0]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else float("nan")


def speedup_vs_batch(rows: list[dict], path: Path, dtype: str, layout: str, mode: str) -> None:
    """Geometric-mean speedup over eager, per provider, against batch; one panel per net."""
    rows = [r for r in rows if r["dtype"] == dtype and r["layout"] == layout and r["mode"] == mode
            and r["provider"] != "eager" and r["speedup_vs_eager"]]
    nets = sorted({r["net"] for r in rows})
    if not nets:
        return
    fig, axes = plt.subplots(1, len(nets), figsize=(5 * len(nets), 4), squeeze=False)
    for ax, net in zip(axes[0], nets):
        series = defaultdict(lambda: defaultdict(list))
        for r in rows:
            if r["net"] == net:
                series[r["provider"]][r["N"]].append(r["speedup_vs_eager"])
        for provider, by_batch in sorted(series.items()):
            batches = sorted(by_batch)
            ax.plot(batches, [_geomean(by_batch[b]) for b in batches], marker="o", label=provider)
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_xscale("log", base=2)
        ax.set_title(f"{net} SE layers ({dtype}, {layout}, {mode})")
        ax.set_xlabel("batch")
        ax.set_ylabel("speedup over eager timm (geomean)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def copy_bandwidth(rows: list[dict], path: Path, dtype: str, layout: str, mode: str) -> None:
    """% of the measured copy bandwidth per layer shape at the largest batch."""
    rows = [r for r in rows if r["dtype"] == dtype and r["layout"] == layout and r["mode"] == mode
            and r["pct_copy"]]
    if not rows:
        return
    batch = max(r["N"] for r in rows)
    rows = [r for r in rows if r["N"] == batch]
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    providers = list(dict.fromkeys(r["provider"] for r in rows))
    width = 0.8 / len(providers)
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(layers) * len(providers) / 2), 4))
    for i, provider in enumerate(providers):
        values = {r["layer"]: r["pct_copy"] for r in rows if r["provider"] == provider}
        ax.bar([j + i * width for j in range(len(layers))], [values.get(l, 0) for l in layers],
               width, label=provider)
    ax.set_xticks([j + width * (len(providers) - 1) / 2 for j in range(len(layers))])
    ax.set_xticklabels(layers, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("% of copy bandwidth")
    ax.set_title(f"Effective bandwidth, batch {batch} ({dtype}, {layout}, {mode})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
