"""SE with a batch-statistics BatchNorm on the bottleneck (ReXNet's SE in training): the
split ops on every backend against the float64 truth, through SEBatchNormFunction and
through the converter, with torch's BatchNorm bookkeeping (running statistics, momentum,
num_batches_tracked)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import LAYOUTS, assert_within_tolerance, backend_device

import se_kernels
from se_kernels.batchnorm_se import SEBatchNormFunction
from se_kernels.convert import FusedSE
from se_kernels.options import ACTS
from se_kernels.reference import apply_act, apply_gate
from se_kernels.split_ops import TABLE, split_ops

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
OPTIONS = {
    "relu-sigmoid": dict(act="relu", gate="sigmoid"),
    "silu-hard_sigmoid-residual": dict(act="silu", gate="hard_sigmoid", residual=True),
    "gelu-tanh-residual-relu": dict(act="gelu", gate="tanh", residual=True, out_act="relu"),
}
N, C, H, W, R = 5, 37, 5, 3, 6
MOMENTUM, EPS = 0.1, 1e-5


def _params(dtype):
    g = torch.Generator().manual_seed(1)
    u = lambda *shape, lo=-1.0, hi=1.0: (torch.rand(*shape, generator=g) * (hi - lo) + lo).to(dtype)
    return dict(w1=u(R, C), b1=u(R), bn_w=u(R, lo=0.5, hi=1.5), bn_b=u(R), w2=u(C, R), b2=u(C),
                mean=u(R, lo=-0.1, hi=0.1), var=u(R, lo=0.5, hi=1.5))


def _truth(x, p, residual, act, gate, out_act):
    """The eager composition in float64: pool, FC1, BatchNorm (training), act, FC2, gate."""
    d = lambda t: t.detach().double().requires_grad_()
    leaves = {k: d(v) for k, v in p.items() if k not in ("mean", "var")}
    xd = d(x)
    rd = d(residual) if residual is not None else None
    mean, var = p["mean"].double().clone(), p["var"].double().clone()
    z1 = xd.mean((2, 3)) @ leaves["w1"].t() + leaves["b1"]
    zn = F.batch_norm(z1, mean, var, leaves["bn_w"], leaves["bn_b"], True, MOMENTUM, EPS)
    s = apply_gate(apply_act(zn, act) @ leaves["w2"].t() + leaves["b2"], gate)
    y = xd * s[:, :, None, None]
    if rd is not None:
        y = y + rd
    if out_act == "relu":
        y = torch.relu(y)
    return y, xd, rd, leaves, mean, var


@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_matches_float64_truth(backend, layout, dtype, option):
    opts = dict(OPTIONS[option])
    has_residual = opts.pop("residual", False)
    out_act = opts.pop("out_act", "identity")
    device = backend_device(backend)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = torch.randn(N, C, H, W).to(dtype).contiguous(memory_format=fmt)
    residual = torch.randn(N, C, H, W).to(dtype).contiguous(memory_format=fmt) if has_residual else None
    g = torch.randn(N, C, H, W).to(dtype).contiguous(memory_format=fmt)
    p = _params(torch.float32)  # module weights stay float32 (autocast-style mixed precision)
    y_t, xd, rd, leaves, mean_t, var_t = _truth(x, p, residual, out_act=out_act, **opts)
    names = ["x", "w1", "b1", "bn_w", "bn_b", "w2", "b2"] + (["residual"] if has_residual else [])
    want = torch.autograd.grad(y_t, [xd, *leaves.values()] + ([rd] if has_residual else []),
                               g.double())

    dev = {k: v.to(device).requires_grad_(k not in ("mean", "var")) for k, v in p.items()}
    xk = x.to(device).requires_grad_()
    rk = residual.to(device).requires_grad_() if has_residual else None
    y = se_kernels.squeeze_excite_batchnorm(
        xk, dev["w1"], dev["b1"], dev["bn_w"], dev["bn_b"], dev["mean"], dev["var"], dev["w2"],
        dev["b2"], momentum=MOMENTUM, eps=EPS, residual=rk, out_act=out_act, backend=backend, **opts)
    assert y.dtype == dtype and y.is_contiguous(memory_format=fmt)
    got = torch.autograd.grad(y, [xk] + [dev[k] for k in names[1:7]] + ([rk] if has_residual else []),
                              g.to(device))
    assert_within_tolerance("y", y, y_t.detach())
    for name, a, t in zip(names, got, want):
        if name == "b1":  # the BatchNorm subtracts the batch mean: db1 is zero up to rounding
            assert a.abs().max().item() <= 1e-5 * want[1].abs().max().item(), a
            continue
        assert_within_tolerance(f"d{name}", a, t)
    assert_within_tolerance("running_mean", dev["mean"], mean_t)
    assert_within_tolerance("running_var", dev["var"], var_t)


def test_gradcheck_float64():
    """Every input's gradient, by finite differences, through the reference split ops."""
    g = torch.Generator().manual_seed(2)
    t = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)
    x, w1, b1, bn_w, bn_b, w2, b2, res = t(4, 5, 3, 2), t(3, 5), t(3), t(3), t(3), t(5, 3), t(5), t(4, 5, 3, 2)
    for act, gate, out_act in (("silu", "sigmoid", "identity"), ("tanh", "tanh", "relu")):
        fn = lambda *a: SEBatchNormFunction.apply(*a[:5], None, None, *a[5:], 0.1, 1e-5, act,
                                                  gate, 1.0, out_act, "reference")
        assert torch.autograd.gradcheck(fn, (x, w1, b1, bn_w, bn_b, w2, b2, res))


