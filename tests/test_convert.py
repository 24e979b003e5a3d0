"""convert_model on real timm and torchvision models (random weights, small inputs).

BatchNorm statistics are randomised first: timm zero-initialises the last BN of each
residual branch, which would feed the SE zeros and let a wrong SE pass unnoticed.
A forward hook also checks that every converted SE saw non-zero input.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from conftest import HAS_GPU, assert_close_to_model_truth, backend_device, require_backend

import se_kernels
from se_kernels.convert import FusedResidualBlock, FusedSE

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")

MODELS = [
    "timm:seresnet18", "timm:seresnext26d_32x4d", "timm:efficientnet_b0",
    "timm:mobilenetv3_large_100", "timm:regnety_002", "timm:ese_vovnet19b_dw", "timm:rexnet_100",
    "timm:legacy_seresnet18", "tv:efficientnet_b0", "tv:mobilenet_v3_small", "tv:regnet_y_400mf",
]
# One model per SE type (and the residual epilogue) for the slow Triton interpreter.
TRITON_MODELS = ["timm:seresnet18", "timm:mobilenetv3_large_100", "timm:ese_vovnet19b_dw",
                 "timm:rexnet_100", "tv:mobilenet_v3_small"]
# What each model must convert (SE classes) and fuse (residual blocks).
EXPECTED = {
    "timm:seresnet18": ({"SEModule": 8}, {"BasicBlock": 8}),
    "timm:seresnext26d_32x4d": ({"SEModule": 8}, {"Bottleneck": 8}),
    "timm:efficientnet_b0": ({"SqueezeExcite": 16}, {}),
    "timm:mobilenetv3_large_100": ({"SqueezeExcite": 8}, {}),
    "timm:regnety_002": ({"SEModule": 13}, {}),
    "timm:ese_vovnet19b_dw": ({"EffectiveSEModule": 4}, {}),
    "timm:rexnet_100": ({"SEModule": 13}, {}),
    "timm:legacy_seresnet18": ({"SEModule": 8}, {"SEResNetBlock": 8}),
    "tv:efficientnet_b0": ({"SqueezeExcitation": 16}, {}),
    "tv:mobilenet_v3_small": ({"SqueezeExcitation": 9}, {}),
    "tv:regnet_y_400mf": ({"SqueezeExcitation": 16}, {}),
}


def build(name: str, train: bool = False, **kwargs) -> nn.Module:
    """A model with random weights, randomised BN and no dropout, in eval or train mode
    (kwargs: timm.create_model's, e.g. img_size)."""
    torch.manual_seed(0)
    lib, arch = name.split(":")
    if lib == "timm":
        model = timm.create_model(arch, pretrained=False, drop_rate=0.0, **kwargs)
    else:
        model = getattr(torchvision.models, arch)()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
            if isinstance(m, nn.Dropout):
                m.p = 0.0
            if hasattr(m, "stochastic_depth") and hasattr(m.stochastic_depth, "p"):
                m.stochastic_depth.p = 0.0  # torchvision MBConv
    return model.train(train)


def inputs(device, dtype=torch.float32):
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2)).to(device, dtype)


def convert(model: nn.Module, backend: str) -> nn.Module:
    converted = se_kernels.convert_model(copy.deepcopy(model), backend=backend)

    def check_live(module, args, output):  # the fused SE ran on real data
        assert args[0].abs().max() > 0, "an SE block received all-zero input"

    for m in converted.modules():
        if isinstance(m, FusedSE):
            m.register_forward_hook(check_live)
    return converted


def backends_for(name: str) -> list[str]:
    """Reference and compiled CPU for every model; the emulated CUDA kernels and Triton
    for one per SE type (every model on a GPU, with the real CUDA kernels too)."""
    one_per_type = name in TRITON_MODELS or HAS_GPU
    return (["reference", "cpu"] + (["cuda_sim", "triton"] if one_per_type else [])
            + (["cuda"] if HAS_GPU else []))


EVAL_CASES = [(name, b) for name in MODELS for b in backends_for(name)]
TRAIN_CASES = ([(n, "cpu") for n in MODELS]
               + [(n, b) for n in ("timm:seresnet18", "tv:mobilenet_v3_small")
                  for b in ("triton", "cuda_sim", "cuda")])


@pytest.mark.parametrize("name, backend", EVAL_CASES, ids=[f"{n}-{b}" for n, b in EVAL_CASES])
def test_eval_output_matches(name, backend):
    require_backend(backend)
    device = backend_device(backend)
    original = build(name).to(device)
    converted = convert(original, backend)
    x = inputs(device)
    with torch.no_grad():
        truth = copy.deepcopy(original).double()(x.double())
        assert_close_to_model_truth("logits", converted(x), truth, original(x))
    converts, fuses = EXPECTED[name]
    assert dict(converted.se_kernels_summary.converted) == converts
    assert dict(converted.se_kernels_summary.fused_blocks) == fuses


