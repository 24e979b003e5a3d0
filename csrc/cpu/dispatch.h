// Picks the CPU kernel library for this machine, once, at first use: the widest ISA the
// CPU supports (AVX-512, AVX2 + FMA + F16C, or baseline x86-64) among those built, or the
// one SE_KERNELS_CPU_ISA=baseline|avx2|avx512 names. Its libraries sit next to this one:
// _cpu_<isa>*.so (setup.py) or libse_kernels_cpu_<isa>.so (CMake).
#pragma once

#include <string>
#include <vector>

#include "abi.h"

namespace se_kernels::cpu {

const KernelTable& kernel_table();  // throws (TORCH_CHECK) when none can be loaded

// The ISAs this CPU supports whose kernel library was built, widest first.
std::vector<std::string> available_isas();

}  // namespace se_kernels::cpu
