"""convert_model: make existing timm / torchvision SE models run on se_kernels, in place.

Every recognised SE module is replaced by a :class:`FusedSE` that adopts the original's
children under their own names: the same parameter tensors and the same state_dict
keys, so checkpoints load before and after and an optimizer built before conversion
keeps updating the right tensors. ResNet-family blocks whose SE sits right before the
shortcut add and ReLU become a :class:`FusedResidualBlock`, which hands the add and
the ReLU to the SE kernel's epilogue. Anything that cannot be mapped exactly is left
as it is and reported in the summary, never approximated.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .adapters import SESpec, UnsupportedSE, _qualname, channel_conv_matrix, is_known_se, read_se
from .backends import BACKENDS, NOT_SCRIPTABLE
from .eca import efficient_channel_attention
from .batchnorm_se import squeeze_excite_with_module_batchnorm, uses_batch_statistics
from .functional import squeeze_excite
from .inference_path import InferencePath
from .reference import onnx_exporting


def _adopt(new: nn.Module, original: nn.Module) -> None:
    """Give `new` the children, direct parameters/buffers and plain attributes of `original`
    under the same names (shared objects, no copies)."""
    for name, value in vars(original).items():
        if not name.startswith("_") and name != "training":
            setattr(new, name, value)
    for name, child in original.named_children():
        new.add_module(name, child)
    for name, param in original.named_parameters(recurse=False):
        new.register_parameter(name, param)
    for name, buf in original.named_buffers(recurse=False):
        new.register_buffer(name, buf, persistent=name not in original._non_persistent_buffers_set)
    new.train(original.training)


def _keep_original(new: nn.Module, original: nn.Module) -> None:
    """Remember the module `new` replaces, for revert_model: stored outside nn.Module's
    registries, so it is neither a child nor in the state_dict, yet deepcopy and pickle
    carry it (sharing the children they share)."""
    object.__setattr__(new, "_se_original", original)


def _restore_original(new: nn.Module) -> nn.Module:
    """The original module of `new`, given `new`'s current children, direct parameters and
    buffers (they may have been replaced or moved since the conversion) and training mode."""
    original = new.__dict__["_se_original"]
    for registry in ("_modules", "_parameters", "_buffers"):
        ours, theirs = getattr(new, registry), getattr(original, registry)
        for name in theirs:
            theirs[name] = ours.get(name)
    return original.train(new.training)


def _fold_batchnorm(w1: torch.Tensor, b1: Optional[torch.Tensor], bn: nn.BatchNorm2d):
    """FC1 followed by an eval-mode BatchNorm as one FC (differentiable in every input)."""
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    w = w1 * scale.view(-1, *([1] * (w1.dim() - 1)))
    b = -bn.running_mean if b1 is None else b1 - bn.running_mean
    b = b * scale
    return w, b if bn.bias is None else b + bn.bias


def se_weights(module: nn.Module, spec: SESpec, channels: Optional[int] = None):
    """(w1, b1, w2, b2) of an SE module as the fused op takes them: a bottleneck BatchNorm
    (eval) folded into FC1; an ECA channel convolution as its [C, C] banded matrix (and a
    CECA bias broadcast over the channels), which needs ``channels`` (gate_stats reads ECA
    gates this way; the kernels run ECA through efficient_channel_attention)."""
    fc1 = getattr(module, spec.fc1)
    w1, b1 = fc1.weight, fc1.bias
    if spec.channel_conv is not None:
        if channels is None:
            raise ValueError("an ECA module's weights depend on the input's channel count")
        w1 = channel_conv_matrix(w1, channels, spec.channel_conv)
        b1 = None if b1 is None else b1.expand(channels)
    if spec.bn is not None:
        w1, b1 = _fold_batchnorm(w1, b1, getattr(module, spec.bn))
    fc2 = getattr(module, spec.fc2) if spec.fc2 else None
    return w1, b1, None if fc2 is None else fc2.weight, None if fc2 is None else fc2.bias


class FusedSE(nn.Module):
    """A foreign SE module running on se_kernels.

    Holds the original module's children under their original names (so its
    state_dict is the original's), and reproduces its forward exactly.

    Shape:
        ``forward(x [N, C, H, W], residual=None, out_act="identity") -> [N, C, H, W]``.
        ``residual`` / ``out_act`` fuse a following shortcut add and ReLU.
    """

    def __init__(self, original: nn.Module, spec: SESpec, backend: str = "auto") -> None:
        super().__init__()
        _adopt(self, original)
        _keep_original(self, original)
        self.se_spec = spec
        self.backend = backend
        self.source_class = type(original)
        self._inference = InferencePath()

    def _weight_sources(self) -> list:
        """Every parameter and buffer of the layers the kernel's weights derive from (FC1,
        FC2, the bottleneck BatchNorm): the inference path's key. That includes BatchNorm's
        num_batches_tracked, which matters: its kernel updates the running statistics
        without bumping their version counter, but bumps num_batches_tracked every time.
        Read from the module dicts: attribute lookup through nn.Module costs ~0.3 us a name."""
        spec, children = self.se_spec, self._modules
        sources = []
        for name in (spec.fc1, spec.fc2, spec.bn):
            if name is not None:
                layer = children[name]
                sources += [*layer._parameters.values(), *layer._buffers.values()]
        return sources

    def _weights(self, channels: Optional[int] = None):
        """(w1, b1, w2, b2) as ``se_weights`` gives them; ``channels`` (C of the input) only
        for ECA, whose gate ``gate_stats`` reads through the [C, C] banded matrix (the
        kernels run ECA through its own op, see forward)."""
        return se_weights(self, self.se_spec, channels)

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None,
                out_act: str = "identity") -> torch.Tensor:
        spec = self.se_spec
        if spec.bn is not None and uses_batch_statistics(getattr(self, spec.bn)):
            if splittable(spec) and not onnx_exporting():  # fused around the BatchNorm
                return squeeze_excite_with_module_batchnorm(
                    x, getattr(self, spec.fc1), getattr(self, spec.bn), getattr(self, spec.fc2),
                    act=spec.act, gate=spec.gate, residual=residual, out_act=out_act,
                    backend=self.backend)
            # Batch statistics, unsplittable: run the original code, unfused.
            y = self.source_class.forward(self, x)
            if residual is not None:
                y = y + residual
            return F.relu(y) if out_act == "relu" else y
        if spec.channel_conv is not None:  # ECA / CECA: the k-tap op
            conv = getattr(self, spec.fc1)
            return efficient_channel_attention(
                x, conv.weight, conv.bias, padding=spec.channel_conv, gate=spec.gate,
                residual=residual, out_act=out_act, backend=self.backend)
        if InferencePath.usable():
            call = self._inference.entry(x, self.backend, self._weight_sources(), self._weights)
            if call is not None:
                return call(x, residual, spec.pool, spec.act, spec.gate, 1.0, out_act)
        return squeeze_excite(x, *self._weights(), pool=spec.pool, act=spec.act, gate=spec.gate,
                              residual=residual, out_act=out_act, backend=self.backend)

    def __prepare_scriptable__(self):
        raise RuntimeError(NOT_SCRIPTABLE)

    def extra_repr(self) -> str:
        s = self.se_spec
        return (f"from={self.source_class.__name__}, pool={s.pool!r}, act={s.act!r}, "
                f"gate={s.gate!r}, backend={self.backend!r}")


# --- ResNet-family blocks: SE, then shortcut add, then ReLU -------------------------
# Each replica is its block's own forward, in the same order (train-mode drop_block
# draws random numbers), with the last three steps handed to the SE kernel. Keyed by
# the block class; `se` names the SE attribute, `act` the final ReLU.

def _timm_basic_block(b: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = b.aa(b.act1(b.drop_block(b.bn1(b.conv1(x)))))
    out = b.bn2(b.conv2(out))
    shortcut = x if b.downsample is None else b.downsample(x)
    return b.se(out, residual=shortcut, out_act="relu")


def _timm_bottleneck(b: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = b.act1(b.bn1(b.conv1(x)))
    out = b.aa(b.act2(b.drop_block(b.bn2(b.conv2(out)))))
    out = b.bn3(b.conv3(out))
    shortcut = x if b.downsample is None else b.downsample(x)
    return b.se(out, residual=shortcut, out_act="relu")


def _senet_bottleneck(b: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = b.relu(b.bn1(b.conv1(x)))
    out = b.relu(b.bn2(b.conv2(out)))
    out = b.bn3(b.conv3(out))
    shortcut = x if b.downsample is None else b.downsample(x)
    return b.se_module(out, residual=shortcut, out_act="relu")


def _senet_block(b: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = b.relu(b.bn1(b.conv1(x)))
    out = b.relu(b.bn2(b.conv2(out)))
    shortcut = x if b.downsample is None else b.downsample(x)
    return b.se_module(out, residual=shortcut, out_act="relu")


@dataclass(frozen=True)
class _BlockKind:
    forward: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    se: str  # attribute holding the SE module
    act: str  # attribute holding the final activation


RESIDUAL_BLOCKS = {
    "timm.models.resnet.BasicBlock": _BlockKind(_timm_basic_block, "se", "act2"),
    "timm.models.resnet.Bottleneck": _BlockKind(_timm_bottleneck, "se", "act3"),
    "timm.models.senet.SEBottleneck": _BlockKind(_senet_bottleneck, "se_module", "relu"),
    "timm.models.senet.SEResNetBottleneck": _BlockKind(_senet_bottleneck, "se_module", "relu"),
    "timm.models.senet.SEResNeXtBottleneck": _BlockKind(_senet_bottleneck, "se_module", "relu"),
    "timm.models.senet.SEResNetBlock": _BlockKind(_senet_block, "se_module", "relu"),
}


def _block_blocker(block: nn.Module, kind: _BlockKind) -> Optional[str]:
    """Why this block's add + ReLU cannot be fused, or None if it can."""
    if not isinstance(getattr(block, kind.se, None), FusedSE):
        return "its SE module was not converted"
    if type(getattr(block, kind.act, None)) is not nn.ReLU:
        return f"final activation {type(getattr(block, kind.act, None)).__name__} is not ReLU"
    if getattr(block, "drop_path", None) is not None:
        return "drop_path sits between the SE and the shortcut add"
    return None