# two-fc: the BatchNorm path's use; no-fc and taps (circular): ECA's.
@pytest.mark.parametrize("mode", ["two-fc", "no-fc", "taps"])
@pytest.mark.parametrize("name", ["split_squeeze", "split_excite", "split_squeeze_backward",
                                  "split_excite_backward"])
def test_split_ops_opcheck(backend, name, mode):
    if backend not in TABLE:
        pytest.skip(f"{backend} has no split ops here")
    device = backend_device(backend)
    with_fc = mode == "two-fc"
    x = torch.randn(3, 9, 4, 5, device=device)
    w1 = torch.randn(4, 9, device=device) if with_fc else None
    w2 = torch.randn(9, 4, device=device) if with_fc else None
    z1 = torch.randn(3, 4 if with_fc else 9, device=device)
    pooled, logits = torch.randn(3, 9, device=device), torch.randn(3, 9, device=device)
    grad_logits = torch.randn(3, 9, device=device)
    taps = (torch.randn(5, device=device), torch.randn(1, device=device), True) if mode == "taps" else ()
    args = {
        "split_squeeze": (x, w1),
        "split_excite": (x, pooled, z1, w2, None, torch.randn_like(x), "relu", "sigmoid", 1.0,
                         "relu", *taps),
        "split_squeeze_backward": (torch.randn_like(x), x, torch.randn_like(x), w2, logits,
                                   "sigmoid", 1.0, "relu"),
        "split_excite_backward": (torch.randn_like(x), x, torch.randn_like(x), w1, logits,
                                  grad_logits, z1, True, "sigmoid", 1.0, "relu",
                                  *(taps[:1] + taps[2:])),
    }[name]
    op = getattr(split_ops(backend), name.removeprefix("split_"))
    torch.library.opcheck(op, args)
    if backend != "reference":  # the same values as the reference ops, to float32 rounding
        want = getattr(split_ops("reference"), name.removeprefix("split_"))(*args)
        for got, ref in zip(op(*args), want):
            torch.testing.assert_close(got, ref.to(got.dtype), rtol=1e-5, atol=1e-5)


def test_split_ops_check_their_inputs(backend):
    if backend not in TABLE:
        pytest.skip(f"{backend} has no split ops here")
    ops = split_ops(backend)
    device = backend_device(backend)
    x = torch.randn(3, 9, 4, 5, device=device)
    with pytest.raises(ValueError, match=r"z1 must be \[3, 4\]"):
        ops.excite(x, torch.randn(3, 9, device=device), torch.randn(3, 5, device=device),
                   torch.randn(9, 4, device=device), None, None, "relu", "sigmoid", 1.0, "identity")
    with pytest.raises(ValueError, match="w1 must have shape"):
        ops.squeeze(x, torch.randn(4, 8, device=device))
    v = torch.randn(3, 9, device=device)
    with pytest.raises(ValueError, match="taps must be 1-D of odd size"):
        ops.excite(x, v, v, None, None, None, "relu", "sigmoid", 1.0, "identity",
                   torch.randn(4, device=device))
    with pytest.raises(ValueError, match="taps_bias must have one element"):
        ops.excite(x, v, v, None, None, None, "relu", "sigmoid", 1.0, "identity",
                   torch.randn(3, device=device), torch.randn(2, device=device))
    with pytest.raises(ValueError, match="take the place of the FC weights"):
        ops.excite_backward(x, x, None, torch.randn(4, 9, device=device), v, v,
                            torch.randn(3, 4, device=device), False, "sigmoid", 1.0, "identity",
                            torch.randn(3, device=device))


