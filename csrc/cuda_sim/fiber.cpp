#include "fiber.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <new>

namespace se_sim {

FiberStack::FiberStack(std::size_t bytes) {
  guard_ = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  size_ = (bytes + guard_ - 1) / guard_ * guard_ + guard_;
  void* p = mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  base_ = static_cast<char*>(p);
  mprotect(base_, guard_, PROT_NONE);
}

FiberStack::~FiberStack() { munmap(base_, size_); }

#if defined(SE_SIM_USE_UCONTEXT)

namespace {
void ucontext_entry(unsigned hi, unsigned lo, unsigned fhi, unsigned flo) {
  auto arg = reinterpret_cast<void*>((static_cast<uintptr_t>(hi) << 32) | lo);
  auto entry = reinterpret_cast<void (*)(void*)>((static_cast<uintptr_t>(fhi) << 32) | flo);
  entry(arg);
  std::abort();  // entry switches away for good
}
}  // namespace

void make_context(Context& ctx, const FiberStack& stack, void (*entry)(void*), void* arg) {
  getcontext(&ctx.uc);
  ctx.uc.uc_stack.ss_sp = stack.bottom();
  ctx.uc.uc_stack.ss_size = stack.usable();
  ctx.uc.uc_link = nullptr;
  const auto a = reinterpret_cast<uintptr_t>(arg), f = reinterpret_cast<uintptr_t>(entry);
  makecontext(&ctx.uc, reinterpret_cast<void (*)()>(ucontext_entry), 4,
              static_cast<unsigned>(a >> 32), static_cast<unsigned>(a),
              static_cast<unsigned>(f >> 32), static_cast<unsigned>(f));
}

void switch_context(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }

#else  // x86-64 System V

extern "C" {
// se_sim_switch(&from_sp, to_sp): push the callee-saved state, swap stacks, pop it.
void se_sim_switch(void** from_sp, void* to_sp) __attribute__((visibility("hidden")));
// First frame of a fiber: r12 holds the argument, r13 the entry function.
void se_sim_trampoline() __attribute__((visibility("hidden")));
}

asm(R"(
  .text
  .p2align 4
  .globl se_sim_switch
  .hidden se_sim_switch
  .type se_sim_switch,@function
se_sim_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $16, %rsp
  stmxcsr 8(%rsp)
  fnstcw (%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  fldcw (%rsp)
  ldmxcsr 8(%rsp)
  addq $16, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size se_sim_switch, .-se_sim_switch

  .p2align 4
  .globl se_sim_trampoline
  .hidden se_sim_trampoline
  .type se_sim_trampoline,@function
se_sim_trampoline:
  movq %r12, %rdi
  andq $-16, %rsp
  callq *%r13
  ud2
  .size se_sim_trampoline, .-se_sim_trampoline
)");

void make_context(Context& ctx, const FiberStack& stack, void (*entry)(void*), void* arg) {
  // The frame se_sim_switch pops: x87 and SSE control words (the current ones, so the
  // fiber computes like its OS thread), r15..r12, rbx, rbp, then the return address.
  auto* top = reinterpret_cast<uint64_t*>(reinterpret_cast<uintptr_t>(stack.top()) & ~uintptr_t{15});
  uint64_t* sp = top - 16;
  uint16_t fpu_cw;
  uint32_t mxcsr;
  asm volatile("fnstcw %0" : "=m"(fpu_cw));
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  sp[0] = fpu_cw;
  sp[1] = mxcsr;
  sp[2] = 0;                                    // r15
  sp[3] = 0;                                    // r14
  sp[4] = reinterpret_cast<uint64_t>(entry);    // r13
  sp[5] = reinterpret_cast<uint64_t>(arg);      // r12
  sp[6] = 0;                                    // rbx
  sp[7] = 0;                                    // rbp
  sp[8] = reinterpret_cast<uint64_t>(&se_sim_trampoline);
  sp[9] = 0;                                    // a null return address ends backtraces
  ctx.sp = sp;
}

void switch_context(Context& from, Context& to) { se_sim_switch(&from.sp, to.sp); }

#endif

}  // namespace se_sim
