// The one symbol a CPU kernel library exports: its table, and which ISA it was built for
// (SE_CPU_ISA, set by setup.py and CMakeLists.txt from csrc/build_policy.json).
#include "abi.h"

#ifndef SE_CPU_ISA
#error "build the CPU kernel library with -DSE_CPU_ISA=<baseline|avx2|avx512>"
#endif
#define SE_STRING(x) #x
#define SE_EXPAND_STRING(x) SE_STRING(x)

extern "C" __attribute__((visibility("default"))) const se_kernels::cpu::KernelTable*
se_kernels_cpu_kernel_table() {
  using namespace se_kernels::cpu;
  static const KernelTable table{
      .abi_version = kAbiVersion,
      .isa = SE_EXPAND_STRING(SE_CPU_ISA),
      .forward = &forward_kernel,
      .backward = &backward_kernel,
      .fc_grads = &fc_grads_kernel,
  };
  return &table;
}
