"""Gate statistics of a model's SE layers, and folding the ones that do not depend on the input.

The SENet paper (arXiv 1709.01507, Fig. 6) found the excitations of the last stages nearly
the same for every input. :func:`gate_stats` measures that for any model (converted or
not); :func:`fold_static_gates` replaces each SE layer whose gates vary less than ``tol``
by its mean per-channel scale, folded into a neighbouring BatchNorm or convolution where
one is linear in the scaled tensor, otherwise one channel multiply.
:func:`se_kernels.revert_model` undoes a fold.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .adapters import UnsupportedSE, _qualname, is_known_se, read_se
from .convert import FusedSE, _keep_original, _set_submodule, se_weights
from .modules import SqueezeExcite
from .options import as_matrix
from .reference import se_stages


# --- which layers, and their gate as a function of their input -------------------------

def _gate_function(module: nn.Module):
    """x [N, C, H, W] -> the layer's per-channel scale (gain * gate) [N, C], float32;
    None when the module is not an SE layer this can read exactly."""
    if isinstance(module, FusedSE):
        spec, gain, weights = module.se_spec, 1.0, module._weights
    elif isinstance(module, SqueezeExcite):
        spec, gain = module, module.gain
        weights = lambda channels: module._weights()  # noqa: E731
    elif is_known_se(module):
        try:
            spec = read_se(module)
        except UnsupportedSE:
            return None
        gain = 1.0
        weights = lambda channels: se_weights(module, spec, channels)  # noqa: E731
    else:
        return None

    def gate(x: Tensor) -> Tensor:
        w1, b1, w2, b2 = weights(x.shape[1])
        w1 = as_matrix("w1", w1).float()
        w2 = None if w2 is None else as_matrix("w2", w2).float()
        return se_stages(x.float(), w1, None if b1 is None else b1.float(), w2,
                         None if b2 is None else b2.float(), pool=spec.pool, act=spec.act,
                         gate=spec.gate, gain=gain).scale
    return gate


def se_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every SE layer of ``model`` whose gate can be computed exactly, by module path."""
    return {name: m for name, m in model.named_modules() if _gate_function(m) is not None}


# --- statistics -----------------------------------------------------------------------

@dataclass
class LayerGates:
    """One SE layer's gates over the measured inputs, per channel (lists of C floats)."""

    channels: int
    samples: int
    mean: list
    std: list  # across inputs
    min: list
    max: list
    class_mean: dict = field(default_factory=dict)  # label -> per-channel mean

    @property
    def deviation(self) -> float:
        """The largest |gate - its channel mean| over every input and channel: what a fold
        to the mean ignores."""
        return max(max(hi - m, m - lo) for m, lo, hi in zip(self.mean, self.min, self.max))

    @property
    def mean_std(self) -> float:
        return sum(self.std) / len(self.std)


@dataclass
class GateStats:
    """Per-layer gate statistics, in model order. Saves to JSON and plots."""

    layers: dict  # module path -> LayerGates

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({k: asdict(v) for k, v in self.layers.items()}, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "GateStats":
        data = json.loads(Path(path).read_text())
        layers = {}
        for name, d in data.items():
            d["class_mean"] = {int(k): v for k, v in d["class_mean"].items()}
            layers[name] = LayerGates(**d)
        return cls(layers)

    def plot_spread(self, path: str | Path, title: str = "SE gate spread per layer") -> None:
        """One figure: each layer's per-channel std across inputs (median and max) and its
        largest deviation from the mean, in model order; static layers sit near zero."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        names = list(self.layers)
        stats = list(self.layers.values())
        xs = range(len(names))
        fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(names)), 4))
        ax.plot(xs, [sorted(s.std)[len(s.std) // 2] for s in stats], "o-", label="median channel std")
        ax.plot(xs, [max(s.std) for s in stats], "s--", label="max channel std")
        ax.plot(xs, [s.deviation for s in stats], "^:", label="max |gate - mean|")
        ax.set_xticks(list(xs), names, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("gate variation across inputs")
        ax.set_yscale("log")
        ax.set_title(title)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)

    def plot_classes(self, layers: Sequence[str], path: str | Path) -> None:
        """The paper's Fig. 6: per-channel mean gate per class (and over all inputs),
        one panel per chosen layer."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(len(layers), 1, figsize=(8, 2.4 * len(layers)), squeeze=False)
        for ax, name in zip(axes[:, 0], layers):
            s = self.layers[name]
            for label, curve in sorted(s.class_mean.items()):
                ax.plot(curve, lw=0.8, label=f"class {label}")
            ax.plot(s.mean, "k-", lw=1.6, label="all")
            ax.set_title(name, fontsize=9)
            ax.set_xlabel("channel")
            ax.set_ylabel("activation")
        axes[0, 0].legend(fontsize=6, ncol=6)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)