def _rexnet_se(momentum=0.1, channels=C):
    layers = pytest.importorskip("timm.layers")
    se = layers.SEModule(channels, rd_channels=R, norm_layer=nn.BatchNorm2d, act_layer=nn.ReLU)
    se.bn.momentum = momentum
    with torch.no_grad():
        for p in se.parameters():
            p.uniform_(-1, 1)
    return se.train()


def _check_train_step(run, converted: nn.Module, original: nn.Module, x: torch.Tensor) -> None:
    """One training step of ``run`` (the converted module, or a compiled wrapper of it)
    against the original: output, gradients of x and every parameter, then the
    BatchNorm's buffers."""
    x.requires_grad_()
    y, y_ref = run(x), original(x)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-5)
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, [x, *converted.parameters()], g)
    want = torch.autograd.grad(y_ref, [x, *original.parameters()], g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    for name, buf in original.named_buffers():
        torch.testing.assert_close(converted.get_buffer(name), buf, rtol=1e-5, atol=1e-6,
                                   msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("momentum", [0.1, None])
def test_converted_module_trains_like_the_original(backend, momentum):
    """Two training steps of timm's SEModule with a BatchNorm: outputs, gradients and the
    BatchNorm's buffers (running statistics, num_batches_tracked) match the original."""
    device = backend_device(backend)
    original = _rexnet_se(momentum).to(device)
    converted = se_kernels.convert_model(nn.Sequential(copy.deepcopy(original)), backend=backend)
    assert isinstance(converted[0], FusedSE), converted.se_kernels_summary
    assert not converted.se_kernels_summary.skipped
    for _ in range(2):
        _check_train_step(converted, converted[0], original, torch.randn(N, C, H, W, device=device))


def test_batch_of_one_raises_like_torch():
    se = se_kernels.convert_model(nn.Sequential(_rexnet_se()), backend="reference")
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        se(torch.randn(1, C, 3, 3))


def test_eval_mode_still_folds(backend):
    """In eval the BatchNorm uses its running statistics: folded into FC1 as before."""
    device = backend_device(backend)
    original = _rexnet_se().eval().to(device)
    converted = se_kernels.convert_model(nn.Sequential(copy.deepcopy(original)), backend=backend)
    x = torch.randn(2, C, 4, 4, device=device)
    with torch.no_grad():
        torch.testing.assert_close(converted(x), original(x), rtol=1e-4, atol=1e-5)
    assert converted[0].bn.num_batches_tracked.item() == 0


def test_avgmax_with_batch_statistics_is_left_alone():
    layers = pytest.importorskip("timm.layers")
    se = layers.SEModule(C, rd_channels=R, norm_layer=nn.BatchNorm2d, add_maxpool=True).train()
    model = se_kernels.convert_model(nn.Sequential(se), backend="reference")
    assert [why for _, _, why in model.se_kernels_summary.skipped] == [
        "its BatchNorm uses batch statistics, which the fused kernels run between their launches "
        "only with average pooling and two FCs"]


@pytest.mark.parametrize("act", list(ACTS) + ["leaky_relu:0.2"])
def test_activation_backward_is_torchs(act):
    """The act' used between the split ops: torch's own gradient, kinks included."""
    from se_kernels.batchnorm_se import act_backward

    z = torch.cat([torch.randn(200, dtype=torch.float64) * 4,
                   torch.tensor([-3.0, 0.0, 3.0, 6.0], dtype=torch.float64)]).requires_grad_()
    g = torch.randn_like(z)
    (want,) = torch.autograd.grad(apply_act(z, act), z, g)
    torch.testing.assert_close(act_backward(g, z.detach(), act), want, rtol=1e-12, atol=1e-12)


def test_compiles_with_fullgraph():
    """torch.compile(fullgraph=True) of a converted train-mode SE with its BatchNorm:
    output, gradients and the BatchNorm's buffers as eager's."""
    torch._dynamo.reset()
    original = _rexnet_se()
    model = se_kernels.convert_model(nn.Sequential(copy.deepcopy(original)), backend="cpu")
    _check_train_step(torch.compile(model, fullgraph=True), model[0], original,
                      torch.randn(N, C, H, W))
