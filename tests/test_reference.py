"""The reference is right: it matches the SE modules of timm and torchvision, and its
float64 gradients pass gradcheck for every option."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

import se_kernels

timm_se = pytest.importorskip("timm.layers.squeeze_excite")
from timm.models._efficientnet_blocks import SqueezeExcite as EfficientNetSE  # noqa: E402
from timm.models.senet import SEModule as LegacySEModule  # noqa: E402
from torchvision.ops import SqueezeExcitation  # noqa: E402


def _weights(module, fc1, fc2):
    conv1 = getattr(module, fc1)
    conv2 = getattr(module, fc2) if fc2 else None
    return (conv1.weight, conv1.bias, None if conv2 is None else conv2.weight,
            None if conv2 is None else conv2.bias)


MODULES = [
    ("timm-SEModule", lambda: timm_se.SEModule(24, rd_ratio=0.25), "fc1", "fc2", {}),
    ("timm-SEModule-avgmax", lambda: timm_se.SEModule(24, add_maxpool=True, act_layer=nn.SiLU),
     "fc1", "fc2", dict(pool="avgmax", act="silu")),
    ("timm-EffectiveSE", lambda: timm_se.EffectiveSEModule(24), "fc", None,
     dict(gate="hard_sigmoid")),
    ("timm-EfficientNetSE", lambda: EfficientNetSE(24, act_layer=nn.SiLU), "conv_reduce",
     "conv_expand", dict(act="silu")),
    ("timm-MobileNetV3SE", lambda: EfficientNetSE(24, gate_layer=nn.Hardsigmoid), "conv_reduce",
     "conv_expand", dict(gate="hard_sigmoid")),
    ("senet-SEModule", lambda: LegacySEModule(24, reduction=4), "fc1", "fc2", {}),
    ("torchvision", lambda: SqueezeExcitation(24, 6, scale_activation=nn.Hardsigmoid), "fc1",
     "fc2", dict(gate="hard_sigmoid")),
]


@pytest.mark.parametrize("make, fc1, fc2, options", [m[1:] for m in MODULES],
                         ids=[m[0] for m in MODULES])
def test_reference_matches_library_modules(make, fc1, fc2, options):
    torch.manual_seed(0)
    module = make().eval()
    x = torch.randn(3, 24, 7, 5)
    with torch.no_grad():
        want = module(x.clone())
        got = se_kernels.squeeze_excite_reference(x, *_weights(module, fc1, fc2), **options)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_reference_epilogue_and_gain():
    torch.manual_seed(0)
    x, res = torch.randn(2, 6, 4, 4), torch.randn(2, 6, 4, 4)
    w1, w2 = torch.randn(3, 6), torch.randn(6, 3)
    plain = se_kernels.squeeze_excite_reference(x, w1, None, w2)
    fused = se_kernels.squeeze_excite_reference(x, w1, None, w2, gain=2.0, residual=res,
                                                out_act="relu")
    torch.testing.assert_close(fused, torch.relu(2.0 * plain + res))


OPTION_GRID = list(itertools.product(("avg", "avgmax"), ("relu", "silu", "identity"),
                                     ("sigmoid", "hard_sigmoid"), (True, False)))


@pytest.mark.parametrize("pool, act, gate, two_fc", OPTION_GRID)
def test_gradcheck_float64(pool, act, gate, two_fc):
    torch.manual_seed(1)
    d = dict(dtype=torch.float64, requires_grad=True)
    x = torch.randn(2, 5, 3, 3, **d)
    res = torch.randn(2, 5, 3, 3, **d)
    r1 = 3 if two_fc else 5
    w1, b1 = torch.randn(r1, 5, **d), torch.randn(r1, **d)
    w2 = torch.randn(5, 3, **d) if two_fc else None
    b2 = torch.randn(5, **d) if two_fc else None

    def fn(x, res, w1, b1, *fc2):
        w2, b2 = fc2 if fc2 else (None, None)
        return se_kernels.squeeze_excite(x, w1, b1, w2, b2, pool=pool, act=act, gate=gate,
                                         gain=1.5, residual=res, out_act="relu", backend="auto")

    inputs = (x, res, w1, b1) + ((w2, b2) if two_fc else ())
    assert torch.autograd.gradcheck(fn, inputs)
