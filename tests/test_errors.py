"""Bad input raises a clear error naming the argument, before any kernel runs.

The whole list runs three ways, with no stub: through the public API
(squeeze_excite), straight into each backend's real ops (the C++ checks of csrc/se_host.cpp,
the Triton host checks of launch.py), and into the fake implementations on meta tensors
(torch._check, which torch.compile also runs). The backward op gets its own list.
"""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch

from conftest import KERNEL_BACKENDS, backend_device

import se_kernels
from se_kernels import backends
from se_kernels.ops import TABLE

OPTIONS = ("avg", "relu", "sigmoid", 1.0, "identity")


def _valid(device):
    g = torch.Generator().manual_seed(0)
    return dict(
        x=torch.randn(2, 8, 3, 3, generator=g).to(device),
        w1=torch.randn(4, 8, generator=g).to(device),
        b1=torch.randn(4, generator=g).to(device),
        w2=torch.randn(8, 4, generator=g).to(device),
        b2=torch.randn(8, generator=g).to(device),
    )


@dataclasses.dataclass(frozen=True)
class Bad:
    name: str
    change: object  # edits the argument dict
    exc: type
    message: str  # regex the error must contain
    # The op's schema rejects this one itself (a non-tensor, a str for a float): the
    # dispatcher's error, naming the argument.
    op_exc: type = None
    op_message: str = None


SCHEMA = RuntimeError
BAD_INPUTS = [
    Bad("x-rank", lambda a: a.update(x=a["x"][0]), ValueError, r"x must be 4-D"),
    Bad("x-not-tensor", lambda a: a.update(x=[1.0]), TypeError, r"x must be a torch\.Tensor",
        SCHEMA, r"Expected a value of type 'Tensor' for argument 'x'"),
    Bad("x-empty-hw", lambda a: a.update(x=a["x"][:, :, :0]), ValueError, r"H\*W >= 1"),
    Bad("x-integer", lambda a: a.update(x=a["x"].long()), TypeError,
        r"floating-point|the fused kernels take float32, float16 or bfloat16"),
    Bad("w1-channels", lambda a: a.update(w1=a["w1"][:, :5]), ValueError,
        r"w1 must have shape \[R, C=8\]"),
    Bad("w1-rank", lambda a: a.update(w1=a["w1"][None]), ValueError,
        r"w1 must have shape \[(out, in\]|R, C=8\])"),
    Bad("w2-bottleneck", lambda a: a.update(w2=a["w2"][:, :3]), ValueError,
        r"w2 must have shape \[C=8, R=4\]"),
    Bad("b1-shape", lambda a: a.update(b1=a["b1"][:3]), ValueError, r"b1 must have shape \[4\]"),
    Bad("b2-shape", lambda a: a.update(b2=a["b2"][:3]), ValueError, r"b2 must have shape \[C=8\]"),
    Bad("b2-without-w2", lambda a: a.update(w2=None, w1=torch.randn(8, 8, device=a["x"].device),
                                            b1=None), ValueError, r"b2 was given but w2 is None"),
    Bad("ese-not-square", lambda a: a.update(w2=None, b2=None), ValueError, r"must be square"),
    Bad("w1-integer", lambda a: a.update(w1=a["w1"].long()), TypeError, r"w1 must be a float tensor"),
    Bad("w1-device", lambda a: a.update(w1=a["w1"].to("meta")), RuntimeError, r"w1 is on meta"),
    Bad("b2-device", lambda a: a.update(b2=a["b2"].to("meta")), RuntimeError, r"b2 is on meta"),
    Bad("residual-shape", lambda a: a.update(residual=a["x"][:, :4]), ValueError,
        r"residual must have x's shape"),
    Bad("residual-device", lambda a: a.update(residual=a["x"].to("meta")), RuntimeError,
        r"residual is on meta"),
    Bad("residual-dtype", lambda a: a.update(residual=a["x"].half()), TypeError,
        r"residual must have x's dtype"),
    Bad("pool", lambda a: a.update(pool="max"), ValueError, r"pool must be one of \['avg', 'avgmax'\]"),
    Bad("act", lambda a: a.update(act="elu"), ValueError, r"act must be one of"),
    Bad("gate", lambda a: a.update(gate="relu"), ValueError, r"gate must be one of"),
    Bad("out_act", lambda a: a.update(out_act="silu"), ValueError, r"out_act must be one of"),
    Bad("gain-type", lambda a: a.update(gain="2"), TypeError, r"gain must be a Python float",
        SCHEMA, r"Expected a value of type 'float' for argument 'gain'"),
]
IDS = [b.name for b in BAD_INPUTS]


def _call_args(args: dict) -> tuple:
    """The forward op's positional arguments for a (possibly edited) argument dict."""
    w1 = args["w1"]
    options = dict(zip(("pool", "act", "gate", "gain", "out_act"), OPTIONS))
    options.update({k: args[k] for k in options if k in args})
    return (args["x"], w1, args.get("b1"), args.get("w2"), args.get("b2"), args.get("residual"),
            *options.values())


@pytest.mark.parametrize("backend", KERNEL_BACKENDS + ["reference"])
@pytest.mark.parametrize("bad", BAD_INPUTS, ids=IDS)
def test_bad_input_public_api(backend, bad):
    args = _valid(backend_device(backend))
    bad.change(args)
    with pytest.raises(bad.exc, match=bad.message):
        se_kernels.squeeze_excite(**args, backend=backend)


