// Fibers for cuda_sim: one per emulated GPU thread, switched cooperatively on one OS
// thread. x86-64 uses a hand-written switch (callee-saved registers, SSE and x87
// control words: about 10 ns); other machines use ucontext, whose swapcontext makes a
// signal-mask syscall per switch (about 0.5 us).
#pragma once

#include <cstddef>

#if !defined(__x86_64__) || defined(SE_SIM_UCONTEXT)
#define SE_SIM_USE_UCONTEXT 1
#include <ucontext.h>
#endif

namespace se_sim {

struct Context {
#if defined(SE_SIM_USE_UCONTEXT)
  ucontext_t uc;
#else
  void* sp = nullptr;
#endif
};

// A stack with a guard page below it: an overflow faults instead of corrupting memory.
class FiberStack {
 public:
  explicit FiberStack(std::size_t bytes);
  ~FiberStack();
  FiberStack(const FiberStack&) = delete;
  FiberStack& operator=(const FiberStack&) = delete;
  char* top() const { return base_ + size_; }
  char* bottom() const { return base_ + guard_; }
  std::size_t usable() const { return size_ - guard_; }

 private:
  char* base_;
  std::size_t size_, guard_;
};

// Prepares `ctx` to run entry(arg) on `stack` when first switched to. entry must never
// return: it ends by switching away for good.
void make_context(Context& ctx, const FiberStack& stack, void (*entry)(void*), void* arg);

// Saves the running context in `from` and continues `to`.
void switch_context(Context& from, Context& to);

}  // namespace se_sim
