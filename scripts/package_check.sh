#!/usr/bin/env bash
# The package as a user gets it, tested outside the source tree (run inside the set-up env):
#  1. build the sdist and check that it ships every tracked file the build needs;
#  2. build a wheel from the unpacked sdist (CPU kernels, cuda_sim, Triton; the nvcc build
#     is checked by the main CI run) and check that it holds no tests or benchmarks;
#  3. install the wheel into a fresh virtual environment and run a representative part of
#     the test suite from a directory outside the tree against it (the environment sees
#     this one's torch and test tools as a plain path, so it cannot import the checkout);
#  4. the same sdist against the oldest torch of the supported range (a CPU build).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# a CPU build here (the nvcc build is checked by the main run), so test_build must not expect CUDA
export MAX_JOBS="${MAX_JOBS:-$(nproc)}" SE_KERNELS_NO_CUDA=1 SE_EXPECT_CUDA_BUILD=0

echo "== sdist"
python -m build --sdist --no-isolation -o "$work/dist" >"$work/sdist.log" 2>&1 || { cat "$work/sdist.log"; exit 1; }
sdist=$(ls "$work"/dist/se_kernels-*.tar.gz)
shipped=$(tar tzf "$sdist" | sed 's#^[^/]*/##' | sort)
missing=$(comm -23 <(git ls-files csrc se_kernels setup.py pyproject.toml MANIFEST.in README.md LICENSE | sort) <(echo "$shipped"))
[ -z "$missing" ] || { echo "the sdist lacks: $missing"; exit 1; }
! echo "$shipped" | grep -E '^(tests|benchmarks)/|\.so$' || { echo "the sdist ships test, benchmark or build files"; exit 1; }
tar xzf "$sdist" -C "$work"
src=$(ls -d "$work"/se_kernels-*/)

build_wheel() {  # build_wheel <python> <out dir>
  (cd "$src" && "$1" -m pip wheel -q --no-build-isolation --no-deps . -w "$2") >"$2.log" 2>&1 \
    || { tail -40 "$2.log"; exit 1; }
  ls "$2"/se_kernels-*.whl
}

echo "== wheel from the unpacked sdist"
wheel=$(build_wheel python "$work/wheel")
! unzip -l "$wheel" | grep -E ' (tests|benchmarks)/' || { echo "the wheel ships tests or benchmarks"; exit 1; }

run_tests() {  # run_tests <venv> <pytest args...>: from outside the tree, against the install
  local venv=$1; shift
  rm -rf "$work/run" && mkdir "$work/run" && cp -r "$root/tests" "$work/run/tests"
  (cd "$work/run" && "$venv/bin/python" -c "import se_kernels; print('installed:', se_kernels.__file__, se_kernels.available_backends())" \
    && SE_EXPECT_INSTALLED_PREFIX="$venv" "$venv/bin/python" -m pytest tests -q -p no:cacheprovider "$@")
}

echo "== the wheel in a fresh environment, tests from outside the tree"
python -m venv "$work/venv"
purelib() { "$1" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }
purelib python > "$(purelib "$work/venv/bin/python")/_build_env_packages.pth"
"$work/venv/bin/python" -m pip install -q "$wheel"
run_tests "$work/venv" -k "not (triton and test_kernels) and not test_convert and not test_network_layers and not test_deploy"

echo "== the same sdist against the oldest supported torch"
oldest=$(python -c "import re; print(re.search(r'torch>=([0-9.]+)', open('setup.py').read()).group(1))")
python -m venv "$work/oldest"
"$work/oldest/bin/python" -m pip install -q "torch==$oldest.0" numpy pytest ninja setuptools
wheel=$(build_wheel "$work/oldest/bin/python" "$work/wheel-oldest")
"$work/oldest/bin/python" -m pip install -q "$wheel"
run_tests "$work/oldest" -k "(cpu or cuda_sim or test_build or test_errors) and not test_convert and not test_network_layers"
