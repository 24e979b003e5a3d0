"""SqueezeExcite and EfficientChannelAttention: the nn.Module front ends, with
timm-compatible parameter names."""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from .adapters import UnsupportedSE, read_se
from .backends import NOT_SCRIPTABLE
from .eca import efficient_channel_attention
from .functional import squeeze_excite
from .inference_path import InferencePath
from .options import check_options


def make_divisible(v: float, divisor: int = 8, min_value: Optional[int] = None,
                   round_limit: float = 0.9) -> int:
    """Round ``v`` to a multiple of ``divisor`` the way timm sizes SE bottlenecks."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v


class SqueezeExcite(nn.Module):
    """Fused SE block: ``x * gate(fc2(act(fc1(pool(x)))))``.

    ``fc1`` (``C -> R``) and ``fc2`` (``R -> C``) are 1x1 ``nn.Conv2d`` layers, so the
    state_dict of a timm ``SEModule`` or torchvision ``SqueezeExcitation``
    (``fc1.*``, ``fc2.*``) loads directly. A module made by :meth:`from_module` from a
    single-FC eSE has ``fc2 = None``.

    Args:
        channels: C.
        rd_ratio: bottleneck ratio, used when ``rd_channels`` is None.
        rd_channels: R; default ``make_divisible(C * rd_ratio, rd_divisor, round_limit=0)``
            as timm's ``SEModule``.
        rd_divisor: rounding of R.
        act, gate, pool: as :func:`se_kernels.squeeze_excite`.
        bias: whether fc1/fc2 have biases.
        backend: kernel backend, ``"auto"`` by default.
        gain: gate scale (keyword only).

    Shape:
        ``forward(x [N, C, H, W], residual=None) -> [N, C, H, W]``; ``residual`` (and
        ``out_act``) fuse the block's shortcut add and ReLU into the kernel's epilogue.
    """

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 1.0 / 16,
        rd_channels: Optional[int] = None,
        rd_divisor: int = 8,
        act: str = "relu",
        gate: str = "sigmoid",
        pool: str = "avg",
        bias: bool = True,
        backend: str = "auto",
        *,
        gain: float = 1.0,
    ) -> None:
        super().__init__()
        check_options(pool, act, gate, "identity", gain)
        if rd_channels is None:
            rd_channels = make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.0)
        self.fc1 = nn.Conv2d(channels, rd_channels, kernel_size=1, bias=bias)
        self.fc2 = nn.Conv2d(rd_channels, channels, kernel_size=1, bias=bias)
        self.act, self.gate, self.pool, self.gain, self.backend = act, gate, pool, gain, backend
        self._inference = InferencePath()

    def _weights(self):
        # Read from the module dicts: attribute lookup through nn.Module costs ~0.3 us a name.
        fc1, fc2 = self._modules["fc1"]._parameters, self._modules.get("fc2")
        fc2 = None if fc2 is None else fc2._parameters
        return (fc1["weight"], fc1["bias"], None if fc2 is None else fc2["weight"],
                None if fc2 is None else fc2["bias"])

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None,
                out_act: str = "identity") -> torch.Tensor:
        if InferencePath.usable():
            call = self._inference.entry(x, self.backend, self._weights(), self._weights)
            if call is not None:
                return call(x, residual, self.pool, self.act, self.gate, self.gain, out_act)
        return squeeze_excite(
            x, *self._weights(), pool=self.pool, act=self.act, gate=self.gate, gain=self.gain,
            residual=residual, out_act=out_act, backend=self.backend,
        )

    def __prepare_scriptable__(self):
        raise RuntimeError(NOT_SCRIPTABLE)

    def extra_repr(self) -> str:
        return (f"pool={self.pool!r}, act={self.act!r}, gate={self.gate!r}, gain={self.gain}, "
                f"backend={self.backend!r}")

    @classmethod
    def from_module(cls, module: nn.Module, backend: str = "auto") -> "SqueezeExcite":
        """Wrap an existing SE module, sharing its parameter tensors (no copies).

        Supports timm ``SEModule`` (without a BatchNorm in the bottleneck),
        ``EffectiveSEModule`` (single FC: ``fc2`` is None), EfficientNet/MobileNet
        ``SqueezeExcite``, legacy senet ``SEModule`` and torchvision
        ``SqueezeExcitation``. The result names its convs ``fc1``/``fc2``; to keep a
        model's own state_dict keys, use :func:`se_kernels.convert_model` instead.

        Raises:
            UnsupportedSE: the module's class, act, gate or layers cannot be fused exactly.
        """
        spec = read_se(module)
        if spec.bn is not None:
            raise UnsupportedSE("the bottleneck has a BatchNorm; convert_model folds it in eval "
                                "mode, SqueezeExcite.from_module does not")
        se = cls.__new__(cls)
        nn.Module.__init__(se)
        se.fc1 = getattr(module, spec.fc1)
        se.fc2 = getattr(module, spec.fc2) if spec.fc2 else None
        se.act, se.gate, se.pool, se.gain, se.backend = spec.act, spec.gate, spec.pool, 1.0, backend
        se._inference = InferencePath()
        return se


def eca_kernel_size(channels: int, gamma: float = 2, beta: float = 1) -> int:
    """ECA-Net's adaptive kernel size for C channels (timm's EcaModule rule): the odd
    number nearest above ``|log2(C) + beta| / gamma``, at least 3."""
    t = int(abs(math.log(channels, 2) + beta) / gamma)
    return max(t if t % 2 else t + 1, 3)


class EfficientChannelAttention(nn.Module):
    """Fused ECA / CECA block: ``x * gate(conv_k(mean_hw x))``, the Conv1d across channels.

    ``conv`` is timm's ``nn.Conv1d(1, 1, k)``, so the state_dict of a timm ``EcaModule``
    (``circular=False``) or ``CecaModule`` (``circular=True``) loads directly.

    Args:
        channels: C, to size k as timm does; or None with ``kernel_size``.
        kernel_size: k (odd), used when ``channels`` is None.
        gamma, beta: timm's kernel-size rule (:func:`eca_kernel_size`).
        circular: circular padding across the channels (CECA) instead of zeros (ECA).
        bias: a bias on the convolution (timm's CecaModule has one when it has an act).
        gate: as :func:`se_kernels.squeeze_excite`.
        backend: kernel backend, ``"auto"`` by default.

    Shape:
        ``forward(x [N, C, H, W], residual=None, out_act="identity") -> [N, C, H, W]``.
    """

    def __init__(self, channels: Optional[int] = None, kernel_size: int = 3, gamma: float = 2,
                 beta: float = 1, circular: bool = False, bias: bool = False,
                 gate: str = "sigmoid", backend: str = "auto") -> None:
        super().__init__()
        check_options("avg", "identity", gate, "identity", 1.0)
        if channels is not None:
            kernel_size = eca_kernel_size(channels, gamma, beta)
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        # timm pads inside the Conv1d for ECA and with F.pad for CECA: the same parameters.
        self.conv = nn.Conv1d(1, 1, kernel_size, padding=0 if circular else (kernel_size - 1) // 2,
                              bias=bias)
        self.circular = circular
        self.gate = gate
        self.backend = backend

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None,
                out_act: str = "identity") -> torch.Tensor:
        return efficient_channel_attention(
            x, self.conv.weight, self.conv.bias, padding="circular" if self.circular else "zeros",
            gate=self.gate, residual=residual, out_act=out_act, backend=self.backend)

    def __prepare_scriptable__(self):
        raise RuntimeError(NOT_SCRIPTABLE)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.conv.kernel_size[0]}, circular={self.circular}, "
                f"gate={self.gate!r}, backend={self.backend!r}")
