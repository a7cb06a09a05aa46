// Argument checks of the torch-facing entry points, shared by cpu.cpp and cuda.cu
// (host code only). Every failure is a TORCH_CHECK, i.e. a Python RuntimeError
// naming the argument, never a crash.
#pragma once

#include <torch/extension.h>

#include <initializer_list>
#include <optional>

namespace raymarching {

// `shape` entries of -1 accept any size.
inline void expect(const at::Tensor& t, const char* name, at::DeviceType device, at::ScalarType dtype,
                   std::initializer_list<int64_t> shape) {
    TORCH_CHECK(t.defined(), name, " is missing");
    TORCH_CHECK(t.device().type() == device, name, " must be on ", device, ", got ", t.device());
    TORCH_CHECK(t.scalar_type() == dtype, name, " must be ", dtype, ", got ", t.scalar_type());
    TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
    TORCH_CHECK(t.dim() == (int64_t)shape.size(), name, " must have ", shape.size(), " dims, got shape ",
                t.sizes());
    int64_t i = 0;
    for (int64_t s : shape) {
        TORCH_CHECK(s < 0 || t.size(i) == s, name, " must have size ", s, " in dim ", i, ", got shape ",
                    t.sizes());
        ++i;
    }
}

inline void expect_opt(const std::optional<at::Tensor>& t, const char* name, at::DeviceType device,
                       at::ScalarType dtype, std::initializer_list<int64_t> shape) {
    if (t.has_value() && t->defined()) expect(*t, name, device, dtype, shape);
}

inline bool present(const std::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

template <typename T>
T* opt_ptr(const std::optional<at::Tensor>& t) {
    return present(t) ? t->data_ptr<T>() : nullptr;
}

inline void expect_grid(int64_t C, int64_t H, const at::Tensor& bitfield) {
    TORCH_CHECK(C >= 1 && C <= 8, "C (cascades) must be in [1, 8], got ", C);
    TORCH_CHECK(H >= 2 && H <= 1024 && (H & (H - 1)) == 0, "H (grid size) must be a power of two in [2, 1024], got ",
                H);
    TORCH_CHECK(bitfield.numel() == C * H * H * H / 8, "density_bitfield must have C*H^3/8 = ", C * H * H * H / 8,
                " bytes, got ", bitfield.numel());
}

// Grid side H of a [C, H^3] Morton grid (H a power of two).
inline int64_t grid_side(const at::Tensor& grid) {
    TORCH_CHECK(grid.dim() == 2, "grid must be [C, H^3], got shape ", grid.sizes());
    const int64_t cells = grid.size(1);
    int64_t H = 1;
    while (H * H * H < cells) H *= 2;
    TORCH_CHECK(H * H * H == cells && H >= 2 && H <= 1024, "grid.size(1) must be H^3 for a power of two H, got ",
                cells);
    return H;
}

}  // namespace raymarching