class _Accumulator:
    def __init__(self, channels: int):
        zeros = torch.zeros(channels, dtype=torch.float64)
        self.count, self.sum, self.sumsq = 0, zeros.clone(), zeros.clone()
        self.min = torch.full((channels,), float("inf"), dtype=torch.float64)
        self.max = -self.min
        self.class_sum: dict[int, Tensor] = {}
        self.class_count: dict[int, int] = {}

    def add(self, gates: Tensor, labels: Optional[Tensor]) -> None:
        g = gates.detach().double().cpu()
        self.count += g.shape[0]
        self.sum += g.sum(0)
        self.sumsq += (g * g).sum(0)
        self.min = torch.minimum(self.min, g.amin(0))
        self.max = torch.maximum(self.max, g.amax(0))
        if labels is not None:
            for label in labels.unique().tolist():
                rows = g[labels.cpu() == label]
                self.class_sum[label] = self.class_sum.get(label, 0) + rows.sum(0)
                self.class_count[label] = self.class_count.get(label, 0) + rows.shape[0]

    def result(self) -> LayerGates:
        mean = self.sum / self.count
        var = (self.sumsq / self.count - mean * mean).clamp_min(0)
        return LayerGates(
            channels=mean.numel(), samples=self.count, mean=mean.tolist(), std=var.sqrt().tolist(),
            min=self.min.tolist(), max=self.max.tolist(),
            class_mean={k: (v / self.class_count[k]).tolist() for k, v in self.class_sum.items()})


@torch.no_grad()
def gate_stats(model: nn.Module, batches: Iterable[Tensor],
               labels: Optional[Iterable[Tensor]] = None) -> GateStats:
    """Run ``model`` in eval mode over ``batches`` and record every SE layer's gates.

    Args:
        model: any model, converted by :func:`convert_model` or not (its mode is restored).
        batches: input batches ``[N, ...]``, as the model takes them.
        labels: optional class labels ``[N]`` per batch, for per-class means.

    Returns:
        :class:`GateStats`: per layer and channel, mean, std across inputs, min, max and
        per-class means. Recorded by forward hooks that exist only during this call (the
        gates are recomputed in float32 from each layer's input), so the normal path is
        untouched.
    """
    layers = se_layers(model)
    if not layers:
        raise ValueError("the model has no SE layer whose gate se_kernels can compute")
    acc: dict[str, _Accumulator] = {}
    current: dict[str, Optional[Tensor]] = {"labels": None}

    def hook_for(name: str, gate):
        def hook(module, args, output):
            g = gate(args[0])
            acc.setdefault(name, _Accumulator(g.shape[1])).add(g, current["labels"])
        return hook

    handles = [m.register_forward_hook(hook_for(n, _gate_function(m))) for n, m in layers.items()]
    was_training = model.training
    model.eval()
    try:
        label_iter = iter(labels) if labels is not None else None
        for batch in batches:
            current["labels"] = None if label_iter is None else next(label_iter)
            model(batch)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return GateStats({name: acc[name].result() for name in layers if name in acc})


