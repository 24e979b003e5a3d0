// Dispatch over the activation dtypes the kernels support (float32, float16, bfloat16):
// AT_DISPATCH_FLOATING_TYPES_AND2 would also instantiate float64, which the checks reject.
#pragma once

#include <ATen/Dispatch.h>

#define SE_DISPATCH_FLOAT_TYPES(TYPE, NAME, ...)                \
  AT_DISPATCH_SWITCH(TYPE, NAME,                                \
                     AT_DISPATCH_CASE(at::kFloat, __VA_ARGS__)  \
                     AT_DISPATCH_CASE(at::kHalf, __VA_ARGS__)   \
                     AT_DISPATCH_CASE(at::kBFloat16, __VA_ARGS__))
