// CUDA backend of the grid encoder: the kernels of gridencoder.h, one thread per (point, level).
#include <torch/extension.h>

#include <ATen/OpMathType.h>

#include "ext_cuda.h"
#include "gridencoder.h"
#include "validate.h"

namespace {

using gridenc::Cell;
using gridenc::Levels;

constexpr int kThreads = 256;

// inputs: [N, D] (T), emb: [rows, C] (E), out: [N, L, C] (E); blockIdx.y = level.
template <typename T, typename E, int D, int C>
__global__ void forward_kernel(const T* __restrict__ inputs, const E* __restrict__ emb, E* __restrict__ out,
                               int64_t N, const Levels lv) {
  const int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (b >= N) return;
  const int l = blockIdx.y;
  gridenc::encode_level<T, E, D, C>(inputs + b * D, emb, lv, l, out + (b * lv.num_levels + l) * C);
}

// v_out: [N, L, C] -> v_emb: [rows, C] (atomic adds; corners of many points share rows).
template <typename T, typename E, int D, int C>
__global__ void embeddings_grad_kernel(const T* __restrict__ inputs, const E* __restrict__ v_out,
                                       E* __restrict__ v_emb, int64_t N, const Levels lv) {
  const int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (b >= N) return;
  const int l = blockIdx.y;
  Cell<T, D> cell;
  if (!gridenc::locate<T, D>(inputs + b * D, lv, l, cell)) return;
  const E* g = v_out + (b * lv.num_levels + l) * C;
  for (int k = 0; k < Cell<T, D>::kCorners; ++k) {
    E* dst = v_emb + static_cast<int64_t>(cell.row[k]) * C;
    for (int c = 0; c < C; ++c) gpuAtomicAdd(dst + c, static_cast<E>(cell.weight[k] * static_cast<T>(g[c])));
  }
}

// v_out: [N, L, C] -> v_inputs: [N, D]; one thread per point sums its levels.
template <typename T, typename E, int D, int C>
__global__ void inputs_grad_kernel(const T* __restrict__ inputs, const E* __restrict__ emb,
                                   const E* __restrict__ v_out, T* __restrict__ v_inputs, int64_t N, const Levels lv) {
  const int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (b >= N) return;
  T acc[D] = {};
  for (int l = 0; l < lv.num_levels; ++l) {
    gridenc::encode_level_input_grad<T, E, D, C>(inputs + b * D, emb, v_out + (b * lv.num_levels + l) * C, lv, l,
                                                 acc);
  }
  for (int d = 0; d < D; ++d) v_inputs[b * D + d] = acc[d];
}

// inputs: [N, D] in [0, 1] -> features [N, L*C] (level-major).
at::Tensor grid_encode_forward(const at::Tensor& inputs, const at::Tensor& embeddings,
                               const std::vector<int64_t>& offsets, const std::vector<double>& scales,
                               const std::vector<int64_t>& resolutions, int64_t gridtype, bool align_corners,
                               int64_t interpolation) {
  const Levels lv = gridenc::check_forward_args(inputs, embeddings, offsets, scales, resolutions, gridtype,
                                                align_corners, interpolation, ernerf::kDevice,
                                                /*half_embeddings=*/true);
  const c10::cuda::OptionalCUDAGuard guard(inputs.device());
  const int64_t N = inputs.size(0), L = lv.num_levels, C = embeddings.size(1);
  auto outputs = at::empty({N, L * C}, embeddings.options());
  if (N == 0) return outputs;
  const dim3 blocks(static_cast<unsigned>((N + kThreads - 1) / kThreads), static_cast<unsigned>(L));
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND_HALF(embeddings.scalar_type(), "grid_encode_forward", [&] {
    using T = at::opmath_type<scalar_t>;
    gridenc::dispatch_dims(inputs.size(1), C, [&](auto d_, auto c_) {
      constexpr int D = decltype(d_)::value, Cc = decltype(c_)::value;
      ernerf::launch(forward_kernel<T, scalar_t, D, Cc>, blocks, kThreads, stream, inputs.data_ptr<T>(),
                     embeddings.data_ptr<scalar_t>(), outputs.data_ptr<scalar_t>(), N, lv);
    });
  });
  return outputs;
}

// v_outputs: [N, L*C] -> (v_embeddings [rows, C], v_inputs [N, D] or an empty tensor).
std::tuple<at::Tensor, at::Tensor> grid_encode_backward(
    const at::Tensor& v_outputs, const at::Tensor& inputs, const at::Tensor& embeddings,
    const std::vector<int64_t>& offsets, const std::vector<double>& scales, const std::vector<int64_t>& resolutions,
    int64_t gridtype, bool align_corners, int64_t interpolation, bool need_input_grad) {
  const Levels lv = gridenc::check_backward_args(v_outputs, inputs, embeddings, offsets, scales, resolutions,
                                                 gridtype, align_corners, interpolation, ernerf::kDevice,
                                                 /*half_embeddings=*/true);
  const c10::cuda::OptionalCUDAGuard guard(inputs.device());
  const int64_t N = inputs.size(0), L = lv.num_levels, C = embeddings.size(1);
  auto v_embeddings = at::zeros_like(embeddings);
  auto v_inputs = need_input_grad ? at::zeros_like(inputs) : at::empty({0}, inputs.options());
  if (N == 0) return {v_embeddings, v_inputs};
  const dim3 blocks(static_cast<unsigned>((N + kThreads - 1) / kThreads), static_cast<unsigned>(L));
  const unsigned point_blocks = static_cast<unsigned>((N + kThreads - 1) / kThreads);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND_HALF(embeddings.scalar_type(), "grid_encode_backward", [&] {
    using T = at::opmath_type<scalar_t>;
    gridenc::dispatch_dims(inputs.size(1), C, [&](auto d_, auto c_) {
      constexpr int D = decltype(d_)::value, Cc = decltype(c_)::value;
      ernerf::launch(embeddings_grad_kernel<T, scalar_t, D, Cc>, blocks, kThreads, stream, inputs.data_ptr<T>(),
                     v_outputs.data_ptr<scalar_t>(), v_embeddings.data_ptr<scalar_t>(), N, lv);
      if (need_input_grad) {
        ernerf::launch(inputs_grad_kernel<T, scalar_t, D, Cc>, point_blocks, kThreads, stream, inputs.data_ptr<T>(),
                       embeddings.data_ptr<scalar_t>(), v_outputs.data_ptr<scalar_t>(), v_inputs.data_ptr<T>(), N,
                       lv);
      }
    });
  });
  return {v_embeddings, v_inputs};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "gridencoder: CUDA kernels";
  set_source_hash(m);
  m.def("grid_encode_forward", &grid_encode_forward, "features [N, L*C] of points [N, D] in [0, 1]",
        py::arg("inputs"), py::arg("embeddings"), py::arg("offsets"), py::arg("scales"), py::arg("resolutions"),
        py::arg("gridtype"), py::arg("align_corners"), py::arg("interpolation"));
  m.def("grid_encode_backward", &grid_encode_backward,
        "(v_embeddings [rows, C], v_inputs [N, D] or empty) from v_outputs [N, L*C]", py::arg("v_outputs"),
        py::arg("inputs"), py::arg("embeddings"), py::arg("offsets"), py::arg("scales"), py::arg("resolutions"),
        py::arg("gridtype"), py::arg("align_corners"), py::arg("interpolation"), py::arg("need_input_grad"));
}