# --- folding --------------------------------------------------------------------------

class FoldedGate(nn.Module):
    """An SE layer replaced by a fixed per-channel scale.

    ``target`` says where the scale went: ``"bn"`` (the preceding eval-mode BatchNorm's
    affine weights), ``"conv"`` (the following convolution's input channels; this module
    is then the identity) or ``"multiply"`` (kept here: one channel multiply). Accepts the
    residual / out_act arguments of a fused residual block's SE.
    """

    def __init__(self, scale: Tensor, target: str, target_path: Optional[str]) -> None:
        super().__init__()
        self.target, self.target_path = target, target_path
        self.register_buffer("scale", scale if target == "multiply" else None)

    def forward(self, x: Tensor, residual: Optional[Tensor] = None,
                out_act: str = "identity") -> Tensor:
        if self.scale is not None:
            x = x * self.scale.to(x.dtype).view(1, -1, 1, 1)
        if residual is not None:
            x = x + residual
        return F.relu(x) if out_act == "relu" else x

    def extra_repr(self) -> str:
        return f"target={self.target!r}" + (f", into={self.target_path!r}" if self.target_path else "")


# Blocks whose SE sits right after a BatchNorm (scale folds into its affine weights) or
# right before a convolution (scale folds into its input channels): class -> (se, target).
_PREVIOUS_BN = {
    "timm.models.resnet.BasicBlock": ("se", "bn2"),
    "timm.models.resnet.Bottleneck": ("se", "bn3"),
    "timm.models.senet.SEResNetBlock": ("se_module", "bn2"),
    "timm.models.senet.SEResNetBottleneck": ("se_module", "bn3"),
    "timm.models.senet.SEBottleneck": ("se_module", "bn3"),
    "timm.models.senet.SEResNeXtBottleneck": ("se_module", "bn3"),
}
_NEXT_CONV = {
    "timm.models._efficientnet_blocks.InvertedResidual": ("se", "conv_pwl"),
    "timm.models._efficientnet_blocks.DepthwiseSeparableConv": ("se", "conv_pw"),
}


def _block_class(module: nn.Module) -> str:
    return _qualname(getattr(module, "source_class", type(module)))


def _first_conv(module: nn.Module) -> Optional[nn.Conv2d]:
    while isinstance(module, nn.Sequential) and len(module):
        module = module[0]
    return module if isinstance(module, nn.Conv2d) else None


def _fold_target(parent: nn.Module, child_name: str) -> tuple[str, Optional[str], Optional[nn.Module]]:
    """(kind, attribute path under parent, module) of where a fixed scale can go."""
    cls = _block_class(parent)
    if cls in _PREVIOUS_BN and _PREVIOUS_BN[cls][0] == child_name:
        name = _PREVIOUS_BN[cls][1]
        return "bn", name, getattr(parent, name)
    if cls in _NEXT_CONV and _NEXT_CONV[cls][0] == child_name:
        name = _NEXT_CONV[cls][1]
        return "conv", name, getattr(parent, name)
    if isinstance(parent, nn.Sequential):
        names = list(parent._modules)
        i = names.index(child_name)
        if i > 0 and isinstance(parent[i - 1], nn.BatchNorm2d):
            return "bn", names[i - 1], parent[i - 1]
        if i + 1 < len(names) and _first_conv(parent[i + 1]) is not None:
            return "conv", names[i + 1], _first_conv(parent[i + 1])
    return "multiply", None, None


def _foldable(kind: str, target: Optional[nn.Module]) -> Optional[str]:
    """Why the scale cannot go into this target (None: it can)."""
    if kind == "bn":
        if target.training or not target.affine:
            return "the preceding BatchNorm is in training mode or has no affine weights"
    if kind == "conv" and target.groups != 1:
        return "the following convolution is grouped"
    return None


