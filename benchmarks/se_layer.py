"""Fused vs unfused SE layers, on whatever device is present.

    python -m benchmarks.se_layer --quick            # < 2 min on a 2-core CPU
    python -m benchmarks.se_layer                     # full sweep (GPU: minutes)
    python -m benchmarks.se_layer --nets seresnet50 --batches 32 128 --dtypes bfloat16

For every case (layer x batch x layout x dtype x mode) all providers are timed in the
same run, with y.copy_(x) of the same size as the bandwidth yardstick. Writes a table to
the terminal and results.csv, results.json and PNG plots to --out (default
benchmarks/out/<device>/). Columns are explained in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import torch
from tqdm import tqdm

from . import plots
from .environment import device_slug, metadata
from .providers import COMPILE, EAGER, MODES, PASSES, build_providers, copy_call, timed_call
from .shapes import NETWORKS, representative, se_layers
from .timing import time_all

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
COLUMNS = ["net", "layer", "N", "C", "R", "H", "W", "layout", "dtype", "mode", "provider",
           "median_ms", "p20_ms", "p80_ms", "gbps", "pct_copy", "speedup_vs_eager",
           "speedup_vs_compile", "error"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="one layer per network, batch 1 and 8, float32 NCHW; CPU figures if no GPU")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--nets", nargs="+", default=list(NETWORKS))
    p.add_argument("--batches", nargs="+", type=int)
    p.add_argument("--dtypes", nargs="+", choices=list(DTYPES))
    p.add_argument("--layouts", nargs="+", choices=list(LAYOUTS))
    p.add_argument("--modes", nargs="+", choices=list(MODES))
    p.add_argument("--providers", nargs="+", default=(),
                   help="restrict to these providers (eager and compile always run)")
    p.add_argument("--out", type=Path)
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args(argv)
    gpu = args.device == "cuda"
    defaults = {
        # (batches, dtypes, layouts, modes)
        (True, True): ([1, 8, 32], ["bfloat16"], ["channels_last"], ["inference", "fwd+bwd"]),
        (True, False): ([1, 8], ["float32"], ["nchw"], ["inference", "fwd+bwd"]),
        (False, True): ([1, 8, 32, 128, 256], list(DTYPES), list(LAYOUTS), list(MODES)),
        (False, False): ([1, 8], ["float32", "bfloat16"], list(LAYOUTS), ["inference", "fwd+bwd"]),
    }[(args.quick, gpu)]
    args.batches = args.batches or defaults[0]
    args.dtypes = args.dtypes or defaults[1]
    args.layouts = args.layouts or defaults[2]
    args.modes = args.modes or defaults[3]
    args.out = args.out or Path("benchmarks/out") / device_slug(args.device)
    return args


def cases(args):
    """(layer, batch, layout, dtype, mode) in sweep order. CPU runs time training at the
    largest batch only (each case costs a fresh torch.compile; batch 1 training is rare)."""
    for net in args.nets:
        layers = [representative(net)] if args.quick else se_layers(net)
        for layer in layers:
            for n in args.batches:
                for layout in args.layouts:
                    for dtype in args.dtypes:
                        for mode in args.modes:
                            if args.device == "cpu" and mode != "inference" and n != max(args.batches):
                                continue
                            yield layer, n, layout, dtype, mode


def run_case(layer, n, layout, dtype, mode, args) -> list[dict]:
    device = args.device
    x = torch.randn(n, layer.C, layer.H, layer.W, device=device, dtype=DTYPES[dtype])
    x = x.contiguous(memory_format=LAYOUTS[layout])
    providers = build_providers(layer.module, device, DTYPES[dtype], tuple(args.providers))
    calls, errors = {}, {}
    for name, module in providers.items():
        try:
            call = timed_call(module, x, mode)
            call()  # compile / autotune outside the timing
            calls[name] = call
        except Exception as exc:  # a provider that cannot run this case is reported, not fatal
            errors[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    calls["copy"] = copy_call(x)
    timings = time_all(calls, device, args.quick)
    copy_ms = timings.pop("copy").median_ms
    bytes_moved = PASSES[mode] * x.numel() * x.element_size()
    copy_gbps = 2 * x.numel() * x.element_size() / copy_ms / 1e6
    base = dict(net=layer.net, layer=layer.name, N=n, C=layer.C, R=layer.R, H=layer.H, W=layer.W,
                layout=layout, dtype=dtype, mode=mode)
    rows = []
    for name in providers:
        t = timings.get(name)
        row = dict(base, provider=name, error=errors.get(name, ""), median_ms=None, p20_ms=None,
                   p80_ms=None, gbps=None, pct_copy=None, speedup_vs_eager=None,
                   speedup_vs_compile=None)
        if t is not None:
            gbps = bytes_moved / t.median_ms / 1e6
            row.update(median_ms=t.median_ms, p20_ms=t.p20_ms, p80_ms=t.p80_ms, gbps=gbps,
                       pct_copy=100 * gbps / copy_gbps)
            for ref, key in ((EAGER, "speedup_vs_eager"), (COMPILE, "speedup_vs_compile")):
                if ref in timings:
                    row[key] = timings[ref].median_ms / t.median_ms
        rows.append(row)
    return rows


def _fmt(v, digits=3):
    if v is None:
        return "-"
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def print_table(rows: list[dict]) -> None:
    cols = ["layer", "N", "C", "H", "layout", "dtype", "mode", "provider", "median_ms", "gbps",
            "pct_copy", "speedup_vs_eager", "speedup_vs_compile"]
    cells = [[_fmt(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print("  ".join(c.rjust(w) for c, w in zip(cols, widths)))
    for row in cells:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths)))


def geomean(values):
    values = [v for v in values if v]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def summarize(rows: list[dict]) -> dict:
    """Geometric-mean speedups per (provider, mode) over every case of the run."""
    out = {}
    for provider in dict.fromkeys(r["provider"] for r in rows):
        for mode in dict.fromkeys(r["mode"] for r in rows):
            sel = [r for r in rows if r["provider"] == provider and r["mode"] == mode]
            out[f"{provider} {mode}"] = {
                "vs_eager": geomean([r["speedup_vs_eager"] for r in sel]),
                "vs_compile": geomean([r["speedup_vs_compile"] for r in sel]),
                "cases": len(sel),
            }
    return out


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    meta = metadata(args.device)
    label = "GPU" if args.device == "cuda" else "CPU"
    print(f"se_layer benchmark on {meta['device']} ({label} figures; torch {meta['torch']}, "
          f"triton {meta['triton']}, commit {meta['git_commit']})")
    todo = list(cases(args))
    rows = []
    for layer, n, layout, dtype, mode in tqdm(todo, desc="SE layers", unit="case"):
        rows += run_case(layer, n, layout, dtype, mode, args)
    print_table(rows)
    summary = summarize(rows)
    print("\nGeometric-mean speedups:")
    for key, s in summary.items():
        print(f"  {key:40s} vs eager {_fmt(s['vs_eager'])}  vs torch.compile {_fmt(s['vs_compile'])}"
              f"  ({s['cases']} cases)")
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "se_layer.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    with open(args.out / "se_layer.json", "w") as f:
        json.dump({"metadata": meta, "args": {k: str(v) for k, v in vars(args).items()},
                   "summary": summary, "rows": rows}, f, indent=1)
    if not args.no_plots:
        dtype, layout, mode = args.dtypes[-1], args.layouts[-1], args.modes[0]
        plots.speedup_vs_batch(rows, args.out / "speedup_vs_batch.png", dtype, layout, mode)
        plots.copy_bandwidth(rows, args.out / "copy_bandwidth.png", dtype, layout, mode)
    print(f"\nwrote {args.out}/se_layer.csv, se_layer.json" + ("" if args.no_plots else " and plots"))
    return rows


if __name__ == "__main__":
    main()
