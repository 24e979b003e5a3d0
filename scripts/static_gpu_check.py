"""Static GPU checks: every kernel specialization real workloads get, compiled for real GPU
targets without a GPU, its resource use read back, its occupancy computed, and budgets
enforced.

    python scripts/static_gpu_check.py                # the full set (writes the committed table)
    python scripts/static_gpu_check.py --subset ci    # the stratified subset CI runs
    python scripts/static_gpu_check.py --extension se_kernels/_C*.so   # CUDA kernels only

Workloads: every distinct SE layer of the benchmark networks (benchmarks/shapes.py) at
batch 1, 8, 32 and 128, in fp32 / fp16 / bf16, NCHW and channels_last, crossed with every
option set convert_model produces for the converter's test models (benchmarks/models.py)
plus avgmax and bias-free variants, and every activation and gate on one network's layers,
forward and backward, planned for an A100 (108 SMs) and an H100 (132 SMs).

Triton: each launch is produced by the backend's own host code (se_kernels/triton/
launch.py) on meta tensors, with the launches recorded instead of run, and specialized by
Triton's own launch binder, so a variant here is exactly what a GPU launch compiles.
Each distinct one is compiled with triton.compile for sm_80 and sm_90 (and sm_100 where
ptxas supports it) and its cubin read with cuobjdump.

CUDA: the plan of csrc/cuda/plan.cpp (through se_kernels.plans) says which template
instantiations (element type x vector width) the workloads use; their resource use comes
from cuobjdump on the built extension.

Budgets (docs/DESIGN.md, "Static GPU checks"): no variant spills (STACK and LOCAL 0) on
sm_80 or sm_90; the streaming kernels stay at or below 128 registers per thread and reach
at least 16 warps per SM (4 per scheduler). Exit status 1 when one is broken.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Iterable, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

# --- targets and budgets -------------------------------------------------------------

SM_COUNTS = {"A100": 108, "H100": 132}
BATCHES = (1, 8, 32, 128)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
LAYOUTS = ("nchw", "channels_last")
STREAMING = {"excite_kernel", "excite_backward_kernel"}  # same names in Triton and CUDA
MAX_STREAMING_REGS = 128
MIN_STREAMING_WARPS_PER_SM = 16  # 4 warps per scheduler, 4 schedulers per SM
BUDGET_ARCHS = (80, 90)  # where the budgets are enforced


@dataclasses.dataclass(frozen=True)
class Arch:
    """Per-SM limits (CUDA occupancy calculator values)."""

    cc: int
    smem_per_sm: int  # bytes usable by CTAs
    max_threads: int = 2048
    max_ctas: int = 32
    regs_per_sm: int = 65536
    reg_unit: int = 256  # registers are allocated per warp in units of 256
    smem_unit: int = 128
    smem_reserved: int = 1024  # per CTA, sm_80 and later


ARCHS = {80: Arch(80, 167936), 90: Arch(90, 233472), 100: Arch(100, 233472)}


def occupancy(arch: Arch, regs: int, smem: int, threads: int) -> tuple[int, int]:
    """(CTAs per SM, warps per SM) from registers, shared memory and threads."""
    warps = -(-threads // 32)
    regs_per_warp = -(-max(regs, 1) * 32 // arch.reg_unit) * arch.reg_unit
    by_regs = arch.regs_per_sm // (regs_per_warp * warps)
    smem_cta = -(-(smem + arch.smem_reserved) // arch.smem_unit) * arch.smem_unit
    by_smem = arch.smem_per_sm // smem_cta
    ctas = min(arch.max_threads // (warps * 32), arch.max_ctas, by_regs, by_smem)
    return ctas, ctas * warps


# --- workloads -----------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Workload:
    layer: str
    N: int
    C: int
    R1: int
    H: int
    W: int
    dtype: str
    layout: str
    options: "SEOptions"  # benchmarks.models.SEOptions
    split: str = ""  # "batchnorm" / "eca": the split ops' launches (se_kernels/split_ops.py)


def workloads() -> list[Workload]:
    from benchmarks.models import SEOptions, converted_options
    from benchmarks.shapes import NETWORKS, se_layers

    options = list(converted_options())
    # Options the converter's models do not use but users may: every flag value appears.
    options += [SEOptions("avgmax", "relu", "sigmoid", True, True, True, True),
                SEOptions("avgmax", "identity", "hard_sigmoid", False, False, False, False),
                SEOptions("avg", "silu", "hard_sigmoid", True, False, False, False)]
    out = []
    for net in NETWORKS:
        for layer in se_layers(net):
            for n in BATCHES:
                for dtype in DTYPES:
                    for layout in LAYOUTS:
                        for o in options:
                            out.append(Workload(layer.name, n, layer.C,
                                                layer.R if o.two_fc else layer.C, layer.H,
                                                layer.W, dtype, layout, o))
    return out + activation_workloads() + split_workloads()


def split_workloads() -> list[Workload]:
    """The split ops' launches (SE with a batch-statistics BatchNorm; ECA), on the first
    network's layers at batch 8 and 32, every dtype and layout, with and without the
    residual + ReLU epilogue."""
    from benchmarks.models import SEOptions
    from benchmarks.shapes import NETWORKS, se_layers

    out = []
    for layer in se_layers(NETWORKS[0]):
        for n in (8, 32):
            for dtype in DTYPES:
                for layout in LAYOUTS:
                    for residual in (False, True):
                        bn = SEOptions("avg", "relu", "sigmoid", True, False, True, residual)
                        eca = SEOptions("avg", "identity", "sigmoid", False, False, False, residual)
                        out.append(Workload(layer.name, n, layer.C, layer.R, layer.H, layer.W,
                                            dtype, layout, bn, "batchnorm"))
                        out.append(Workload(layer.name, n, layer.C, layer.C, layer.H, layer.W,
                                            dtype, layout, eca, "eca"))
    return out


def activation_workloads() -> list[Workload]:
    """Every hidden activation and gate (each is its own Triton specialization), on the
    first network's layers at batch 8: their code must compile for the real targets too
    (the interpreter accepts what the compiler may not)."""
    from benchmarks.models import SEOptions
    from benchmarks.shapes import NETWORKS, se_layers
    from se_kernels.options import ACTS, GATES

    options = [SEOptions("avg", act, "sigmoid", True, True, True, False) for act in ACTS]
    options += [SEOptions("avg", "relu", gate, True, True, True, False) for gate in GATES]
    return [Workload(layer.name, 8, layer.C, layer.R, layer.H, layer.W, dtype, layout, o)
            for layer in se_layers(NETWORKS[0]) for dtype in ("float32", "bfloat16")
            for layout in LAYOUTS for o in options]


def meta_inputs(w: Workload):
    fmt = torch.channels_last if w.layout == "channels_last" else torch.contiguous_format
    dt = DTYPES[w.dtype]

    def act():
        return torch.empty(w.N, w.C, w.H, w.W, device="meta", dtype=dt, memory_format=fmt)

    f32 = dict(device="meta", dtype=torch.float32)
    o = w.options
    w1 = torch.empty(w.R1, w.C, **f32)
    b1 = torch.empty(w.R1, **f32) if o.bias1 else None
    w2 = torch.empty(w.C, w.R1, **f32) if o.two_fc else None
    b2 = torch.empty(w.C, **f32) if o.two_fc and o.bias2 else None
    return act(), w1, b1, w2, b2, act() if o.residual else None, act


# --- Triton: record the real launches, specialize them as a launch would --------------

@dataclasses.dataclass(frozen=True)
class TritonVariant:
    kernel: str  # module:function
    signature: str  # json
    constexprs: str  # json
    attrs: str  # json
    num_warps: int
    num_stages: int
    maxnreg: Optional[int] = None

    @property
    def name(self) -> str:
        return self.kernel.rsplit(":", 1)[1]

    def meta(self) -> dict:
        """The constexpr values by argument name (for the table)."""
        return json.loads(self.constexprs)


def triton_variants(w: Workload, sm_count: int) -> list[TritonVariant]:
    """The Triton specializations one workload compiles, forward and backward."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    from se_kernels.triton import launch as triton_launch
    from se_kernels.triton.plan import assume_gpu

    backend = make_backend(GPUTarget("cuda", 90, 32))
    recorded = []

    def record(kernel, grid, *args, **kwargs):
        recorded.append((kernel, args, kwargs))

    x, w1, b1, w2, b2, res, act = meta_inputs(w)
    o = w.options
    out_act = "relu" if o.residual else "identity"
    saved = triton_launch.launch
    triton_launch.launch = record
    try:
        with assume_gpu(sm_count):
            if w.split:
                _split_launches(w, x, w1, w2, b2, res, act, out_act)
                return _variants(recorded, backend, create_function_from_signature)
            y, _pooled, pooled_max, fc1_out, fc2_out = triton_launch.forward(
                x, w1, b1, w2, b2, res, o.pool, o.act, o.gate, 1.0, out_act)
            triton_launch.backward(act(), x, y if out_act == "relu" else None, w1, w2,
                                   pooled_max, fc1_out, fc2_out, res is not None, o.pool, o.act,
                                   o.gate, 1.0, out_act)
    finally:
        triton_launch.launch = saved
    return _variants(recorded, backend, create_function_from_signature)


