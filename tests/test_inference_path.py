"""The modules' inference path (se_kernels/inference_path.py): taken when no graph is
built, bit-identical to the general path, and rebuilt whenever a parameter changes."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from conftest import backend_device

import se_kernels
from se_kernels.convert import FusedSE

timm_se = pytest.importorskip("timm.layers.squeeze_excite")

C, R = 24, 8


def _se_module(backend):
    return se_kernels.SqueezeExcite(C, rd_channels=R, backend=backend)


def _fused_with_batchnorm(backend):
    """A converted timm SEModule whose bottleneck BatchNorm is folded into FC1 in eval."""
    model = nn.Sequential(timm_se.SEModule(C, rd_channels=R, norm_layer=nn.BatchNorm2d)).eval()
    fused = se_kernels.convert_model(model, backend=backend)[0]
    assert isinstance(fused, FusedSE) and fused.se_spec.bn is not None
    with torch.no_grad():  # running statistics that matter
        fused.bn.running_mean.uniform_(-0.5, 0.5)
        fused.bn.running_var.uniform_(0.5, 2.0)
    return fused


MODULES = {"SqueezeExcite": _se_module, "FusedSE+bn": _fused_with_batchnorm}


@pytest.fixture(params=list(MODULES))
def make(request):
    return MODULES[request.param]


def _x(device, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, C, 5, 3, generator=g).to(device=device, dtype=dtype)


def _general(module, x):
    """The general path's output (SEFunction, the forward op): a graph is being built."""
    with torch.enable_grad():
        return module(x.detach().requires_grad_()).detach()


def _fast(module, x):
    with torch.no_grad():
        y = module(x)
    assert y.grad_fn is None
    return y


def _perturb(module):
    """New values for every parameter (what a checkpoint or an optimizer step brings)."""
    sd = {k: v + 0.25 * torch.randn_like(v) if v.is_floating_point() else v
          for k, v in module.state_dict().items()}
    return sd


def test_taken_without_grad_and_bit_identical(backend, make):
    module = make(backend).to(backend_device(backend)).eval()
    x = _x(backend_device(backend))
    y = _fast(module, x)
    assert module._inference.filled, "no_grad call did not take the inference path"
    assert torch.equal(y, _general(module, x))


def test_not_taken_when_grad_is_needed(make):
    module = make("cpu").eval()
    y = module(_x("cpu").requires_grad_())
    assert y.grad_fn is not None and not module._inference.filled


def _load_state_dict(module, x):
    module.load_state_dict(_perturb(module))
    return x


def _optimizer_step(module, x):
    opt = torch.optim.SGD(module.parameters(), lr=0.5)
    module(x.detach().requires_grad_()).square().sum().backward()
    opt.step()  # in place: the same tensors, storage and address; a new version
    return x


def _reassign(module, x):
    fc1 = module._modules[module.se_spec.fc1 if isinstance(module, FusedSE) else "fc1"]
    fc1.weight = nn.Parameter(fc1.weight.detach() * -1.5)
    return x


def _to_half_and_back(module, x):
    """New storages of the same dtype and the same Parameter objects (``.data`` swapped):
    only their addresses tell the cache that its views are stale."""
    module.to(torch.float16).to(torch.float32)
    with torch.no_grad():
        for p in module.parameters():
            p.mul_(0.5)
    return x


def _to_dtype(module, x):
    module.to(torch.bfloat16)
    return x.bfloat16()


CHANGES = {"load_state_dict": _load_state_dict, "optimizer_step": _optimizer_step,
           "reassign_parameter": _reassign, "to_half_and_back": _to_half_and_back,
           "to_dtype": _to_dtype}


@pytest.mark.parametrize("change", list(CHANGES))
def test_rebuilt_when_parameters_change(backend, make, change):
    device = backend_device(backend)
    module = make(backend).to(device).eval()
    x = _x(device)
    before = _fast(module, x)
    x = CHANGES[change](module, x)
    module.eval()
    after = _fast(module, x)
    assert after.dtype == x.dtype
    assert torch.equal(after, _general(module, x))
    if after.dtype == before.dtype:
        assert not torch.equal(after, before), "the change did not reach the output"


def test_rebuilt_across_meta_and_back(make):
    """.to("meta") and back (to_empty + load_state_dict): never the CPU cache on meta
    tensors, never the old storage afterwards."""
    module = make("auto").eval()
    x = _x("cpu")
    _fast(module, x)
    state = _perturb(module)
    module.to("meta")
    y_meta = _fast(module, x.to("meta"))
    assert y_meta.device.type == "meta" and y_meta.shape == x.shape
    module.to_empty(device="cpu")
    module.load_state_dict(state)
    module.eval()
    fresh = copy.deepcopy(module)
    fresh._inference = type(module._inference)()
    assert torch.equal(_fast(module, x), _general(fresh, x))


def test_bn_running_statistics_update_is_seen(backend):
    """A train-mode pass moves the folded BatchNorm's statistics in place."""
    device = backend_device(backend)
    module = _fused_with_batchnorm(backend).to(device).eval()
    x = _x(device)
    before = _fast(module, x)
    module.train()
    with torch.no_grad():
        module(_x(device, seed=1) * 3)  # batch statistics: the original, unfused code
    module.eval()
    after = _fast(module, x)
    assert not torch.equal(after, before)
    assert torch.equal(after, _general(module, x))


def test_compiled_module_follows_parameter_updates(make):
    """Under torch.compile the plain path is traced (no cache baked into the graph)."""
    module = make("cpu").eval()
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    x = _x("cpu")
    torch._dynamo.reset()
    with torch.no_grad():
        first = compiled(x)
    torch.testing.assert_close(first, _general(module, x), rtol=1e-6, atol=1e-6)
    module.load_state_dict(_perturb(module))
    with torch.no_grad():
        second = compiled(x)
    torch.testing.assert_close(second, _general(module, x), rtol=1e-6, atol=1e-6)
    assert not torch.allclose(first, second)