def _train_grads(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """All parameter gradients of a train-mode step, flattened in parameter order."""
    model.zero_grad()
    model(x).square().mean().backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()])


@pytest.mark.parametrize("name", MODELS)
def test_train_gradients_match_exactly_in_float64(name):
    """The conversion itself (BN folding, residual fusion, shared parameters): float64
    gradients of every parameter equal the original model's to rounding."""
    original = build(name, train=True).double()
    converted = convert(original, "reference")
    x = inputs("cpu", torch.float64)
    want = _train_grads(original, x)
    # Rounding only, relative to the largest gradient: ATen's float64 kernels sum in an
    # order that depends on the CPU, and train-mode BatchNorms over 2 samples amplify it
    # (ReXNet-100 on an Intel Xeon VM: 1.6e-11 at most against a largest gradient of 5.8,
    # one of 4.8M elements past a fixed atol of 1e-12; the reference backend runs ATen
    # ops only). A wrong mapping moves gradients by far more than 1e-11 of the largest.
    torch.testing.assert_close(_train_grads(converted, x), want, rtol=1e-9,
                               atol=1e-11 * want.abs().max().item())


def check_whole_model(original: nn.Module, allowed_left: str = "add+relu") -> nn.Module:
    """A converted copy of an eval-mode model: no SE left unconverted; eval logits with the
    CPU kernels within the whole-model rule; and, converted in train mode on the reference
    backend, float64 gradients of every parameter equal to the original's (the mapping is
    exact), and so are the buffers after that step (BatchNorm statistics). Train-mode
    conversions may leave only modules whose reason contains ``allowed_left``. Returns
    the eval conversion."""
    converted = convert(original, "cpu")
    summary = converted.se_kernels_summary
    assert sum(summary.converted.values()) > 0, summary
    assert not [s for s in summary.skipped if not s[2].startswith("add+relu")], summary
    x = inputs("cpu")
    with torch.no_grad():
        truth = copy.deepcopy(original).double()(x.double())
        assert_close_to_model_truth("logits", converted(x), truth, original(x))
    original64 = copy.deepcopy(original).double().train()
    converted64 = convert(original64, "reference")
    left = [s for s in converted64.se_kernels_summary.skipped if not s[2].startswith("add+relu")]
    assert all(allowed_left in reason for _, _, reason in left), left
    want = _train_grads(original64, x.double())
    # float64 rounding, amplified by train-mode BatchNorms over 2 samples (ReXNet's, in
    # its SE too, reach ~1e-10 of the largest gradient): 1e-9 of it is allowed.
    torch.testing.assert_close(_train_grads(converted64, x.double()), want, rtol=1e-9,
                               atol=1e-9 * want.abs().max().item())
    # BatchNorm statistics (incl. those on SE bottlenecks) after the step, by name
    torch.testing.assert_close(dict(converted64.named_buffers()), dict(original64.named_buffers()),
                               rtol=1e-9, atol=1e-10)
    return converted


def _rounding_sensitivity(model: nn.Module, x: torch.Tensor) -> float:
    """How far one float32 rounding of every SE output moves all gradients (relative L2,
    the larger of two random draws): what rounding alone forces through this network.
    Train-mode BatchNorm over 2 samples of 2x2 maps, and ReLUs whose inputs sit within
    rounding of 0, make some of these models amplify a 1-ulp change to 1e-2."""
    base = _train_grads(model, x)
    worst = 0.0
    for seed in (1, 2):
        gen = torch.Generator().manual_seed(seed)
        noise = lambda m, args, out: out * (1 + 2.0 ** -23 * torch.randn(  # noqa: E731
            out.shape, generator=gen).to(out))
        handles = [m.register_forward_hook(noise) for m in model.modules()
                   if isinstance(m, FusedSE)]
        moved = _train_grads(model, x)
        for h in handles:
            h.remove()
        worst = max(worst, ((moved - base).norm() / base.norm()).item())
    return worst


