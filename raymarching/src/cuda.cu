// CUDA backend of raymarching: one thread per ray (or cell), the per-ray math from
// raymarching.h. Function names, arguments and results match cpu.cpp.
// c10/cuda only (ext_cuda.h): ATen/cuda/CUDAContext.h pulls in cuSPARSE/cuBLAS headers
// that a minimal CUDA toolkit lacks.
#include <torch/extension.h>

#include <tuple>
#include <vector>

#include "ext_cuda.h"
#include "raymarching.h"
#include "validate.h"

namespace rm = raymarching;

namespace {

constexpr auto kDevice = ernerf::kDevice;
constexpr int kThreads = 128;

inline int blocks_for(int64_t n) { return (int)div_round_up<int64_t>(n, kThreads); }

inline cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream(); }

__global__ void k_near_far(const float* __restrict__ o, const float* __restrict__ d, const float* __restrict__ box,
                           int64_t N, float min_near, float* nears, float* fars) {
    const int64_t n = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (n >= N) return;
    rm::ray_aabb(o + 3 * n, d + 3 * n, box, min_near, nears[n], fars[n]);
}

__global__ void k_sph(const float* __restrict__ o, const float* __restrict__ d, int64_t N, float radius,
                      float* out) {
    const int64_t n = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (n >= N) return;
    rm::sphere_exit_angles(o + 3 * n, d + 3 * n, radius, out + 2 * n);
}

__global__ void k_morton(const int32_t* __restrict__ c, int64_t N, int32_t* out) {
    const int64_t n = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (n >= N) return;
    out[n] = (int32_t)rm::morton3d((uint32_t)c[3 * n], (uint32_t)c[3 * n + 1], (uint32_t)c[3 * n + 2]);
}

__global__ void k_morton_invert(const int32_t* __restrict__ idx, int64_t N, int32_t* out) {
    const int64_t n = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (n >= N) return;
    for (int k = 0; k < 3; ++k) out[3 * n + k] = (int32_t)rm::gather_bits((uint32_t)idx[n] >> k);
}

template <typename T>
__global__ void k_packbits(const T* __restrict__ g, int64_t bytes, T thresh, uint8_t* out) {
    const int64_t n = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (n >= bytes) return;
    uint8_t bits = 0;
    for (int i = 0; i < 8; ++i) bits |= (g[8 * n + i] > thresh) ? (uint8_t)(1u << i) : (uint8_t)0;
    out[n] = bits;
}

template <typename T>
__global__ void k_dilation(const T* __restrict__ g, int64_t total, int64_t cells, int H, T* out) {
    const int64_t n = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (n >= total) return;
    const T* level = g + (n / cells) * cells;
    const uint32_t m = (uint32_t)(n % cells);
    const int c[3] = {(int)rm::gather_bits(m), (int)rm::gather_bits(m >> 1), (int)rm::gather_bits(m >> 2)};
    T best = level[m];
    for (int axis = 0; axis < 3; ++axis) {
        for (int step = -1; step <= 1; step += 2) {
            int nb[3] = {c[0], c[1], c[2]};
            nb[axis] += step;
            if (nb[axis] < 0 || nb[axis] >= H) continue;
            const T v = level[rm::morton3d(nb[0], nb[1], nb[2])];
            if (v > best) best = v;
        }
    }
    out[n] = best;
}

struct MarchInputs {
    const float *o, *d, *nears, *fars, *noise;
    rm::OccupancyGrid grid;
    rm::StepRule rule;
};

__device__ rm::RayWalker start_walk(const MarchInputs& in, int64_t ray, float t, float noise) {
    if (in.noise) t += in.rule.at(t) * noise;
    return rm::RayWalker(in.o + 3 * ray, in.d + 3 * ray, t, in.fars[ray]);
}

__global__ void k_march_count(MarchInputs in, int64_t N, int64_t max_steps, int64_t* counts) {
    const int64_t n = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (n >= N) return;
    rm::RayWalker walker = start_walk(in, n, in.nears[n], in.noise ? in.noise[n] : 0.0f);
    float p[3], dt, t_after;
    int64_t k = 0;
    while (k < max_steps && walker.next(in.grid, in.rule, p, dt, t_after)) ++k;
    counts[n] = k;
}

