#include "dispatch.h"

#include <c10/util/Exception.h>
#include <dlfcn.h>
#include <torch/library.h>

#include <array>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string_view>

namespace se_kernels::cpu {
namespace {

constexpr std::array<std::string_view, 3> kIsas = {"avx512", "avx2", "baseline"};  // widest first

bool cpu_supports(std::string_view isa) {
#if defined(__x86_64__)
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("f16c");
  if (isa == "avx2") return avx2;
  if (isa == "avx512") {
    return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  }
#endif
  return isa == "baseline";
}

std::filesystem::path this_library_dir() {
  Dl_info info{};
  TORCH_CHECK(dladdr(reinterpret_cast<void*>(&kernel_table), &info) != 0 && info.dli_fname,
              "se_kernels: cannot locate the ops library to find its CPU kernel libraries");
  return std::filesystem::path(info.dli_fname).parent_path();
}

std::optional<std::filesystem::path> find_library(std::string_view isa) {
  const std::string python_prefix = "_cpu_" + std::string(isa) + ".";
  const std::string cmake_name = "libse_kernels_cpu_" + std::string(isa) + ".so";
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(this_library_dir(), ec)) {
    const std::string name = entry.path().filename().string();
    const bool python_build = name.rfind(python_prefix, 0) == 0 && name.size() > 3 &&
                              name.compare(name.size() - 3, 3, ".so") == 0;
    if (python_build || name == cmake_name) return entry.path();
  }
  return std::nullopt;
}

const KernelTable* load(std::string_view isa, const std::filesystem::path& path) {
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  TORCH_CHECK(handle, "se_kernels: cannot load the ", isa, " CPU kernels ", path.string(), ": ",
              dlerror());
  using TableFn = const KernelTable* (*)();
  auto table_fn = reinterpret_cast<TableFn>(dlsym(handle, "se_kernels_cpu_kernel_table"));
  TORCH_CHECK(table_fn, "se_kernels: ", path.string(), " is not a CPU kernel library");
  const KernelTable* table = table_fn();
  TORCH_CHECK(table->abi_version == kAbiVersion && std::string_view(table->isa) == isa,
              "se_kernels: ", path.string(), " was built for another version of se_kernels; "
              "rebuild the package");
  return table;
}

const KernelTable* choose() {
  const char* forced = std::getenv("SE_KERNELS_CPU_ISA");
  if (forced != nullptr && *forced != '\0') {
    const std::string_view isa = forced;
    TORCH_CHECK_VALUE(isa == "baseline" || isa == "avx2" || isa == "avx512",
                      "SE_KERNELS_CPU_ISA must be one of baseline, avx2, avx512; got '", isa, "'");
    TORCH_CHECK(cpu_supports(isa), "SE_KERNELS_CPU_ISA=", isa, " but this CPU does not support it");
    const auto path = find_library(isa);
    TORCH_CHECK(path, "SE_KERNELS_CPU_ISA=", isa, " but the ", isa,
                " CPU kernels were not built (next to ", this_library_dir().string(), ")");
    return load(isa, *path);
  }
  for (std::string_view isa : kIsas) {
    if (!cpu_supports(isa)) continue;
    if (const auto path = find_library(isa)) return load(isa, *path);
  }
  TORCH_CHECK(false, "se_kernels: no CPU kernel library next to ", this_library_dir().string(),
              "; rebuild the package");
}

}  // namespace

const KernelTable& kernel_table() {
  static const KernelTable* table = choose();
  return *table;
}

std::vector<std::string> available_isas() {
  std::vector<std::string> out;
  for (std::string_view isa : kIsas) {
    if (cpu_supports(isa) && find_library(isa)) out.emplace_back(isa);
  }
  return out;
}

TORCH_LIBRARY_FRAGMENT(se_kernels, m) {
  // The ISA of the CPU kernels in use (loading them if needed).
  m.def("cpu_isa() -> str", [] { return std::string(kernel_table().isa); });
  m.def("cpu_isas() -> str[]", [] { return available_isas(); });
}

}  // namespace se_kernels::cpu
