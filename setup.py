"""Build and install se_kernels.

    pip install --no-build-isolation .        # builds against the torch already installed

What gets built (the sources are listed once, in csrc/sources.txt; the flags and the
default CUDA archs once, in csrc/build_policy.json, which CMakeLists.txt reads too):
- se_kernels/_C*.so, the ops library, built for the baseline ISA: op registration, input
  checks, the CPU ops' host side, the cuda_sim emulator and the CUDA kernels' launch plan,
  plus the CUDA kernels when nvcc is found (CUDA_HOME, PATH or /usr/local/cuda) or
  FORCE_CUDA=1. The decision never depends on a GPU being present.
- se_kernels/_cpu_<isa>*.so, the CPU kernels, once per ISA variant (baseline x86-64,
  AVX2 + FMA + F16C, AVX-512) that the compiler can target; the ops library loads the
  best one the running CPU supports at first use (SE_KERNELS_CPU_ISA forces one).

Environment:
    FORCE_CUDA=1               build the CUDA kernels (fails if nvcc is missing)
    SE_KERNELS_NO_CUDA=1       no CUDA kernels, even when nvcc is present
    SE_KERNELS_NO_EXTENSION=1  pure Python (Triton + reference backends only)
    SE_KERNELS_CPU_ISAS        CPU kernel variants to build, e.g. "baseline avx2"
                               (default: every variant of the policy the compiler accepts)
    TORCH_CUDA_ARCH_LIST       GPU archs; default from csrc/build_policy.json
    MAX_JOBS                   parallel compile jobs (ninja is used when installed)
"""

import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent
POLICY = json.loads((ROOT / "csrc" / "build_policy.json").read_text())
# The torch releases this source builds against (tested in CI: the newest and the oldest).
TORCH_RANGE = "torch>=2.13,<2.15"


def version() -> str:
    """The one version: se_kernels/__init__.py's __version__."""
    text = (ROOT / "se_kernels" / "__init__.py").read_text()
    return re.search(r'^__version__ = "([^"]+)"', text, re.M).group(1)


def read_sources() -> tuple[list[str], list[str]]:
    """(ops library sources, per-ISA CPU kernel sources) from csrc/sources.txt."""
    ops, isa = [], []
    for line in (ROOT / "csrc" / "sources.txt").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("isa:"):
            isa.append(line[len("isa:"):].strip())
        else:
            ops.append(line)
    return ops, isa


def want_cuda(cuda_home) -> bool:
    if os.environ.get("SE_KERNELS_NO_CUDA") == "1":
        return False
    if os.environ.get("FORCE_CUDA") == "1":
        return True
    return cuda_home is not None and (Path(cuda_home) / "bin" / "nvcc").exists()


def compiler_accepts(flags: list[str]) -> bool:
    """Whether the C++ compiler can target an ISA (not whether this CPU runs it)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "probe.cpp"
        src.write_text("int main() { return 0; }\n")
        probe = subprocess.run([os.environ.get("CXX", "c++"), *flags, "-c", str(src), "-o",
                                str(Path(tmp) / "probe.o")], capture_output=True)
        return probe.returncode == 0


def cpu_isas() -> list[str]:
    wanted = os.environ.get("SE_KERNELS_CPU_ISAS", "").split() or list(POLICY["cpu_isa"])
    unknown = set(wanted) - set(POLICY["cpu_isa"])
    if unknown:
        raise SystemExit(f"SE_KERNELS_CPU_ISAS: unknown {sorted(unknown)}; "
                         f"choose from {list(POLICY['cpu_isa'])}")
    x86 = platform.machine() in ("x86_64", "AMD64")
    return [isa for isa in wanted
            if (x86 or isa not in POLICY["x86_only"]) and compiler_accepts(POLICY["cpu_isa"][isa])]


def torch_requirement(with_extension: bool) -> str:
    """A compiled extension needs the torch it was built against (torch's C++ ABI changes
    between releases); the pure-Python package and the source take the tested range."""
    if not with_extension:
        return TORCH_RANGE
    import torch

    return f"torch=={torch.__version__.split('+')[0]}"


def extensions():
    if os.environ.get("SE_KERNELS_NO_EXTENSION") == "1":
        return [], {}
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    class BuildPerExtensionDir(BuildExtension):
        """Each library compiles in its own temp dir: the ISA variants share sources, so
        their objects must not overwrite each other."""

        def build_extension(self, ext):
            base = self.build_temp
            self.build_temp = os.path.join(base, ext.name.rsplit(".", 1)[-1])
            try:
                super().build_extension(ext)
            finally:
                self.build_temp = base

    with_cuda = want_cuda(CUDA_HOME)
    ops_sources, isa_sources = read_sources()
    ops_sources = [s for s in ops_sources if with_cuda or not s.endswith(".cu")]
    # -fopenmp: at::parallel_for is an inline OpenMP region in torch's headers; without it
    # the CPU kernels silently run on one thread. libgomp resolves to torch's own copy.
    cxx = ["-O3", "-fopenmp", "-Wno-unknown-pragmas"]
    link = ["-fopenmp"]
    if with_cuda:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", POLICY["cuda_archs"])
        ops = CUDAExtension("se_kernels._C", ops_sources,
                            extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "-lineinfo"]},
                            extra_link_args=link)
    else:
        ops = CppExtension("se_kernels._C", ops_sources, extra_compile_args={"cxx": cxx},
                           extra_link_args=link)
    isas = cpu_isas()
    kernels = [CppExtension(f"se_kernels._cpu_{isa}", isa_sources,
                            extra_compile_args={"cxx": cxx + POLICY["cpu_isa_flags_common"]
                                                + POLICY["cpu_isa"][isa] + [f"-DSE_CPU_ISA={isa}"]},
                            extra_link_args=link)
               for isa in isas]
    print(f"se_kernels: building the ops library with{'' if with_cuda else 'out'} CUDA kernels, "
          f"CPU kernels for {isas}")
    return [ops, *kernels], {"build_ext": BuildPerExtensionDir}


# A source distribution ships csrc/ (MANIFEST.in) and builds nothing; its metadata takes
# the torch range.
ext_modules, cmdclass = ([], {}) if "sdist" in sys.argv else extensions()

setup(
    name="se_kernels",
    version=version(),
    description="Fused Squeeze-and-Excitation kernels (CUDA, Triton, CPU) for PyTorch",
    long_description=(ROOT / "README.md").read_text() if (ROOT / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="BSD-3-Clause",
    license_files=["LICENSE"],
    packages=find_packages(include=["se_kernels", "se_kernels.*"]),
    python_requires=">=3.10",
    install_requires=[torch_requirement(bool(ext_modules))],
    extras_require={
        "triton": ["triton>=3.6"],
        "timm": ["timm"],
        "bench": ["timm", "matplotlib", "tqdm", "pytest-benchmark"],
        "onnx": ["onnx", "onnxscript", "onnxruntime"],
    },
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    zip_safe=False,
)
