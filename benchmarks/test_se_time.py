"""The in-model SE clock: it times every SE module, forward and backward, in both models."""

from __future__ import annotations

import json

import pytest
import timm
import torch

import se_kernels
from benchmarks.se_time import SEClock, main, run_alone, se_call
from se_kernels.adapters import is_known_se


def test_se_clock_records_every_se_module_and_both_directions():
    model = timm.create_model("mobilenetv3_small_050").train()
    clock = SEClock(model)
    x = torch.randn(2, 3, 64, 64, requires_grad=True)
    model(x).sum().backward()
    assert len(clock.shapes) == sum(is_known_se(m) for m in model.modules()) > 0
    assert clock.forward_s > 0 and clock.backward_s > 0
    clock.reset()
    with torch.no_grad():
        model(x)
    assert clock.forward_s > 0 and clock.backward_s == 0


def test_se_time_reports_both_models_the_layers_alone_and_a_target(tmp_path):
    result = main(["--model", "mobilenetv3_small_050", "--batch", "2", "--mode", "train",
                   "--resolution", "64", "--rounds", "2", "--target", "1.1", "--out", str(tmp_path)])
    for label in ("original", "se_kernels"):
        r = result[label]
        assert r["se_forward"] > 0 and r["se_backward"] > 0
        assert 0 < r["se_ms"] < r["step"] and r["passes"] > 0
    assert result["alone"]["se_forward"] > 0 and result["alone"]["se_backward"] > 0
    assert "epilogue" not in result  # MobileNetV3 fuses no shortcut
    original = result["original"]
    assert result["allowed_ms"] == pytest.approx(original["se_ms"] - original["step"] * (1 - 1 / 1.1))
    saved = json.loads((tmp_path / "se_time-mobilenetv3_small_050-train-b2.json").read_text())
    assert saved["allowed_ms"] == result["allowed_ms"] and saved["alone"] == result["alone"]


def test_se_time_counts_the_fused_shortcut_add_and_relu_in_the_allowance():
    result = main(["--model", "seresnet18", "--batch", "2", "--mode", "train", "--resolution", "64",
                   "--rounds", "2", "--target", "1.1"])
    epilogue = result["epilogue"]["se_ms"]
    assert result["epilogue"]["se_backward"] > 0
    original = result["original"]
    assert result["allowed_ms"] == pytest.approx(
        original["se_ms"] - original["step"] * (1 - 1 / 1.1) + epilogue)


def test_recorded_calls_replay_alone_with_their_shortcut():
    model = se_kernels.convert_model(timm.create_model("seresnet18").train())
    clock = SEClock(model)
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    assert len(clock.calls) == 8
    assert all(residual == shape and out_act == "relu" for _, shape, residual, out_act in clock.calls)
    calls = [se_call(*call, True) for call in clock.calls]
    forward_ms, backward_ms = run_alone(calls, [], train=True)()
    assert forward_ms > 0 and backward_ms > 0
    assert all(len(leaves) == 2 and all(t.grad is not None for t in leaves)  # x and the shortcut
               for _, leaves, _ in calls)
