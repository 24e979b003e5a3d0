"""ECA / CECA (timm EcaModule, CecaModule) through the converter, on every backend and
layout: the channel Conv1d runs as its banded [C, C] matrix in the single-FC kernels."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from conftest import assert_within_tolerance, backend_device

import se_kernels
from se_kernels.adapters import channel_conv_matrix
from se_kernels.convert import FusedSE

eca = pytest.importorskip("timm.layers.eca")

MODULES = {
    "eca-k3": lambda: eca.EcaModule(kernel_size=3),
    "eca-k5": lambda: eca.EcaModule(kernel_size=5),
    "ceca-k3": lambda: eca.CecaModule(kernel_size=3),
    "ceca-k5-bias": lambda: eca.CecaModule(kernel_size=5, act_layer=nn.ReLU),  # bias only
}


@pytest.mark.parametrize("padding", ["zeros", "circular"])
@pytest.mark.parametrize("channels, k", [(7, 3), (3, 5), (16, 5)])
def test_banded_matrix_is_the_convolution(padding, channels, k):
    weight = torch.randn(1, 1, k, dtype=torch.float64)
    v = torch.randn(4, channels, dtype=torch.float64)
    p = (k - 1) // 2
    if padding == "circular":
        want = nn.functional.conv1d(nn.functional.pad(v[:, None], (p, p), mode="circular"), weight)
    else:
        want = nn.functional.conv1d(v[:, None], weight, padding=p)
    got = v @ channel_conv_matrix(weight, channels, padding).T
    torch.testing.assert_close(got, want[:, 0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("name", list(MODULES))
def test_eca_converts_and_matches(backend, name, layout):
    torch.manual_seed(0)
    original = MODULES[name]().eval()
    with torch.no_grad():
        for p in original.parameters():
            p.uniform_(-1, 1)
    converted = se_kernels.convert_model(nn.Sequential(copy.deepcopy(original)), backend=backend)[0]
    assert isinstance(converted, FusedSE) and converted.se_spec.channel_conv is not None
    device = backend_device(backend)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = torch.randn(3, 67, 5, 7).contiguous(memory_format=fmt)
    g = torch.randn(x.shape).contiguous(memory_format=fmt)

    converted = converted.to(device)
    xd = x.to(device).requires_grad_()
    y = converted(xd)
    grads = torch.autograd.grad(y, [xd, *converted.parameters()], g.to(device))
    truth_module = copy.deepcopy(original).double()
    x64 = x.double().requires_grad_()
    truth = truth_module(x64)
    truth_grads = torch.autograd.grad(truth, [x64, *truth_module.parameters()], g.double())
    assert_within_tolerance("y", y, truth)
    for i, (got, want) in enumerate(zip(grads, truth_grads)):
        assert_within_tolerance(f"grad {i}", got, want)
    with torch.no_grad():  # the inference path (cached banded matrix)
        assert_within_tolerance("y eval", converted(x.to(device)), truth)


def test_ecaresnet_whole_model():
    """ecaresnet26t: all 8 EcaModules convert, exactly (test_convert.check_whole_model)."""
    from test_convert import build, check_whole_model

    converted = check_whole_model(build("timm:ecaresnet26t"))
    assert converted.se_kernels_summary.converted["EcaModule"] == 8
