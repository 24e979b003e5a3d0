"""ECA / CECA (timm EcaModule, CecaModule): the k-tap op (se_kernels.eca) on every
backend, layout and dtype against the float64 truth, its convolution's backward, and the
converter; the banded [C, C] matrix that gate_stats reads the gate through."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from conftest import assert_within_tolerance, backend_device

import se_kernels
from se_kernels.adapters import channel_conv_matrix
from se_kernels.convert import FusedSE
from se_kernels.eca import ECAFunction
from se_kernels.reference import (apply_gate, channel_conv, channel_conv_tap_grads,
                                  channel_conv_transpose)

DTYPES = (torch.float32, torch.float16, torch.bfloat16)

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
    with torch.no_grad():
        assert_within_tolerance("y eval", converted(x.to(device)), truth)


def test_ecaresnet_whole_model():
    """ecaresnet26t: all 8 EcaModules convert, exactly (test_convert.check_whole_model)."""
    from test_convert import build, check_whole_model

    converted = check_whole_model(build("timm:ecaresnet26t"))
    assert converted.se_kernels_summary.converted["EcaModule"] == 8


@pytest.mark.parametrize("circular", [False, True], ids=["zeros", "circular"])
@pytest.mark.parametrize("k", [1, 3, 7])
def test_channel_conv_backward_is_the_convolutions(circular, k):
    """The reference's transpose and tap gradients (what the kernels are checked against
    and what ECAFunction uses for the taps) against autograd through F.conv1d."""
    pooled = torch.randn(3, 11, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(1, 1, k, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(3, 11, dtype=torch.float64)
    want = torch.autograd.grad(channel_conv(pooled, weight, None, circular), [pooled, weight], grad)
    torch.testing.assert_close(channel_conv_transpose(grad, weight.detach(), circular), want[0],
                               rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(channel_conv_tap_grads(grad, pooled.detach(), k, circular),
                               want[1].reshape(k), rtol=1e-12, atol=1e-12)


def _eca_truth(x, weight, bias, residual, padding, gate, out_act):
    """timm's forward in float64: pool, (F.pad circular,) Conv1d, gate, scale."""
    pad = (weight.shape[-1] - 1) // 2
    y = x.mean((2, 3))[:, None]
    if padding == "circular":
        y = nn.functional.pad(y, (pad, pad), mode="circular")
        pad = 0
    y = nn.functional.conv1d(y, weight, bias, padding=pad)[:, 0]
    out = x * apply_gate(y, gate)[:, :, None, None]
    out = out if residual is None else out + residual
    return torch.relu(out) if out_act == "relu" else out


