"""Which SE gates depend on the input? Train a small SE-ResNet on scikit-learn's digits,
measure every SE layer's gates, fold the static ones, and weigh accuracy against latency.

    python examples/gates_digits.py                  # about a minute on a 2-core CPU
    python examples/gates_digits.py --out DIR        # figures and JSON (default benchmarks/results/gates)

The SENet paper (arXiv 1709.01507, Fig. 6) found the last stages' excitations nearly the
same for every input. This script checks that on a model that trains here (no download):
1797 8x8 digit images upsampled to 16x16, three stages of two SE basic blocks each, the
SE layers running on se_kernels. It prints the gate spread per stage, then accuracy and
latency before and after ``fold_static_gates`` at several tolerances, and ends with the
same API on a converted timm model with random weights (a smoke test of the API only).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import se_kernels

TOLERANCES = [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 1.0]


class SEBasicBlock(nn.Module):
    """conv-bn-relu-conv-bn-SE on the residual branch (one nn.Sequential, so a folded SE's
    scale goes into the BatchNorm before it), then the shortcut add and ReLU."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.branch = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
            se_kernels.SqueezeExcite(cout, rd_ratio=1 / 4),
        )
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return F.relu(self.branch(x) + self.shortcut(x))


class SmallSEResNet(nn.Module):
    def __init__(self, widths=(32, 64, 128), classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, widths[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU())
        stages, cin = [], widths[0]
        for i, w in enumerate(widths):
            stages.append(nn.Sequential(SEBasicBlock(cin, w, 1 if i == 0 else 2), SEBasicBlock(w, w, 1)))
            cin = w
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(cin, classes)

    def forward(self, x):
        return self.head(self.stages(self.stem(x)).mean((2, 3)))


def digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=16, mode="bilinear", align_corners=False)
    y = torch.tensor(data.target)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    test, train = perm[:450], perm[450:]
    return (x[train], y[train]), (x[test], y[test])


def batches(x, y, size, shuffle=False, seed=0):
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed)) if shuffle \
        else torch.arange(len(y))
    for i in range(0, len(y), size):
        idx = order[i:i + size]
        yield x[idx], y[idx]


