// Argument checks of the torch-facing entry points, shared by cpu.cpp and cuda.cu
// (host code only). Every failure is a TORCH_CHECK, i.e. a Python RuntimeError
// naming the argument, never a crash.
#pragma once

#include <torch/extension.h>

#include <initializer_list>
#include <optional>
#include <utility>

#include "ext_checks.h"

namespace raymarching {

// `device` is the call's (call_device: type and index); `shape` entries of -1 accept any size.
inline void expect(const at::Tensor& t, const char* name, const at::Device& device, at::ScalarType dtype,
                   std::initializer_list<int64_t> shape) {
    TORCH_CHECK(t.defined(), name, " is missing");
    TORCH_CHECK(t.device() == device, name, " must be on ", device, " like the other inputs, got ", t.device());
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

inline void expect_opt(const std::optional<at::Tensor>& t, const char* name, const at::Device& device,
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

// rays_o, rays_d: [N, 3] float32 on one `kind` device; returns N.
inline int64_t expect_rays(const at::Tensor& rays_o, const at::Tensor& rays_d, at::DeviceType kind) {
    const at::Device device = call_device(rays_o, "rays_o", kind);
    expect(rays_o, "rays_o", device, at::kFloat, {-1, 3});
    expect(rays_d, "rays_d", device, at::kFloat, {rays_o.size(0), 3});
    return rays_o.size(0);
}

// near_far_from_aabb: rays plus aabb [6]; returns N.
inline int64_t check_near_far(const at::Tensor& rays_o, const at::Tensor& rays_d, const at::Tensor& aabb,
                              at::DeviceType kind) {
    const int64_t N = expect_rays(rays_o, rays_d, kind);
    expect(aabb, "aabb", rays_o.device(), at::kFloat, {6});
    return N;
}

// morton3D / morton3D_invert: one int32 tensor of `shape`.
inline void check_morton(const at::Tensor& t, const char* name, std::initializer_list<int64_t> shape,
                         at::DeviceType kind) {
    expect(t, name, call_device(t, name, kind), at::kInt, shape);
}

// A floating [C, H^3] density grid on a `kind` device.
inline void expect_float_grid(const at::Tensor& grid, at::DeviceType kind) {
    TORCH_CHECK(grid.is_floating_point(), "grid must be a floating tensor, got ", grid.scalar_type());
    expect(grid, "grid", call_device(grid, "grid", kind), grid.scalar_type(), {-1, -1});
}

// packbits: grid [C, H^3] into bitfield [C*H^3/8] bytes; returns the byte count.
inline int64_t check_packbits(const at::Tensor& grid, const at::Tensor& bitfield, at::DeviceType kind) {
    expect_float_grid(grid, kind);
    TORCH_CHECK(grid.numel() % 8 == 0, "grid.numel() must be a multiple of 8, got ", grid.numel());
    expect(bitfield, "bitfield", grid.device(), at::kByte, {grid.numel() / 8});
    return grid.numel() / 8;
}

// morton3D_dilation: returns the grid side H.
inline int64_t check_dilation(const at::Tensor& grid, at::DeviceType kind) {
    expect_float_grid(grid, kind);
    return grid_side(grid);
}

// The occupancy grid and per-ray bounds of both marchers (N rays, noise of noise_len).
inline void expect_march(const at::Tensor& bitfield, const at::Tensor& nears, const at::Tensor& fars,
                         const std::optional<at::Tensor>& noise, int64_t N, int64_t noise_len, int64_t max_steps,
                         int64_t C, int64_t H, const at::Device& device) {
    expect(bitfield, "density_bitfield", device, at::kByte, {-1});
    expect_grid(C, H, bitfield);
    expect(nears, "nears", device, at::kFloat, {N});
    expect(fars, "fars", device, at::kFloat, {N});
    expect_opt(noise, "noise", device, at::kFloat, {noise_len});
    TORCH_CHECK(max_steps >= 1, "max_steps must be >= 1, got ", max_steps);
}

// march_rays_train; returns N.
inline int64_t check_march_train(const at::Tensor& rays_o, const at::Tensor& rays_d, const at::Tensor& bitfield,
                                 const at::Tensor& nears, const at::Tensor& fars,
                                 const std::optional<at::Tensor>& noise, int64_t max_steps, int64_t C, int64_t H,
                                 at::DeviceType kind) {
    const int64_t N = expect_rays(rays_o, rays_d, kind);
    expect_march(bitfield, nears, fars, noise, N, N, max_steps, C, H, rays_o.device());
    return N;
}

// march_rays: rays_alive [n_alive] indexes rays_t [N]; noise is per alive ray.
inline void check_march(const at::Tensor& rays_alive, const at::Tensor& rays_t, const at::Tensor& rays_o,
                        const at::Tensor& rays_d, const at::Tensor& bitfield, const at::Tensor& nears,
                        const at::Tensor& fars, const std::optional<at::Tensor>& noise, int64_t max_steps, int64_t C,
                        int64_t H, int64_t n_step, at::DeviceType kind) {
    const int64_t N = expect_rays(rays_o, rays_d, kind);
    const at::Device device = rays_o.device();
    expect(rays_alive, "rays_alive", device, at::kInt, {-1});
    expect(rays_t, "rays_t", device, at::kFloat, {N});
    expect_march(bitfield, nears, fars, noise, N, rays_alive.size(0), max_steps, C, H, device);
    TORCH_CHECK(n_step >= 1, "n_step must be >= 1, got ", n_step);
}

// Per-sample inputs of the compositors on one `kind` device, all [M] or [M, k] of sigmas'
// dtype; returns that dtype.
inline at::ScalarType expect_samples(const at::Tensor& sigmas, const at::Tensor& rgbs, const at::Tensor& deltas,
                                     const std::optional<at::Tensor>& aud, const std::optional<at::Tensor>& eye,
                                     const std::optional<at::Tensor>& unc, at::DeviceType kind) {
    const auto dtype = sigmas.scalar_type();
    TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble, "sigmas must be float32 or float64, got ", dtype);
    const at::Device device = call_device(sigmas, "sigmas", kind);
    expect(sigmas, "sigmas", device, dtype, {-1});
    const int64_t M = sigmas.size(0);
    expect(rgbs, "rgbs", device, dtype, {M, 3});
    expect(deltas, "deltas", device, dtype, {M, 2});
    expect_opt(aud, "ambient_aud", device, dtype, {M});
    expect_opt(eye, "ambient_eye", device, dtype, {M});
    expect_opt(unc, "uncertainty", device, dtype, {M});
    return dtype;
}

// composite_rays_train_forward: samples plus rays [N, 3] int32; returns the samples' dtype.
inline at::ScalarType check_composite_train(const at::Tensor& sigmas, const at::Tensor& rgbs,
                                            const at::Tensor& deltas, const at::Tensor& rays,
                                            const std::optional<at::Tensor>& aud,
                                            const std::optional<at::Tensor>& eye,
                                            const std::optional<at::Tensor>& unc, at::DeviceType kind) {
    const auto dtype = expect_samples(sigmas, rgbs, deltas, aud, eye, unc, kind);
    expect(rays, "rays", sigmas.device(), at::kInt, {-1, 3});
    return dtype;
}

// composite_rays_train_backward: the forward's inputs, its per-ray results and their gradients.
inline at::ScalarType check_composite_train_backward(
    const at::Tensor& g_ws, const at::Tensor& g_aud, const at::Tensor& g_eye, const at::Tensor& g_unc,
    const at::Tensor& g_depth, const at::Tensor& g_image, const at::Tensor& sigmas, const at::Tensor& rgbs,
    const at::Tensor& deltas, const at::Tensor& rays, const std::optional<at::Tensor>& unc, const at::Tensor& ws,
    const at::Tensor& unc_sum, const at::Tensor& depth, const at::Tensor& image, bool need_unc,
    at::DeviceType kind) {
    const auto dtype = check_composite_train(sigmas, rgbs, deltas, rays, std::nullopt, std::nullopt, unc, kind);
    const at::Device device = sigmas.device();
    const int64_t N = rays.size(0);
    for (const auto& [t, name] : {std::pair{&g_ws, "grad_weights_sum"}, {&g_aud, "grad_ambient_aud_sum"},
                                  {&g_eye, "grad_ambient_eye_sum"}, {&g_unc, "grad_uncertainty_sum"},
                                  {&g_depth, "grad_depth"}, {&ws, "weights_sum"}, {&unc_sum, "uncertainty_sum"},
                                  {&depth, "depth"}})
        expect(*t, name, device, dtype, {N});
    expect(g_image, "grad_image", device, dtype, {N, 3});
    expect(image, "image", device, dtype, {N, 3});
    TORCH_CHECK(!need_unc || present(unc), "uncertainty is needed for its gradient");
    return dtype;
}

// composite_rays: samples of n_alive rays, n_step each, added into per-ray sums of N rays;
// returns n_step.
inline int64_t check_composite(const at::Tensor& rays_alive, const at::Tensor& rays_t, const at::Tensor& sigmas,
                               const at::Tensor& rgbs, const at::Tensor& deltas, const std::optional<at::Tensor>& aud,
                               const std::optional<at::Tensor>& eye, const std::optional<at::Tensor>& unc,
                               const at::Tensor& weights_sum, const at::Tensor& depth, const at::Tensor& image,
                               const std::optional<at::Tensor>& aud_sum, const std::optional<at::Tensor>& eye_sum,
                               const std::optional<at::Tensor>& unc_sum, at::DeviceType kind) {
    const auto dtype = expect_samples(sigmas, rgbs, deltas, aud, eye, unc, kind);
    const at::Device device = sigmas.device();
    expect(rays_alive, "rays_alive", device, at::kInt, {-1});
    const int64_t n_alive = rays_alive.size(0);
    const int64_t N = weights_sum.numel();
    TORCH_CHECK(n_alive > 0 ? sigmas.size(0) % n_alive == 0 : sigmas.size(0) == 0,
                "sigmas must hold n_alive * n_step samples, got ", sigmas.size(0), " for n_alive = ", n_alive);
    expect(weights_sum, "weights_sum", device, dtype, {N});
    expect(rays_t, "rays_t", device, dtype, {N});
    expect(depth, "depth", device, dtype, {N});
    expect(image, "image", device, dtype, {N, 3});
    TORCH_CHECK(present(aud) == present(aud_sum), "ambient_aud and ambient_aud_sum go together");
    TORCH_CHECK(present(eye) == present(eye_sum), "ambient_eye and ambient_eye_sum go together");
    TORCH_CHECK(present(unc) == present(unc_sum), "uncertainty and uncertainty_sum go together");
    expect_opt(aud_sum, "ambient_aud_sum", device, dtype, {N});
    expect_opt(eye_sum, "ambient_eye_sum", device, dtype, {N});
    expect_opt(unc_sum, "uncertainty_sum", device, dtype, {N});
    return n_alive > 0 ? sigmas.size(0) / n_alive : 0;
}

}  // namespace raymarching
