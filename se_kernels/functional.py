"""squeeze_excite: check the inputs once, pick the backend, run SEFunction."""

from __future__ import annotations

from typing import Optional

import torch

from .autograd import SEFunction
from .backends import resolve_backend
from .native_autograd import NATIVE_SIM_FLAG, native_op
from .ops import backend_ops
from .options import as_matrix, check_options, mergeable
from .reference import onnx_exporting, squeeze_excite_reference


def squeeze_excite(
    x: torch.Tensor,
    w1: torch.Tensor,
    b1: Optional[torch.Tensor] = None,
    w2: Optional[torch.Tensor] = None,
    b2: Optional[torch.Tensor] = None,
    *,
    pool: str = "avg",
    act: str = "relu",
    gate: str = "sigmoid",
    gain: float = 1.0,
    residual: Optional[torch.Tensor] = None,
    out_act: str = "identity",
    backend: str = "auto",
) -> torch.Tensor:
    """Fused Squeeze-and-Excitation: ``out_act(x * gain * gate(FC2(act(FC1(pool(x))))) + residual)``.

    Args:
        x: ``[N, C, H, W]``, float32/float16/bfloat16 (float64 on ``backend="reference"``),
            NCHW- or channels_last-contiguous (any other strides are copied once).
        w1: ``[R, C]`` or ``[R, C, 1, 1]``; ``[C, C]`` for single-FC eSE (``w2=None``).
        b1: ``[R]`` or None.
        w2: ``[C, R]`` or ``[C, R, 1, 1]``, or None for single-FC eSE (the gate then
            takes FC1's output and ``act`` is not used).
        b2: ``[C]`` or None.
        pool: ``"avg"`` | ``"avgmax"`` (0.5 * mean + 0.5 * max, as timm ``add_maxpool``).
        act: ``"relu"`` | ``"silu"`` | ``"identity"`` | ``"relu6"`` | ``"gelu"`` (erf) |
            ``"gelu_tanh"`` | ``"hard_swish"`` | ``"mish"`` | ``"tanh"`` | ``"sigmoid"`` |
            ``"leaky_relu"`` (slope 0.01) or ``"leaky_relu:<slope>"`` (e.g.
            ``"leaky_relu:0.2"``), each as the torch function of that name.
        gate: ``"sigmoid"`` | ``"hard_sigmoid"`` | ``"tanh"``.
        gain: scale applied to the gate (NFNet uses 2.0).
        residual: optional ``[N, C, H, W]`` tensor added after the scaling.
        out_act: ``"identity"`` | ``"relu"``, applied after the residual add.
        backend: ``"auto"`` | ``"cuda"`` | ``"triton"`` | ``"cpu"`` | ``"reference"``.
            Under ``torch.onnx.export`` the call runs as the reference (plain torch ops),
            which the ONNX graph then holds; under ``torch.jit.trace`` the graph holds
            the backend's op (``se_kernels::forward``), so the traced module gives the
            same bits as the module.

    Returns:
        ``[N, C, H, W]`` in x's dtype and memory format.

    Raises:
        ValueError / TypeError / RuntimeError naming the bad argument, before any kernel
        runs; ``BackendUnavailableError`` when the requested backend cannot run here.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    check_options(pool, act, gate, out_act, gain)  # the schema takes any str and float
    # Exported to ONNX: plain torch ops, for which ONNX has standard ops.
    name = "reference" if onnx_exporting() else resolve_backend(backend, x)
    if name == "reference":
        return squeeze_excite_reference(x, w1, b1, w2, b2, pool=pool, act=act, gate=gate,
                                        gain=gain, residual=residual, out_act=out_act)
    # The op checks the tensors itself, before any kernel runs: csrc/se_host.cpp for the
    # C++ ops, launch.py for Triton, the fake implementations under torch.compile.
    x, residual = mergeable(x), mergeable(residual)
    options = (pool, act, gate, float(gain), out_act)
    tracing = torch.jit.is_tracing()
    if not tracing and torch.is_grad_enabled() and any(
            getattr(t, "requires_grad", False) for t in (x, w1, b1, w2, b2, residual)):
        # The weights go in as given ([R, C, 1, 1] conv weights too): the autograd node
        # takes their 2-D views itself, so the graph holds no view nodes to run backward
        # through. Compiled ops: one C++ node; torch.compile traces the Python one.
        native = native_op(name)
        if native is not None and not torch.compiler.is_compiling():
            return native(x, w1, b1, w2, b2, residual, *options, NATIVE_SIM_FLAG[name])
        return SEFunction.apply(x, w1, b1, w2, b2, residual, *options, name)[0]
    args = (x, as_matrix("w1", w1), b1, None if w2 is None else as_matrix("w2", w2), b2,
            residual, *options)
    if tracing:  # one graph node, differentiable through the op's autograd
        return backend_ops(name).forward(*args)[0]
    return backend_ops(name).infer(*args)  # no graph to build: y only, nothing saved