def _split_launches(w: Workload, x, w1, w2, b2, res, act, out_act: str) -> None:
    """The four split ops of one workload, forward and backward (their launches recorded):
    "batchnorm" with both FCs, "eca" with the k-tap convolution (circular, k = 5)."""
    from se_kernels.triton import launch_split as split

    bn = w.split == "batchnorm"
    fc1, fc2 = (w1, w2) if bn else (None, None)
    conv = () if bn else (torch.empty(5, device="meta"), None, True)
    pooled, z1 = split.split_squeeze(x, fc1)
    y, logits = split.split_excite(x, pooled, z1 if bn else pooled, fc2, b2 if bn else None,
                                   res, w.options.act, w.options.gate, 1.0, out_act, *conv)
    out = y if out_act == "relu" else None
    grad_logits, grad_h = split.split_squeeze_backward(act(), x, out, fc2, logits,
                                                       w.options.gate, 1.0, out_act)
    split.split_excite_backward(act(), x, out, fc1, logits, grad_logits,
                                grad_h if bn else grad_logits, res is not None,
                                w.options.gate, 1.0, out_act, *conv[:1], *conv[2:])


def _variants(recorded: list, backend, create_function_from_signature) -> list[TritonVariant]:
    variants = []
    for kernel, args, kwargs in recorded:
        binder = create_function_from_signature(kernel.signature, kernel.params, backend)
        bound, spec, opts = binder(*args, **kwargs)
        options, signature, constexprs, attrs = kernel._pack_args(backend, opts, bound, spec, opts)
        names = kernel.arg_names
        variants.append(TritonVariant(
            f"{kernel.fn.__module__}:{kernel.fn.__name__}",
            json.dumps(signature, sort_keys=True),
            json.dumps({names[k[0]]: _plain(v) for k, v in sorted(constexprs.items())}),
            json.dumps(sorted([[list(k), v] for k, v in attrs.items()])),
            options.num_warps, options.num_stages, options.maxnreg))
    return variants


