"""The models e2e times beside the original: which variants each mode gets, and what the
ablation copies (without SE, pool+scale, pool+scale+weights, two-launch floor) put where
the SE modules were."""

from __future__ import annotations

import argparse

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import se_kernels
from benchmarks import e2e
from se_kernels.adapters import is_known_se

timm = pytest.importorskip("timm")


def _args() -> argparse.Namespace:
    return argparse.Namespace(device="cpu", dtype="float32", backend="auto", no_compile=True,
                              input_act_bound=False)


def _se_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for m in model.modules() if is_known_se(m) for p in m.parameters())


@pytest.mark.parametrize("mode, floor", [("inference", "pool+scale+weights"),
                                         ("train", "two-launch floor")])
def test_variants_per_mode(mode, floor):
    labels = [label for label, _ in e2e.variants("mobilenetv3_large_100", mode, _args())]
    assert labels == ["original", "se_kernels", "without SE", "pool+scale only", floor]


def test_pool_scale_and_weights_reads_a_copy_of_every_se_parameter():
    original = e2e.build("mobilenetv3_large_100", _args()).eval()
    floor = e2e.replace_se(original, e2e.PoolScaleAndWeights)
    stand_ins = [m for m in floor.modules() if isinstance(m, e2e.PoolScaleAndWeights)]
    assert len(stand_ins) == sum(is_known_se(m) for m in original.modules()) == 8
    assert sum(m.params.numel() for m in stand_ins) == _se_params(original) > 0
    assert not any(is_known_se(m) for m in floor.modules())
    originals = {p.data_ptr() for p in original.parameters()}
    assert all(m.params.data_ptr() not in originals for m in stand_ins)  # copies, read cold alike


def test_pool_scale_and_weights_output_is_pool_and_scale():
    se = timm.layers.SEModule(24, rd_channels=8)
    x = torch.randn(2, 24, 5, 3).contiguous(memory_format=torch.channels_last)
    y = e2e.PoolScaleAndWeights(se)(x)
    torch.testing.assert_close(y, x * x.mean((2, 3), keepdim=True), rtol=0, atol=0)
    torch.testing.assert_close(e2e.PoolScaleAndWeights(se).params,
                               torch.cat([p.reshape(-1) for p in se.parameters()]), rtol=0, atol=0)


class _OpLog(TorchDispatchMode):
    """Records (op, numel of its first tensor argument) for every ATen op it sees."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        first = next((a for a in args if isinstance(a, torch.Tensor)), None)
        self.calls.append((func.overloadpacket.__name__, None if first is None else first.numel()))
        return func(*args, **(kwargs or {}))


def test_pool_scale_and_weights_reads_its_parameters_every_call():
    stand_in = e2e.PoolScaleAndWeights(timm.layers.SEModule(24, rd_channels=8))
    x = torch.randn(2, 24, 5, 3)
    for _ in range(2):
        with torch.no_grad(), _OpLog() as log:
            stand_in(x)
        assert ("sum", stand_in.params.numel()) in log.calls


@pytest.mark.parametrize("channels_last", [False, True])
def test_two_launch_floor_makes_the_fused_passes(channels_last):
    # Forward: the pool and the scale; backward: one read of g and x together (a dot over
    # the whole tensors, as flat views: no copy), then g * s. dx is g * s, nothing more.
    stand_in = e2e.TwoLaunchFloor(timm.layers.SEModule(24, rd_channels=8))
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(2, 24, 5, 3).contiguous(memory_format=fmt).requires_grad_()
    g = torch.randn(2, 24, 5, 3).contiguous(memory_format=fmt)
    with _OpLog() as log:
        y = stand_in(x)
    s = x.detach().mean((2, 3), keepdim=True)
    torch.testing.assert_close(y, x.detach() * s, rtol=0, atol=0)
    assert ("sum", stand_in.params.numel()) in log.calls
    with _OpLog() as log:
        (dx,) = torch.autograd.grad(y, x, g)
    torch.testing.assert_close(dx, g * s, rtol=0, atol=0)
    ops = [name for name, _ in log.calls]
    assert ("dot", x.numel()) in log.calls and "mul" in ops
    assert not {"clone", "contiguous", "copy_", "_to_copy"} & set(ops)  # flat views only
    assert e2e._flat(g).data_ptr() == g.data_ptr() and e2e._flat(g).numel() == g.numel()


def test_input_act_bound_is_opt_in_and_only_where_an_act_feeds_se():
    args = _args()
    args.input_act_bound = True
    labels = [label for label, _ in e2e.variants("efficientnet_b0", "train", args)]
    assert labels == ["original", "se_kernels", "se_kernels, no input act", "without SE",
                      "pool+scale only", "two-launch floor"]
    # SE-ResNet's SE module follows a BatchNorm with no activation: nothing to drop.
    assert "se_kernels, no input act" not in [label for label, _ in e2e.variants("seresnet50", "train", args)]


@pytest.mark.parametrize("name, blocks", [("efficientnet_b0", 16), ("mobilenetv3_large_100", 8)])
def test_drop_input_act_feeds_each_se_module_its_pre_activation(name, blocks):
    converted = se_kernels.convert_model(e2e.build(name, _args()).eval())
    bound, dropped = e2e.drop_input_act(converted)
    assert dropped == blocks
    pairs = [(a, b) for a, b in zip(converted.modules(), bound.modules())
             if type(a).__name__ in e2e.INPUT_NORM_ACT and not isinstance(a.se, torch.nn.Identity)]
    assert len(pairs) == blocks
    for block, bound_block in pairs:
        norm = getattr(block, e2e.INPUT_NORM_ACT[type(block).__name__])
        assert not isinstance(norm.act, torch.nn.Identity)  # the converted model is untouched
        seen = {}

        def keep(key):  # a pre-hook that returns None (a value would replace the input)
            return lambda module, inputs: seen.__setitem__(key, inputs[0].clone())

        # Pre-hooks, and a copy: the activation runs in place.
        norm.act.register_forward_pre_hook(keep("pre_act"))
        bound_block.se.register_forward_pre_hook(keep("se_input"))
        first_conv = next(m for m in block.modules() if isinstance(m, torch.nn.Conv2d))
        x = torch.randn(2, first_conv.in_channels, 12, 12)
        with torch.no_grad():
            block(x)
            bound_block(x)
        torch.testing.assert_close(seen["se_input"], seen["pre_act"], rtol=0, atol=0)
