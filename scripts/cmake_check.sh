#!/usr/bin/env bash
# Configure and build the libraries through CMake (the same sources and build policy as
# setup.py), then check that the ops library loads, registers a kernel for every op, and
# loads its CPU kernel library and computes. Run inside the set-up env.
set -euo pipefail
cd "$(dirname "$0")/.."
site=$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
with_cuda=OFF
if [ -x "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" ] && [ "${SE_KERNELS_NO_CUDA:-0}" != "1" ]; then
  with_cuda=ON
fi
cmake -S . -B build/cmake -DSE_KERNELS_WITH_CUDA=$with_cuda \
  -DCMAKE_PREFIX_PATH="$(python -c 'import torch; print(torch.utils.cmake_prefix_path)')" \
  -DCMAKE_CUDA_COMPILER="${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" \
  -DCUDA_TOOLKIT_ROOT_DIR="${CUDA_HOME:-/usr/local/cuda}" \
  -DCUDA_nvrtc_LIBRARY="$(ls "$site"/nvidia/cu*/lib/libnvrtc.so.* 2>/dev/null | head -n1)" >/dev/null
cmake --build build/cmake -j"${MAX_JOBS:-$(nproc)}" >/dev/null
SE_WITH_CUDA=$with_cuda python - <<'PY'
import os
import torch

torch.ops.load_library("build/cmake/libse_kernels_ops.so")
split = ("split_squeeze", "split_excite", "split_squeeze_backward", "split_excite_backward")
ops = ("forward", "backward", "infer") + split
wanted = [(prefix + op, "CPU") for op in ops for prefix in ("", "sim_")]
wanted += [("fc_grads", "CPU"), ("fc_grads", "CUDA")]  # CUDA's is ATen ops: any build has it
# The fused op with its C++ autograd node: the node, and the infer kernel without a graph.
wanted += [("squeeze_excite", "Autograd"), ("squeeze_excite", "CompositeExplicitAutograd")]
if os.environ["SE_WITH_CUDA"] == "ON":
    wanted += [(op, "CUDA") for op in ops]
missing = [f"se_kernels::{op} {key}" for op, key in wanted
           if not torch._C._dispatch_has_kernel_for_dispatch_key(f"se_kernels::{op}", key)]
if missing:
    raise SystemExit(f"CMake build: no kernel registered for {missing}")
isa = torch.ops.se_kernels.cpu_isa()  # loads libse_kernels_cpu_<isa>.so beside the ops library
x = torch.randn(2, 8, 5, 5)
w1, w2 = torch.randn(4, 8), torch.randn(8, 4)
args = (x, w1, None, w2, None, None, "avg", "relu", "sigmoid", 1.0, "identity")
y = torch.ops.se_kernels.forward(*args)[0]
ref = x * torch.sigmoid(torch.relu(x.mean((2, 3)) @ w1.t()) @ w2.t())[:, :, None, None]
torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
g1, g2, pooled, z1 = torch.randn(2, 4), torch.randn(2, 8), torch.randn(2, 8), torch.randn(2, 4)
gw1, _, gw2, _ = torch.ops.se_kernels.fc_grads(g1, g2, pooled, z1, w1, None, w2, None, "relu")
torch.testing.assert_close(gw1, g1.t() @ pooled, rtol=1e-5, atol=1e-5)
torch.testing.assert_close(gw2, g2.t() @ torch.relu(z1), rtol=1e-5, atol=1e-5)
# The C++ node, standalone (no Python package loaded): forward and backward vs autograd
# through the torch formula.
leaves = [t.clone().requires_grad_() for t in (x, w1, w2)]
y = torch.ops.se_kernels.squeeze_excite(leaves[0], leaves[1], None, leaves[2], None, None,
                                        *args[6:])
want = [t.clone().requires_grad_() for t in (x, w1, w2)]
ref = want[0] * torch.sigmoid(torch.relu(want[0].mean((2, 3)) @ want[1].t()) @ want[2].t())[:, :, None, None]
torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
for got, expected in zip(torch.autograd.grad(y.square().sum(), leaves),
                         torch.autograd.grad(ref.square().sum(), want)):
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
print(f"CMake build OK: registered {', '.join(f'{op} ({key})' for op, key in wanted)}; "
      f"CPU kernels {torch.ops.se_kernels.cpu_isas()} built, {isa} in use and correct")
PY