def train(model, data, epochs: int):
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * ((len(data[1]) + 63) // 64))
    model.train()
    for epoch in range(epochs):
        for xb, yb in batches(*data, 64, shuffle=True, seed=epoch):
            xb = xb + 0.05 * torch.randn_like(xb)  # light augmentation
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


@torch.no_grad()
def accuracy(model, data) -> float:
    correct = sum((model(xb).argmax(1) == yb).sum().item() for xb, yb in batches(*data, 256))
    return correct / len(data[1])


@torch.no_grad()
def latency_ms(models: dict, x: torch.Tensor, rounds: int = 15) -> dict:
    """Median over interleaved rounds of one batch's forward time."""
    samples = {k: [] for k in models}
    for m in models.values():
        m(x)
    for _ in range(rounds):
        for k, m in models.items():
            start = time.perf_counter()
            for _ in range(5):
                m(x)
            samples[k].append((time.perf_counter() - start) / 5 * 1e3)
    return {k: statistics.median(v) for k, v in samples.items()}


def stage_of(path: str) -> str:
    return path.split(".")[1] if path.startswith("stages.") else path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/gates"))
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    train_data, test_data = digits()

    start = time.perf_counter()
    model = train(SmallSEResNet(), train_data, args.epochs)
    print(f"trained {args.epochs} epochs in {time.perf_counter() - start:.0f} s; "
          f"test accuracy {accuracy(model, test_data):.4f}")

    xs = [xb for xb, _ in batches(*test_data, 128)]
    ys = [yb for _, yb in batches(*test_data, 128)]
    stats = se_kernels.gate_stats(model, xs, labels=ys)
    stats.save(args.out / "gate_stats.json")
    stats.plot_spread(args.out / "spread.png", "SE gate spread per layer (small SE-ResNet, digits)")
    names = list(stats.layers)
    stats.plot_classes([names[0], names[len(names) // 2], names[-1]], args.out / "classes.png")

    print("\ngate spread across test inputs, per stage (mean channel std / max |gate - mean|):")
    per_stage = {}
    for name, layer in stats.layers.items():
        per_stage.setdefault(stage_of(name), []).append(layer)
        print(f"  {name:28s} C={layer.channels:4d}  std {layer.mean_std:.4f}  max dev {layer.deviation:.4f}")
    stage_rows = {s: dict(mean_std=statistics.mean(l.mean_std for l in ls),
                          max_deviation=max(l.deviation for l in ls)) for s, ls in per_stage.items()}
    for s, r in stage_rows.items():
        print(f"  stage {s}: mean std {r['mean_std']:.4f}, max deviation {r['max_deviation']:.4f}")

    rows = []
    variants = {"original": model}
    for tol in TOLERANCES:
        folded = copy.deepcopy(model)
        summary = se_kernels.fold_static_gates(folded, stats, tol=tol)
        variants[f"tol={tol:g}"] = folded
        rows.append(dict(tol=tol, folded=len(summary.folded), kept=len(summary.kept),
                         parameters_removed=summary.parameters_removed,
                         max_ignored_deviation=summary.max_ignored_deviation,
                         accuracy=accuracy(folded, test_data)))
    x = test_data[0][:64]
    latency = latency_ms(variants, x)
    base = dict(tol=0.0, folded=0, kept=len(stats.layers), parameters_removed=0,
                max_ignored_deviation=0.0, accuracy=accuracy(model, test_data))
    rows = [base] + rows
    for r, key in zip(rows, variants):
        r["latency_ms_batch64"] = latency[key]
    print("\n| tol | SE layers folded | params removed | max ignored deviation | accuracy | latency (batch 64) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['tol'] or 'none'} | {r['folded']} / {len(stats.layers)} | {r['parameters_removed']} | "
              f"{r['max_ignored_deviation']:.3f} | {r['accuracy']:.4f} | {r['latency_ms_batch64']:.2f} ms |")
    plot_tradeoff(rows, args.out / "tradeoff.png")

    restored = se_kernels.revert_model(variants[f"tol={TOLERANCES[-1]:g}"])
    with torch.no_grad():
        assert torch.equal(restored(x), model(x)), "revert_model did not restore the model"
    print("revert_model of the most folded copy gives the original outputs, bit for bit")

    smoke = timm_smoke_test()
    (args.out / "results.json").write_text(json.dumps(
        dict(epochs=args.epochs, threads=torch.get_num_threads(), torch=torch.__version__,
             stages=stage_rows, folding=rows, timm_smoke=smoke), indent=1))
    print(f"wrote {args.out}/: gate_stats.json, results.json, spread.png, classes.png, tradeoff.png")


def plot_tradeoff(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    tols = [max(r["tol"], 1e-3) for r in rows]
    ax.semilogx(tols, [100 * r["accuracy"] for r in rows], "o-", color="C0")
    ax.set_xlabel("fold tolerance (max |gate - mean|); leftmost point: nothing folded")
    ax.set_ylabel("test accuracy (%)", color="C0")
    ax2 = ax.twinx()
    ax2.semilogx(tols, [r["latency_ms_batch64"] for r in rows], "s--", color="C1")
    ax2.set_ylabel("latency, batch 64 (ms)", color="C1")
    ax.set_title("fold_static_gates: accuracy vs latency")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def timm_smoke_test() -> dict:
    """The same calls on a converted timm seresnet18 with random weights (API only: random
    weights say nothing about which gates are static)."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model("seresnet18", pretrained=False).eval()
    with torch.no_grad():  # timm zero-initialises each block's last BN: the SE would see zeros
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
    model = se_kernels.convert_model(model)
    xs = [torch.randn(4, 3, 64, 64) for _ in range(3)]
    stats = se_kernels.gate_stats(model, xs)
    deviations = sorted(layer.deviation for layer in stats.layers.values())
    tol = deviations[len(deviations) // 2] * 1.0001  # about half the layers
    summary = se_kernels.fold_static_gates(model, stats, tol=tol)
    print(f"\ntimm seresnet18 (converted, random weights), tol={tol:.3g}:\n{summary}")
    return dict(layers=len(stats.layers), tol=tol, folded=len(summary.folded),
                targets=sorted({kind for kind, _, _ in summary.folded.values()}))


if __name__ == "__main__":
    main()
