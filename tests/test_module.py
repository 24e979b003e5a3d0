"""SqueezeExcite: sizes, state_dict compatibility, from_module, backends."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import KERNEL_BACKENDS, assert_within_tolerance, backend_device

import se_kernels
from se_kernels.adapters import UnsupportedSE

timm_se = pytest.importorskip("timm.layers.squeeze_excite")
from timm.models._efficientnet_blocks import SqueezeExcite as EfficientNetSE  # noqa: E402
from torchvision.ops import SqueezeExcitation  # noqa: E402


@pytest.mark.parametrize("channels, rd_ratio", [(64, 1 / 16), (67, 0.25), (8, 1 / 16), (1000, 0.1)])
def test_bottleneck_size_matches_timm(channels, rd_ratio):
    ours = se_kernels.SqueezeExcite(channels, rd_ratio=rd_ratio)
    theirs = timm_se.SEModule(channels, rd_ratio=rd_ratio)
    assert ours.fc1.out_channels == theirs.fc1.out_channels


@pytest.mark.parametrize("backend", KERNEL_BACKENDS + ["reference"])
def test_timm_state_dict_loads_and_outputs_match(backend):
    torch.manual_seed(0)
    device = backend_device(backend)
    theirs = timm_se.SEModule(32, rd_ratio=0.25).to(device)
    ours = se_kernels.SqueezeExcite(32, rd_ratio=0.25, backend=backend).to(device)
    ours.load_state_dict(theirs.state_dict())
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    x = torch.randn(2, 32, 6, 6, device=device)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


def test_torchvision_state_dict_loads_and_outputs_match():
    theirs = SqueezeExcitation(16, 4)
    ours = se_kernels.SqueezeExcite(16, rd_channels=4, backend="reference")
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 16, 5, 5, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make", [
    lambda: timm_se.SEModule(16, add_maxpool=True),
    lambda: timm_se.EffectiveSEModule(16),
    lambda: EfficientNetSE(16, act_layer=nn.SiLU, gate_layer=nn.Hardsigmoid),
    lambda: SqueezeExcitation(16, 4),
], ids=["SEModule-avgmax", "EffectiveSE", "EfficientNetSE", "torchvision"])
def test_from_module_shares_parameters(make):
    torch.manual_seed(0)
    original = make()
    fused = se_kernels.SqueezeExcite.from_module(original, backend="reference")
    ours = {p.data_ptr() for p in fused.parameters()}
    assert ours == {p.data_ptr() for p in original.parameters()}
    x = torch.randn(2, 16, 5, 5)
    torch.testing.assert_close(fused(x), original(x), rtol=1e-5, atol=1e-6)


def test_from_module_refuses_what_it_cannot_fuse():
    with pytest.raises(UnsupportedSE, match="BatchNorm"):
        se_kernels.SqueezeExcite.from_module(timm_se.SEModule(16, norm_layer=nn.BatchNorm2d))
    with pytest.raises(UnsupportedSE, match=r"act ELU\(alpha=1.0.*\) has no exact fused equivalent"):
        se_kernels.SqueezeExcite.from_module(timm_se.SEModule(16, act_layer=nn.ELU))
    with pytest.raises(UnsupportedSE, match="not a supported SE class"):
        se_kernels.SqueezeExcite.from_module(nn.Conv2d(3, 3, 1))


@pytest.mark.parametrize("backend", KERNEL_BACKENDS + ["reference"])
def test_residual_epilogue_through_the_module(backend):
    """The module's fused add + ReLU against the float64 reference of the same block."""
    device = backend_device(backend)
    se = se_kernels.SqueezeExcite(8, rd_channels=4, backend=backend).to(device)
    gen = torch.Generator().manual_seed(2)
    x, res = (torch.randn(2, 8, 3, 3, generator=gen).to(device) for _ in range(2))
    weights = [t.detach().double().cpu() for t in (se.fc1.weight, se.fc1.bias, se.fc2.weight,
                                                   se.fc2.bias)]
    truth = se_kernels.squeeze_excite_reference(x.double().cpu(), *weights,
                                                residual=res.double().cpu(), out_act="relu")
    with torch.no_grad():
        assert_within_tolerance("y", se(x, residual=res, out_act="relu"), truth)


def test_available_backends():
    names = se_kernels.available_backends()
    assert names[-1] == "reference"
    assert set(names) <= {"cuda", "triton", "cpu", "cuda_sim", "reference"}
    assert "cuda_sim" not in se_kernels.available_backends("cuda")
    assert set(se_kernels.describe_backends()) == set(names)
    assert "cuda" not in se_kernels.available_backends("cpu")
    if not torch.cuda.is_available():
        assert "cuda" not in names


def test_auto_backend_on_cpu():
    from se_kernels.backends import resolve_backend

    chosen = resolve_backend("auto", torch.randn(1, 2, 1, 1))
    assert chosen == ("cpu" if "cpu" in se_kernels.available_backends("cpu") else "reference")
