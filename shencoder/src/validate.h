// Argument checks of the torch-facing entry points, shared by cpu.cpp and cuda.cu
// (host code only; shencoder.h stays free of torch so nvcc and g++ see the same math).
#pragma once

#include <torch/extension.h>

#include "ext_checks.h"
#include "shencoder.h"

namespace shenc {

// inputs: [N, 3] directions on a `kind` device; returns N.
inline int64_t check_forward_args(const at::Tensor& inputs, int64_t degree, c10::DeviceType kind) {
  check_degree(degree);
  call_device(inputs, "inputs", kind);
  CHECK_CONTIGUOUS(inputs);
  CHECK_DIM(inputs, 2);
  CHECK_SIZE(inputs, 1, 3);
  return inputs.size(0);
}

// The forward checks plus v_outputs: [N, degree^2] of the inputs' dtype; returns N.
inline int64_t check_backward_args(const at::Tensor& v_outputs, const at::Tensor& inputs, int64_t degree,
                                   c10::DeviceType kind) {
  const int64_t N = check_forward_args(inputs, degree, kind);
  CHECK_DEVICE(v_outputs, inputs.device());
  CHECK_CONTIGUOUS(v_outputs);
  CHECK_DTYPE(v_outputs, inputs.scalar_type());
  const int64_t K = degree * degree;
  TORCH_CHECK(v_outputs.dim() == 2 && v_outputs.size(0) == N && v_outputs.size(1) == K,
              "v_outputs must have shape [", N, ", ", K, "], got ", v_outputs.sizes());
  return N;
}

}  // namespace shenc
