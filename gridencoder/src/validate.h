// Argument checks of the torch-facing entry points, shared by cpu.cpp and cuda.cu
// (host code only; gridencoder.h stays free of torch so nvcc and g++ see the same math).
#pragma once

#include <torch/extension.h>

#include <vector>

#include "ext_checks.h"
#include "gridencoder.h"

namespace gridenc {

// Levels of one call, after checking inputs [N, D] and embeddings [offsets[-1], C] on one
// `kind` device. `half_embeddings`: the backend (the CUDA kernels) takes float16 embeddings
// with float32 inputs, accumulating in float32.
inline Levels check_forward_args(const at::Tensor& inputs, const at::Tensor& embeddings,
                                 const std::vector<int64_t>& offsets, const std::vector<double>& scales,
                                 const std::vector<int64_t>& resolutions, int64_t gridtype, bool align_corners,
                                 int64_t interpolation, c10::DeviceType kind, bool half_embeddings) {
  const Levels lv = make_levels(offsets, scales, resolutions, gridtype, align_corners, interpolation);
  const c10::Device device = call_device(inputs, "inputs", kind);
  CHECK_DEVICE(embeddings, device);
  CHECK_CONTIGUOUS(inputs);
  CHECK_CONTIGUOUS(embeddings);
  CHECK_DIM(inputs, 2);
  CHECK_DIM(embeddings, 2);
  if (half_embeddings) {
    const auto compute = embeddings.scalar_type() == at::kHalf ? at::kFloat : embeddings.scalar_type();
    TORCH_CHECK(inputs.scalar_type() == compute, "inputs must be ", compute, " for ", embeddings.scalar_type(),
                " embeddings, got ", inputs.scalar_type());
  } else {
    TORCH_CHECK(inputs.scalar_type() == embeddings.scalar_type(), "inputs (", inputs.scalar_type(),
                ") and embeddings (", embeddings.scalar_type(), ") must share a dtype");
  }
  TORCH_CHECK(embeddings.size(0) == lv.offset[lv.num_levels], "embeddings must have ", lv.offset[lv.num_levels],
              " rows (offsets[-1]), got ", embeddings.size(0));
  return lv;
}

// The forward checks plus v_outputs: [N, L*C] of the embeddings' dtype.
inline Levels check_backward_args(const at::Tensor& v_outputs, const at::Tensor& inputs,
                                  const at::Tensor& embeddings, const std::vector<int64_t>& offsets,
                                  const std::vector<double>& scales, const std::vector<int64_t>& resolutions,
                                  int64_t gridtype, bool align_corners, int64_t interpolation,
                                  c10::DeviceType kind, bool half_embeddings) {
  const Levels lv = check_forward_args(inputs, embeddings, offsets, scales, resolutions, gridtype, align_corners,
                                       interpolation, kind, half_embeddings);
  CHECK_DEVICE(v_outputs, inputs.device());
  CHECK_CONTIGUOUS(v_outputs);
  const int64_t N = inputs.size(0), LC = lv.num_levels * embeddings.size(1);
  TORCH_CHECK(v_outputs.dim() == 2 && v_outputs.size(0) == N && v_outputs.size(1) == LC,
              "v_outputs must have shape [", N, ", ", LC, "], got ", v_outputs.sizes());
  CHECK_DTYPE(v_outputs, embeddings.scalar_type());
  return lv;
}

}  // namespace gridenc
