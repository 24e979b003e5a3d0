"""Whole-model throughput: original vs convert_model, eager and compiled.

    python -m benchmarks.e2e --quick     # CPU: mobilenetv3_large_100 inference, batch 1, 224
    python -m benchmarks.e2e             # GPU: bf16, channels_last, batch 64, 224x224

Reports img/s for inference and for a training step (forward, loss, backward, SGD
step), the speedup over the original model (on the CPU the median of the per-round ratios,
with their 20th-80th percentiles: see ``timing.paired_speedup``), and how much of the
possible gain conversion captures: each SE model also runs with every SE module replaced
by an identity ("without SE"), so

    se_share = 1 - 1 / speedup(without SE)    i.e. (t_original - t_without_se) / t_original
    captured = (1 - 1 / speedup(se_kernels)) / se_share
                                            i.e. (t_original - t_se_kernels) / (t_original - t_without_se)

with forward and backward of the SE layers both counted in a training step. A third copy
("pool+scale only") replaces each SE module by ``x * x.mean((2, 3))``: the two passes over
x that a two-launch kernel keeps, so ``original - pool+scale only`` is what fusing the small
ops can save at most. At inference a fourth ("pool+scale+weights") also reads each SE
module's parameters once (one sum over a private copy), as every kernel that computes the
gate must: the traffic any SE kernel that reads x twice keeps, at eager's speed for the
two passes (a floor, not a hard bound: a faster pass over x beats it). In a training step
the fourth is "two-launch floor" (TwoLaunchFloor): that parameter read and the seven
passes over the activations that the fused forward and backward make, as ATen ops (its
backward does not compute x's true gradient). With ``--input-act-bound``, one more copy
of the converted model has the activation that feeds each SE module removed
("se_kernels, no input act", see drop_input_act). Also the SE overhead of seresnet50 over
resnet50 when both run.
Writes e2e.csv / e2e.json next to the se_layer results; on the CPU the JSON also keeps
every round's step time, which ``python -m benchmarks.e2e_pool`` pools over several runs.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
from pathlib import Path
from typing import Optional

import torch
from tqdm import tqdm

import se_kernels
from se_kernels.native_autograd import python_autograd_only

from .environment import device_slug, metadata
from .timing import paired_speedup, time_all, time_cpu

MODELS = ("seresnet50", "efficientnet_b0", "mobilenetv3_large_100", "resnet50")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_args(argv=None) -> argparse.Namespace:
    gpu = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--device", default="cuda" if gpu else "cpu")
    p.add_argument("--models", nargs="+")
    p.add_argument("--batches", nargs="+", type=int)
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--dtype", choices=list(DTYPES))
    p.add_argument("--modes", nargs="+", choices=["inference", "train"])
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--backend", default="auto", help="se_kernels backend for converted models")
    p.add_argument("--python-autograd", action="store_true",
                   help="converted models build the Python SEFunction, not the C++ autograd "
                        "node (the build before 81b3982): an A/B of the two")
    p.add_argument("--input-act-bound", action="store_true",
                   help="also time the converted model with the activation that feeds each SE "
                        "module removed (see drop_input_act): what fusing it would give at most")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    on_gpu = args.device == "cuda"
    args.models = args.models or (["mobilenetv3_large_100"] if args.quick else list(MODELS))
    args.batches = args.batches or [64 if on_gpu else 1]
    args.dtype = args.dtype or ("bfloat16" if on_gpu else "float32")
    args.modes = args.modes or (["inference"] if args.quick else ["inference", "train"])
    args.no_compile = args.no_compile or (args.quick and not on_gpu)  # CPU compile: minutes
    args.out = args.out or Path("benchmarks/out") / device_slug(args.device)
    return args


def build(name: str, args) -> torch.nn.Module:
    import timm

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False)
    return model.to(device=args.device, dtype=DTYPES[args.dtype], memory_format=torch.channels_last)


def step_fn(model: torch.nn.Module, mode: str, x: torch.Tensor, target: torch.Tensor):
    if mode == "inference":
        model.eval()

        def run():
            with torch.no_grad():
                return model(x)
        return run
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()

    def run():
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), target).backward()
        opt.step()
    return run


class PoolAndScale(torch.nn.Module):
    """x * mean(x): the two passes over x that any two-launch SE kernel still makes (read
    for the pool; read and write for the scale), with none of the small ops."""

    def forward(self, x):
        return self.passes(x)

    @staticmethod
    def passes(x):
        return x * x.mean((2, 3), keepdim=True)


class PoolScaleAndWeights(PoolAndScale):
    """PoolAndScale plus one read of the SE module's parameters, which eager's 1x1 convs and
    the fused kernels read too: a sum over a contiguous copy of them (one op, read once per
    step like the originals, cold in the same way). Inference only: a training step also
    reads the weights in backward and writes their gradients."""

    def __init__(self, se: torch.nn.Module):
        super().__init__()
        self.register_buffer("params", torch.cat([p.detach().reshape(-1) for p in se.parameters()]))

    def forward(self, x):
        self.params.sum()  # the read; its value is not needed
        return self.passes(x)


def _flat(t: torch.Tensor) -> torch.Tensor:
    """t as one flat view in memory order (channels_last: NHWC); raises rather than copy."""
    if t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous():
        return t.permute(0, 2, 3, 1).view(-1)
    return t.view(-1)


class _TwoLaunchPasses(torch.autograd.Function):
    """The passes over the activations that the fused two-launch design makes in a training
    step, as ATen ops: forward x * mean(x) (read x, read x and write y); backward one dot
    product of g and x (the per-channel sums' read of both) and g * s (read g, write dx).
    The dot's value is dropped, so dx is not x's true gradient: timing only."""

    @staticmethod
    def forward(ctx, x):
        s = x.mean((2, 3), keepdim=True)
        ctx.save_for_backward(x, s)
        return x * s

    @staticmethod
    def backward(ctx, g):
        x, s = ctx.saved_tensors
        torch.dot(_flat(g), _flat(x))
        return g * s


class TwoLaunchFloor(PoolScaleAndWeights):
    """Training's counterpart of PoolScaleAndWeights: the fused design's seven passes over
    the activations (see _TwoLaunchPasses) at ATen's speed, and one read of the SE
    module's parameters. The backward's reads of the weights and writes of their
    gradients are left out, so it errs low. Not the same network: a timing floor."""

    @staticmethod
    def passes(x):
        return _TwoLaunchPasses.apply(x)


def replace_se(model: torch.nn.Module, make) -> torch.nn.Module:
    """A copy with every SE module replaced by make(that module) (an SE module's output has
    x's shape, so the rest of the network is unchanged)."""
    from se_kernels.adapters import is_known_se

    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for child_name, child in parent.named_children():
            if is_known_se(child):
                setattr(parent, child_name, make(child))
    return model


# timm's EfficientNet / MobileNetV3 blocks: the norm+act module whose output is the SE
# module's input (their forward: ..., that module, aa, se, ...).
INPUT_NORM_ACT = {"InvertedResidual": "bn2", "DepthwiseSeparableConv": "bn1"}


def drop_input_act(model: torch.nn.Module) -> tuple[torch.nn.Module, int]:
    """A copy with the activation that feeds each SE module replaced by an identity, and
    how many were. Not the same network: a timing bound. A kernel that applied that
    activation itself while reading the SE input (and its derivative in backward) would
    save the activation's own passes (forward: read, write; backward: read the gradient
    and the input, write): at most what this copy saves over the converted model."""
    model = copy.deepcopy(model)
    dropped = 0
    for block in model.modules():
        norm_name = INPUT_NORM_ACT.get(type(block).__name__)
        if norm_name is None or isinstance(block.se, torch.nn.Identity):
            continue  # not one of those blocks, or one without an SE module
        norm = getattr(block, norm_name)
        # Only where the activation's output is the SE input (no anti-aliasing between).
        if isinstance(block.aa, torch.nn.Identity) and not isinstance(norm.act, torch.nn.Identity):
            norm.act = torch.nn.Identity()
            dropped += 1
    return model, dropped


def variants(name: str, mode: str, args):
    """(label, model) pairs: original, converted and without SE, eager and (unless disabled)
    compiled. Conversion happens in the mode's train/eval state (eval folds SE batch norms)."""
    original = build(name, args).train(mode == "train")
    out = [("original", original)]
    if name != "resnet50":
        converted = se_kernels.convert_model(copy.deepcopy(original), backend=args.backend)
        out.append(("se_kernels", converted))
        if args.input_act_bound:
            bound, dropped = drop_input_act(converted)
            if dropped:
                out.append(("se_kernels, no input act", bound))
        out.append(("without SE", replace_se(original, lambda se: torch.nn.Identity())))
        out.append(("pool+scale only", replace_se(original, lambda se: PoolAndScale())))
        if mode == "inference":
            out.append(("pool+scale+weights", replace_se(original, PoolScaleAndWeights)))
        else:
            out.append(("two-launch floor", replace_se(original, TwoLaunchFloor)))
    if not args.no_compile:
        out += [(f"{label}+compile", torch.compile(m)) for label, m in list(out)
                if label in ("original", "se_kernels")]
    return out


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    if args.python_autograd:
        with python_autograd_only():
            return benchmark(args)
    return benchmark(args)


def benchmark(args: argparse.Namespace) -> list[dict]:
    meta = metadata(args.device)
    print(f"e2e benchmark on {meta['device']}, {args.dtype}, channels_last, batches {args.batches}, "
          f"{args.resolution}x{args.resolution}")
    rows = []
    todo = [(m, mode, b) for b in args.batches for m in args.models for mode in args.modes]
    for name, mode, batch in tqdm(todo, desc="models", unit="model"):
        x = torch.randn(batch, 3, args.resolution, args.resolution, device=args.device,
                        dtype=DTYPES[args.dtype]).contiguous(memory_format=torch.channels_last)
        target = torch.randint(0, 1000, (batch,), device=args.device)
        torch._dynamo.reset()
        calls = {}
        for label, model in variants(name, mode, args):
            fn = step_fn(model, mode, x, target)
            fn()  # compile, autotune, allocator warm-up
            calls[label] = fn
        if args.device == "cpu":  # 10-40 ms calls: many long rounds resolve a few-% difference
            timings = time_cpu(calls, rounds=15 if args.quick else 31, round_ms=100.0)
        else:
            timings = time_all(calls, args.device, args.quick)
        speedups = {label: paired_speedup(timings["original"], t) for label, t in timings.items()}
        # From the paired speedups, so that 1 / (1 - share) is the "without SE" speedup.
        share = se_share(speedups["without SE"][0] if "without SE" in speedups else None)
        for label, t in timings.items():
            speedup, lo, hi = speedups[label]
            gain = captured(speedup, share)
            rows.append(dict(model=name, mode=mode, variant=label, batch=batch,
                             dtype=args.dtype, median_ms=t.median_ms, p20_ms=t.p20_ms,
                             p80_ms=t.p80_ms, img_per_s=batch / t.median_ms * 1e3,
                             speedup=speedup, speedup_p20_p80=(lo, hi),
                             se_share=share, captured=gain,
                             round_ms=list(t.samples_ms)))  # JSON only: e2e_pool pools them
    overhead = se_overhead(rows)
    for r in rows:
        print(f"{r['model']:24s} {r['mode']:9s} b{r['batch']:<3d} {r['variant']:24s} "
              f"{r['median_ms']:9.2f} ms {r['img_per_s']:9.1f} img/s  x{r['speedup']:.3f} "
              f"(p20/p80 x{r['speedup_p20_p80'][0]:.3f}-x{r['speedup_p20_p80'][1]:.3f})"
              f"{share_text(r)}")
    for key, pct in overhead.items():
        print(f"SE overhead of seresnet50 over resnet50, {key}: {pct:+.1f}%")
    write_results(rows, overhead, meta, args)
    return rows


def se_share(without_se: Optional[float]) -> Optional[float]:
    """The eager SE layers' part of the step, from the "without SE" speedup (None when that
    copy did not run)."""
    return None if without_se is None else 1 - 1 / without_se


def captured(speedup: float, share: Optional[float]) -> Optional[float]:
    """The part of the SE share that a variant's speedup saves (None without a share)."""
    return None if not share else (1 - 1 / speedup) / share


def share_text(row: dict) -> str:
    """A printed row's SE share and captured suffix ("" without them)."""
    if row["captured"] is None:
        return ""
    return f"  SE share {100 * row['se_share']:.1f}%, captured {100 * row['captured']:.0f}%"


def write_results(rows: list[dict], overhead: dict, meta: dict, args: argparse.Namespace) -> None:
    """e2e.csv (one line per case) and e2e.json (also the per-round times) in args.out."""
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "e2e.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[k for k in rows[0] if k != "round_ms"],
                                extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    with open(args.out / "e2e.json", "w") as f:
        json.dump({"metadata": meta, "args": {k: str(v) for k, v in vars(args).items()},
                   "se_overhead_pct": overhead, "rows": rows}, f, indent=1)
    print(f"wrote {args.out}/e2e.csv and e2e.json")


def se_overhead(rows: list[dict]) -> dict:
    """(t_seresnet50 - t_resnet50) / t_resnet50, per mode and variant, when both ran."""
    t = {(r["model"], r["mode"], r["batch"], r["variant"]): r["median_ms"] for r in rows}
    out = {}
    for (model, mode, batch, variant), ms in t.items():
        base_variant = variant.replace("se_kernels", "original")
        base = t.get(("resnet50", mode, batch, base_variant))
        if model == "seresnet50" and base:
            out[f"{mode} b{batch} {variant}"] = 100 * (ms - base) / base
    return out


if __name__ == "__main__":
    main()
