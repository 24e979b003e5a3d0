"""The things compared on one SE layer, and the timed call for each mode.

Providers share one set of weights: the eager baseline is the network's own SE module
(timm), torch.compile wraps that module, and the se_kernels providers wrap it with
convert_model's FusedSE (same parameters, a fused backend).
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn

import se_kernels
from se_kernels.adapters import read_se
from se_kernels.convert import FusedSE

MODES = ("inference", "forward", "backward", "fwd+bwd")
# Full-size tensor passes that must move at least: x in and y out forward; g and x in,
# dx out backward.
PASSES = {"inference": 2, "forward": 2, "backward": 3, "fwd+bwd": 5}
EAGER, COMPILE = "eager", "compile"


def build_providers(module: nn.Module, device: str, dtype: torch.dtype,
                    only: tuple[str, ...] = ()) -> dict[str, nn.Module]:
    """eager, compile(s), reference (CPU) and every se_kernels backend available here."""
    base = copy.deepcopy(module).to(device=device, dtype=dtype).eval()
    spec = read_se(base)
    providers: dict[str, nn.Module] = {EAGER: base}
    torch._dynamo.reset()  # fresh compile caches per shape: no silent fallback to eager
    providers[COMPILE] = torch.compile(base)
    if device == "cuda":
        providers["compile-max-autotune"] = torch.compile(base, mode="max-autotune-no-cudagraphs")
    else:
        providers["reference"] = FusedSE(base, spec, backend="reference")
    for backend in se_kernels.available_backends(device):
        if backend not in ("reference", "cuda_sim"):  # cuda_sim checks, it does not race
            providers[f"se_kernels-{backend}"] = FusedSE(base, spec, backend=backend)
    if only:
        providers = {k: v for k, v in providers.items() if k in only or k in (EAGER, COMPILE)}
    return providers


def timed_call(module: nn.Module, x: torch.Tensor, mode: str) -> Callable[[], object]:
    """A no-argument callable doing one step of `mode` (gradients for x and the weights)."""
    if mode == "inference":
        def run():
            with torch.no_grad():
                return module(x)
        return run
    xg = x.detach().requires_grad_()
    wrt = [xg] + [p for p in module.parameters() if p.requires_grad]
    g = torch.randn_like(x)
    if mode == "forward":
        return lambda: module(xg)
    if mode == "backward":
        y = module(xg)
        return lambda: torch.autograd.grad(y, wrt, g, retain_graph=True)
    if mode == "fwd+bwd":
        return lambda: torch.autograd.grad(module(xg), wrt, g)
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def copy_call(x: torch.Tensor) -> Callable[[], object]:
    """y.copy_(x) of the same size: the bandwidth a memory-bound kernel can hope for."""
    y = torch.empty_like(x)
    return lambda: y.copy_(x)
