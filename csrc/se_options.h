// The options of the C++ ops, parsed from the schema's strings by parse_options (se_host.cpp).
#pragma once

#include <string_view>

namespace se_kernels {

enum class Pool : int { Avg = 0, AvgMax = 1 };
// The codes match se_kernels/options.py (ACTS, GATES), which the Triton kernels use.
enum class Act : int {
  Identity = 0, Relu = 1, Silu = 2, Relu6 = 3, Gelu = 4, GeluTanh = 5, HardSwish = 6,
  Mish = 7, Tanh = 8, Sigmoid = 9, LeakyRelu = 10  // "leaky_relu" (0.01) or "leaky_relu:<slope>"
};
constexpr double kDefaultLeakySlope64 = 0.01;  // F.leaky_relu's default, plain "leaky_relu"
constexpr float kDefaultLeakySlope = static_cast<float>(kDefaultLeakySlope64);
constexpr std::string_view kLeakyPrefix = "leaky_relu:";
enum class Gate : int { Sigmoid = 0, HardSigmoid = 1, Tanh = 2 };

struct Options {
  Pool pool;
  Act act;
  Gate gate;
  float act_slope;  // leaky_relu's negative slope
  float gain;
  bool out_relu;  // out_act == "relu"
};

// leaky_relu's negative slope as written in act ("leaky_relu:<slope>"; 0.01 otherwise),
// in double: the ATen formula of fc_grads applies it to float64 tensors as torch does.
double act_negative_slope(std::string_view act);

// Parses the schema's option strings; throws (TORCH_CHECK) naming the bad argument.
Options parse_options(std::string_view pool, std::string_view act, std::string_view gate,
                      double gain, std::string_view out_act);

}  // namespace se_kernels