__global__ void k_march_write(MarchInputs in, int64_t N, const int64_t* __restrict__ counts,
                              const int64_t* __restrict__ ends, float* xyzs, float* dirs, float* deltas,
                              int32_t* rays) {
    const int64_t n = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (n >= N) return;
    const int64_t first = ends[n] - counts[n];
    rm::RayWalker walker = start_walk(in, n, in.nears[n], in.noise ? in.noise[n] : 0.0f);
    float p[3], dt, t_after;
    int64_t s = first;
    for (; s < ends[n] && walker.next(in.grid, in.rule, p, dt, t_after); ++s) {
        for (int k = 0; k < 3; ++k) {
            xyzs[3 * s + k] = p[k];
            dirs[3 * s + k] = in.d[3 * n + k];
        }
        deltas[2 * s] = dt;
        deltas[2 * s + 1] = t_after;
    }
    // The ray claims the samples written here, even if pass 1 counted differently.
    rays[3 * n] = (int32_t)n;
    rays[3 * n + 1] = (int32_t)first;
    rays[3 * n + 2] = (int32_t)(s - first);
}

__global__ void k_march_inference(MarchInputs in, const int32_t* __restrict__ alive, const float* __restrict__ rays_t,
                                  int64_t n_alive, int64_t N, int64_t n_step, float* xyzs, float* dirs,
                                  float* deltas) {
    const int64_t n = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (n >= n_alive) return;
    const int64_t r = alive[n];
    if (r < 0 || r >= N) return;
    rm::RayWalker walker = start_walk(in, r, rays_t[r], in.noise ? in.noise[n] : 0.0f);
    float p[3], dt, t_after;
    for (int64_t s = n * n_step; s < (n + 1) * n_step && walker.next(in.grid, in.rule, p, dt, t_after); ++s) {
        for (int k = 0; k < 3; ++k) {
            xyzs[3 * s + k] = p[k];
            dirs[3 * s + k] = in.d[3 * r + k];
        }
        deltas[2 * s] = dt;
        deltas[2 * s + 1] = t_after;
    }
}

__device__ bool ray_entry(const int32_t* rays, int64_t r, int64_t N, int64_t M, int64_t& index, int64_t& first,
                          int64_t& count) {
    index = rays[3 * r];
    first = rays[3 * r + 1];
    count = rays[3 * r + 2];
    return index >= 0 && index < N && first >= 0 && count >= 0 && first + count <= M;
}

template <typename T>
__device__ const T* shift(const T* p, int64_t by) {
    return p ? p + by : nullptr;
}

template <typename T>
__device__ T* shift(T* p, int64_t by) {
    return p ? p + by : nullptr;
}

template <typename T>
struct SampleInputs {
    const T *sigmas, *rgbs, *deltas, *aud, *eye, *unc;
};

template <typename T>
__global__ void k_composite_train(SampleInputs<T> in, const int32_t* __restrict__ rays, int64_t N, int64_t M,
                                  T thresh, T* ws, T* aud, T* eye, T* unc, T* depth, T* image) {
    const int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (r >= N) return;
    int64_t i, f, k;
    if (!ray_entry(rays, r, N, M, i, f, k)) return;
    rm::RaySums<T> s;
    rm::composite_ray<T>((int)k, in.sigmas + f, in.rgbs + 3 * f, in.deltas + 2 * f, shift(in.aud, f),
                         shift(in.eye, f), shift(in.unc, f), thresh, s);
    ws[i] = s.ws, aud[i] = s.aud, eye[i] = s.eye, unc[i] = s.unc, depth[i] = s.depth;
    for (int c = 0; c < 3; ++c) image[3 * i + c] = s.rgb[c];
}

template <typename T>
struct RayGrads {
    const T *ws, *aud, *eye, *unc, *depth, *image;
};

template <typename T>
__global__ void k_composite_train_backward(SampleInputs<T> in, const int32_t* __restrict__ rays, int64_t N,
                                           int64_t M, T thresh, RayGrads<T> fin, RayGrads<T> g, T* g_sigmas,
                                           T* g_rgbs, T* g_aud, T* g_eye, T* g_unc) {
    const int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (r >= N) return;
    int64_t i, f, k;
    if (!ray_entry(rays, r, N, M, i, f, k)) return;
    rm::RaySums<T> sf, sg;
    sf.ws = fin.ws[i], sf.unc = fin.unc[i], sf.depth = fin.depth[i];
    sg.ws = g.ws[i], sg.aud = g.aud[i], sg.eye = g.eye[i], sg.unc = g.unc[i], sg.depth = g.depth[i];
    for (int c = 0; c < 3; ++c) sf.rgb[c] = fin.image[3 * i + c], sg.rgb[c] = g.image[3 * i + c];
    rm::composite_ray_backward<T>((int)k, in.sigmas + f, in.rgbs + 3 * f, in.deltas + 2 * f, shift(in.unc, f),
                                  thresh, sf, sg, g_sigmas + f, g_rgbs + 3 * f, shift(g_aud, f), shift(g_eye, f),
                                  shift(g_unc, f));
}