def _plain(v):
    return v.value if hasattr(v, "value") else v


def compile_triton(variant: TritonVariant, cc: int) -> dict:
    """Compile one variant for sm_<cc> and read its resource use (runs in a worker)."""
    import importlib

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    module, fn_name = variant.kernel.split(":")
    fn = getattr(importlib.import_module(module), fn_name)
    signature = json.loads(variant.signature)
    constexprs = {(fn.arg_names.index(k),): v for k, v in json.loads(variant.constexprs).items()}
    attrs = {tuple(k): v for k, v in json.loads(variant.attrs)}
    src = ASTSource(fn, signature, constexprs, attrs)
    try:
        compiled = triton.compile(src, target=GPUTarget("cuda", cc, 32),
                                  options={"num_warps": variant.num_warps,
                                           "num_stages": variant.num_stages,
                                           "maxnreg": variant.maxnreg})
    except Exception as exc:  # a compile failure is a finding, not a crash
        return {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    usage = cubin_resources(compiled.asm["cubin"])
    usage["SHARED"] = max(usage.get("SHARED", 0), compiled.metadata.shared)
    usage["threads"] = 32 * variant.num_warps
    return usage


# --- cuobjdump ----------------------------------------------------------------------

def cuobjdump() -> str:
    import triton

    bundled = Path(triton.__file__).parent / "backends/nvidia/bin/cuobjdump"
    found = shutil.which("cuobjdump") or (str(bundled) if bundled.exists() else None)
    if not found:
        sys.exit("cuobjdump not found (it ships in triton/backends/nvidia/bin/)")
    return found


_RESOURCE = re.compile(r"(REG|STACK|SHARED|LOCAL):(\d+)")


def parse_resource_usage(text: str) -> list[tuple[Optional[int], str, dict]]:
    """(arch, function, {REG, STACK, SHARED, LOCAL}) for every function cuobjdump lists."""
    out, arch, function = [], None, None
    for line in text.splitlines():
        m = re.match(r"\s*arch = sm_(\d+)", line)
        if m:
            arch = int(m.group(1))
        m = re.match(r"\s*Function (\S+):", line)
        if m:
            function = m.group(1)
            continue
        if function and "REG:" in line:
            out.append((arch, function, {k: int(v) for k, v in _RESOURCE.findall(line)}))
            function = None
    return out


def cubin_resources(cubin: bytes) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([cuobjdump(), "--dump-resource-usage", f.name], check=True,
                              capture_output=True, text=True).stdout
    entries = parse_resource_usage(text)
    assert len(entries) == 1, text
    return entries[0][2]


def demangle(names: list[str]) -> list[str]:
    tool = shutil.which("c++filt")
    if not tool:
        return names
    return subprocess.run([tool], input="\n".join(names), capture_output=True, text=True,
                          check=True).stdout.splitlines()


def cuda_extension_rows(library: str, used: set[tuple[str, int]]) -> list[dict]:
    """Resource use of every kernel instantiation in the built extension, per arch."""
    text = subprocess.run([cuobjdump(), "--dump-resource-usage", library], check=True,
                          capture_output=True, text=True).stdout
    entries = parse_resource_usage(text)
    pretty = demangle([f for _, f, _ in entries])
    rows = []
    for (arch, _mangled, usage), name in zip(entries, pretty):
        m = re.search(r"(\w+_kernel)<(c10::Half|c10::BFloat16|float), (\d+)>", name)
        if not m:
            continue
        kernel, ctype, vec = m.group(1), m.group(2), int(m.group(3))
        dtype = {"c10::Half": "float16", "c10::BFloat16": "bfloat16", "float": "float32"}[ctype]
        ctas, warps = occupancy(ARCHS[arch], usage["REG"], usage.get("SHARED", 0), 256)
        rows.append(dict(backend="cuda", kernel=kernel, arch=f"sm_{arch}", dtype=dtype,
                         variant=f"VEC={vec}", used_by_workloads=(dtype, vec) in used,
                         regs=usage["REG"], stack=usage["STACK"], local=usage["LOCAL"],
                         shared=usage.get("SHARED", 0), threads=256, ctas_per_sm=ctas,
                         warps_per_sm=warps))
    return rows


def cuda_instantiations(ws: Iterable[Workload]) -> set[tuple[str, int]]:
    """(dtype, vector width) pairs the CUDA plan picks for the workloads (both GPUs)."""
    from se_kernels.plans import cuda_plan

    used = set()
    for w in ws:
        x, *_ = meta_inputs(w)
        for sms in SM_COUNTS.values():
            used.add((w.dtype, cuda_plan(x, w.R1, w.options.two_fc, w.options.pool, sms, [x]).vec))
    return used


# --- the subset CI runs --------------------------------------------------------------

def features(v: TritonVariant) -> set[tuple]:
    sig = json.loads(v.signature)
    meta = v.meta()
    feats = {(v.name, "x", sig.get("x_ptr") or sig.get("g_ptr")), (v.name, "warps", v.num_warps)}
    feats |= {(v.name, k, val) for k, val in meta.items() if not k.startswith("stride")}
    return feats


def stratified(variants: list[TritonVariant]) -> list[TritonVariant]:
    """A fixed subset that covers every (kernel, dtype, flag or block value) pair, greedily
    taking the variant that covers the most uncovered pairs (ties: the first in order)."""
    todo = set().union(*(features(v) for v in variants))
    chosen = []
    ordered = sorted(variants, key=lambda v: (v.kernel, v.signature, v.constexprs, v.attrs))
    while todo:
        best = max(ordered, key=lambda v: len(features(v) & todo))
        chosen.append(best)
        todo -= features(best)
    return chosen


# --- the run -------------------------------------------------------------------------

def check(rows: list[dict]) -> list[str]:
    """Budget violations, one line each."""
    bad = []
    for r in rows:
        if r.get("error"):
            bad.append(f"{r['backend']} {r['kernel']} {r['arch']} {r['variant']}: {r['error']}")
            continue
        if int(r["arch"][3:]) not in BUDGET_ARCHS or not r.get("used_by_workloads", True):
            continue
        what = f"{r['backend']} {r['kernel']} {r['arch']} {r['dtype']} {r['variant']}"
        if r["stack"] or r["local"]:
            bad.append(f"{what}: spills (STACK {r['stack']}, LOCAL {r['local']})")
        if r["kernel"] in STREAMING:
            if r["regs"] > MAX_STREAMING_REGS:
                bad.append(f"{what}: {r['regs']} registers > {MAX_STREAMING_REGS}")
            if r["warps_per_sm"] < MIN_STREAMING_WARPS_PER_SM:
                bad.append(f"{what}: {r['warps_per_sm']} warps per SM < {MIN_STREAMING_WARPS_PER_SM}")
    return bad


def summary(rows: list[dict]) -> str:
    table = defaultdict(list)
    for r in rows:
        if not r.get("error") and r.get("used_by_workloads", True):
            table[(r["backend"], r["kernel"], r["arch"])].append(r)
    lines = [f"{'backend':8} {'kernel':24} {'arch':6} {'variants':>8} {'max REG':>7} "
             f"{'spills':>6} {'min warps/SM':>12} {'max SHARED':>10}"]
    for (backend, kernel, arch), rs in sorted(table.items()):
        lines.append(f"{backend:8} {kernel:24} {arch:6} {len(rs):8d} {max(r['regs'] for r in rs):7d} "
                     f"{sum(1 for r in rs if r['stack'] or r['local']):6d} "
                     f"{min(r['warps_per_sm'] for r in rs):12d} {max(r['shared'] for r in rs):10d}")
    return "\n".join(lines)


def supported_archs(requested: list[int]) -> list[int]:
    """sm_100 only where this Triton's ptxas knows it."""
    import triton

    out = []
    for cc in requested:
        if cc >= 100:
            ptxas = Path(triton.__file__).parent / "backends/nvidia/bin/ptxas-blackwell"
            ptxas = ptxas if ptxas.exists() else Path(triton.__file__).parent / "backends/nvidia/bin/ptxas"
            probe = subprocess.run([str(ptxas), "--help"], capture_output=True, text=True)
            if "sm_100" not in probe.stdout + probe.stderr:
                print(f"sm_{cc}: skipped, the installed ptxas does not support it")
                continue
        out.append(cc)
    return out


def find_extension() -> Optional[str]:
    hits = sorted(glob.glob(str(ROOT / "se_kernels" / "_C*.so")))
    return hits[0] if hits else None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--subset", choices=["full", "ci"], default="full")
    p.add_argument("--archs", nargs="+", type=int, default=[80, 90, 100])
    p.add_argument("--extension", help="built se_kernels/_C*.so (default: the in-place build)")
    p.add_argument("--no-triton", action="store_true")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/static")
    args = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        sys.exit("static_gpu_check compiles for real GPUs: run it without TRITON_INTERPRET=1")
    start = time.time()
    archs = supported_archs(args.archs)
    ws = workloads()
    print(f"{len(ws)} workloads x {len(SM_COUNTS)} GPUs; archs {['sm_%d' % a for a in archs]}")

    rows: list[dict] = []
    if not args.no_triton:
        variants: dict[TritonVariant, set] = defaultdict(set)
        for w in ws:
            for gpu, sms in SM_COUNTS.items():
                for v in triton_variants(w, sms):
                    variants[v].add(gpu)
        chosen = list(variants) if args.subset == "full" else stratified(list(variants))
        print(f"triton: {len(variants)} distinct specializations, compiling {len(chosen)} "
              f"for {len(archs)} archs ({time.time() - start:.0f} s so far)")
        jobs = [(v, cc) for v in chosen for cc in archs]
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            results = list(pool.map(compile_triton, *zip(*jobs), chunksize=4))
        for (v, cc), usage in zip(jobs, results):
            row = dict(backend="triton", kernel=v.name, arch=f"sm_{cc}",
                       dtype=json.loads(v.signature).get("x_ptr", json.loads(v.signature).get("g_ptr")),
                       variant=" ".join(f"{k}={val}" for k, val in v.meta().items()
                                        if not k.startswith("stride")) + f" warps={v.num_warps}",
                       gpus="+".join(sorted(variants[v])))
            if "error" in usage:
                rows.append(dict(row, error=usage["error"]))
                continue
            ctas, warps = occupancy(ARCHS[cc], usage["REG"], usage["SHARED"], usage["threads"])
            rows.append(dict(row, regs=usage["REG"], stack=usage["STACK"], local=usage["LOCAL"],
                             shared=usage["SHARED"], threads=usage["threads"], ctas_per_sm=ctas,
                             warps_per_sm=warps))

    library = args.extension or find_extension()
    if library:
        rows += cuda_extension_rows(library, cuda_instantiations(ws))
    else:
        print("cuda: no built extension found; CUDA kernels not checked")

    violations = check(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.subset == "full" else f"-{args.subset}"
    columns = ["backend", "kernel", "arch", "dtype", "variant", "gpus", "used_by_workloads",
               "regs", "stack", "local", "shared", "threads", "ctas_per_sm", "warps_per_sm", "error"]
    with open(args.out / f"resources{suffix}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    text = summary(rows)
    meta = dict(subset=args.subset, workloads=len(ws), archs=archs, rows=len(rows),
                budgets=dict(no_spills_on=BUDGET_ARCHS, max_streaming_regs=MAX_STREAMING_REGS,
                             min_streaming_warps_per_sm=MIN_STREAMING_WARPS_PER_SM),
                torch=torch.__version__, triton=__import__("triton").__version__,
                violations=violations, seconds=round(time.time() - start))
    (args.out / f"summary{suffix}.json").write_text(json.dumps(dict(meta, table=text.splitlines()),
                                                               indent=1))
    print(text)
    print(f"{len(rows)} kernel variants checked in {time.time() - start:.0f} s")
    if violations:
        print(f"{len(violations)} budget violations:")
        print("\n".join(f"  {v}" for v in violations[:40]))
        return 1
    print("all budgets hold")
    return 0


if __name__ == "__main__":
    sys.exit(main())
