"""Build and install se_kernels.

    pip install --no-build-isolation .        # builds against the torch already installed

The compiled extension (se_kernels/_C*.so) holds the C++ ops: CPU kernels always, CUDA
kernels when nvcc is found (CUDA_HOME, PATH or /usr/local/cuda) or FORCE_CUDA=1. The
decision never depends on a GPU being present, so CUDA builds on GPU-less machines.

Environment:
    FORCE_CUDA=1               build the CUDA kernels (fails if nvcc is missing)
    SE_KERNELS_NO_CUDA=1       CPU kernels only, even when nvcc is present
    SE_KERNELS_NO_EXTENSION=1  pure Python (Triton + reference backends only)
    SE_KERNELS_NO_AVX2=1       build the CPU kernels without AVX2 (portable, slower); by
                               default x86-64 hosts with AVX2/FMA/F16C build them with it
    TORCH_CUDA_ARCH_LIST       GPU archs; default "8.0;8.6;8.9;9.0+PTX"
    MAX_JOBS                   parallel compile jobs (ninja is used when installed)
"""

import os
import platform
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent
DEFAULT_ARCHS = "8.0;8.6;8.9;9.0+PTX"


def read_sources() -> list[str]:
    lines = (ROOT / "csrc" / "sources.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def want_cuda(cuda_home) -> bool:
    if os.environ.get("SE_KERNELS_NO_CUDA") == "1":
        return False
    if os.environ.get("FORCE_CUDA") == "1":
        return True
    return cuda_home is not None and (Path(cuda_home) / "bin" / "nvcc").exists()


def cpu_simd_flags() -> list[str]:
    """AVX2 for at::vec in the CPU kernels when the build host has it.

    Without CPU_CAPABILITY_AVX2 an extension gets at::vec's scalar fallback. The
    resulting library needs an AVX2 CPU, as does any build made on such a host.
    """
    if os.environ.get("SE_KERNELS_NO_AVX2") == "1" or platform.machine() not in ("x86_64", "AMD64"):
        return []
    cpuinfo = Path("/proc/cpuinfo")
    flags = set(cpuinfo.read_text().split()) if cpuinfo.exists() else set()
    if not {"avx2", "fma", "f16c"} <= flags:
        return []
    return ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"]


def extensions():
    if os.environ.get("SE_KERNELS_NO_EXTENSION") == "1":
        return [], {}
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    with_cuda = want_cuda(CUDA_HOME)
    sources = [s for s in read_sources() if with_cuda or not s.endswith(".cu")]
    # -fopenmp: at::parallel_for is an inline OpenMP region in torch's headers; without it
    # the CPU kernels silently run on one thread. libgomp resolves to torch's own copy.
    cxx_flags = ["-O3", "-fopenmp", "-Wno-unknown-pragmas", *cpu_simd_flags()]
    link_flags = ["-fopenmp"]
    if with_cuda:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCHS)
        ext = CUDAExtension(
            "se_kernels._C", sources,
            extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "-lineinfo"]},
            extra_link_args=link_flags,
        )
    else:
        ext = CppExtension("se_kernels._C", sources, extra_compile_args={"cxx": cxx_flags},
                           extra_link_args=link_flags)
    print(f"se_kernels: building the extension with{'' if with_cuda else 'out'} CUDA kernels")
    return [ext], {"build_ext": BuildExtension}


ext_modules, cmdclass = extensions()

setup(
    name="se_kernels",
    version="0.1.0",
    description="Fused Squeeze-and-Excitation kernels (CUDA, Triton, CPU) for PyTorch",
    long_description=(ROOT / "README.md").read_text() if (ROOT / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["se_kernels", "se_kernels.*"]),
    python_requires=">=3.10",
    install_requires=["torch>=2.11"],
    extras_require={"triton": ["triton>=3.6"], "timm": ["timm"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    zip_safe=False,
)
