"""Who measured what: device, library versions, thread count, git commit, date."""

from __future__ import annotations

import datetime
import platform
import re
import subprocess
from pathlib import Path

import torch


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what platform knows. Figures from
    different VMs of the same size differ by more than most A/B effects: record which."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_caches() -> str | None:
    """CPU 0's data and unified caches from sysfs, e.g. "L1d 48K, L2 2048K, L3 307200K"
    (None off Linux): a VM's model name is often generic, its caches tell VMs apart."""
    caches = []
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level, kind, size = ((index / f).read_text().strip() for f in ("level", "type", "size"))
        except OSError:
            continue
        if kind != "Instruction":
            caches.append(f"L{level}{'d' if kind == 'Data' else ''} {size}")
    return ", ".join(caches) or None


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"{cpu_model()} ({torch.get_num_threads()} threads)"


def cpu_kernels_isa() -> str | None:
    """The ISA of se_kernels' CPU kernels in use, None where they are not built."""
    from se_kernels.backends import cpu_isa

    try:
        return cpu_isa()
    except RuntimeError:  # BackendUnavailableError (no extension) or the op's own error
        return None


def device_slug(device: str) -> str:
    """A folder name for results/<device>/, e.g. nvidia-h100-80gb-hbm3 or cpu-2-threads."""
    if device == "cuda":
        return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name().lower()).strip("-")
    return f"cpu-{torch.get_num_threads()}-threads"


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def metadata(device: str) -> dict:
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    import se_kernels

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device_name(device),
        "torch": torch.__version__,
        "triton": triton_version,
        "cuda": torch.version.cuda,
        "threads": torch.get_num_threads(),
        "cpu_caches": cpu_caches(),
        "git_commit": git_commit(),
        "se_kernels_backends": se_kernels.available_backends(device),
        "se_kernels_cpu_isa": cpu_kernels_isa(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "python": platform.python_version(),
    }
