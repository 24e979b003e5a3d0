"""Every distinct SE layer of SE-ResNet-50, EfficientNet-B0 and MobileNetV3-Large at its
real size (224x224 input, batch 2), with the layer's own act / gate / pool and, for the
ResNet, the fused residual + ReLU epilogue: forward and every gradient against the
float64 truth, in bf16 channels_last and fp32 NCHW.

These are the launches the benchmarks time, so the emulated CUDA kernels (cuda_sim) run
the grids a GPU would get (wide channel blocks, many HW tiles, R up to 240). The Triton
interpreter takes about 2 s a case at these sizes: it runs the bf16 channels_last set by
default and the fp32 NCHW set under `-m slow`.
"""

from __future__ import annotations

import pytest
import torch

from conftest import KERNEL_BACKENDS, Case, check_against_reference

pytest.importorskip("timm")
pytest.importorskip("benchmarks.shapes", reason="needs the source tree (benchmarks/)")
from benchmarks.shapes import NETWORKS, se_layers  # noqa: E402
from se_kernels.adapters import read_se  # noqa: E402

CONFIGS = [("channels_last", torch.bfloat16), ("nchw", torch.float32)]


def _params():
    for backend in KERNEL_BACKENDS:
        (name,) = backend.values
        for net in NETWORKS:
            for layer in se_layers(net):
                spec = read_se(layer.module)
                resnet = net.startswith("seresnet")
                for layout, dtype in CONFIGS:
                    slow = name == "triton" and dtype == torch.float32
                    marks = list(backend.marks) + ([pytest.mark.slow] if slow else [])
                    case = Case(N=2, C=layer.C, H=layer.H, W=layer.W, R=layer.R, layout=layout,
                                dtype=dtype, act=spec.act, gate=spec.gate, pool=spec.pool,
                                residual=resnet, out_act="relu" if resnet else "identity")
                    yield pytest.param(name, case, marks=marks,
                                       id=f"{name}-{layer.name}-{layout}-{str(dtype)[6:]}")


@pytest.mark.parametrize("backend, case", list(_params()))
def test_network_layer(backend, case):
    check_against_reference(case, backend)