template <typename T>
__global__ void k_composite_inference(SampleInputs<T> in, int32_t* alive, T* rays_t, int64_t n_alive, int64_t N,
                                      int64_t n_step, T thresh, T* ws, T* depth, T* image, T* aud, T* eye, T* unc) {
    const int64_t n = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (n >= n_alive) return;
    const int64_t r = alive[n];
    if (r < 0 || r >= N) return;
    const int64_t f = n * n_step;
    rm::RaySums<T> s;
    s.ws = ws[r], s.depth = depth[r];
    for (int c = 0; c < 3; ++c) s.rgb[c] = image[3 * r + c];
    if (aud) s.aud = aud[r];
    if (eye) s.eye = eye[r];
    if (unc) s.unc = unc[r];
    T t_last = rays_t[r];
    const bool still = rm::composite_ray_inference<T>((int)n_step, in.sigmas + f, in.rgbs + 3 * f,
                                                      in.deltas + 2 * f, shift(in.aud, f), shift(in.eye, f),
                                                      shift(in.unc, f), thresh, s, t_last);
    ws[r] = s.ws, depth[r] = s.depth;
    for (int c = 0; c < 3; ++c) image[3 * r + c] = s.rgb[c];
    if (aud) aud[r] = s.aud;
    if (eye) eye[r] = s.eye;
    if (unc) unc[r] = s.unc;
    if (still)
        rays_t[r] = t_last;
    else
        alive[n] = -1;
}

template <typename T>
SampleInputs<T> sample_inputs(const at::Tensor& sigmas, const at::Tensor& rgbs, const at::Tensor& deltas,
                              const std::optional<at::Tensor>& aud, const std::optional<at::Tensor>& eye,
                              const std::optional<at::Tensor>& unc) {
    return {sigmas.data_ptr<T>(), rgbs.data_ptr<T>(), deltas.data_ptr<T>(), rm::opt_ptr<T>(aud),
            rm::opt_ptr<T>(eye), rm::opt_ptr<T>(unc)};
}

