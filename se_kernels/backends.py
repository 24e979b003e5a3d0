"""Which backends exist on this machine, and which one a call gets.

Everything here is probed once and cached in module globals (no per-call imports),
so the lookups are cheap and ``torch.compile`` can trace them.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Optional

import torch

BACKENDS = ("cuda", "triton", "cpu", "cuda_sim", "reference")
# "auto" tries these in order; the first that can run on the tensor's device wins.
# cuda_sim (a checking emulator, far slower than "cpu") is never picked automatically.
AUTO_ORDER = {"cuda": ("cuda", "triton", "reference"), "cpu": ("cpu", "reference")}
# What each backend is, for describe_backends().
PURPOSE = {
    "cuda": "hand-written CUDA kernels (csrc/cuda) on CUDA tensors",
    "triton": "Triton kernels on CUDA tensors (on CPU tensors only under TRITON_INTERPRET=1)",
    "cpu": "vectorised, multi-threaded C++ kernels (csrc/cpu) on CPU tensors",
    "cuda_sim": ("the csrc/cuda kernels compiled for the host and run on CPU tensors under a "
                 "SIMT emulator with race, bounds and barrier checks: for testing the CUDA "
                 "source without a GPU, not for speed; never chosen by backend='auto'"),
    "reference": "plain PyTorch ops on any device (also float64): the ground truth",
}
TRITON_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
BUILD_HINT = (
    "build it with `pip install --no-build-isolation .` from a source checkout "
    "(CUDA kernels need nvcc: set CUDA_HOME, or FORCE_CUDA=1)"
)


class BackendUnavailableError(RuntimeError):
    """Raised when a requested backend cannot run here; the message says why and how."""


@dataclass(frozen=True)
class _Probe:
    extension: Optional[str]  # None when loaded, else why not
    cuda_kernels: bool
    cpu_kernels: bool
    sim_kernels: bool
    triton: Optional[str]  # None when importable, else why not
    gpu: bool


def _load_extension() -> Optional[str]:
    """Load the compiled ops library (``se_kernels/_C*.so``) if it was built."""
    spec = importlib.util.find_spec("se_kernels._C")
    if spec is None or spec.origin is None:
        return "the compiled extension se_kernels._C was not built"
    try:
        torch.ops.load_library(spec.origin)
    except OSError as exc:  # built against another torch, missing CUDA runtime...
        return f"the compiled extension {spec.origin} failed to load: {exc}"
    return None


def _has_kernel(key: str, ops: tuple[str, ...] = ("forward", "backward")) -> bool:
    return all(torch._C._dispatch_has_kernel_for_dispatch_key(f"se_kernels::{op}", key)
               for op in ops)


def _cpu_kernels_load() -> bool:
    """The CPU ops are registered by the ops library; their kernels live in per-ISA
    libraries beside it, one of which must load on this CPU."""
    return bool(torch.ops.se_kernels.cpu_isas())


def cpu_isa() -> str:
    """The ISA of the CPU kernels in use: "avx512", "avx2" or "baseline" (the widest the
    CPU supports among those built, or the one SE_KERNELS_CPU_ISA names)."""
    if PROBE.extension:
        raise BackendUnavailableError(f"{PROBE.extension}; {BUILD_HINT}")
    return torch.ops.se_kernels.cpu_isa()


def _probe() -> _Probe:
    ext_error = _load_extension()
    try:
        import triton  # noqa: F401

        triton_error = None
    except ImportError as exc:
        triton_error = f"triton is not installed ({exc}); `pip install triton`"
    return _Probe(
        extension=ext_error,
        cuda_kernels=ext_error is None and _has_kernel("CUDA"),
        cpu_kernels=ext_error is None and _has_kernel("CPU") and _cpu_kernels_load(),
        sim_kernels=ext_error is None and _has_kernel("CPU", ("sim_forward", "sim_backward")),
        triton=triton_error,
        gpu=torch.cuda.is_available(),
    )


PROBE = _probe()


def unavailable_reason(backend: str, device_type: str) -> Optional[str]:
    """Why ``backend`` cannot run on ``device_type`` here, or None if it can."""
    if backend == "reference":
        return None
    if backend == "triton":
        if PROBE.triton:
            return PROBE.triton
        if device_type == "cuda":
            return None if PROBE.gpu else "no CUDA GPU is visible to torch"
        if TRITON_INTERPRET:
            return None
        return ("Triton kernels run on CUDA tensors (on the CPU only under the slow "
                "TRITON_INTERPRET=1 test interpreter); move x to a GPU")
    if backend in ("cuda", "cpu", "cuda_sim"):
        runs_on = "cpu" if backend == "cuda_sim" else backend
        if runs_on != device_type:
            return f"backend '{backend}' runs on {runs_on} tensors, but x is on {device_type}"
        if PROBE.extension:
            return f"{PROBE.extension}; {BUILD_HINT}"
        if backend == "cuda_sim" and not PROBE.sim_kernels:
            return "the extension was built without the cuda_sim kernels"
        if backend == "cuda" and not PROBE.cuda_kernels:
            return f"the extension was built without CUDA kernels; {BUILD_HINT}"
        if backend == "cuda" and not PROBE.gpu:
            return "no CUDA GPU is visible to torch"
        if backend == "cpu" and not PROBE.cpu_kernels:
            return ("no CPU kernel library was built for this CPU (se_kernels/_cpu_<isa>*.so); "
                    + BUILD_HINT)
        return None
    raise ValueError(f"backend must be 'auto' or one of {list(BACKENDS)}, got {backend!r}")


def available_backends(device: Optional[torch.device | str] = None) -> list[str]:
    """Backends that can run here, fastest first (``describe_backends`` says what each is).

    Args:
        device: restrict to backends that run on this device (e.g. ``"cpu"``,
            ``"cuda"``); by default, those that run on any device present.
    """
    if device is not None:
        types = [torch.device(device).type]
    else:
        types = ["cuda", "cpu"] if PROBE.gpu else ["cpu"]
    return [b for b in BACKENDS if any(unavailable_reason(b, t) is None for t in types)]


def describe_backends(device: Optional[torch.device | str] = None) -> dict[str, str]:
    """``{backend: what it is for}`` for the backends :func:`available_backends` lists."""
    return {name: PURPOSE[name] for name in available_backends(device)}


NOT_SCRIPTABLE = (
    "se_kernels modules cannot be compiled by torch.jit.script (their forward calls kernels "
    "registered from Python). Use torch.jit.trace(model, example) instead (SE layers trace to "
    "plain torch ops), torch.export / torch.compile, or se_kernels.revert_model(model) to "
    "get the original modules back before scripting.")


def resolve_backend(backend: str, x: torch.Tensor) -> str:
    """Map ``backend`` (possibly ``"auto"``) to a backend that can run on x, or raise."""
    device_type = x.device.type
    if backend == "auto":
        if x.dtype == torch.float64:  # the kernels are float32/16/bf16 only
            return "reference"
        for candidate in AUTO_ORDER.get(device_type, ("reference",)):
            if unavailable_reason(candidate, device_type) is None:
                return candidate
        return "reference"
    reason = unavailable_reason(backend, device_type)
    if reason is not None:
        raise BackendUnavailableError(f"backend '{backend}' is not available: {reason}")
    return backend
