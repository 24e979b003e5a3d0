"""The models convert_model is tested on, and the SE option sets it produces for them.

tests/test_convert.py converts these models; scripts/static_gpu_check.py compiles every
kernel specialization their converted SE layers need.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

CONVERTER_MODELS = [
    "timm:seresnet18", "timm:seresnext26d_32x4d", "timm:efficientnet_b0",
    "timm:mobilenetv3_large_100", "timm:regnety_002", "timm:ese_vovnet19b_dw", "timm:rexnet_100",
    "timm:legacy_seresnet18", "tv:efficientnet_b0", "tv:mobilenet_v3_small", "tv:regnet_y_400mf",
]


def create(name: str) -> nn.Module:
    """A model with random weights (no download): "timm:<arch>" or "tv:<torchvision fn>"."""
    lib, arch = name.split(":")
    if lib == "timm":
        import timm

        return timm.create_model(arch, pretrained=False, drop_rate=0.0)
    import torchvision

    return getattr(torchvision.models, arch)()


@dataclass(frozen=True)
class SEOptions:
    """What one converted SE layer asks of the kernels."""

    pool: str
    act: str
    gate: str
    two_fc: bool
    bias1: bool
    bias2: bool
    residual: bool  # the block's add + ReLU runs in the SE kernel's epilogue


def converted_options(names=CONVERTER_MODELS) -> list[SEOptions]:
    """Every distinct option set convert_model gives the SE layers of these models
    (converted in eval mode), in a fixed order."""
    import se_kernels
    from se_kernels.convert import FusedResidualBlock, FusedSE

    found: set[SEOptions] = set()
    for name in names:
        model = se_kernels.convert_model(create(name).eval(), backend="reference")
        fused_se = {id(getattr(b, "se", None) or getattr(b, "se_module", None))
                    for b in model.modules() if isinstance(b, FusedResidualBlock)}
        for m in model.modules():
            if isinstance(m, FusedSE):
                _w1, b1, w2, b2 = m._weights()
                s = m.se_spec
                found.add(SEOptions(s.pool, s.act, s.gate, w2 is not None, b1 is not None,
                                    b2 is not None, id(m) in fused_se))
    return sorted(found, key=lambda o: tuple(map(str, vars(o).values())))
