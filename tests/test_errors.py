"""Bad input raises a clear error naming the argument, before any kernel runs."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from conftest import KERNEL_BACKENDS, backend_device

import se_kernels
from se_kernels import backends
from se_kernels.ops import TABLE, BackendOps


def _valid(device):
    g = torch.Generator().manual_seed(0)
    return dict(
        x=torch.randn(2, 8, 3, 3, generator=g).to(device),
        w1=torch.randn(4, 8, generator=g).to(device),
        b1=torch.randn(4, generator=g).to(device),
        w2=torch.randn(8, 4, generator=g).to(device),
        b2=torch.randn(8, generator=g).to(device),
    )


# (id, changes to the valid call, exception type, fragment of the message)
BAD_INPUTS = [
    ("x-rank", lambda a: a.update(x=a["x"][0]), ValueError, "x must be 4-D"),
    ("x-not-tensor", lambda a: a.update(x=[1.0]), TypeError, "x must be a torch.Tensor"),
    ("x-empty-hw", lambda a: a.update(x=a["x"][:, :, :0]), ValueError, "H*W >= 1"),
    ("x-integer", lambda a: a.update(x=a["x"].long()), TypeError, "floating-point"),
    ("w1-channels", lambda a: a.update(w1=a["w1"][:, :5]), ValueError, "w1 must have shape [R, C=8]"),
    ("w1-rank", lambda a: a.update(w1=a["w1"][None]), ValueError, "w1 must have shape [out, in]"),
    ("w2-bottleneck", lambda a: a.update(w2=a["w2"][:, :3]), ValueError, "w2 must have shape [C=8, R=4]"),
    ("b1-shape", lambda a: a.update(b1=a["b1"][:3]), ValueError, "b1 must have shape [4]"),
    ("b2-shape", lambda a: a.update(b2=a["b2"][:3]), ValueError, "b2 must have shape [C=8]"),
    ("b2-without-w2", lambda a: a.update(w2=None, w1=torch.randn(8, 8, device=a["x"].device),
                                         b1=None), ValueError, "b2 was given but w2 is None"),
    ("ese-not-square", lambda a: a.update(w2=None, b2=None), ValueError, "must be square"),
    ("w1-integer", lambda a: a.update(w1=a["w1"].long()), TypeError, "w1 must be a float tensor"),
    ("w1-device", lambda a: a.update(w1=a["w1"].to("meta")), RuntimeError, "w1 is on meta"),
    ("b2-device", lambda a: a.update(b2=a["b2"].to("meta")), RuntimeError, "b2 is on meta"),
    ("residual-shape", lambda a: a.update(residual=a["x"][:, :4]), ValueError,
     "residual must have x's shape"),
    ("residual-device", lambda a: a.update(residual=a["x"].to("meta")), RuntimeError,
     "residual is on meta"),
    ("residual-dtype", lambda a: a.update(residual=a["x"].half()), TypeError,
     "residual must have x's dtype"),
    ("pool", lambda a: a.update(pool="max"), ValueError, "pool must be one of"),
    ("act", lambda a: a.update(act="gelu"), ValueError, "act must be one of"),
    ("gate", lambda a: a.update(gate="tanh"), ValueError, "gate must be one of"),
    ("out_act", lambda a: a.update(out_act="silu"), ValueError, "out_act must be one of"),
    ("gain-type", lambda a: a.update(gain="2"), TypeError, "gain must be a Python float"),
]


@pytest.fixture
def no_kernels(monkeypatch):
    """Make every kernel backend fail the test if a kernel is reached."""

    def boom(*args, **kwargs):
        pytest.fail("a kernel ran before the input was rejected")

    for name in list(TABLE):
        monkeypatch.setitem(TABLE, name, BackendOps(boom, boom))


@pytest.mark.parametrize("backend", KERNEL_BACKENDS + ["reference"])
@pytest.mark.parametrize("change, exc, fragment", [b[1:] for b in BAD_INPUTS],
                         ids=[b[0] for b in BAD_INPUTS])
def test_bad_input(backend, change, exc, fragment, no_kernels):
    args = _valid(backend_device(backend))
    change(args)
    with pytest.raises(exc) as info:
        se_kernels.squeeze_excite(**args, backend=backend)
    assert fragment in str(info.value)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_float64_is_reference_only(backend, no_kernels):
    args = _valid(backend_device(backend))
    args["x"] = args["x"].double()
    with pytest.raises(TypeError, match="float64 runs only on backend='reference'"):
        se_kernels.squeeze_excite(**args, backend=backend)


def test_auto_takes_float64_to_the_reference():
    args = _valid("cpu")
    args = {k: v.double() for k, v in args.items()}
    y = se_kernels.squeeze_excite(**args)
    assert y.dtype == torch.float64


def test_unknown_backend():
    with pytest.raises(ValueError, match="backend must be 'auto' or one of"):
        se_kernels.squeeze_excite(**_valid("cpu"), backend="fast")


def test_backend_on_the_wrong_device_says_why():
    with pytest.raises(se_kernels.BackendUnavailableError,
                       match="backend 'cuda' is not available: .*cuda tensors, but x is on cpu"):
        se_kernels.squeeze_excite(**_valid("cpu"), backend="cuda")


def test_unbuilt_extension_says_how_to_build(monkeypatch):
    probe = dataclasses.replace(backends.PROBE, extension="the compiled extension se_kernels._C was not built",
                                cuda_kernels=False, cpu_kernels=False, sim_kernels=False)
    monkeypatch.setattr(backends, "PROBE", probe)
    with pytest.raises(se_kernels.BackendUnavailableError, match="not built.*pip install"):
        se_kernels.squeeze_excite(**_valid("cpu"), backend="cpu")


def test_triton_on_cpu_without_interpreter_says_why(monkeypatch):
    monkeypatch.setattr(backends, "TRITON_INTERPRET", False)
    reason = backends.unavailable_reason("triton", "cpu")
    assert "CUDA tensors" in reason and "move x to a GPU" in reason


def test_backend_op_rejects_unmergeable_strides():
    """The ops themselves (called directly) refuse strides they cannot index."""
    if "triton" not in TABLE or backends.unavailable_reason("triton", "cpu"):
        pytest.skip("triton: the CPU interpreter is not active")
    args = _valid("cpu")
    x = torch.randn(2, 8, 6, 3)[:, :, ::2]  # H stride 6 != W * W stride 3
    with pytest.raises(ValueError, match="x has strides"):
        TABLE["triton"].forward(x, args["w1"], None, args["w2"], None, None, "avg", "relu",
                                "sigmoid", 1.0, "identity")