@pytest.mark.parametrize("name, backend", TRAIN_CASES, ids=[f"{n}-{b}" for n, b in TRAIN_CASES])
def test_train_gradients_match_in_float32(name, backend):
    """fp32 kernels in a whole train-mode model: the relative L2 error of all gradients
    together may be twice eager's, plus twice what one rounding of the SE outputs moves
    them (measured on this model), plus 1e-4. (Per element it is ill-posed: a ReLU can
    flip either way.)"""
    require_backend(backend)
    device = backend_device(backend)
    original = build(name, train=True).to(device)
    converted = convert(original, backend)
    x = inputs(device)
    truth = _train_grads(copy.deepcopy(original).double(), x.double()).cpu()
    eager = _train_grads(original, x).double().cpu()
    got = _train_grads(converted, x).double().cpu()

    def rel(g):
        return ((g - truth).norm() / truth.norm()).item()

    sensitivity = _rounding_sensitivity(converted, x)
    bound = 2 * rel(eager) + 2 * sensitivity + 1e-4
    assert bound < 0.25, f"bound {bound:.2e}: the model is too ill-conditioned to test"
    assert rel(got) <= bound, (f"grad error {rel(got):.2e}, eager {rel(eager):.2e}, "
                               f"rounding sensitivity {sensitivity:.2e}")


def test_state_dict_and_optimizer_survive_conversion():
    model = build("timm:seresnet18")
    before = {k: v for k, v in model.state_dict(keep_vars=True).items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    se_kernels.convert_model(model, backend="reference")
    after = model.state_dict(keep_vars=True)
    assert list(after) == list(before)
    assert all(after[k] is before[k] for k in before), "conversion must keep the same tensors"
    assert any(isinstance(m, FusedResidualBlock) for m in model.modules())

    w = model.layer1[0].se.fc1.weight
    w_before = w.detach().clone()
    model.train()
    model(inputs("cpu")).square().mean().backward()
    opt.step()
    assert not torch.equal(w.detach(), w_before), "the optimizer must update the shared tensor"
    assert any(p is w for group in opt.param_groups for p in group["params"])

    fresh = build("timm:seresnet18")
    fresh.load_state_dict(model.state_dict())  # a checkpoint saved after conversion loads before


def test_compile_converted_model():
    model = convert(build("timm:mobilenetv3_large_100"), "reference")
    x = inputs("cpu")
    # aot_eager for CPU tensors: Inductor would spend minutes compiling C++ here.
    compiled = torch.compile(model, fullgraph=False,
                             backend="inductor" if x.is_cuda else "aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-5)


def test_batchnorm_in_train_mode_converts():
    """ReXNet's SE bottleneck BatchNorm with batch statistics runs through the split ops."""
    model = se_kernels.convert_model(build("timm:rexnet_100", train=True), backend="reference")
    summary = model.se_kernels_summary
    assert summary.converted == {"SEModule": 13} and not summary.skipped, summary


def test_converted_in_eval_then_trained_uses_batch_statistics():
    """Converted in eval (BatchNorm folded), then trained: the BatchNorm uses batch
    statistics through the split ops; outputs and running statistics match the original
    (float64: a 2-sample train-mode ReXNet amplifies float32 rounding to ~1e-4)."""
    original = build("timm:rexnet_100").double()
    converted = se_kernels.convert_model(copy.deepcopy(original), backend="reference")
    original.train()
    converted.train()
    x = inputs("cpu", torch.float64)
    torch.testing.assert_close(converted(x), original(x), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(dict(converted.named_buffers()), dict(original.named_buffers()),
                               rtol=1e-9, atol=1e-10)


def test_unmappable_act_is_left_alone():
    from timm.layers.squeeze_excite import SEModule

    model = nn.Sequential(nn.Conv2d(3, 16, 3), SEModule(16, act_layer=nn.ELU))
    x = torch.randn(2, 3, 9, 9)
    want = model(x)
    se_kernels.convert_model(model)
    assert isinstance(model[1], SEModule)
    (path, cls, why), = model.se_kernels_summary.skipped
    assert path == "1" and cls == "SEModule" and "ELU" in why
    torch.testing.assert_close(model(x), want)


def test_drop_path_blocks_keep_their_add():
    """Stochastic depth between the SE and the add: those blocks keep their own add."""
    model = timm.create_model("seresnet18", pretrained=False, drop_path_rate=0.1)
    with_drop_path = [n for n, m in model.named_modules()
                      if type(m).__name__ == "BasicBlock" and m.drop_path is not None]
    assert with_drop_path  # timm's schedule gives the first block rate 0, the rest > 0
    se_kernels.convert_model(model)
    summary = model.se_kernels_summary
    assert sum(summary.converted.values()) == 8
    assert summary.fused_blocks["BasicBlock"] == 8 - len(with_drop_path)
    assert sorted(path for path, _, _ in summary.skipped) == sorted(with_drop_path)
    assert all("drop_path" in why for _, _, why in summary.skipped)


def test_bad_backend_name():
    with pytest.raises(ValueError, match="backend must be"):
        se_kernels.convert_model(nn.Identity(), backend="gpu")
