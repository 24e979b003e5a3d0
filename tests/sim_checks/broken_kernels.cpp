// Deliberately broken test-only kernels, one per cuda_sim checker (and a correct twin of
// each, which must pass). Built with the emulator alone (no torch) by
// tests/test_sim_checks.py; run_case(name) returns the emulator's error, or "".
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "cuda_sim/runtime.h"

namespace {

constexpr int kThreads = 64;

float warp_sum(float v, unsigned mask) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(mask, v, offset);
  return v;
}

// --- barrier divergence ---
__global__ void half_the_block_waits() {
  if (threadIdx.x < kThreads / 2) __syncthreads();  // the other half exits
}

__global__ void two_different_barriers() {
  if (threadIdx.x % 2) {
    __syncthreads();
  } else {
    __syncthreads();
  }
}

__global__ void everyone_waits() { __syncthreads(); }

// --- shared-memory races ---
__global__ void all_write_one_cell() {
  SE_SIM_SHARED(float, total, 4);
  total[0] = static_cast<float>(threadIdx.x);
}

__global__ void read_neighbour_without_barrier() {
  SE_SIM_SHARED(float, cells, kThreads);
  cells[threadIdx.x] = 1.0f;
  if (threadIdx.x > 0) {
    float v = cells[threadIdx.x - 1];  // written by the previous thread: no barrier between
    (void)v;
  }
}

__global__ void overwrite_what_a_neighbour_reads() {
  SE_SIM_SHARED(float, cells, kThreads);
  cells[threadIdx.x] = 1.0f;
  __syncthreads();
  float v = cells[(threadIdx.x + 1) % kThreads];
  cells[threadIdx.x] = v;  // thread t - 1 read this cell in the same interval
}

__global__ void read_neighbour_after_barrier() {
  SE_SIM_SHARED(float, cells, kThreads);
  cells[threadIdx.x] = 1.0f;
  __syncthreads();
  float v = cells[(threadIdx.x + 1) % kThreads];
  (void)v;
}

__global__ void read_before_anyone_writes() {
  SE_SIM_SHARED(float, cells, kThreads);
  float v = cells[threadIdx.x];
  (void)v;
}

__global__ void too_much_shared() {
  SE_SIM_SHARED(float, big, 16 * 1024);  // 64 KB
  big[threadIdx.x] = 0.0f;
}

// --- global memory ---
struct Copy {
  se_sim::Global<const float> x;
  se_sim::Global<float> y;
  int n;
};

void copy_one_past(const Copy& p) {  // reads x[i + 1]: one element past the end at i = n - 1
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < p.n) p.y[i] = p.x[i + 1];
}

void copy_in_bounds(const Copy& p) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < p.n) p.y[i] = p.x[i];
}

// --- shuffles ---
__global__ void mask_leaves_out_a_lane() {
  warp_sum(1.0f, 0x0000ffffu);  // lanes 16..31 take part too
}

__global__ void lanes_outside_their_mask() {
  if (threadIdx.x % 32 >= 16) __shfl_xor_sync(0x0000ffffu, 1.0f, 1);
}

__global__ void full_mask_shuffle() {
  const float total = warp_sum(1.0f, 0xffffffffu);
  if (total != 32.0f) se_sim::fail("warp_sum gave " + std::to_string(total));
}

__global__ void shuffle_while_others_wait_at_a_barrier() {
  if (threadIdx.x % 32 == 0) {
    __syncthreads();
  } else {
    warp_sum(1.0f, 0xffffffffu);
  }
}

std::string run(const char* name) {
  const se_sim::dim3 grid{2, 1, 1}, block{kThreads, 1, 1};
  const std::string which = name;
  std::vector<float> x(100, 1.0f), y(100, 0.0f);
  const Copy copy{{x.data(), 100, "x"}, {y.data(), 100, "y"}, 100};
  const std::vector<std::pair<const char*, void (*)()>> simple = {
      {"half_the_block_waits", half_the_block_waits},
      {"two_different_barriers", two_different_barriers},
      {"everyone_waits", everyone_waits},
      {"all_write_one_cell", all_write_one_cell},
      {"read_neighbour_without_barrier", read_neighbour_without_barrier},
      {"overwrite_what_a_neighbour_reads", overwrite_what_a_neighbour_reads},
      {"lanes_outside_their_mask", lanes_outside_their_mask},
      {"read_neighbour_after_barrier", read_neighbour_after_barrier},
      {"read_before_anyone_writes", read_before_anyone_writes},
      {"too_much_shared", too_much_shared},
      {"mask_leaves_out_a_lane", mask_leaves_out_a_lane},
      {"full_mask_shuffle", full_mask_shuffle},
      {"shuffle_while_others_wait_at_a_barrier", shuffle_while_others_wait_at_a_barrier},
  };
  try {
    for (const auto& [kernel_name, kernel] : simple) {
      if (which == kernel_name) se_sim::launch(kernel_name, grid, block, [&] { kernel(); });
    }
    if (which == "copy_one_past") {
      se_sim::launch("copy_one_past", grid, block, [&] { copy_one_past(copy); });
    }
    if (which == "copy_in_bounds") {
      se_sim::launch("copy_in_bounds", grid, block, [&] { copy_in_bounds(copy); });
    }
  } catch (const se_sim::KernelError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

// The order in which the CTAs of a 64-CTA grid start, under `seed` (0: grid order).
extern "C" void grid_order(uint64_t seed, int* out) {
  se_sim::set_grid_order_seed(seed);
  int next = 0;
  se_sim::launch("grid_order", {8, 8, 1}, {32, 1, 1}, [&] {
    if (threadIdx.x == 0) out[next++] = static_cast<int>(blockIdx.y * gridDim.x + blockIdx.x);
  });
}

extern "C" const char* run_case(const char* name) {
  static thread_local std::string result;
  result = run(name);
  return result.c_str();
}