class FusedResidualBlock(nn.Module):
    """A ResNet-family block whose SE runs with the shortcut add and ReLU fused in.

    Holds the original block's children under their original names (same state_dict).
    """

    def __init__(self, original: nn.Module) -> None:
        super().__init__()
        _adopt(self, original)
        _keep_original(self, original)
        self.source_class = type(original)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return RESIDUAL_BLOCKS[_qualname(self.source_class)].forward(self, x)

    def __prepare_scriptable__(self):
        raise RuntimeError(NOT_SCRIPTABLE)

    def extra_repr(self) -> str:
        return f"from={self.source_class.__name__}, epilogue='add+relu'"


# --- the conversion -----------------------------------------------------------------

@dataclass
class ConversionSummary:
    """What convert_model did: converted SE modules and fused blocks per class, and every
    recognised module left alone with the reason."""

    converted: Counter = field(default_factory=Counter)
    fused_blocks: Counter = field(default_factory=Counter)
    skipped: list = field(default_factory=list)  # (module path, class name, reason)

    def __str__(self) -> str:
        lines = [f"se_kernels.convert_model: {sum(self.converted.values())} SE modules converted, "
                 f"{sum(self.fused_blocks.values())} residual blocks fused, "
                 f"{len(self.skipped)} left unchanged"]
        lines += [f"  converted {n} x {cls}" for cls, n in sorted(self.converted.items())]
        lines += [f"  fused add+relu into {n} x {cls}" for cls, n in sorted(self.fused_blocks.items())]
        lines += [f"  skipped {path or '<root>'} ({cls}): {why}" for path, cls, why in self.skipped]
        if self.converted:
            lines.append("  every conversion can be undone: se_kernels.revert_model(model)")
        return "\n".join(lines)


