"""Deploying converted models: ONNX (both exporters) run in onnxruntime, TorchScript
trace, torch.export, revert_model, and the things that already worked (save/load,
deepcopy, autocast, threads), on five real models and on every SE option."""

from __future__ import annotations

import copy
import io
import threading
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import assert_close_to_model_truth, assert_within_tolerance

import se_kernels
from se_kernels.convert import FusedResidualBlock, FusedSE

timm = pytest.importorskip("timm")
onnx = pytest.importorskip("onnx", reason="ONNX tests need the onnx extra: pip install se_kernels[onnx]")
ort = pytest.importorskip("onnxruntime", reason="ONNX tests need the onnx extra: pip install se_kernels[onnx]")
pytest.importorskip("onnxscript", reason="ONNX tests need the onnx extra: pip install se_kernels[onnx]")

from test_convert import build as create  # noqa: E402  (random weights, randomised BN, eval)

MODELS = ["timm:seresnet18", "timm:efficientnet_b0", "timm:mobilenetv3_large_100",
          "timm:ese_vovnet19b_dw", "tv:efficientnet_b0"]
STANDARD_DOMAINS = {"", "ai.onnx"}


class Deployed:
    """One model: original and converted (eval, CPU kernels), inputs and the float64 truth."""

    def __init__(self, name: str):
        torch.manual_seed(0)
        self.original = create(name).eval()
        self.converted = se_kernels.convert_model(copy.deepcopy(self.original))
        assert any(isinstance(m, FusedSE) for m in self.converted.modules())
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(2, 3, 64, 64, generator=g)
        self.x3 = torch.randn(3, 3, 64, 64, generator=g)  # another batch size
        with torch.no_grad():
            self.truth3 = copy.deepcopy(self.original).double()(self.x3.double())
            self.eager3 = self.original(self.x3)

    def check(self, what: str, out: torch.Tensor) -> float:
        """Within the whole-model rule (twice eager's own error); returns the max error."""
        out = torch.as_tensor(out).float()
        assert_close_to_model_truth(what, out, self.truth3, self.eager3)
        return (out.double() - self.truth3).abs().max().item()


@pytest.fixture(scope="module", params=MODELS)
def model(request) -> Deployed:
    return Deployed(request.param)


def _run_onnx(model_bytes: bytes, x: torch.Tensor) -> torch.Tensor:
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])


def _standard_graph(proto) -> set[str]:
    ops = {(n.domain, n.op_type) for n in proto.graph.node}
    assert {d for d, _ in ops} <= STANDARD_DOMAINS, f"non-standard ops: {ops}"
    assert len(proto.graph.initializer) > 0, "weights are not initializers"
    return {op for _, op in ops}


def _dynamo_onnx(module: nn.Module, x: torch.Tensor, **kwargs):
    program = torch.onnx.export(module, (x,), dynamo=True, verbose=False,
                                dynamic_shapes=({0: torch.export.Dim("batch")},), **kwargs)
    return program.model_proto


def _legacy_onnx(module: nn.Module, x: torch.Tensor) -> onnx.ModelProto:
    buffer = io.BytesIO()
    torch.onnx.export(module, (x,), buffer, dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "batch"}})
    return onnx.load_from_string(buffer.getvalue())


def test_onnx_dynamo_export(model):
    proto = _dynamo_onnx(model.converted, model.x)
    ops = _standard_graph(proto)
    assert "ReduceMean" in ops or "GlobalAveragePool" in ops
    assert ops & {"Sigmoid", "HardSigmoid"}
    model.check("onnx dynamo", _run_onnx(proto.SerializeToString(), model.x3))


def test_onnx_legacy_export(model):
    proto = _legacy_onnx(model.converted, model.x)
    _standard_graph(proto)
    model.check("onnx legacy", _run_onnx(proto.SerializeToString(), model.x3))


@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
def test_torchscript_trace(model, grad):
    """The default sanity check passes without a warning (the graph holds the fused op, so
    it reruns bit for bit), the trace saves and loads, and it matches the truth."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", torch.jit.TracerWarning)
        with torch.set_grad_enabled(grad):
            traced = torch.jit.trace(model.converted, model.x)
    kinds = {node.kind() for node in traced.inlined_graph.nodes()}
    assert "se_kernels::forward" in kinds and "prim::PythonOp" not in kinds, kinds
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    loaded = torch.jit.load(io.BytesIO(buffer.getvalue()))
    with torch.no_grad():
        assert torch.equal(loaded(model.x3), model.converted(model.x3))
        model.check("torchscript trace", traced(model.x3))


def test_torchscript_script_names_the_alternatives(model):
    with pytest.raises(RuntimeError, match=r"torch\.jit\.trace.*revert_model"):
        torch.jit.script(model.converted)


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic-batch"])
def test_torch_export(model, dynamic):
    x = model.x3 if not dynamic else model.x
    shapes = ({0: torch.export.Dim("batch")},) if dynamic else None
    program = torch.export.export(model.converted, (x,), dynamic_shapes=shapes)
    assert "se_kernels" in str(program.graph)  # the fused ops stay in torch.export graphs
    with torch.no_grad():
        model.check("torch.export", program.module()(model.x3))


def test_revert_model(model):
    converted = copy.deepcopy(model.converted)
    pointers = {k: v.data_ptr() for k, v in converted.state_dict().items()}
    reverted = se_kernels.revert_model(converted)
    assert not any(isinstance(m, (FusedSE, FusedResidualBlock)) for m in reverted.modules())
    assert [type(m) for m in reverted.modules()] == [type(m) for m in model.original.modules()]
    assert reverted.state_dict().keys() == model.original.state_dict().keys()
    assert {k: v.data_ptr() for k, v in reverted.state_dict().items()} == pointers
    with torch.no_grad():
        assert torch.equal(reverted(model.x3), model.eager3)


def test_revert_after_changes_keeps_the_new_tensors():
    """Parameters replaced and the model moved after conversion: the reverted model holds
    the converted model's current tensors, and a deepcopy or pickle reverts too."""
    original = create("timm:seresnet18").eval()
    converted = se_kernels.convert_model(copy.deepcopy(original))
    se = converted.layer1[0].se
    se.fc1.weight = nn.Parameter(se.fc1.weight.detach() * 2)
    converted.to(torch.float64)
    restored = torch.load(io.BytesIO(_saved(converted)), weights_only=False)
    for candidate in (copy.deepcopy(converted), restored, converted):
        reverted = se_kernels.revert_model(candidate)
        assert reverted.layer1[0].se.fc1.weight.dtype == torch.float64
        torch.testing.assert_close(reverted.layer1[0].se.fc1.weight,
                                   2 * original.layer1[0].se.fc1.weight.double())
    assert "revert_model" in str(se_kernels.convert_model(copy.deepcopy(original)).se_kernels_summary)


