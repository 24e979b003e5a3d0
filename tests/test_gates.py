"""gate_stats and fold_static_gates (se_kernels/gates.py)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import se_kernels
from se_kernels.gates import FoldedGate, GateStats

C = 6


def _se(constant: bool = False, seed: int = 0) -> se_kernels.SqueezeExcite:
    """An SE layer; with constant=True its FC2 weight is zero, so its gate is
    sigmoid(b2) whatever the input."""
    torch.manual_seed(seed)
    se = se_kernels.SqueezeExcite(C, rd_channels=3)
    if constant:
        with torch.no_grad():
            se.fc2.weight.zero_()
            se.fc2.bias.uniform_(-2, 2)
    return se


def _bn() -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(C).eval()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2)
    return bn


def _batches(n=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(4, C, 5, 5, generator=g) for _ in range(n)]


def test_statistics_match_a_hand_computation():
    model = nn.Sequential(nn.Conv2d(C, C, 1), _se()).eval()
    xs = _batches()
    labels = [torch.tensor([0, 1, 0, 2]), torch.tensor([1, 1, 2, 0]), torch.tensor([2, 0, 0, 1])]
    stats = se_kernels.gate_stats(model, xs, labels=labels)
    assert list(stats.layers) == ["1"]
    se = model[1]
    with torch.no_grad():  # by hand: the gate of every sample, in float64
        gates = torch.cat([torch.sigmoid(se.fc2(torch.relu(se.fc1(model[0](x).mean((2, 3), keepdim=True)))))
                           .flatten(1) for x in xs]).double()
    layer = stats.layers["1"]
    assert layer.samples == 12 and layer.channels == C
    torch.testing.assert_close(torch.tensor(layer.mean, dtype=torch.float64), gates.mean(0), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(torch.tensor(layer.std, dtype=torch.float64), gates.std(0, unbiased=False), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(torch.tensor(layer.min, dtype=torch.float64), gates.amin(0), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(torch.tensor(layer.max, dtype=torch.float64), gates.amax(0), rtol=1e-6, atol=1e-7)
    all_labels = torch.cat(labels)
    for label in (0, 1, 2):
        torch.testing.assert_close(torch.tensor(layer.class_mean[label], dtype=torch.float64),
                                   gates[all_labels == label].mean(0), rtol=1e-6, atol=1e-7)
    expected_dev = torch.maximum(gates.amax(0) - gates.mean(0), gates.mean(0) - gates.amin(0)).max()
    assert layer.deviation == pytest.approx(expected_dev.item(), rel=1e-5)


def test_stats_save_load_and_plot(tmp_path):
    model = nn.Sequential(nn.Conv2d(C, C, 1), _se()).eval()
    stats = se_kernels.gate_stats(model, _batches(), labels=[torch.tensor([0, 1, 0, 1])] * 3)
    stats.save(tmp_path / "s.json")
    loaded = GateStats.load(tmp_path / "s.json")
    assert loaded.layers == stats.layers
    stats.plot_spread(tmp_path / "spread.png")
    stats.plot_classes(["1"], tmp_path / "classes.png")
    assert (tmp_path / "spread.png").stat().st_size > 0 and (tmp_path / "classes.png").stat().st_size > 0


def test_gate_stats_leave_no_hooks_and_restore_the_mode():
    model = nn.Sequential(nn.Conv2d(C, C, 1), _se()).train()
    se_kernels.gate_stats(model, _batches(1))
    assert model.training and not model[1]._forward_hooks


FOLD_CASES = {
    # (model, expected target): BN before the SE, conv after it, neither (a multiply)
    "bn": (lambda: nn.Sequential(nn.Conv2d(C, C, 3, padding=1), _bn(), _se(constant=True)), "bn"),
    "conv": (lambda: nn.Sequential(nn.ReLU(), _se(constant=True), nn.Conv2d(C, 4, 3, padding=1)), "conv"),
    "multiply": (lambda: nn.Sequential(nn.Conv2d(C, C, 1), _se(constant=True), nn.ReLU()), "multiply"),
}


@pytest.mark.parametrize("case", list(FOLD_CASES))
def test_fold_is_exact_for_constant_gates(case):
    make, target = FOLD_CASES[case]
    model = make().eval()
    original = copy.deepcopy(model)
    xs = _batches()
    stats = se_kernels.gate_stats(model, xs)
    assert next(iter(stats.layers.values())).deviation < 1e-6
    summary = se_kernels.fold_static_gates(model, stats, tol=1e-3)
    assert [kind for kind, _, _ in summary.folded.values()] == [target]
    assert summary.parameters_removed == sum(p.numel() for p in original[1 if case != "bn" else 2].parameters())
    folded = [m for m in model.modules() if isinstance(m, FoldedGate)]
    assert len(folded) == 1 and (folded[0].scale is None) == (target != "multiply")
    x = torch.randn(2, C, 7, 7)
    with torch.no_grad():
        torch.testing.assert_close(model(x), original(x), rtol=1e-5, atol=1e-6)


def test_fold_never_touches_a_layer_at_or_above_tol():
    model = nn.Sequential(nn.Conv2d(C, C, 3, padding=1), _bn(), _se()).eval()
    original = copy.deepcopy(model)
    stats = se_kernels.gate_stats(model, _batches())
    deviation = stats.layers["2"].deviation
    assert deviation > 1e-3
    summary = se_kernels.fold_static_gates(model, stats, tol=deviation)
    assert not summary.folded and "2" in summary.kept and "tol" in summary.kept["2"]
    for (k, a), b in zip(model.state_dict().items(), original.state_dict().values()):
        assert torch.equal(a, b), k
    assert isinstance(model[2], se_kernels.SqueezeExcite)


@pytest.mark.parametrize("case", list(FOLD_CASES))
def test_revert_restores_the_model(case):
    make, _ = FOLD_CASES[case]
    model = make().eval()
    original = copy.deepcopy(model)
    se_kernels.fold_static_gates(model, se_kernels.gate_stats(model, _batches()), tol=1.0)
    reverted = se_kernels.revert_model(model)
    assert [type(m) for m in reverted.modules()] == [type(m) for m in original.modules()]
    for (k, a), b in zip(reverted.state_dict().items(), original.state_dict().values()):
        assert torch.equal(a, b), k
    x = torch.randn(2, C, 7, 7)
    with torch.no_grad():
        assert torch.equal(reverted(x), original(x))


@pytest.mark.parametrize("name, target", [("seresnet18", "bn"), ("efficientnet_b0", "conv")])
def test_fold_targets_in_converted_timm_models(name, target):
    """timm ResNet blocks fold into the BN before the SE (through the fused residual
    block), EfficientNet blocks into the conv after it; revert undoes fold and conversion."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    plain = timm.create_model(name, pretrained=False).eval()
    model = se_kernels.convert_model(copy.deepcopy(plain))
    x = torch.randn(2, 3, 64, 64)
    stats = se_kernels.gate_stats(model, [x])
    summary = se_kernels.fold_static_gates(model, stats, tol=float("inf"))
    assert len(summary.folded) == len(stats.layers) > 0
    assert {kind for kind, _, _ in summary.folded.values()} == {target}
    with torch.no_grad():
        model(x)  # runs
    reverted = se_kernels.revert_model(model)
    with torch.no_grad():
        assert torch.equal(reverted(x), plain(x))
