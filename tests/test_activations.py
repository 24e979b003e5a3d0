"""Every hidden activation and gate, on every backend: forward and backward against the
float64 torch functions, at random points and exactly at the kinks; and the converter
maps the torch / timm activation modules onto them."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from conftest import Case, assert_within_tolerance, backend_device, check_against_reference

import se_kernels
from se_kernels.options import ACTS

# The rest (identity, relu, silu): test_kernels. leaky_relu also with other slopes.
NEW_ACTS = [a for a in ACTS if a not in ("identity", "relu", "silu")] + [
    "leaky_relu:0.2", "leaky_relu:-1.5"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("act", NEW_ACTS)
def test_act_forward_backward(backend, act, layout, dtype):
    case = Case(N=2, C=13, H=5, W=3, R=5, act=act, layout=layout, dtype=dtype, pool="avgmax")
    check_against_reference(case, backend)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("two_fc", [True, False], ids=["two-fc", "ese"])
def test_tanh_gate(backend, two_fc, layout):
    case = Case(N=2, C=13, H=5, W=3, R=5, gate="tanh", two_fc=two_fc, layout=layout,
                act="gelu" if two_fc else "identity", residual=True, out_act="relu")
    check_against_reference(case, backend)


# Pooled values that put FC1's output exactly on each function's kinks (and around them).
KINKS = {
    "relu": [0.0, 1.0, -1.0, 0.5],
    "leaky_relu": [0.0, 1.0, -1.0, 0.5],
    "leaky_relu:0.2": [0.0, 1.0, -1.0, 0.5],
    "relu6": [0.0, 6.0, 3.0, -1.0],
    "hard_swish": [-3.0, 3.0, 0.0, 4.0],
}
GATE_KINKS = {"hard_sigmoid": [-3.0, 3.0, 0.0, 5.0]}


def _kink_inputs(values, act, gate, device):
    """x constant per channel over 4x4 (so the mean is exact), FC1 = FC2 = identity and no
    bias: the act sees `values` exactly, and the gate sees act(values)."""
    c = len(values)
    x = torch.tensor(values).view(1, c, 1, 1).expand(2, c, 4, 4).contiguous()
    eye = torch.eye(c)
    params = [t.to(device).requires_grad_() for t in (x, eye.clone(), torch.zeros(c), eye.clone(),
                                                      torch.zeros(c))]
    return params, dict(pool="avg", act=act, gate=gate)


@pytest.mark.parametrize("fn", list(KINKS) + list(GATE_KINKS))
def test_gradients_at_the_kinks_follow_torch(backend, fn):
    act, gate = (fn, "sigmoid") if fn in KINKS else ("identity", fn)
    values = KINKS.get(fn) or GATE_KINKS[fn]
    device = backend_device(backend)
    params, options = _kink_inputs(values, act, gate, device)
    y = se_kernels.squeeze_excite(*params, backend=backend, **options)
    truth_params, _ = _kink_inputs(values, act, gate, "cpu")
    truth_params = [t.detach().double().requires_grad_() for t in truth_params]
    truth = se_kernels.squeeze_excite_reference(*truth_params, **options)
    g = torch.linspace(-1, 1, y.numel()).view(y.shape)
    grads = torch.autograd.grad(y, params, g.to(device, y.dtype))
    truth_grads = torch.autograd.grad(truth, truth_params, g.double())
    for name, got, want in zip(("x", "w1", "b1", "w2", "b2"), grads, truth_grads):
        # A wrong convention at a kink is off by a whole slope, far outside the rule.
        assert_within_tolerance(f"grad {name}", got, want, zero_ok="a gate saturated at a kink")


ACT_MODULES = {
    "ReLU6": (nn.ReLU6, "relu6"),
    "GELU": (nn.GELU, "gelu"),
    "GELU-tanh": (lambda: nn.GELU(approximate="tanh"), "gelu_tanh"),
    "Hardswish": (nn.Hardswish, "hard_swish"),
    "Mish": (nn.Mish, "mish"),
    "Tanh": (nn.Tanh, "tanh"),
    "Sigmoid": (nn.Sigmoid, "sigmoid"),
    "LeakyReLU": (nn.LeakyReLU, "leaky_relu"),
    "LeakyReLU-0.2": (lambda: nn.LeakyReLU(0.2), "leaky_relu:0.2"),
    "LeakyReLU-0.1": (lambda: nn.LeakyReLU(0.1), "leaky_relu:0.1"),
}


@pytest.mark.parametrize("act", ["leaky_relu:", "leaky_relu:x", "leaky_relu:nan", "leaky:0.2"])
def test_bad_leaky_relu_slope_is_a_clear_error(backend, act):
    x = torch.randn(2, 8, 3, 3, device=backend_device(backend))
    w1, w2 = torch.randn(4, 8, device=x.device), torch.randn(8, 4, device=x.device)
    with pytest.raises(ValueError, match="leaky_relu"):
        se_kernels.squeeze_excite(x, w1, None, w2, act=act, backend=backend)


def test_leaky_relu_slope_reaches_the_kernel_ops(backend):
    """The C++ / Triton ops parse the slope themselves (the op is callable directly)."""
    from se_kernels.ops import backend_ops

    device = backend_device(backend)
    x = torch.randn(2, 8, 3, 3, device=device)
    w1, w2 = torch.randn(4, 8, device=device), torch.randn(8, 4, device=device)
    args = lambda act: (x, w1, None, w2, None, None, "avg", act, "sigmoid", 1.0, "identity")  # noqa: E731
    op = backend_ops(backend).forward
    y_default, y_02 = op(*args("leaky_relu"))[0], op(*args("leaky_relu:0.2"))[0]
    want = se_kernels.squeeze_excite_reference(x, w1, None, w2, act="leaky_relu:0.2")
    torch.testing.assert_close(y_02, want, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(y_default, y_02)
    with pytest.raises(ValueError, match="finite number after the colon"):
        op(*args("leaky_relu:abc"))


@pytest.mark.parametrize("module", list(ACT_MODULES))
def test_converter_maps_activation_modules(module):
    timm_se = pytest.importorskip("timm.layers.squeeze_excite")
    make, name = ACT_MODULES[module]
    torch.manual_seed(0)
    se = timm_se.SEModule(16, rd_channels=8, act_layer=make, gate_layer=nn.Tanh).eval()
    converted = se_kernels.convert_model(nn.Sequential(copy.deepcopy(se)))
    fused = converted[0]
    assert isinstance(fused, se_kernels.convert.FusedSE), converted.se_kernels_summary
    assert (fused.se_spec.act, fused.se_spec.gate) == (name, "tanh")
    x = torch.randn(2, 16, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), se(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["timm:fbnetv3_b", "timm:gcvit_xxtiny", "timm:sedarknet21"])
def test_whole_models_with_new_activations(name):
    """fbnetv3 (hard_swish in the SE bottleneck), gcvit (GELU) and sedarknet21 (LeakyReLU)
    convert fully and exactly (test_convert.check_whole_model)."""
    from test_convert import build, check_whole_model

    check_whole_model(build(name, img_size=64) if "gcvit" in name else build(name))
