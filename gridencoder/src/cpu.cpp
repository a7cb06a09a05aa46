// C++ CPU backend of the grid encoder: the kernels of gridencoder.h over at::parallel_for.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include "gridencoder.h"
#include "validate.h"

namespace {

using gridenc::Cell;
using gridenc::Levels;

// inputs: [N, D] in [0, 1] -> features [N, L*C] (level-major).
at::Tensor grid_encode_forward(const at::Tensor& inputs, const at::Tensor& embeddings,
                               const std::vector<int64_t>& offsets, const std::vector<double>& scales,
                               const std::vector<int64_t>& resolutions, int64_t gridtype, bool align_corners,
                               int64_t interpolation) {
  const Levels lv = gridenc::check_forward_args(inputs, embeddings, offsets, scales, resolutions, gridtype,
                                                align_corners, interpolation, at::kCPU,
                                                /*half_embeddings=*/false);
  const int64_t N = inputs.size(0), L = lv.num_levels, C = embeddings.size(1);
  auto outputs = at::empty({N, L * C}, embeddings.options());
  AT_DISPATCH_FLOATING_TYPES(inputs.scalar_type(), "grid_encode_forward", [&] {
    const scalar_t* u = inputs.data_ptr<scalar_t>();
    const scalar_t* emb = embeddings.data_ptr<scalar_t>();
    scalar_t* out = outputs.data_ptr<scalar_t>();
    gridenc::dispatch_dims(inputs.size(1), C, [&](auto d_, auto c_) {
      constexpr int D = decltype(d_)::value, Cc = decltype(c_)::value;
      at::parallel_for(0, N, 512, [&](int64_t begin, int64_t end) {
        for (int64_t b = begin; b < end; ++b) {
          for (int l = 0; l < L; ++l) {
            gridenc::encode_level<scalar_t, scalar_t, D, Cc>(u + b * D, emb, lv, l, out + (b * L + l) * Cc);
          }
        }
      });
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
                                                 gridtype, align_corners, interpolation, at::kCPU,
                                                 /*half_embeddings=*/false);
  const int64_t N = inputs.size(0), L = lv.num_levels, C = embeddings.size(1);
  auto v_embeddings = at::zeros_like(embeddings);
  auto v_inputs = need_input_grad ? at::zeros_like(inputs) : at::empty({0}, inputs.options());
  AT_DISPATCH_FLOATING_TYPES(inputs.scalar_type(), "grid_encode_backward", [&] {
    const scalar_t* u = inputs.data_ptr<scalar_t>();
    const scalar_t* emb = embeddings.data_ptr<scalar_t>();
    const scalar_t* v_out = v_outputs.data_ptr<scalar_t>();
    scalar_t* v_emb = v_embeddings.data_ptr<scalar_t>();
    gridenc::dispatch_dims(inputs.size(1), C, [&](auto d_, auto c_) {
      constexpr int D = decltype(d_)::value, Cc = decltype(c_)::value;
      // Levels own disjoint rows, so one thread per level scatters without races.
      at::parallel_for(0, L, 1, [&](int64_t l0, int64_t l1) {
        for (int64_t l = l0; l < l1; ++l) {
          for (int64_t b = 0; b < N; ++b) {
            Cell<scalar_t, D> cell;
            if (!gridenc::locate<scalar_t, D>(u + b * D, lv, static_cast<int>(l), cell)) continue;
            const scalar_t* g = v_out + (b * L + l) * Cc;
            for (int k = 0; k < Cell<scalar_t, D>::kCorners; ++k) {
              scalar_t* dst = v_emb + static_cast<int64_t>(cell.row[k]) * Cc;
              for (int c = 0; c < Cc; ++c) dst[c] += cell.weight[k] * g[c];
            }
          }
        }
      });
      if (need_input_grad) {
        scalar_t* v_u = v_inputs.data_ptr<scalar_t>();
        at::parallel_for(0, N, 512, [&](int64_t begin, int64_t end) {
          for (int64_t b = begin; b < end; ++b) {
            for (int l = 0; l < L; ++l) {
              gridenc::encode_level_input_grad<scalar_t, scalar_t, D, Cc>(u + b * D, emb, v_out + (b * L + l) * Cc,
                                                                          lv, l, v_u + b * D);
            }
          }
        });
      }
    });
  });
  return {v_embeddings, v_inputs};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "gridencoder: C++ CPU kernels";
  set_source_hash(m);
  m.def("grid_encode_forward", &grid_encode_forward, "features [N, L*C] of points [N, D] in [0, 1]",
        py::arg("inputs"), py::arg("embeddings"), py::arg("offsets"), py::arg("scales"), py::arg("resolutions"),
        py::arg("gridtype"), py::arg("align_corners"), py::arg("interpolation"));
  m.def("grid_encode_backward", &grid_encode_backward,
        "(v_embeddings [rows, C], v_inputs [N, D] or empty) from v_outputs [N, L*C]", py::arg("v_outputs"),
        py::arg("inputs"), py::arg("embeddings"), py::arg("offsets"), py::arg("scales"), py::arg("resolutions"),
        py::arg("gridtype"), py::arg("align_corners"), py::arg("interpolation"), py::arg("need_input_grad"));
}
