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

import torch
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
    # ECA: fc1 is a Conv1d of odd size k across the channel axis, with "zeros" (EcaModule)
    # or "circular" (CecaModule) padding; the kernels get it as the banded [C, C] matrix.
    channel_conv: Optional[str] = None


def channel_conv_matrix(weight: torch.Tensor, channels: int, padding: str) -> torch.Tensor:
    """The ``[C, C]`` matrix M with ``M @ v == conv1d(v)`` along the channels, for a
    ``[1, 1, k]`` Conv1d weight (odd k, no dilation) with "zeros" or "circular" padding of
    (k - 1) // 2. Differentiable in ``weight``: the gradient of each tap is the sum over
    its band, as the convolution's."""
    taps = weight.reshape(-1)
    k = taps.numel()
    rows = torch.arange(channels, device=taps.device)
    cols = rows[:, None] + torch.arange(k, device=taps.device)[None, :] - (k - 1) // 2
    if padding == "circular":
        values = taps.expand(channels, k)
        cols = cols % channels
    else:
        inside = (cols >= 0) & (cols < channels)
        values = taps.expand(channels, k) * inside  # the zero padding
        cols = cols.clamp(0, channels - 1)
    matrix = taps.new_zeros(channels, channels)
    return matrix.index_put((rows[:, None].expand(channels, k), cols), values, accumulate=True)


def _qualname(obj: object) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _gelu(module: nn.Module) -> Optional[str]:
    """nn.GELU by its approximate attribute (timm's GELU subclasses it)."""
    approximate = getattr(module, "approximate", "none")
    return {"none": "gelu", "tanh": "gelu_tanh"}.get(approximate)


def _leaky_relu(module: nn.Module) -> Optional[str]:
    """nn.LeakyReLU with its negative slope ("leaky_relu" for torch's default 0.01)."""
    from .options import leaky_relu_act

    return leaky_relu_act(module.negative_slope)


# Activation classes -> act name (or a reader of the instance). Classes are matched
# exactly; each maps to the torch function of the same name, value for value.
_ACTS = {
    "torch.nn.modules.activation.ReLU": "relu",
    "torch.nn.modules.activation.ReLU6": "relu6",
    "torch.nn.modules.activation.SiLU": "silu",
    "torch.nn.modules.activation.GELU": _gelu,
    "torch.nn.modules.activation.Hardswish": "hard_swish",
    "torch.nn.modules.activation.Mish": "mish",
    "torch.nn.modules.activation.Tanh": "tanh",
    "torch.nn.modules.activation.Sigmoid": "sigmoid",
    "torch.nn.modules.activation.LeakyReLU": _leaky_relu,
    "torch.nn.modules.linear.Identity": "identity",
    "timm.layers.activations.Swish": "silu",
    "timm.layers.activations_me.SwishMe": "silu",
    "timm.layers.activations.GELU": "gelu",
    "timm.layers.activations.GELUTanh": "gelu_tanh",
    "timm.layers.activations.HardSwish": "hard_swish",
    "timm.layers.activations_me.HardSwishMe": "hard_swish",
    "timm.layers.activations.Mish": "mish",
    "timm.layers.activations_me.MishMe": "mish",
    "timm.layers.activations.Tanh": "tanh",
    "timm.layers.activations.Sigmoid": "sigmoid",
}
_GATES = {
    "torch.nn.modules.activation.Sigmoid": "sigmoid",
    "torch.nn.modules.activation.Hardsigmoid": "hard_sigmoid",
    "torch.nn.modules.activation.Tanh": "tanh",
    "timm.layers.activations.Sigmoid": "sigmoid",
    "timm.layers.activations.HardSigmoid": "hard_sigmoid",
    "timm.layers.activations_me.HardSigmoidMe": "hard_sigmoid",
    "timm.layers.activations.Tanh": "tanh",
}


def _lookup(table: dict, module: nn.Module, what: str) -> str:
    name = table.get(_qualname(module))
    if callable(name):
        name = name(module)
    if name is None:
        names = sorted({v for v in table.values() if isinstance(v, str)} | (
            {"leaky_relu (any slope)"} if _leaky_relu in table.values() else set()))
        raise UnsupportedSE(f"{what} {module!r} has no exact fused equivalent "
                            f"(supported: {names})")
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


def _eca(m: nn.Module, padding: str) -> SESpec:
    if getattr(m, "conv2", None) is not None:
        raise UnsupportedSE("ECA with use_mlp (a per-channel MLP) has no fused equivalent")
    conv = m.conv
    k = conv.kernel_size[0]
    own_padding = getattr(m, "padding", 0) if padding == "circular" else conv.padding[0]
    if not (isinstance(conv, nn.Conv1d) and conv.in_channels == conv.out_channels == 1
            and conv.stride == (1,) and conv.dilation == (1,) and k % 2 == 1
            and own_padding == (k - 1) // 2 and conv.padding_mode == "zeros"
            and (padding == "zeros" or conv.padding == (0,))):
        raise UnsupportedSE("conv is not a 1-to-1 channel Conv1d of odd size with 'same' padding")
    return SESpec(fc1="conv", fc2=None, act="identity", gate=_lookup(_GATES, m.gate, "gate"),
                  pool="avg", channel_conv=padding)


READERS: dict[str, Callable[[nn.Module], SESpec]] = {
    "timm.layers.squeeze_excite.SEModule":
        lambda m: _spec(m, "fc1", "fc2", "act", "gate", m.add_maxpool, bn="bn"),
    "timm.layers.squeeze_excite.EffectiveSEModule":
        lambda m: _spec(m, "fc", None, None, "gate", m.add_maxpool),
    "timm.models._efficientnet_blocks.SqueezeExcite":
        lambda m: _spec(m, "conv_reduce", "conv_expand", "act1", "gate"),
    "timm.models.senet.SEModule": lambda m: _spec(m, "fc1", "fc2", "relu", "sigmoid"),
    "torchvision.ops.misc.SqueezeExcitation": _torchvision,
    "timm.layers.eca.EcaModule": lambda m: _eca(m, "zeros"),
    "timm.layers.eca.CecaModule": lambda m: _eca(m, "circular"),
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
