"""The in-model SE clock: it times every SE module, forward and backward, in both models."""

from __future__ import annotations

import timm
import torch

from benchmarks.se_time import SEClock, main
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


def test_se_time_reports_both_models():
    result = main(["--model", "mobilenetv3_small_050", "--batch", "2", "--mode", "train",
                   "--resolution", "64", "--rounds", "2"])
    for label in ("original", "se_kernels"):
        r = result[label]
        assert r["se_forward"] > 0 and r["se_backward"] > 0
        assert 0 < r["se_ms"] < r["step"] and r["passes"] > 0
