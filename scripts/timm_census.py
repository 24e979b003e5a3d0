"""How much of timm convert_model converts: every architecture, eval and train.

    python scripts/timm_census.py                      # all of timm (~10 min, 2 cores)
    python scripts/timm_census.py --models ecaresnet26t rexnet_100 --out /tmp/census

Each architecture is built with random weights on the meta device (no memory, no
download), its SE-type modules are counted, convert_model runs in eval() and in train(),
and every module left alone is recorded with its reason (from se_kernels_summary, or
"not recognised" for an SE-type class with no reader). Writes census.csv (one row per
architecture and mode) and summary.json (totals, percentages, modules left by cause)
with the timm and se_kernels versions to --out (default benchmarks/results/census/).
"""

from __future__ import annotations

import argparse
import collections
import copy
import csv
import json
import warnings
from pathlib import Path

import torch
from tqdm import tqdm

import se_kernels
from se_kernels.adapters import READERS, _qualname
from se_kernels.convert import FusedSE

# SE-type classes in timm 1.0 (channel attention that pools, excites and rescales): the
# converter's readers plus the ones it does not read yet.
SE_TYPES = set(READERS) | {
    "timm.layers.eca.EcaModule",
    "timm.layers.eca.CecaModule",
    "timm.layers.squeeze_excite.SqueezeExcite",
    "timm.layers.squeeze_excite.SqueezeExciteCl",
}


def census_one(name: str) -> list[dict]:
    import timm

    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = timm.create_model(name, pretrained=False)
    rows = []
    for mode in ("eval", "train"):
        m = copy.deepcopy(model).train(mode == "train")
        found = collections.Counter(_qualname(x).rsplit(".", 1)[-1] for x in m.modules()
                                    if _qualname(x) in SE_TYPES)
        if not found:
            return []
        unrecognised = collections.Counter(_qualname(x).rsplit(".", 1)[-1] for x in m.modules()
                                           if _qualname(x) in SE_TYPES - set(READERS))
        converted = se_kernels.convert_model(m)
        causes = collections.Counter(reason for _, _, reason in converted.se_kernels_summary.skipped
                                     if not reason.startswith("add+relu"))
        causes.update({f"{cls} is not recognised": n for cls, n in unrecognised.items()})
        n_converted = sum(isinstance(x, FusedSE) for x in converted.modules())
        rows.append(dict(model=name, mode=mode, se_modules=sum(found.values()),
                         converted=n_converted, classes=dict(found), left=dict(causes)))
    return rows


def main(argv=None) -> dict:
    import timm

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", help="default: every timm architecture")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/census"))
    args = p.parse_args(argv)
    names = args.models or timm.list_models()
    rows, failed = [], {}
    for name in tqdm(names, desc="timm", unit="arch"):
        try:
            rows += census_one(name)
        except Exception as exc:  # an architecture timm cannot build on meta: reported
            failed[name] = f"{type(exc).__name__}: {str(exc)[:200]}"
    summary = {"timm": timm.__version__, "se_kernels": se_kernels.__version__,
               "torch": torch.__version__, "architectures_scanned": len(names),
               "not_buildable_on_meta": failed}
    for mode in ("eval", "train"):
        mine = [r for r in rows if r["mode"] == mode]
        modules = sum(r["se_modules"] for r in mine)
        converted = sum(r["converted"] for r in mine)
        causes: dict[str, dict] = {}
        for r in mine:
            for cause, n in r["left"].items():
                c = causes.setdefault(cause, {"modules": 0, "architectures": []})
                c["modules"] += n
                c["architectures"].append(r["model"])
        summary[mode] = dict(
            architectures_with_se=len(mine), se_modules=modules, converted=converted,
            converted_pct=round(100 * converted / max(modules, 1), 2),
            fully_converted_architectures=sum(r["converted"] == r["se_modules"] for r in mine),
            left_by_cause=dict(sorted(causes.items(), key=lambda kv: -kv[1]["modules"])))
        print(f"{mode}: {converted} of {modules} SE-type modules converted "
              f"({summary[mode]['converted_pct']}%), {summary[mode]['fully_converted_architectures']} "
              f"of {len(mine)} architectures fully")
        for cause, c in summary[mode]["left_by_cause"].items():
            print(f"  {c['modules']:5d} modules, {len(c['architectures']):3d} archs: {cause}")
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "census.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["model", "mode", "se_modules", "converted", "classes", "left"])
        writer.writeheader()
        writer.writerows({**r, "classes": json.dumps(r["classes"]), "left": json.dumps(r["left"])}
                         for r in rows)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"wrote {args.out}/census.csv and summary.json ({len(failed)} architectures not buildable on meta)")
    return summary


if __name__ == "__main__":
    main()