@dataclass
class FoldSummary:
    """What fold_static_gates did: layers folded (and into what), kept (and why)."""

    folded: dict = field(default_factory=dict)  # path -> (target kind, target path, deviation)
    kept: dict = field(default_factory=dict)  # path -> reason
    parameters_removed: int = 0
    max_ignored_deviation: float = 0.0

    def __str__(self) -> str:
        lines = [f"fold_static_gates: {len(self.folded)} SE layers folded, {len(self.kept)} kept, "
                 f"{self.parameters_removed} parameters removed, largest gate deviation "
                 f"ignored {self.max_ignored_deviation:.3g}"]
        lines += [f"  folded {p} -> {kind}" + (f" {t}" if t else "") + f" (deviation {d:.3g})"
                  for p, (kind, t, d) in self.folded.items()]
        lines += [f"  kept {p}: {why}" for p, why in self.kept.items()]
        lines.append("  undo: se_kernels.revert_model(model)")
        return "\n".join(lines)


@torch.no_grad()
def fold_static_gates(model: nn.Module, stats: GateStats, tol: float) -> FoldSummary:
    """Replace, in place, every SE layer whose gates vary less than ``tol`` over the
    measured inputs (max |gate - channel mean| < tol) by its mean per-channel scale.

    The scale goes into the preceding eval-mode BatchNorm (timm / senet ResNet blocks, or
    a BatchNorm right before the SE in an ``nn.Sequential``) or the following ungrouped
    convolution (timm EfficientNet / MobileNet blocks, or the next module of an
    ``nn.Sequential``), so the SE vanishes from the graph; otherwise one channel multiply.
    Layers at or above ``tol``, or not in ``stats``, are never touched. The folded
    model is for inference (a fold fixes the scale of an eval-mode model).

    Returns:
        :class:`FoldSummary`. ``revert_model`` restores the SE layers and the target
        weights (kept aside, unchanged).
    """
    summary = FoldSummary()
    for path, module in list(se_layers(model).items()):
        layer = stats.layers.get(path)
        if layer is None:
            summary.kept[path] = "no statistics for this layer"
            continue
        if layer.deviation >= tol:
            summary.kept[path] = f"gate deviation {layer.deviation:.3g} >= tol {tol:g}"
            continue
        if not path:
            summary.kept[path] = "the model itself is the SE layer: nothing to fold it into"
            continue
        parent_path, _, child_name = path.rpartition(".")
        parent = model.get_submodule(parent_path)
        kind, target_name, target = _fold_target(parent, child_name)
        if kind != "multiply" and _foldable(kind, target) is not None:
            kind, target_name, target = "multiply", None, None
        scale = torch.tensor(layer.mean, dtype=torch.float32)
        folded = FoldedGate(scale, kind, None if target_name is None else
                            f"{parent_path}.{target_name}".lstrip("."))
        saved = {}
        if kind == "bn":
            saved = {"weight": target.weight.detach().clone(), "bias": target.bias.detach().clone()}
            target.weight.mul_(scale.to(target.weight))
            target.bias.mul_(scale.to(target.bias))
        elif kind == "conv":
            saved = {"weight": target.weight.detach().clone()}
            target.weight.mul_(scale.to(target.weight).view(1, -1, 1, 1))
        _keep_original(folded, module)
        object.__setattr__(folded, "_se_fold_undo", (target, saved))
        _set_submodule(model, path, folded)
        summary.folded[path] = (kind, folded.target_path, layer.deviation)
        summary.parameters_removed += sum(p.numel() for p in module.parameters())
        summary.max_ignored_deviation = max(summary.max_ignored_deviation, layer.deviation)
    return summary


def unfold(folded: FoldedGate) -> nn.Module:
    """The SE layer a FoldedGate replaced, with its target's weights restored."""
    target, saved = folded.__dict__["_se_fold_undo"]
    with torch.no_grad():
        for name, value in saved.items():
            getattr(target, name).copy_(value)
    return folded.__dict__["_se_original"]