def _set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, name, module)


def splittable(spec: SESpec) -> bool:
    """Whether the split ops can run an SE module around its batch-statistics BatchNorm."""
    return spec.pool == "avg" and spec.fc2 is not None and spec.channel_conv is None


def _se_blocker(module: nn.Module, spec: SESpec) -> Optional[str]:
    if spec.bn is None or splittable(spec):
        return None
    if uses_batch_statistics(getattr(module, spec.bn)):
        return ("its BatchNorm uses batch statistics, which the fused kernels run between their "
                "launches only with average pooling and two FCs")
    return None


def convert_model(model: nn.Module, backend: str = "auto") -> nn.Module:
    """Swap every recognised SE block of ``model`` for a fused one, in place.

    Recognised: timm ``SEModule`` (``bn`` folded in eval mode), ``EffectiveSEModule``,
    EfficientNet/MobileNet ``SqueezeExcite``, legacy senet ``SEModule``, torchvision
    ``SqueezeExcitation``; plus the shortcut add + ReLU of timm ResNet ``BasicBlock`` /
    ``Bottleneck`` and legacy senet blocks. Parameters, buffers and state_dict keys are
    unchanged. The summary is returned as ``model.se_kernels_summary`` (printable).

    Args:
        model: any nn.Module; modified in place.
        backend: the kernel backend the converted blocks use (see ``squeeze_excite``).

    Returns:
        ``model`` itself (or its replacement, if the root module is an SE module).
    """
    if backend != "auto" and backend not in BACKENDS:
        raise ValueError(f"backend must be 'auto' or one of {list(BACKENDS)}, got {backend!r}")
    summary = ConversionSummary()
    root = model
    for path, module in list(model.named_modules()):
        if not is_known_se(module):
            continue
        try:
            spec = read_se(module)
        except UnsupportedSE as exc:
            summary.skipped.append((path, type(module).__name__, str(exc)))
            continue
        reason = _se_blocker(module, spec)
        if reason:
            summary.skipped.append((path, type(module).__name__, reason))
            continue
        fused = FusedSE(module, spec, backend)
        if path:
            _set_submodule(root, path, fused)
        else:
            root = fused
        summary.converted[type(module).__name__] += 1

    for path, module in list(root.named_modules()):
        kind = RESIDUAL_BLOCKS.get(_qualname(module))
        if kind is None:
            continue
        reason = _block_blocker(module, kind)
        if reason:
            summary.skipped.append((path, type(module).__name__, f"add+relu not fused: {reason}"))
            continue
        _set_submodule(root, path, FusedResidualBlock(module))
        summary.fused_blocks[type(module).__name__] += 1
    root.se_kernels_summary = summary
    return root


def revert_model(model: nn.Module) -> nn.Module:
    """Undo :func:`convert_model` and :func:`se_kernels.fold_static_gates`, in place: every
    FusedSE and FusedResidualBlock is replaced by the module object it replaced, holding
    the converted module's current children, parameters and buffers (the same tensors: no
    copies) and its training mode; every folded gate by its SE layer, with the weights the
    fold scaled restored.

    For tools that do not know se_kernels (``torch.jit.script``, other exporters, code that
    checks module classes). Returns ``model`` itself, or the original if the root was one.
    """
    from .gates import FoldedGate, unfold

    root = model
    # Folded gates first (they replaced an SE, converted or not), then blocks (they hold
    # a FusedSE), then the SE modules.
    for kind in (FoldedGate, FusedResidualBlock, FusedSE):
        for path, module in list(root.named_modules()):
            if not isinstance(module, kind):
                continue
            original = unfold(module) if kind is FoldedGate else _restore_original(module)
            if path:
                _set_submodule(root, path, original)
            else:
                root = original
    if "se_kernels_summary" in root.__dict__:
        del root.se_kernels_summary
    return root