MarchInputs march_inputs(const at::Tensor& rays_o, const at::Tensor& rays_d, const at::Tensor& bitfield,
                         const at::Tensor& nears, const at::Tensor& fars, const std::optional<at::Tensor>& noise,
                         double bound, double dt_gamma, int64_t max_steps, int64_t C, int64_t H) {
    return {rays_o.data_ptr<float>(),
            rays_d.data_ptr<float>(),
            nears.data_ptr<float>(),
            fars.data_ptr<float>(),
            rm::opt_ptr<float>(noise),
            {bitfield.data_ptr<uint8_t>(), (int)C, (int)H, (float)bound},
            rm::make_step_rule((float)dt_gamma, (int)max_steps, (int)C, (int)H)};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> near_far_from_aabb(const at::Tensor& rays_o, const at::Tensor& rays_d,
                                                      const at::Tensor& aabb, double min_near) {
    const int64_t N = rm::check_near_far(rays_o, rays_d, aabb, kDevice);
    const c10::cuda::CUDAGuard guard(rays_o.device());
    auto nears = at::empty({N}, rays_o.options());
    auto fars = at::empty({N}, rays_o.options());
    if (N) {
        ernerf::launch(k_near_far, blocks_for(N), kThreads, stream(), rays_o.data_ptr<float>(),
                       rays_d.data_ptr<float>(), aabb.data_ptr<float>(), N, (float)min_near, nears.data_ptr<float>(),
                       fars.data_ptr<float>());
    }
    return {nears, fars};
}

at::Tensor sph_from_ray(const at::Tensor& rays_o, const at::Tensor& rays_d, double radius) {
    const int64_t N = rm::expect_rays(rays_o, rays_d, kDevice);
    const c10::cuda::CUDAGuard guard(rays_o.device());
    auto coords = at::empty({N, 2}, rays_o.options());
    if (N) {
        ernerf::launch(k_sph, blocks_for(N), kThreads, stream(), rays_o.data_ptr<float>(), rays_d.data_ptr<float>(), N,
                       (float)radius, coords.data_ptr<float>());
    }
    return coords;
}

at::Tensor morton3D(const at::Tensor& coords) {
    rm::check_morton(coords, "coords", {-1, 3}, kDevice);
    const c10::cuda::CUDAGuard guard(coords.device());
    const int64_t N = coords.size(0);
    auto indices = at::empty({N}, coords.options());
    if (N) {
        ernerf::launch(k_morton, blocks_for(N), kThreads, stream(), coords.data_ptr<int32_t>(), N,
                       indices.data_ptr<int32_t>());
    }
    return indices;
}

at::Tensor morton3D_invert(const at::Tensor& indices) {
    rm::check_morton(indices, "indices", {-1}, kDevice);
    const c10::cuda::CUDAGuard guard(indices.device());
    const int64_t N = indices.size(0);
    auto coords = at::empty({N, 3}, indices.options());
    if (N) {
        ernerf::launch(k_morton_invert, blocks_for(N), kThreads, stream(), indices.data_ptr<int32_t>(), N,
                       coords.data_ptr<int32_t>());
    }
    return coords;
}

void packbits(const at::Tensor& grid, double thresh, at::Tensor& bitfield) {
    const int64_t bytes = rm::check_packbits(grid, bitfield, kDevice);
    const c10::cuda::CUDAGuard guard(grid.device());
    if (!bytes) return;
    AT_DISPATCH_FLOATING_TYPES(grid.scalar_type(), "packbits", [&] {
        ernerf::launch(k_packbits<scalar_t>, blocks_for(bytes), kThreads, stream(), grid.data_ptr<scalar_t>(), bytes,
                       (scalar_t)thresh, bitfield.data_ptr<uint8_t>());
    });
}

at::Tensor morton3D_dilation(const at::Tensor& grid) {
    const int64_t H = rm::check_dilation(grid, kDevice);
    const c10::cuda::CUDAGuard guard(grid.device());
    auto out = at::empty_like(grid);
    const int64_t total = grid.numel();
    if (!total) return out;
    AT_DISPATCH_FLOATING_TYPES(grid.scalar_type(), "morton3D_dilation", [&] {
        ernerf::launch(k_dilation<scalar_t>, blocks_for(total), kThreads, stream(), grid.data_ptr<scalar_t>(), total,
                       grid.size(1), (int)H, out.data_ptr<scalar_t>());
    });
    return out;
}

std::vector<at::Tensor> march_rays_train(const at::Tensor& rays_o, const at::Tensor& rays_d,
                                         const at::Tensor& bitfield, const at::Tensor& nears,
                                         const at::Tensor& fars, const std::optional<at::Tensor>& noise,
                                         double bound, double dt_gamma, int64_t max_steps, int64_t C, int64_t H) {
    const int64_t N = rm::check_march_train(rays_o, rays_d, bitfield, nears, fars, noise, max_steps, C, H, kDevice);
    const c10::cuda::CUDAGuard guard(rays_o.device());
    const MarchInputs in = march_inputs(rays_o, rays_d, bitfield, nears, fars, noise, bound, dt_gamma, max_steps, C, H);

    // Pass 1 counts samples per ray; the one host sync below sizes the outputs exactly.
    auto counts = at::zeros({N}, rays_o.options().dtype(at::kLong));
    if (N) {
        ernerf::launch(k_march_count, blocks_for(N), kThreads, stream(), in, N, max_steps,
                       counts.data_ptr<int64_t>());
    }
    const auto ends = counts.cumsum(0);
    const int64_t M = N ? ends[N - 1].item<int64_t>() : 0;

    // Zeroed, not empty: k_march_write records the samples it wrote, and any slot it did
    // not write must not hand stale memory to the network.
    auto xyzs = at::zeros({M, 3}, rays_o.options());
    auto dirs = at::zeros({M, 3}, rays_o.options());
    auto deltas = at::zeros({M, 2}, rays_o.options());
    auto rays = at::empty({N, 3}, rays_o.options().dtype(at::kInt));
    if (N) {
        ernerf::launch(k_march_write, blocks_for(N), kThreads, stream(), in, N, counts.data_ptr<int64_t>(),
                       ends.data_ptr<int64_t>(), xyzs.data_ptr<float>(), dirs.data_ptr<float>(),
                       deltas.data_ptr<float>(), rays.data_ptr<int32_t>());
    }
    return {xyzs, dirs, deltas, rays};
}

std::vector<at::Tensor> composite_rays_train_forward(const at::Tensor& sigmas, const at::Tensor& rgbs,
                                                     const at::Tensor& deltas, const at::Tensor& rays,
                                                     const std::optional<at::Tensor>& aud,
                                                     const std::optional<at::Tensor>& eye,
                                                     const std::optional<at::Tensor>& unc, double T_thresh) {
    const auto dtype = rm::check_composite_train(sigmas, rgbs, deltas, rays, aud, eye, unc, kDevice);
    const c10::cuda::CUDAGuard guard(sigmas.device());
    const int64_t M = sigmas.size(0), N = rays.size(0);
    const auto opts = sigmas.options();
    auto ws = at::zeros({N}, opts), aud_sum = at::zeros({N}, opts), eye_sum = at::zeros({N}, opts);
    auto unc_sum = at::zeros({N}, opts), depth = at::zeros({N}, opts), image = at::zeros({N, 3}, opts);
    if (!N) return {ws, aud_sum, eye_sum, unc_sum, depth, image};
    AT_DISPATCH_FLOATING_TYPES(dtype, "composite_rays_train_forward", [&] {
        using T = scalar_t;
        ernerf::launch(k_composite_train<T>, blocks_for(N), kThreads, stream(),
                       sample_inputs<T>(sigmas, rgbs, deltas, aud, eye, unc), rays.data_ptr<int32_t>(), N, M,
                       (T)T_thresh, ws.data_ptr<T>(), aud_sum.data_ptr<T>(), eye_sum.data_ptr<T>(),
                       unc_sum.data_ptr<T>(), depth.data_ptr<T>(), image.data_ptr<T>());
    });
    return {ws, aud_sum, eye_sum, unc_sum, depth, image};
}

std::vector<std::optional<at::Tensor>> composite_rays_train_backward(
    const at::Tensor& g_ws, const at::Tensor& g_aud, const at::Tensor& g_eye, const at::Tensor& g_unc,
    const at::Tensor& g_depth, const at::Tensor& g_image, const at::Tensor& sigmas, const at::Tensor& rgbs,
    const at::Tensor& deltas, const at::Tensor& rays, const std::optional<at::Tensor>& unc, const at::Tensor& ws,
    const at::Tensor& unc_sum, const at::Tensor& depth, const at::Tensor& image, double T_thresh, bool need_aud,
    bool need_eye, bool need_unc) {
    const auto dtype = rm::check_composite_train_backward(g_ws, g_aud, g_eye, g_unc, g_depth, g_image, sigmas, rgbs,
                                                          deltas, rays, unc, ws, unc_sum, depth, image, need_unc,
                                                          kDevice);
    const int64_t M = sigmas.size(0), N = rays.size(0);
    const c10::cuda::CUDAGuard guard(sigmas.device());

    const auto opts = sigmas.options();
    auto gs = at::zeros({M}, opts), gc = at::zeros({M, 3}, opts);
    auto ga = need_aud ? at::zeros({M}, opts) : at::Tensor();
    auto ge = need_eye ? at::zeros({M}, opts) : at::Tensor();
    auto gu = need_unc ? at::zeros({M}, opts) : at::Tensor();
    if (N) {
        AT_DISPATCH_FLOATING_TYPES(dtype, "composite_rays_train_backward", [&] {
            using T = scalar_t;
            const RayGrads<T> fin{ws.data_ptr<T>(), nullptr, nullptr, unc_sum.data_ptr<T>(), depth.data_ptr<T>(),
                                  image.data_ptr<T>()};
            const RayGrads<T> g{g_ws.data_ptr<T>(), g_aud.data_ptr<T>(), g_eye.data_ptr<T>(), g_unc.data_ptr<T>(),
                                g_depth.data_ptr<T>(), g_image.data_ptr<T>()};
            ernerf::launch(k_composite_train_backward<T>, blocks_for(N), kThreads, stream(),
                           sample_inputs<T>(sigmas, rgbs, deltas, std::nullopt, std::nullopt, unc),
                           rays.data_ptr<int32_t>(), N, M, (T)T_thresh, fin, g, gs.data_ptr<T>(), gc.data_ptr<T>(),
                           need_aud ? ga.data_ptr<T>() : nullptr, need_eye ? ge.data_ptr<T>() : nullptr,
                           need_unc ? gu.data_ptr<T>() : nullptr);
        });
    }
    auto wrap = [](const at::Tensor& t) { return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt; };
    return {gs, gc, wrap(ga), wrap(ge), wrap(gu)};
}

std::vector<at::Tensor> march_rays(const at::Tensor& rays_alive, const at::Tensor& rays_t, const at::Tensor& rays_o,
                                   const at::Tensor& rays_d, const at::Tensor& bitfield, const at::Tensor& nears,
                                   const at::Tensor& fars, const std::optional<at::Tensor>& noise, double bound,
                                   double dt_gamma, int64_t max_steps, int64_t C, int64_t H, int64_t n_step) {
    rm::check_march(rays_alive, rays_t, rays_o, rays_d, bitfield, nears, fars, noise, max_steps, C, H, n_step,
                    kDevice);
    const int64_t N = rays_o.size(0), n_alive = rays_alive.size(0);
    const c10::cuda::CUDAGuard guard(rays_o.device());
    const MarchInputs in = march_inputs(rays_o, rays_d, bitfield, nears, fars, noise, bound, dt_gamma, max_steps, C, H);
    auto xyzs = at::zeros({n_alive * n_step, 3}, rays_o.options());
    auto dirs = at::zeros({n_alive * n_step, 3}, rays_o.options());
    auto deltas = at::zeros({n_alive * n_step, 2}, rays_o.options());
    if (n_alive) {
        ernerf::launch(k_march_inference, blocks_for(n_alive), kThreads, stream(), in, rays_alive.data_ptr<int32_t>(),
                       rays_t.data_ptr<float>(), n_alive, N, n_step, xyzs.data_ptr<float>(), dirs.data_ptr<float>(),
                       deltas.data_ptr<float>());
    }
    return {xyzs, dirs, deltas};
}

void composite_rays(at::Tensor& rays_alive, at::Tensor& rays_t, const at::Tensor& sigmas, const at::Tensor& rgbs,
                    const at::Tensor& deltas, const std::optional<at::Tensor>& aud,
                    const std::optional<at::Tensor>& eye, const std::optional<at::Tensor>& unc, at::Tensor& weights_sum,
                    at::Tensor& depth, at::Tensor& image, const std::optional<at::Tensor>& aud_sum,
                    const std::optional<at::Tensor>& eye_sum, const std::optional<at::Tensor>& unc_sum,
                    double T_thresh) {
    const int64_t n_step = rm::check_composite(rays_alive, rays_t, sigmas, rgbs, deltas, aud, eye, unc, weights_sum,
                                               depth, image, aud_sum, eye_sum, unc_sum, kDevice);
    const int64_t n_alive = rays_alive.size(0), N = weights_sum.numel();
    const auto dtype = sigmas.scalar_type();
    const c10::cuda::CUDAGuard guard(sigmas.device());
    if (!n_alive) return;
    AT_DISPATCH_FLOATING_TYPES(dtype, "composite_rays", [&] {
        using T = scalar_t;
        ernerf::launch(k_composite_inference<T>, blocks_for(n_alive), kThreads, stream(),
                       sample_inputs<T>(sigmas, rgbs, deltas, aud, eye, unc), rays_alive.data_ptr<int32_t>(),
                       rays_t.data_ptr<T>(), n_alive, N, n_step, (T)T_thresh, weights_sum.data_ptr<T>(),
                       depth.data_ptr<T>(), image.data_ptr<T>(), rm::opt_ptr<T>(aud_sum), rm::opt_ptr<T>(eye_sum),
                       rm::opt_ptr<T>(unc_sum));
    });
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.doc() = "raymarching: CUDA kernels (see raymarching/raymarching.py for the documented API)";
    set_source_hash(m);
    m.def("near_far_from_aabb", &near_far_from_aabb);
    m.def("sph_from_ray", &sph_from_ray);
    m.def("morton3D", &morton3D);
    m.def("morton3D_invert", &morton3D_invert);
    m.def("packbits", &packbits);
    m.def("morton3D_dilation", &morton3D_dilation);
    m.def("march_rays_train", &march_rays_train);
    m.def("composite_rays_train_forward", &composite_rays_train_forward);
    m.def("composite_rays_train_backward", &composite_rays_train_backward);
    m.def("march_rays", &march_rays);
    m.def("composite_rays", &composite_rays);
}
