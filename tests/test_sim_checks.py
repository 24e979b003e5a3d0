"""Each cuda_sim checker catches a deliberately broken kernel, and passes its correct twin.

The broken kernels (tests/sim_checks/broken_kernels.cpp) are built here with the host
compiler against the emulator alone (csrc/cuda_sim, no torch), so they never ship.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [ROOT / "tests/sim_checks/broken_kernels.cpp", ROOT / "csrc/cuda_sim/runtime.cpp",
           ROOT / "csrc/cuda_sim/fiber.cpp"]


# The hand-written x86-64 fiber switch, and the portable ucontext one other machines use.
FIBERS = {"asm": [], "ucontext": ["-DSE_SIM_UCONTEXT"]}


@pytest.fixture(scope="module", params=list(FIBERS))
def run_case(request, tmp_path_factory):
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None or not all(p.exists() for p in SOURCES):
        pytest.skip("needs a C++ compiler and the source tree (csrc/cuda_sim)")
    lib = tmp_path_factory.mktemp("sim_checks") / f"libbroken_{request.param}.so"
    subprocess.run([compiler, "-std=c++20", "-O1", "-shared", "-fPIC", f"-I{ROOT / 'csrc'}",
                    *FIBERS[request.param], *map(str, SOURCES), "-o", str(lib)], check=True)
    handle = ctypes.CDLL(str(lib))
    fn = handle.run_case
    fn.restype = ctypes.c_char_p
    fn.argtypes = [ctypes.c_char_p]
    run = lambda name: fn(name.encode()).decode()  # noqa: E731
    run.grid_order = handle.grid_order
    return run


# (broken kernel, fragments its error must contain)
CAUGHT = [
    ("half_the_block_waits",
     ["half_the_block_waits", "barrier divergence", "exited", "broken_kernels.cpp:22"]),
    ("two_different_barriers",
     ["barrier divergence", "broken_kernels.cpp:27", "broken_kernels.cpp:29"]),
    ("all_write_one_cell",
     ["all_write_one_cell", "shared-memory race on total[0]", "written by thread (0,0,0)",
      "written by thread (1,0,0)"]),
    ("read_neighbour_without_barrier",
     ["shared-memory race on cells[0]: written by thread (0,0,0) (warp 0, lane 0) and read by "
      "thread (1,0,0)"]),
    ("overwrite_what_a_neighbour_reads",
     ["shared-memory race on cells[", "]: read by thread (", "and written by thread (",
      "in one barrier interval (since broken_kernels.cpp:53)"]),
    ("read_before_anyone_writes", ["read of uninitialised shared memory cells[0]"]),
    ("too_much_shared", ["over the 48 KB limit"]),
    ("copy_one_past",
     ["copy_one_past", "global out of bounds: x[100] is outside the tensor's 100 elements",
      "thread (35,0,0)", "block (1,0,0)"]),
    ("mask_leaves_out_a_lane",
     ["lane 0 reads lane 16, which the shuffle mask leaves out", "broken_kernels.cpp:16"]),
    ("lanes_outside_their_mask", ["shuffle mask 0xffff leaves out lane 16, which takes part"]),
    ("shuffle_while_others_wait_at_a_barrier",
     ["no thread can make progress", "waits at the barrier", "waits at the shuffle"]),
]
CORRECT = ["everyone_waits", "read_neighbour_after_barrier", "copy_in_bounds", "full_mask_shuffle"]


@pytest.mark.parametrize("kernel, fragments", CAUGHT, ids=[c[0] for c in CAUGHT])
def test_checker_catches_broken_kernel(run_case, kernel, fragments):
    error = run_case(kernel)
    assert error, f"{kernel}: the emulator found nothing wrong"
    for fragment in fragments:
        assert fragment in error, f"{kernel}: {fragment!r} not in {error!r}"


@pytest.mark.parametrize("kernel", CORRECT)
def test_correct_twin_passes(run_case, kernel):
    assert run_case(kernel) == ""


def test_grid_order_is_shuffled_by_the_seed(run_case):
    """Seed 0 runs CTAs in grid order; a seed gives another permutation on every launch,
    which is how the test suite makes sure no kernel depends on the order."""
    def order(seed):
        out = (ctypes.c_int * 64)()
        run_case.grid_order(ctypes.c_uint64(seed), out)
        return list(out)

    assert order(0) == list(range(64))
    first, second = order(1234), order(1234)
    assert sorted(first) == sorted(second) == list(range(64))
    assert first != list(range(64)) and second != first
