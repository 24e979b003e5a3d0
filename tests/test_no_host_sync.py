"""No device-to-host synchronisation in the forward or backward of the GPU paths, so that
they stay capturable by CUDA graphs and never stall the stream.

Three checks: (1) on a GPU, the whole path under ``torch.cuda.set_sync_debug_mode("error")``;
(2) everywhere, the same Python path (functional, SEFunction, the backward formula) on meta
tensors, where the cuda and triton ops run their fake implementations and any ``.item()``,
``.cpu()``, ``.tolist()`` or tensor truth test raises; (3) a scan of the host code that
launches the kernels (Python and C++) for calls that synchronise.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch

from conftest import HAS_GPU, KERNEL_BACKENDS

import se_kernels
from se_kernels.autograd import SEFunction
from se_kernels.native_autograd import native_op
from se_kernels.ops import TABLE

ROOT = Path(__file__).resolve().parents[1]  # the source tree (csrc/), when the tests run there
PACKAGE = Path(se_kernels.__file__).resolve().parent  # the installed or in-tree package
OPTIONS = [("avg", "relu", "sigmoid", 1.0, "identity", False),
           ("avgmax", "silu", "hard_sigmoid", 2.0, "relu", True)]


def _inputs(device, residual):
    def param(*shape):
        return torch.randn(*shape, device=device, requires_grad=True)
    x = param(2, 16, 5, 7)
    return x, param(4, 16), param(4), param(16, 4), param(16), param(2, 16, 5, 7) if residual else None


@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("options", OPTIONS, ids=["plain", "every-option"])
def test_gpu_path_on_meta_tensors(backend, options):
    """Forward, backward and the infer op, with every input on the meta device."""
    if backend not in TABLE:
        pytest.skip(f"{backend} ops are not registered in this build")
    pool, act, gate, gain, out_act, residual = options
    x, w1, b1, w2, b2, res = _inputs("meta", residual)
    y = SEFunction.apply(x, w1, b1, w2, b2, res, pool, act, gate, gain, out_act, backend)[0]
    params = [t for t in (x, w1, b1, w2, b2, res) if t is not None]
    grads = torch.autograd.grad(y, params, torch.ones_like(y))
    assert [g.shape for g in grads] == [p.shape for p in params]
    detached = [None if t is None else t.detach() for t in (x, w1, b1, w2, b2, res)]
    assert TABLE[backend].infer(*detached, pool, act, gate, gain, out_act).shape == x.shape


@pytest.mark.parametrize("options", OPTIONS, ids=["plain", "every-option"])
def test_cpp_autograd_node_on_meta_tensors(options):
    """The C++ node squeeze_excite builds for the cuda backend (se_kernels::squeeze_excite):
    forward, backward (the backward and fc_grads ops) and the create_graph backward, with
    every input on the meta device."""
    if native_op("cuda") is None:
        pytest.skip("the compiled ops are not built")
    pool, act, gate, gain, out_act, residual = options
    x, w1, b1, w2, b2, res = _inputs("meta", residual)
    params = [t for t in (x, w1, b1, w2, b2, res) if t is not None]
    y = native_op("cuda")(x, w1, b1, w2, b2, res, pool, act, gate, gain, out_act, False)
    assert "SqueezeExciteFunction" in y.grad_fn.name()
    grads = torch.autograd.grad(y, params, torch.ones_like(y), create_graph=False)
    assert [g.shape for g in grads] == [p.shape for p in params]
    y = native_op("cuda")(x, w1, b1, w2, b2, res, pool, act, gate, gain, out_act, False)
    (gx,) = torch.autograd.grad(y.sum(), [x], create_graph=True)
    assert gx.shape == x.shape and gx.grad_fn is not None


def test_meta_tensors_catch_a_host_sync(monkeypatch):
    """The check above can fail: a .item() in the backward formula raises on meta."""
    import se_kernels.autograd_rules as rules

    original = rules.backward

    def syncing_backward(ctx, grad_y):
        grad_y.sum().item()
        return original(ctx, grad_y)

    monkeypatch.setattr(rules, "backward", syncing_backward)
    x, w1, b1, w2, b2, _ = _inputs("meta", False)
    y = SEFunction.apply(x, w1, b1, w2, b2, None, "avg", "relu", "sigmoid", 1.0, "identity",
                         "cuda" if "cuda" in TABLE else "triton")[0]
    with pytest.raises((RuntimeError, NotImplementedError)):
        torch.autograd.grad(y, [x], torch.ones_like(y))


@pytest.mark.skipif(not HAS_GPU, reason="needs a GPU: torch.cuda.set_sync_debug_mode")
@pytest.mark.parametrize("backend", [b for b in KERNEL_BACKENDS if b.values[0] in ("cuda", "triton")])
def test_gpu_path_under_sync_debug_mode(backend):
    module = se_kernels.SqueezeExcite(16, rd_channels=4, backend=backend).cuda()
    x = torch.randn(2, 16, 5, 7, device="cuda", requires_grad=True)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        module(x).sum().backward()
        with torch.no_grad():
            module.eval()(x)
    finally:
        torch.cuda.set_sync_debug_mode("default")


# Python files on the GPU call path, and the C++ host code of the CUDA ops.
PYTHON_HOST = ["functional.py", "autograd.py", "autograd_rules.py", "ops.py", "buffers.py",
               "inference_path.py", "options.py", "native_autograd.py", "fc_grads.py",
               "triton/launch.py", "triton/plan.py"]
CPP_HOST = ["cuda/launch_forward.h", "cuda/launch_backward.h", "cuda/plan.cpp", "cuda/ops.cu",
            "se_host.cpp", "autograd/squeeze_excite.cpp"]
SYNCING_METHODS = {"item", "cpu", "tolist", "numpy", "synchronize", "nonzero"}
SYNCING_CPP = re.compile(r"\.item\s*<|\.item\s*\(|\.cpu\s*\(|Synchronize\s*\(|cudaMemcpy\s*\(|"
                         r"\.to\s*\(\s*at::kCPU|\.nonzero\s*\(")


def _python_syncs(source: str) -> list[str]:
    calls = [node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Call)]
    return [f"line {c.lineno}: .{c.func.attr}()" for c in calls
            if isinstance(c.func, ast.Attribute) and c.func.attr in SYNCING_METHODS]


def test_static_scan_finds_no_syncing_call():
    found = {}
    for name in PYTHON_HOST:
        hits = _python_syncs((PACKAGE / name).read_text())
        if hits:
            found[name] = hits
    if (ROOT / "csrc").is_dir():  # absent when the tests run against an installed wheel
        for name in CPP_HOST:
            text = (ROOT / "csrc" / name).read_text()
            hits = [f"line {text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}"
                    for m in SYNCING_CPP.finditer(text)]
            if hits:
                found[name] = hits
    assert not found, f"host synchronisation on the GPU path: {found}"


def test_static_scan_can_fail():
    assert _python_syncs("def f(t):\n    return t.sum().item() + 1\n") == ["line 2: .item()"]
    assert SYNCING_CPP.search("const float s = t.item<float>();")
    assert SYNCING_CPP.search("C10_CUDA_CHECK(cudaStreamSynchronize(stream));")
