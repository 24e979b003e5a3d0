"""Read foreign SE modules (timm, torchvision, legacy senet) into one description.

Each supported class gets one small reader that returns an :class:`SESpec`: which
child modules hold FC1 / FC2 (and a BatchNorm, if any) and the option strings that
reproduce its forward exactly. Classes are matched by exact qualified name, so neither
timm nor torchvision has to be installed, and a subclass with another forward is never
mistaken for its parent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from torch import nn


class UnsupportedSE(ValueError):
    """An SE module that cannot be fused exactly; the message says why."""


@dataclass(frozen=True)
class SESpec:
    """Attribute names of the parts of an SE module, and its options."""

    fc1: str
    fc2: Optional[str]  # None: single-FC eSE
    act: str
    gate: str
    pool: str
    bn: Optional[str] = None  # BatchNorm between FC1 and act (timm SEModule norm_layer)


def _qualname(obj: object) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


_ACTS = {
    "torch.nn.modules.activation.ReLU": "relu",
    "torch.nn.modules.activation.SiLU": "silu",
    "torch.nn.modules.linear.Identity": "identity",
    "timm.layers.activations.Swish": "silu",
    "timm.layers.activations_me.SwishMe": "silu",
}
_GATES = {
    "torch.nn.modules.activation.Sigmoid": "sigmoid",
    "torch.nn.modules.activation.Hardsigmoid": "hard_sigmoid",
    "timm.layers.activations.Sigmoid": "sigmoid",
    "timm.layers.activations.HardSigmoid": "hard_sigmoid",
    "timm.layers.activations_me.HardSigmoidMe": "hard_sigmoid",
}


def _lookup(table: dict, module: nn.Module, what: str) -> str:
    name = table.get(_qualname(module))
    if name is None:
        raise UnsupportedSE(f"{what} {type(module).__name__} has no exact fused equivalent "
                            f"(supported: {sorted(set(table.values()))})")
    return name


def _check_pointwise(module: nn.Module, attr: str) -> None:
    conv = getattr(module, attr)
    if not (isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.stride == (1, 1)
            and conv.padding == (0, 0) and conv.groups == 1):
        raise UnsupportedSE(f"{attr} is not a plain 1x1 Conv2d (stride 1, no padding, groups 1)")


def _spec(module: nn.Module, fc1: str, fc2: Optional[str], act: Optional[str], gate: str,
          add_maxpool: bool = False, bn: Optional[str] = None) -> SESpec:
    for attr in (fc1, fc2):
        if attr is not None:
            _check_pointwise(module, attr)
    act_name = "identity" if act is None else _lookup(_ACTS, getattr(module, act), "act")
    norm = getattr(module, bn) if bn else None
    if norm is not None and not isinstance(norm, nn.Identity):
        if not isinstance(norm, nn.BatchNorm2d):
            raise UnsupportedSE(f"norm {type(norm).__name__} in the bottleneck cannot be folded")
    else:
        bn = None
    return SESpec(fc1=fc1, fc2=fc2, act=act_name, gate=_lookup(_GATES, getattr(module, gate), "gate"),
                  pool="avgmax" if add_maxpool else "avg", bn=bn)


def _torchvision(m: nn.Module) -> SESpec:
    if not (isinstance(m.avgpool, nn.AdaptiveAvgPool2d) and m.avgpool.output_size in (1, (1, 1))):
        raise UnsupportedSE("avgpool is not AdaptiveAvgPool2d(1)")
    return _spec(m, "fc1", "fc2", "activation", "scale_activation")


READERS: dict[str, Callable[[nn.Module], SESpec]] = {
    "timm.layers.squeeze_excite.SEModule":
        lambda m: _spec(m, "fc1", "fc2", "act", "gate", m.add_maxpool, bn="bn"),
    "timm.layers.squeeze_excite.EffectiveSEModule":
        lambda m: _spec(m, "fc", None, None, "gate", m.add_maxpool),
    "timm.models._efficientnet_blocks.SqueezeExcite":
        lambda m: _spec(m, "conv_reduce", "conv_expand", "act1", "gate"),
    "timm.models.senet.SEModule": lambda m: _spec(m, "fc1", "fc2", "relu", "sigmoid"),
    "torchvision.ops.misc.SqueezeExcitation": _torchvision,
}


def is_known_se(module: nn.Module) -> bool:
    return _qualname(module) in READERS


def read_se(module: nn.Module) -> SESpec:
    """Describe a supported SE module, or raise :class:`UnsupportedSE` saying why not."""
    reader = READERS.get(_qualname(module))
    if reader is None:
        raise UnsupportedSE(f"{_qualname(module)} is not a supported SE class "
                            f"(supported: {sorted(READERS)})")
    return reader(module)
