// CUDA backend of the spherical-harmonics encoder (shencoder.h), one thread per direction.
#include <torch/extension.h>

#include "ext_cuda.h"
#include "shencoder.h"
#include "validate.h"

namespace {

constexpr int kThreads = 256;

// inputs: [N, 3] -> out: [N, degree^2].
template <typename T>
__global__ void forward_kernel(const T* __restrict__ inputs, T* __restrict__ out, int64_t N, int degree,
                               const shenc::Norms<T> norms) {
  const int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (b >= N) return;
  shenc::sh_point<T>(inputs + b * 3, degree, norms, out + b * degree * degree, nullptr, nullptr);
}

// v_out: [N, degree^2] -> v_inputs: [N, 3].
template <typename T>
__global__ void backward_kernel(const T* __restrict__ inputs, const T* __restrict__ v_out, T* __restrict__ v_inputs,
                                int64_t N, int degree, const shenc::Norms<T> norms) {
  const int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (b >= N) return;
  shenc::sh_point<T>(inputs + b * 3, degree, norms, nullptr, v_out + b * degree * degree, v_inputs + b * 3);
}

// inputs: [N, 3] -> basis [N, degree^2].
at::Tensor sh_encode_forward(const at::Tensor& inputs, int64_t degree) {
  const int64_t N = shenc::check_forward_args(inputs, degree, ernerf::kDevice);
  const c10::cuda::OptionalCUDAGuard guard(inputs.device());
  const int64_t K = degree * degree;
  auto outputs = at::empty({N, K}, inputs.options());
  if (N == 0) return outputs;
  const unsigned blocks = static_cast<unsigned>((N + kThreads - 1) / kThreads);
  AT_DISPATCH_FLOATING_TYPES(inputs.scalar_type(), "sh_encode_forward", [&] {
    ernerf::launch(forward_kernel<scalar_t>, blocks, kThreads, c10::cuda::getCurrentCUDAStream(),
                   inputs.data_ptr<scalar_t>(), outputs.data_ptr<scalar_t>(), N, static_cast<int>(degree),
                   shenc::make_norms<scalar_t>());
  });
  return outputs;
}

// v_outputs: [N, degree^2] -> v_inputs [N, 3].
at::Tensor sh_encode_backward(const at::Tensor& v_outputs, const at::Tensor& inputs, int64_t degree) {
  const int64_t N = shenc::check_backward_args(v_outputs, inputs, degree, ernerf::kDevice);
  const c10::cuda::OptionalCUDAGuard guard(inputs.device());
  const int64_t K = degree * degree;
  auto v_inputs = at::zeros_like(inputs);
  if (N == 0) return v_inputs;
  const unsigned blocks = static_cast<unsigned>((N + kThreads - 1) / kThreads);
  AT_DISPATCH_FLOATING_TYPES(inputs.scalar_type(), "sh_encode_backward", [&] {
    ernerf::launch(backward_kernel<scalar_t>, blocks, kThreads, c10::cuda::getCurrentCUDAStream(),
                   inputs.data_ptr<scalar_t>(), v_outputs.data_ptr<scalar_t>(), v_inputs.data_ptr<scalar_t>(), N,
                   static_cast<int>(degree), shenc::make_norms<scalar_t>());
  });
  return v_inputs;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "shencoder: CUDA kernels";
  set_source_hash(m);
  m.def("sh_encode_forward", &sh_encode_forward, "real SH basis [N, degree^2] of directions [N, 3]",
        py::arg("inputs"), py::arg("degree"));
  m.def("sh_encode_backward", &sh_encode_backward, "v_inputs [N, 3] from v_outputs [N, degree^2]",
        py::arg("v_outputs"), py::arg("inputs"), py::arg("degree"));
}
