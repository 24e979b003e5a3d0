"""The per-call cost benchmark: every row runs (and computes the same layer: calls() and
train_calls() check the outputs and the gradients against the eager module's)."""

from __future__ import annotations

import pytest

from benchmarks.overhead import main


@pytest.mark.parametrize("mode,rows", [
    ([], {"eager timm module", "converted module", "squeeze_excite", "forward op",
          "forward op, below autograd", "infer op"}),
    (["--train"], {"eager timm module, fwd+bwd", "converted module, fwd+bwd",
                   "C++ node (se_kernels::squeeze_excite), fwd+bwd",
                   "Python node (SEFunction), fwd+bwd", "ops alone (fwd, bwd, fc_grads)"}),
], ids=["inference", "train"])
def test_every_row_is_timed(mode, rows):
    timings = main([*mode, "--rounds", "2"])
    assert set(timings) == rows
    assert all(t.median_ms > 0 for t in timings.values())
