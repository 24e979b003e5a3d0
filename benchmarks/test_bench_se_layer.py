"""pytest-benchmark over the quick sweep's cases (one SE layer per network).

    python -m pytest benchmarks -p no:cacheprovider --benchmark-json out.json

Each round is one synchronised call (benchmark.pedantic). Short by design: CI runs it
to produce the JSON; the CLI (python -m benchmarks.se_layer) is the measuring tool.
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.providers import build_providers, timed_call
from benchmarks.shapes import NETWORKS, representative

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
PROVIDERS = ["eager", "compile", "se_kernels-cuda", "se_kernels-triton", "se_kernels-cpu"]


@pytest.mark.parametrize("mode", ["inference", "fwd+bwd"])
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("net", NETWORKS)
def test_se_layer(benchmark, net, provider, mode):
    layer = representative(net)
    dtype = torch.bfloat16 if DEVICE == "cuda" else torch.float32
    providers = build_providers(layer.module, DEVICE, dtype)
    if provider not in providers:
        pytest.skip(f"{provider} is not available on {DEVICE}")
    x = torch.randn(8, layer.C, layer.H, layer.W, device=DEVICE, dtype=dtype)
    call = timed_call(providers[provider], x, mode)
    sync = torch.cuda.synchronize if DEVICE == "cuda" else (lambda: None)

    def step():
        call()
        sync()

    step()  # compile outside the timing
    benchmark.extra_info.update(layer=layer.name, C=layer.C, H=layer.H, batch=8, dtype=str(dtype))
    benchmark.pedantic(step, rounds=5, iterations=3, warmup_rounds=1)