@pytest.mark.parametrize("op", ["forward", "infer"])
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("bad", BAD_INPUTS, ids=IDS)
def test_bad_input_forward_op(backend, bad, op):
    """The backend's real op, called directly: its own checks raise the same error."""
    args = _valid(backend_device(backend))
    bad.change(args)
    with pytest.raises(bad.op_exc or bad.exc, match=bad.op_message or bad.message):
        getattr(TABLE[backend], op)(*_call_args(args))


@pytest.mark.parametrize("op", ["forward", "infer"])
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("bad", [b for b in BAD_INPUTS if b.op_exc is None and "device" not in b.name],
                         ids=[b.name for b in BAD_INPUTS if b.op_exc is None and "device" not in b.name])
def test_bad_input_fake(backend, bad, op):
    """The fake implementation (meta tensors, as torch.compile traces) checks too."""
    args = {k: v.to("meta") for k, v in _valid("cpu").items()}
    bad.change(args)
    with pytest.raises(bad.exc, match=bad.message):
        getattr(TABLE[backend], op)(*_call_args(args))


def _backward_args(device, **changes):
    a = _valid(device)
    n, c = a["x"].shape[:2]
    f32 = dict(device=device, dtype=torch.float32)
    args = dict(grad_y=torch.ones_like(a["x"]), x=a["x"], out=None, w1=a["w1"], w2=a["w2"],
                pooled_max=torch.empty(0, **f32), fc1_out=torch.zeros(n, 4, **f32),
                fc2_out=torch.zeros(n, c, **f32), has_residual=False, pool="avg", act="relu",
                gate="sigmoid", gain=1.0, out_act="identity")
    args.update(changes)
    return args


BAD_BACKWARD = [
    ("grad_y-shape", lambda a: a.update(grad_y=a["grad_y"][:, :4]), ValueError,
     r"grad_y must be \[2, 8, 3, 3\]"),
    ("grad_y-dtype", lambda a: a.update(grad_y=a["grad_y"].half()), ValueError,
     r"grad_y must be \[2, 8, 3, 3\]"),
    ("out-missing", lambda a: a.update(out_act="relu"), ValueError,
     r"out \(the forward output, needed by out_act='relu'\) must be"),
    ("fc1_out-shape", lambda a: a.update(fc1_out=a["fc1_out"][:, :3]), ValueError,
     r"fc1_out must be \[2, 4\]"),
    ("fc2_out-dtype", lambda a: a.update(fc2_out=a["fc2_out"].double()), ValueError,
     r"fc2_out must be \[2, 8\]"),
    ("pooled_max-avgmax", lambda a: a.update(pool="avgmax"), ValueError, r"pooled_max must be \[2, 8\]"),
    ("x-rank", lambda a: a.update(x=a["x"][0]), ValueError, r"x must be 4-D"),
    ("w2-bottleneck", lambda a: a.update(w2=a["w2"][:, :3]), ValueError, r"w2 must have shape"),
    ("gate", lambda a: a.update(gate="relu"), ValueError, r"gate must be one of"),
]


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("change, exc, message", [b[1:] for b in BAD_BACKWARD],
                         ids=[b[0] for b in BAD_BACKWARD])
def test_bad_input_backward_op(backend, change, exc, message):
    args = _backward_args(backend_device(backend))
    change(args)
    with pytest.raises(exc, match=message):
        TABLE[backend].backward(*args.values())
    meta = {k: v.to("meta") if isinstance(v, torch.Tensor) else v for k, v in args.items()}
    with pytest.raises(exc, match=message):  # the fake checks too
        TABLE[backend].backward(*meta.values())


def test_valid_backward_args_pass():
    """The backward list starts from arguments the op accepts (so each case tests one fault)."""
    for backend in TABLE:
        if backends.unavailable_reason(backend, backend_device(backend)) is None:
            TABLE[backend].backward(*_backward_args(backend_device(backend)).values())


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_float64_is_reference_only(backend):
    args = _valid(backend_device(backend))
    args["x"] = args["x"].double()
    with pytest.raises(TypeError, match="float64 runs only on backend='reference'"):
        se_kernels.squeeze_excite(**args, backend=backend)
    with pytest.raises(TypeError, match="float64 runs only on backend='reference'"):
        TABLE[backend].forward(*_call_args(args))


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
    if backends.PROBE.triton:
        pytest.skip(backends.PROBE.triton)
    monkeypatch.setattr(backends, "TRITON_INTERPRET", False)
    reason = backends.unavailable_reason("triton", "cpu")
    assert "CUDA tensors" in reason and "move x to a GPU" in reason


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_backend_op_and_unmergeable_strides(backend):
    """Called directly, the GPU-style ops (cuda, cuda_sim, triton) refuse strides they
    cannot index, naming x; the CPU op copies x into its layout once and is right."""
    args = _valid(backend_device(backend))
    args["x"] = torch.randn(2, 8, 6, 3, device=args["x"].device)[:, :, ::2]  # H, W do not merge
    if backend != "cpu":
        with pytest.raises(ValueError, match=re.escape("x has strides")):
            TABLE[backend].forward(*_call_args(args))
        return
    y = TABLE[backend].forward(*_call_args(args))[0]
    ref = se_kernels.squeeze_excite_reference(args["x"], args["w1"], args["b1"], args["w2"], args["b2"])
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
