// C++ CPU backend of the spherical-harmonics encoder (shencoder.h over at::parallel_for).
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include "shencoder.h"
#include "validate.h"

namespace {

// inputs: [N, 3] -> basis [N, degree^2].
at::Tensor sh_encode_forward(const at::Tensor& inputs, int64_t degree) {
  const int64_t N = shenc::check_forward_args(inputs, degree, at::kCPU);
  const int64_t K = degree * degree;
  auto outputs = at::empty({N, K}, inputs.options());
  AT_DISPATCH_FLOATING_TYPES(inputs.scalar_type(), "sh_encode_forward", [&] {
    const auto norms = shenc::make_norms<scalar_t>();
    const scalar_t* in = inputs.data_ptr<scalar_t>();
    scalar_t* out = outputs.data_ptr<scalar_t>();
    at::parallel_for(0, N, 1024, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        shenc::sh_point<scalar_t>(in + b * 3, static_cast<int>(degree), norms, out + b * K, nullptr, nullptr);
      }
    });
  });
  return outputs;
}

// v_outputs: [N, degree^2] -> v_inputs [N, 3].
at::Tensor sh_encode_backward(const at::Tensor& v_outputs, const at::Tensor& inputs, int64_t degree) {
  const int64_t N = shenc::check_backward_args(v_outputs, inputs, degree, at::kCPU);
  const int64_t K = degree * degree;
  auto v_inputs = at::zeros_like(inputs);
  AT_DISPATCH_FLOATING_TYPES(inputs.scalar_type(), "sh_encode_backward", [&] {
    const auto norms = shenc::make_norms<scalar_t>();
    const scalar_t* in = inputs.data_ptr<scalar_t>();
    const scalar_t* v_out = v_outputs.data_ptr<scalar_t>();
    scalar_t* v_in = v_inputs.data_ptr<scalar_t>();
    at::parallel_for(0, N, 1024, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        shenc::sh_point<scalar_t>(in + b * 3, static_cast<int>(degree), norms, nullptr, v_out + b * K, v_in + b * 3);
      }
    });
  });
  return v_inputs;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "shencoder: C++ CPU kernels";
  set_source_hash(m);
  m.def("sh_encode_forward", &sh_encode_forward, "real SH basis [N, degree^2] of directions [N, 3]",
        py::arg("inputs"), py::arg("degree"));
  m.def("sh_encode_backward", &sh_encode_backward, "v_inputs [N, 3] from v_outputs [N, degree^2]",
        py::arg("v_outputs"), py::arg("inputs"), py::arg("degree"));
}