CASES = {
    "eca-k3": dict(padding="zeros", k=3),
    "ceca-k5-bias": dict(padding="circular", k=5, bias=True),
    "eca-k5-hard_sigmoid-residual-relu": dict(padding="zeros", k=5, gate="hard_sigmoid",
                                             residual=True, out_act="relu"),
    "ceca-k3-tanh-residual": dict(padding="circular", k=3, gate="tanh", residual=True),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_eca_op_matches_float64_truth(backend, layout, dtype, case):
    opts = dict(CASES[case])
    padding, k = opts.pop("padding"), opts.pop("k")
    has_bias, has_residual = opts.pop("bias", False), opts.pop("residual", False)
    gate, out_act = opts.pop("gate", "sigmoid"), opts.pop("out_act", "identity")
    device = backend_device(backend)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    gen = torch.Generator().manual_seed(4)
    rand = lambda *shape: torch.randn(*shape, generator=gen)  # noqa: E731
    x = rand(3, 67, 5, 7).to(dtype).contiguous(memory_format=fmt)
    residual = rand(3, 67, 5, 7).to(dtype).contiguous(memory_format=fmt) if has_residual else None
    g = rand(3, 67, 5, 7).to(dtype).contiguous(memory_format=fmt)
    weight, bias = rand(1, 1, k), (rand(1) if has_bias else None)

    leaves = [t.double().requires_grad_() for t in (x, weight) + ((bias,) if has_bias else ())]
    r64 = residual.double().requires_grad_() if has_residual else None
    truth = _eca_truth(leaves[0], leaves[1], leaves[2] if has_bias else None, r64, padding,
                       gate, out_act)
    want = torch.autograd.grad(truth, leaves + ([r64] if has_residual else []), g.double())

    args = [t.to(device).requires_grad_() for t in (x, weight) + ((bias,) if has_bias else ())]
    rd = residual.to(device).requires_grad_() if has_residual else None
    y = se_kernels.efficient_channel_attention(
        args[0], args[1], args[2] if has_bias else None, padding=padding, gate=gate,
        residual=rd, out_act=out_act, backend=backend)
    assert y.dtype == dtype and y.is_contiguous(memory_format=fmt)
    got = torch.autograd.grad(y, args + ([rd] if has_residual else []), g.to(device))
    assert_within_tolerance("y", y, truth.detach())
    for name, a, t in zip(["x", "weight", "bias", "residual"] if has_bias else
                          ["x", "weight", "residual"], got, want):
        assert_within_tolerance(f"d{name}", a, t)


@pytest.mark.parametrize("out_act", ["identity", "relu"])
def test_eca_empty_batch(backend, out_act):
    """N = 0: empty outputs of the right shape and zero tap gradients, no kernel run."""
    device = backend_device(backend)
    x = torch.randn(0, 16, 4, 4, device=device).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    weight = torch.randn(1, 1, 3, device=device, requires_grad=True)
    residual = torch.randn(0, 16, 4, 4, device=device, requires_grad=True)
    y = se_kernels.efficient_channel_attention(x, weight, residual=residual, out_act=out_act,
                                               backend=backend)
    dx, dw, dr = torch.autograd.grad(y.sum(), [x, weight, residual])
    assert y.shape == dx.shape == dr.shape == (0, 16, 4, 4)
    assert torch.equal(dw, torch.zeros_like(weight))


def test_eca_gradcheck_float64():
    gen = torch.Generator().manual_seed(5)
    t = lambda *shape: torch.randn(*shape, generator=gen, dtype=torch.float64,  # noqa: E731
                                   requires_grad=True)
    for padding, out_act in (("zeros", "identity"), ("circular", "relu")):
        args = (t(2, 7, 3, 2), t(1, 1, 3), t(1), t(2, 7, 3, 2))
        fn = lambda x, w, b, r: ECAFunction.apply(x, w, b, r, padding, "sigmoid", 1.0,  # noqa: E731
                                                  out_act, "reference")
        assert torch.autograd.gradcheck(fn, args)


def test_eca_op_checks_its_arguments():
    x = torch.randn(2, 8, 3, 3)
    with pytest.raises(ValueError, match="k odd"):
        se_kernels.efficient_channel_attention(x, torch.randn(1, 1, 4))
    with pytest.raises(ValueError, match="padding must be one of"):
        se_kernels.efficient_channel_attention(x, torch.randn(1, 1, 3), padding="reflect")
    with pytest.raises(ValueError, match="bias must have one element"):
        se_kernels.efficient_channel_attention(x, torch.randn(1, 1, 3), torch.randn(2))


def test_eca_compiles_with_fullgraph():
    torch._dynamo.reset()
    module = se_kernels.convert_model(nn.Sequential(eca.EcaModule(kernel_size=5)), backend="cpu")
    compiled = torch.compile(module, fullgraph=True)
    x = torch.randn(2, 16, 4, 4, requires_grad=True)
    y = compiled(x)
    torch.testing.assert_close(y, module(x))
    (gx,) = torch.autograd.grad(y.sum(), x)
    (want,) = torch.autograd.grad(module(x).sum(), x)
    torch.testing.assert_close(gx, want)


@pytest.mark.parametrize("name", list(MODULES))
def test_module_loads_timm_checkpoints(backend, name):
    """EfficientChannelAttention takes an EcaModule / CecaModule state_dict as it is and
    gives its output."""
    original = MODULES[name]().eval()
    with torch.no_grad():
        for p in original.parameters():
            p.uniform_(-1, 1)
    ours = se_kernels.EfficientChannelAttention(
        kernel_size=original.conv.kernel_size[0], circular=isinstance(original, eca.CecaModule),
        bias=original.conv.bias is not None, backend=backend)
    ours.load_state_dict(original.state_dict())
    device = backend_device(backend)
    x = torch.randn(2, 24, 5, 3)
    with torch.no_grad():
        torch.testing.assert_close(ours.to(device)(x.to(device)).cpu(), original(x),
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("channels", [16, 64, 256, 2048])
def test_module_sizes_its_kernel_as_timm(channels):
    ours = se_kernels.EfficientChannelAttention(channels)
    assert ours.conv.kernel_size == eca.EcaModule(channels).conv.kernel_size
