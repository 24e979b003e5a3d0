"""The SE layers of real networks, read from the timm model definitions.

Shapes are never typed by hand: each network is built (random weights) and run once at
the benchmark resolution with hooks on its SE modules, which record C, R and H x W and
keep the module itself, so the eager baseline is exactly the layer the network uses.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch
from torch import nn

from se_kernels.adapters import is_known_se, read_se

NETWORKS = ("seresnet50", "efficientnet_b0", "mobilenetv3_large_100")


@dataclass(frozen=True)
class SELayer:
    net: str
    index: int  # position among the network's SE modules
    C: int
    R: int
    H: int
    W: int
    module: nn.Module = field(compare=False, repr=False)

    @property
    def name(self) -> str:
        return f"{self.net}[{self.index}]"


@functools.lru_cache(maxsize=None)
def se_layers(net: str, resolution: int = 224) -> tuple[SELayer, ...]:
    """Distinct SE layers (by C, R, H, W) of a timm network, in network order."""
    import timm

    model = timm.create_model(net, pretrained=False).eval()
    found: list[SELayer] = []
    seen = set()

    def hook(module, args, _output, index):
        n, c, h, w = args[0].shape
        spec = read_se(module)
        r = getattr(module, spec.fc1).out_channels
        key = (c, r, h, w)
        if key not in seen:
            seen.add(key)
            found.append(SELayer(net, index, c, r, h, w, module))

    se_modules = [m for m in model.modules() if is_known_se(m)]
    handles = [m.register_forward_hook(functools.partial(hook, index=i))
               for i, m in enumerate(se_modules)]
    with torch.no_grad():
        model(torch.zeros(1, 3, resolution, resolution))
    for h in handles:
        h.remove()
    return tuple(found)


def representative(net: str) -> SELayer:
    """One layer per network for the quick sweep: the one with the most activations."""
    return max(se_layers(net), key=lambda l: l.C * l.H * l.W)
