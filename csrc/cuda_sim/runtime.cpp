// The cuda_sim scheduler and checkers (see runtime.h for what is emulated and checked).
#include "runtime.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <numeric>
#include <random>
#include <sstream>
#include <vector>

#include "fiber.h"

namespace se_sim {
namespace {

constexpr std::size_t kStackBytes = 128 * 1024;
constexpr std::size_t kMaxStaticShared = 48 * 1024;  // static __shared__ per CTA
constexpr unsigned kMaxThreads = 1024;
constexpr int kWarpSize = 32;

enum class State { Ready, AtBarrier, AtShuffle, Done };

struct Thread {
  Context ctx;
  dim3 idx;
  int tid = 0;  // linear index in the CTA
  State state = State::Ready;
  const char* file = nullptr;  // where it waits
  int line = 0;
  uint64_t shuffles = 0;  // shuffles this thread has completed
  int shared_decls = 0;   // __shared__ arrays it has declared
};

// One shuffle in flight per warp and parity (two can overlap: a fast lane may deposit
// for the next shuffle before a slow one has read the last).
struct Exchange {
  float value[kWarpSize];
  unsigned mask = 0, arrived = 0;
  uint64_t serial = 0;
  const char* file = nullptr;
  int line = 0;
};

struct Warp {
  Exchange slots[2];
};

struct ShadowCell {
  uint32_t epoch = 0;
  int32_t writer = -1;             // thread that wrote it in this barrier interval
  int32_t reader = -1, reader2 = -1;  // up to two distinct readers in this interval
  bool initialised = false;
};

}  // namespace

struct SharedArray {
  std::string name;
  std::size_t elem_size;
  int64_t count;
  std::vector<unsigned char> data;
  std::vector<ShadowCell> shadow;
};

namespace {

struct Cta {
  const char* kernel;
  dim3 grid, block, idx;
  int n_threads;
  std::vector<Thread>* threads;
  std::vector<Warp> warps;
  std::vector<std::unique_ptr<SharedArray>> shared;
  std::size_t shared_bytes = 0;
  uint32_t epoch = 1;  // barrier interval; shadow cells of older epochs are stale
  int at_barrier = 0, exited = 0;
  const char* barrier_file = nullptr;
  int barrier_line = 0;
  const char* last_barrier = "kernel entry";
  int last_barrier_line = 0;
  const std::function<void()>* body;
  Thread* current = nullptr;
  Context scheduler;
  std::string error;
};

// Fibers and their stacks are made once per OS thread and reused by every CTA it runs.
struct Pool {
  std::vector<std::unique_ptr<FiberStack>> stacks;
  std::vector<Thread> threads;
};

thread_local Cta* tl_cta = nullptr;
thread_local Pool tl_pool;

ParallelFor g_parallel_for = nullptr;
std::mutex g_seed_mutex;
bool g_seed_set = false;
uint64_t g_seed = 0;
uint64_t g_launches = 0;

std::string dims(const dim3& d) {
  std::ostringstream s;
  s << "(" << d.x << "," << d.y << "," << d.z << ")";
  return s.str();
}

const char* base_name(const char* path) {
  const char* slash = std::strrchr(path, '/');
  return slash ? slash + 1 : path;
}

std::string where(const char* file, int line) {
  return std::string(base_name(file)) + ":" + std::to_string(line);
}

Cta& cta() {
  if (tl_cta == nullptr || tl_cta->current == nullptr) {
    throw KernelError("cuda_sim: a device function was called outside a kernel launch");
  }
  return *tl_cta;
}

std::string thread_name(const Cta& c, int tid) {
  const Thread& t = (*c.threads)[tid];
  return "thread " + dims(t.idx) + " (warp " + std::to_string(tid / kWarpSize) + ", lane " +
         std::to_string(tid % kWarpSize) + ")";
}

// Switch from the running thread back to the scheduler.
void yield_to_scheduler(Cta& c) {
  Thread* self = c.current;
  switch_context(self->ctx, c.scheduler);
}

void thread_main(void* arg) {
  Cta& c = *static_cast<Cta*>(arg);
  Thread& self = *c.current;
  try {
    (*c.body)();
  } catch (const std::exception& e) {
    fail(std::string("exception in the kernel: ") + e.what());
  }
  self.state = State::Done;
  ++c.exited;
  if (c.at_barrier > 0) {
    fail("barrier divergence: " + thread_name(c, self.tid) + " exited while " +
         std::to_string(c.at_barrier) + " threads wait at the barrier at " +
         where(c.barrier_file, c.barrier_line));
  }
  for (;;) switch_context(self.ctx, c.scheduler);
}

std::string deadlock_report(const Cta& c) {
  std::ostringstream s;
  s << "no thread can make progress:";
  int shown = 0;
  for (const Thread& t : *c.threads) {
    if (t.state == State::Done || shown >= 4) continue;
    ++shown;
    s << " " << thread_name(c, t.tid)
      << (t.state == State::AtBarrier ? " waits at the barrier at " : " waits at the shuffle at ")
      << where(t.file, t.line) << ";";
  }
  s << " " << c.exited << " threads have exited (a shuffle's mask names a lane that is "
    << "elsewhere, or threads reach different barriers)";
  return s.str();
}

void run_cta(Cta& c) {
  Pool& pool = tl_pool;
  while (static_cast<int>(pool.stacks.size()) < c.n_threads) {
    pool.stacks.push_back(std::make_unique<FiberStack>(kStackBytes));
  }
  pool.threads.assign(c.n_threads, Thread{});
  c.threads = &pool.threads;
  c.warps.assign((c.n_threads + kWarpSize - 1) / kWarpSize, Warp{});
  for (int tid = 0; tid < c.n_threads; ++tid) {
    Thread& t = pool.threads[tid];
    t.tid = tid;
    t.idx = {static_cast<unsigned>(tid) % c.block.x,
             static_cast<unsigned>(tid) / c.block.x % c.block.y,
             static_cast<unsigned>(tid) / (c.block.x * c.block.y)};
    make_context(t.ctx, *pool.stacks[tid], thread_main, &c);
  }
  tl_cta = &c;
  for (;;) {
    bool progressed = false;
    int done = 0;
    for (Thread& t : pool.threads) {
      if (t.state == State::Ready) {
        c.current = &t;
        switch_context(c.scheduler, t.ctx);
        c.current = nullptr;
        progressed = true;
        if (!c.error.empty()) break;
      }
      if (t.state == State::Done) ++done;
    }
    if (!c.error.empty() || done == c.n_threads) break;
    if (!progressed) {
      c.error = "cuda_sim: " + std::string(c.kernel) + ", block " + dims(c.idx) + ": " +
                deadlock_report(c);
      break;
    }
  }
  tl_cta = nullptr;
}

}  // namespace

// --- the running thread ------------------------------------------------------------

const dim3& thread_idx() { return cta().current->idx; }
const dim3& block_idx() { return cta().idx; }
const dim3& block_dim() { return cta().block; }
const dim3& grid_dim() { return cta().grid; }

void fail(const std::string& what) {
  Cta& c = cta();
  if (c.error.empty()) {
    c.error = "cuda_sim: " + std::string(c.kernel) + ", block " + dims(c.idx) + ", " +
              thread_name(c, c.current->tid) + ": " + what;
  }
  c.current->state = State::Done;
  for (;;) yield_to_scheduler(c);
}

void syncthreads(const char* file, int line) {
  Cta& c = cta();
  Thread& self = *c.current;
  if (c.exited > 0) {
    fail("barrier divergence: reached the barrier at " + where(file, line) + " after " +
         std::to_string(c.exited) + " threads of the CTA exited");
  }
  if (c.at_barrier == 0) {
    c.barrier_file = file;
    c.barrier_line = line;
  } else if (c.barrier_line != line || std::strcmp(c.barrier_file, file) != 0) {
    fail("barrier divergence: reached the barrier at " + where(file, line) + " while " +
         std::to_string(c.at_barrier) + " threads wait at the barrier at " +
         where(c.barrier_file, c.barrier_line));
  }
  if (++c.at_barrier == c.n_threads) {  // the last one releases everyone
    c.at_barrier = 0;
    ++c.epoch;
    c.last_barrier = file;
    c.last_barrier_line = line;
    for (Thread& t : *c.threads) {
      if (t.state == State::AtBarrier) t.state = State::Ready;
    }
    return;
  }
  self.state = State::AtBarrier;
  self.file = file;
  self.line = line;
  yield_to_scheduler(c);
}

float shfl_xor(unsigned mask, float value, int lane_mask, const char* file, int line) {
  Cta& c = cta();
  Thread& self = *c.current;
  const int lane = self.tid % kWarpSize;
  const int src = lane ^ lane_mask;
  auto site = [&] { return " (shuffle at " + where(file, line) + ")"; };
  if (!(mask >> lane & 1u)) {
    std::ostringstream hex;
    hex << std::hex << mask;
    fail("shuffle mask 0x" + hex.str() + " leaves out lane " + std::to_string(lane) +
         ", which takes part" + site());
  }
  if (src < 0 || src >= kWarpSize || !(mask >> src & 1u)) {
    fail("lane " + std::to_string(lane) + " reads lane " + std::to_string(src) +
         ", which the shuffle mask leaves out" + site());
  }
  const int warp_base = self.tid - lane;
  if (warp_base + kWarpSize > c.n_threads && mask >> (c.n_threads - warp_base)) {
    fail("the shuffle mask names lanes past the end of the CTA" + site());
  }
  Warp& warp = c.warps[self.tid / kWarpSize];
  const uint64_t serial = self.shuffles;
  Exchange& ex = warp.slots[serial & 1];
  if (ex.arrived == 0) {
    ex.mask = mask;
    ex.serial = serial;
    ex.file = file;
    ex.line = line;
  } else if (ex.mask != mask || ex.serial != serial) {
    fail("lanes of one warp disagree on a shuffle: this one is at " + where(file, line) +
         ", others at " + where(ex.file, ex.line));
  }
  ex.value[lane] = value;
  ex.arrived |= 1u << lane;
  if (ex.arrived != ex.mask) {
    self.state = State::AtShuffle;
    self.file = file;
    self.line = line;
    yield_to_scheduler(c);
  } else {
    for (int l = 0; l < kWarpSize; ++l) {
      if (ex.mask >> l & 1u) {
        Thread& t = (*c.threads)[warp_base + l];
        if (t.state == State::AtShuffle) t.state = State::Ready;
      }
    }
  }
  const float out = ex.value[src];
  self.shuffles = serial + 1;
  // The slot is free again once every lane has read it: the last reader clears it.
  if (((ex.arrived &= ~(1u << lane)) == 0)) ex.mask = 0;
  return out;
}

// --- shared memory -----------------------------------------------------------------

SharedArray* shared_alloc(const char* name, std::size_t elem_size, int64_t count, void** data) {
  Cta& c = cta();
  Thread& self = *c.current;
  const int k = self.shared_decls++;
  if (k < static_cast<int>(c.shared.size())) {
    SharedArray& a = *c.shared[k];
    if (a.name != name || a.count != count) {
      fail("threads declare different __shared__ arrays: " + std::string(name) + " here, " +
           a.name + " in another thread");
    }
    *data = a.data.data();
    return &a;
  }
  const std::size_t bytes = elem_size * static_cast<std::size_t>(count);
  if (c.shared_bytes + bytes > kMaxStaticShared) {
    fail("__shared__ " + std::string(name) + " brings the CTA's static shared memory to " +
         std::to_string(c.shared_bytes + bytes) + " bytes, over the 48 KB limit");
  }
  c.shared_bytes += bytes;
  auto a = std::make_unique<SharedArray>();
  a->name = name;
  a->elem_size = elem_size;
  a->count = count;
  a->data.assign(bytes, 0xff);  // poison: float NaN
  a->shadow.assign(count, ShadowCell{});
  c.shared.push_back(std::move(a));
  *data = c.shared.back()->data.data();
  return c.shared.back().get();
}

void shared_access(SharedArray* a, int64_t index, bool write) {
  Cta& c = cta();
  const int tid = c.current->tid;
  auto at = [&] { return a->name + "[" + std::to_string(index) + "]"; };
  if (index < 0 || index >= a->count) {
    fail("shared-memory out of bounds: " + at() + " of an array of " + std::to_string(a->count));
  }
  ShadowCell& cell = a->shadow[index];
  if (cell.epoch != c.epoch) {
    cell.epoch = c.epoch;
    cell.writer = cell.reader = cell.reader2 = -1;
  }
  auto race = [&](int other, const char* first, const char* second) {
    fail("shared-memory race on " + at() + ": " + first + " by " + thread_name(c, other) + " and " +
         second + " by " + thread_name(c, tid) + " in one barrier interval (since " +
         (c.last_barrier_line ? where(c.last_barrier, c.last_barrier_line) : "kernel entry") +
         ")");
  };
  if (write) {
    if (cell.writer >= 0 && cell.writer != tid) race(cell.writer, "written", "written");
    const int other = cell.reader != tid ? cell.reader : cell.reader2;
    if (other >= 0 && other != tid) race(other, "read", "written");
    cell.writer = tid;
    cell.initialised = true;
  } else {
    if (!cell.initialised) fail("read of uninitialised shared memory " + at());
    if (cell.writer >= 0 && cell.writer != tid) race(cell.writer, "written", "read");
    if (cell.reader < 0) {
      cell.reader = tid;
    } else if (cell.reader != tid) {
      cell.reader2 = tid;
    }
  }
}

// --- global memory -----------------------------------------------------------------

void global_fault(const char* name, int64_t extent, int64_t index) {
  if (extent == 0) fail(std::string("global access through ") + name + ", which is null or empty");
  fail(std::string("global out of bounds: ") + name + "[" + std::to_string(index) +
       "] is outside the tensor's " + std::to_string(extent) + " elements");
}

void misaligned(const char* name, int64_t index, std::size_t bytes) {
  fail(std::string("misaligned vector access: ") + name + "[" + std::to_string(index) +
       "] is not " + std::to_string(bytes) + "-byte aligned");
}

// --- launching ---------------------------------------------------------------------

void set_parallel_for(ParallelFor parallel_for) { g_parallel_for = parallel_for; }

void set_grid_order_seed(uint64_t seed) {
  std::lock_guard<std::mutex> lock(g_seed_mutex);
  g_seed = seed;
  g_seed_set = true;
}

int emulated_sm_count() {
  static const int count = [] {
    const char* env = std::getenv("SE_KERNELS_SIM_SM_COUNT");
    const int v = env ? std::atoi(env) : 0;
    return v > 0 ? v : 132;
  }();
  return count;
}

void launch(const char* kernel, dim3 grid, dim3 block, const std::function<void()>& body) {
  const std::string name = kernel;
  const uint64_t threads = uint64_t{block.x} * block.y * block.z;
  if (threads == 0 || threads > kMaxThreads) {
    throw KernelError("cuda_sim: " + name + " launched with " + std::to_string(threads) +
                      " threads per CTA (1..1024)");
  }
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 || grid.z > 65535) {
    throw KernelError("cuda_sim: " + name + " launched with grid " + dims(grid) +
                      " (each side >= 1; y and z <= 65535)");
  }
  const int64_t n_ctas = int64_t{grid.x} * grid.y * grid.z;
  std::vector<int64_t> order(n_ctas);
  std::iota(order.begin(), order.end(), 0);
  {
    std::lock_guard<std::mutex> lock(g_seed_mutex);
    if (!g_seed_set) {
      const char* env = std::getenv("SE_KERNELS_SIM_SEED");
      g_seed = env ? std::strtoull(env, nullptr, 10) : 0;
      g_seed_set = true;
    }
    if (g_seed != 0) {
      std::mt19937_64 rng(g_seed + 0x9e3779b97f4a7c15ull * ++g_launches);
      std::shuffle(order.begin(), order.end(), rng);
    }
  }
  std::mutex error_mutex;
  std::string first_error;
  auto run_range = [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!first_error.empty()) return;
      }
      const int64_t b = order[i];
      Cta c;
      c.kernel = kernel;
      c.grid = grid;
      c.block = block;
      c.idx = {static_cast<unsigned>(b % grid.x), static_cast<unsigned>(b / grid.x % grid.y),
               static_cast<unsigned>(b / (int64_t{grid.x} * grid.y))};
      c.n_threads = static_cast<int>(threads);
      c.body = &body;
      run_cta(c);
      if (!c.error.empty()) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (first_error.empty()) first_error = c.error;
        return;
      }
    }
  };
  if (g_parallel_for != nullptr && n_ctas > 1) {
    g_parallel_for(n_ctas, run_range);
  } else {
    run_range(0, n_ctas);
  }
  if (!first_error.empty()) throw KernelError(first_error);
}

}  // namespace se_sim
