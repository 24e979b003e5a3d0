#!/usr/bin/env bash
# Set up from nothing: a virtual environment, the pinned dependencies, and se_kernels
# built in place (editable) against that torch. Sourced by test.sh and bench.sh.
#
#   SE_VENV=path        virtual environment to create/use (default .venv)
#   SE_SKIP_DEPS=1      use the Python already on PATH (e.g. a machine with torch preinstalled)
#   FORCE_CUDA=1 / SE_KERNELS_NO_CUDA=1 / TORCH_CUDA_ARCH_LIST: see setup.py
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ "${SE_SKIP_DEPS:-0}" != "1" ]; then
  venv="${SE_VENV:-.venv}"
  [ -x "$venv/bin/python" ] || "${PYTHON:-python3}" -m venv "$venv"
  # shellcheck disable=SC1091
  . "$venv/bin/activate"
  python -m pip install -q --upgrade pip
  python -m pip install -q -r requirements.txt
fi

# CUDA kernels compile whenever nvcc is found; no GPU is needed to build them.
if [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then
  export CUDA_HOME=/usr/local/cuda
fi
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"
python -m pip install -q --no-build-isolation -e .
python - <<'PY'
import se_kernels
print("se_kernels", se_kernels.__version__, "backends here:", se_kernels.available_backends())
PY