def _saved(module: nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save(module, buffer)
    return buffer.getvalue()


def test_save_load_and_deepcopy(model):
    loaded = torch.load(io.BytesIO(_saved(model.converted)), weights_only=False)
    with torch.no_grad():
        expected = model.converted(model.x3)
        assert torch.equal(loaded(model.x3), expected)
        assert torch.equal(copy.deepcopy(model.converted)(model.x3), expected)


def test_autocast(model):
    """bfloat16 autocast on the CPU: the converted model follows the original's dtypes."""
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        ours, theirs = model.converted(model.x3), model.original(model.x3)
    assert ours.dtype == theirs.dtype
    scale = model.truth3.abs().max().item()
    assert (ours.double() - model.truth3).abs().max().item() < 0.1 * scale


def test_concurrent_calls(model):
    """Threads share the modules' inference caches; fp32 and bf16 callers interleave."""
    results, errors = {}, []
    inputs = {torch.float32: model.x3, torch.bfloat16: model.x3.bfloat16()}
    converted = copy.deepcopy(model.converted)
    converted_bf16 = copy.deepcopy(model.converted).bfloat16()
    with torch.no_grad():
        expected = {torch.float32: converted(inputs[torch.float32]),
                    torch.bfloat16: converted_bf16(inputs[torch.bfloat16])}

    def work(i):
        dtype = torch.float32 if i % 2 else torch.bfloat16
        module = converted if dtype == torch.float32 else converted_bf16
        try:
            with torch.no_grad():
                for _ in range(3):
                    results[(i, _)] = torch.equal(module(inputs[dtype]), expected[dtype])
        except Exception as exc:  # reported below, with the thread
            errors.append((i, exc))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and all(results.values()), errors


# --- every SE option, through the exporters --------------------------------------------

class OneSE(nn.Module):
    """One SE call with explicit options (the functional API inside a module)."""

    def __init__(self, two_fc: bool, **options):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        c, r = 12, 4
        self.w1 = nn.Parameter(torch.randn(r if two_fc else c, c, generator=g) * 0.5)
        self.b1 = nn.Parameter(torch.randn(r if two_fc else c, generator=g) * 0.1)
        self.w2 = nn.Parameter(torch.randn(c, r, generator=g) * 0.5) if two_fc else None
        self.b2 = nn.Parameter(torch.randn(c, generator=g) * 0.1) if two_fc else None
        self.options = options

    def forward(self, x):
        residual = F.silu(x) if self.options.get("out_act") == "relu" else None
        return se_kernels.squeeze_excite(x, self.w1, self.b1, self.w2, self.b2,
                                         residual=residual, **self.options)


OPTION_SETS = [
    dict(two_fc=True),
    dict(two_fc=True, pool="avgmax", act="silu", gate="hard_sigmoid", gain=2.0),
    dict(two_fc=True, act="identity", out_act="relu"),
    dict(two_fc=False, gate="hard_sigmoid", pool="avgmax"),
    dict(two_fc=False, out_act="relu", gain=0.5),
]


@pytest.mark.parametrize("exporter", ["dynamo", "legacy"])
@pytest.mark.parametrize("options", OPTION_SETS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_onnx_every_option(options, exporter):
    module = OneSE(**options).eval()
    g = torch.Generator().manual_seed(4)
    x, x3 = torch.randn(2, 12, 5, 7, generator=g), torch.randn(3, 12, 5, 7, generator=g)
    export = _dynamo_onnx if exporter == "dynamo" else _legacy_onnx
    proto = export(module, x)
    _standard_graph(proto)
    got = _run_onnx(proto.SerializeToString(), x3)
    with torch.no_grad():
        truth = copy.deepcopy(module).double()(x3.double())
    assert_within_tolerance("onnx y", got, truth)


def test_onnx_float16():
    """fp16 end to end where onnxruntime's CPU kernels have fp16 (not every op does)."""
    module = OneSE(two_fc=True).eval().half()
    x = torch.randn(2, 12, 5, 7).half()
    proto = _dynamo_onnx(module, x)
    try:
        got = _run_onnx(proto.SerializeToString(), x)
    except Exception as exc:  # NOT_IMPLEMENTED: a kernel missing for fp16 on the CPU
        pytest.skip(f"onnxruntime CPU cannot run this fp16 graph: {str(exc)[:200]}")
    assert got.dtype == torch.float16
    with torch.no_grad():
        truth = copy.deepcopy(module).double()(x.double())
    # Every op of the graph rounds to fp16 (eager PyTorch's rule), not just the output.
    assert (got.double() - truth).abs().max().item() <= 8 * 2 ** -10 * truth.abs().max().item()
