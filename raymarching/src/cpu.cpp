// C++ CPU backend of raymarching: one at::parallel_for over rays (or cells) per
// entry point, the per-ray math from raymarching.h. Function names, arguments and
// results match cuda.cu and raymarching/_torch_impl.py.
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <tuple>
#include <vector>

#include "raymarching.h"
#include "validate.h"

namespace rm = raymarching;

namespace {

constexpr auto kCPU = at::kCPU;
constexpr int64_t kRayGrain = 64;    // rays per task: march/composite cost ~ 10-100 steps each
constexpr int64_t kCellGrain = 4096;  // cheap per-element work

}  // namespace

std::tuple<at::Tensor, at::Tensor> near_far_from_aabb(const at::Tensor& rays_o, const at::Tensor& rays_d,
                                                      const at::Tensor& aabb, double min_near) {
    const int64_t N = rm::check_near_far(rays_o, rays_d, aabb, kCPU);
    auto nears = at::empty({N}, rays_o.options());
    auto fars = at::empty({N}, rays_o.options());
    const float* o = rays_o.data_ptr<float>();
    const float* d = rays_d.data_ptr<float>();
    const float* box = aabb.data_ptr<float>();
    float* pn = nears.data_ptr<float>();
    float* pf = fars.data_ptr<float>();
    at::parallel_for(0, N, kCellGrain, [&](int64_t begin, int64_t end) {
        for (int64_t n = begin; n < end; ++n) rm::ray_aabb(o + 3 * n, d + 3 * n, box, (float)min_near, pn[n], pf[n]);
    });
    return {nears, fars};
}

at::Tensor sph_from_ray(const at::Tensor& rays_o, const at::Tensor& rays_d, double radius) {
    const int64_t N = rm::expect_rays(rays_o, rays_d, kCPU);
    auto coords = at::empty({N, 2}, rays_o.options());
    const float* o = rays_o.data_ptr<float>();
    const float* d = rays_d.data_ptr<float>();
    float* out = coords.data_ptr<float>();
    at::parallel_for(0, N, kCellGrain, [&](int64_t begin, int64_t end) {
        for (int64_t n = begin; n < end; ++n) rm::sphere_exit_angles(o + 3 * n, d + 3 * n, (float)radius, out + 2 * n);
    });
    return coords;
}

at::Tensor morton3D(const at::Tensor& coords) {
    rm::check_morton(coords, "coords", {-1, 3}, kCPU);
    const int64_t N = coords.size(0);
    auto indices = at::empty({N}, coords.options());
    const int32_t* c = coords.data_ptr<int32_t>();
    int32_t* out = indices.data_ptr<int32_t>();
    at::parallel_for(0, N, kCellGrain, [&](int64_t begin, int64_t end) {
        for (int64_t n = begin; n < end; ++n)
            out[n] = (int32_t)rm::morton3d((uint32_t)c[3 * n], (uint32_t)c[3 * n + 1], (uint32_t)c[3 * n + 2]);
    });
    return indices;
}

at::Tensor morton3D_invert(const at::Tensor& indices) {
    rm::check_morton(indices, "indices", {-1}, kCPU);
    const int64_t N = indices.size(0);
    auto coords = at::empty({N, 3}, indices.options());
    const int32_t* idx = indices.data_ptr<int32_t>();
    int32_t* out = coords.data_ptr<int32_t>();
    at::parallel_for(0, N, kCellGrain, [&](int64_t begin, int64_t end) {
        for (int64_t n = begin; n < end; ++n)
            for (int k = 0; k < 3; ++k) out[3 * n + k] = (int32_t)rm::gather_bits((uint32_t)idx[n] >> k);
    });
    return coords;
}

void packbits(const at::Tensor& grid, double thresh, at::Tensor& bitfield) {
    const int64_t bytes = rm::check_packbits(grid, bitfield, kCPU);
    uint8_t* out = bitfield.data_ptr<uint8_t>();
    AT_DISPATCH_FLOATING_TYPES(grid.scalar_type(), "packbits", [&] {
        const scalar_t* g = grid.data_ptr<scalar_t>();
        const scalar_t th = (scalar_t)thresh;  // compare in the grid's precision, like torch does
        at::parallel_for(0, bytes, kCellGrain, [&](int64_t begin, int64_t end) {
            for (int64_t n = begin; n < end; ++n) {
                uint8_t bits = 0;
                for (int i = 0; i < 8; ++i) bits |= (g[8 * n + i] > th) ? (uint8_t)(1u << i) : (uint8_t)0;
                out[n] = bits;
            }
        });
    });
}

at::Tensor morton3D_dilation(const at::Tensor& grid) {
    const int64_t H = rm::check_dilation(grid, kCPU);
    const int64_t cells = grid.size(1);
    const int64_t total = grid.numel();
    auto out = at::empty_like(grid);
    AT_DISPATCH_FLOATING_TYPES(grid.scalar_type(), "morton3D_dilation", [&] {
        const scalar_t* g = grid.data_ptr<scalar_t>();
        scalar_t* o = out.data_ptr<scalar_t>();
        at::parallel_for(0, total, kCellGrain, [&](int64_t begin, int64_t end) {
            for (int64_t n = begin; n < end; ++n) {
                const scalar_t* level = g + (n / cells) * cells;
                const uint32_t m = (uint32_t)(n % cells);
                const int c[3] = {(int)rm::gather_bits(m), (int)rm::gather_bits(m >> 1), (int)rm::gather_bits(m >> 2)};
                scalar_t best = level[m];
                for (int axis = 0; axis < 3; ++axis) {
                    for (int step = -1; step <= 1; step += 2) {
                        int nb[3] = {c[0], c[1], c[2]};
                        nb[axis] += step;
                        if (nb[axis] < 0 || nb[axis] >= H) continue;
                        const scalar_t v = level[rm::morton3d(nb[0], nb[1], nb[2])];
                        if (v > best) best = v;
                    }
                }
                o[n] = best;
            }
        });
    });
    return out;
}

std::vector<at::Tensor> march_rays_train(const at::Tensor& rays_o, const at::Tensor& rays_d,
                                         const at::Tensor& bitfield, const at::Tensor& nears,
                                         const at::Tensor& fars, const std::optional<at::Tensor>& noise,
                                         double bound, double dt_gamma, int64_t max_steps, int64_t C, int64_t H) {
    const int64_t N = rm::check_march_train(rays_o, rays_d, bitfield, nears, fars, noise, max_steps, C, H, kCPU);

    const rm::StepRule rule = rm::make_step_rule((float)dt_gamma, (int)max_steps, (int)C, (int)H);
    const rm::OccupancyGrid grid{bitfield.data_ptr<uint8_t>(), (int)C, (int)H, (float)bound};
    const float* o = rays_o.data_ptr<float>();
    const float* d = rays_d.data_ptr<float>();
    const float* pn = nears.data_ptr<float>();
    const float* pf = fars.data_ptr<float>();
    const float* pz = rm::opt_ptr<float>(noise);
    auto start = [&](int64_t n) {
        float t = pn[n];
        if (pz) t += rule.at(t) * pz[n];
        return rm::RayWalker(o + 3 * n, d + 3 * n, t, pf[n]);
    };

    // Pass 1: samples per ray, so the outputs get their exact size and ray order.
    auto counts = at::empty({N}, rays_o.options().dtype(at::kLong));
    int64_t* cnt = counts.data_ptr<int64_t>();
    at::parallel_for(0, N, kRayGrain, [&](int64_t begin, int64_t end) {
        float p[3], dt, t_after;
        for (int64_t n = begin; n < end; ++n) {
            rm::RayWalker walker = start(n);
            int64_t k = 0;
            while (k < max_steps && walker.next(grid, rule, p, dt, t_after)) ++k;
            cnt[n] = k;
        }
    });
    const auto ends = counts.cumsum(0);
    const int64_t M = N ? ends[N - 1].item<int64_t>() : 0;
    const int64_t* pend = ends.data_ptr<int64_t>();

    // Pass 2: the same walk again, writing the samples. Zeroed, not empty: each ray
    // records the samples it wrote, and an unwritten slot must not hold stale memory.
    auto xyzs = at::zeros({M, 3}, rays_o.options());
    auto dirs = at::zeros({M, 3}, rays_o.options());
    auto deltas = at::zeros({M, 2}, rays_o.options());
    auto rays = at::empty({N, 3}, rays_o.options().dtype(at::kInt));
    float* px = xyzs.data_ptr<float>();
    float* pdir = dirs.data_ptr<float>();
    float* pdel = deltas.data_ptr<float>();
    int32_t* pr = rays.data_ptr<int32_t>();
    at::parallel_for(0, N, kRayGrain, [&](int64_t begin, int64_t end) {
        float p[3], dt, t_after;
        for (int64_t n = begin; n < end; ++n) {
            const int64_t first = pend[n] - cnt[n];
            rm::RayWalker walker = start(n);
            int64_t s = first;
            for (; s < pend[n] && walker.next(grid, rule, p, dt, t_after); ++s) {
                for (int k = 0; k < 3; ++k) {
                    px[3 * s + k] = p[k];
                    pdir[3 * s + k] = d[3 * n + k];
                }
                pdel[2 * s] = dt;
                pdel[2 * s + 1] = t_after;
            }
            pr[3 * n] = (int32_t)n;
            pr[3 * n + 1] = (int32_t)first;
            pr[3 * n + 2] = (int32_t)(s - first);
        }
    });
    return {xyzs, dirs, deltas, rays};
}

namespace {

// A ray's (output index, first sample, count), or false if it lies outside the buffers.
bool ray_entry(const int32_t* rays, int64_t r, int64_t N, int64_t M, int64_t& index, int64_t& first,
               int64_t& count) {
    index = rays[3 * r];
    first = rays[3 * r + 1];
    count = rays[3 * r + 2];
    return index >= 0 && index < N && first >= 0 && count >= 0 && first + count <= M;
}

}  // namespace

std::vector<at::Tensor> composite_rays_train_forward(const at::Tensor& sigmas, const at::Tensor& rgbs,
                                                     const at::Tensor& deltas, const at::Tensor& rays,
                                                     const std::optional<at::Tensor>& aud,
                                                     const std::optional<at::Tensor>& eye,
                                                     const std::optional<at::Tensor>& unc, double T_thresh) {
    const auto dtype = rm::check_composite_train(sigmas, rgbs, deltas, rays, aud, eye, unc, kCPU);
    const int64_t M = sigmas.size(0), N = rays.size(0);
    const auto opts = sigmas.options();
    auto ws = at::zeros({N}, opts), aud_sum = at::zeros({N}, opts), eye_sum = at::zeros({N}, opts);
    auto unc_sum = at::zeros({N}, opts), depth = at::zeros({N}, opts), image = at::zeros({N, 3}, opts);
    const int32_t* pr = rays.data_ptr<int32_t>();
    AT_DISPATCH_FLOATING_TYPES(dtype, "composite_rays_train_forward", [&] {
        const scalar_t *s = sigmas.data_ptr<scalar_t>(), *c = rgbs.data_ptr<scalar_t>();
        const scalar_t* dl = deltas.data_ptr<scalar_t>();
        const scalar_t *pa = rm::opt_ptr<scalar_t>(aud), *pe = rm::opt_ptr<scalar_t>(eye);
        const scalar_t* pu = rm::opt_ptr<scalar_t>(unc);
        scalar_t *o_ws = ws.data_ptr<scalar_t>(), *o_aud = aud_sum.data_ptr<scalar_t>();
        scalar_t *o_eye = eye_sum.data_ptr<scalar_t>(), *o_unc = unc_sum.data_ptr<scalar_t>();
        scalar_t *o_depth = depth.data_ptr<scalar_t>(), *o_img = image.data_ptr<scalar_t>();
        const scalar_t thresh = (scalar_t)T_thresh;
        at::parallel_for(0, N, kRayGrain, [&](int64_t begin, int64_t end) {
            for (int64_t r = begin; r < end; ++r) {
                int64_t i, f, k;
                if (!ray_entry(pr, r, N, M, i, f, k)) continue;
                rm::RaySums<scalar_t> sum;
                rm::composite_ray<scalar_t>((int)k, s + f, c + 3 * f, dl + 2 * f, pa ? pa + f : nullptr,
                                            pe ? pe + f : nullptr, pu ? pu + f : nullptr, thresh, sum);
                o_ws[i] = sum.ws;
                o_aud[i] = sum.aud;
                o_eye[i] = sum.eye;
                o_unc[i] = sum.unc;
                o_depth[i] = sum.depth;
                for (int ch = 0; ch < 3; ++ch) o_img[3 * i + ch] = sum.rgb[ch];
            }
        });
    });
    return {ws, aud_sum, eye_sum, unc_sum, depth, image};
}

// Gradients of composite_rays_train_forward w.r.t. (sigmas, rgbs, ambient_aud,
// ambient_eye, uncertainty); the last three are None when not requested.
std::vector<std::optional<at::Tensor>> composite_rays_train_backward(
    const at::Tensor& g_ws, const at::Tensor& g_aud, const at::Tensor& g_eye, const at::Tensor& g_unc,
    const at::Tensor& g_depth, const at::Tensor& g_image, const at::Tensor& sigmas, const at::Tensor& rgbs,
    const at::Tensor& deltas, const at::Tensor& rays, const std::optional<at::Tensor>& unc, const at::Tensor& ws,
    const at::Tensor& unc_sum, const at::Tensor& depth, const at::Tensor& image, double T_thresh, bool need_aud,
    bool need_eye, bool need_unc) {
    const auto dtype = rm::check_composite_train_backward(g_ws, g_aud, g_eye, g_unc, g_depth, g_image, sigmas, rgbs,
                                                          deltas, rays, unc, ws, unc_sum, depth, image, need_unc,
                                                          kCPU);
    const int64_t M = sigmas.size(0), N = rays.size(0);

    const auto opts = sigmas.options();
    auto gs = at::zeros({M}, opts), gc = at::zeros({M, 3}, opts);
    auto ga = need_aud ? at::zeros({M}, opts) : at::Tensor();
    auto ge = need_eye ? at::zeros({M}, opts) : at::Tensor();
    auto gu = need_unc ? at::zeros({M}, opts) : at::Tensor();
    const int32_t* pr = rays.data_ptr<int32_t>();
    AT_DISPATCH_FLOATING_TYPES(dtype, "composite_rays_train_backward", [&] {
        const scalar_t *s = sigmas.data_ptr<scalar_t>(), *c = rgbs.data_ptr<scalar_t>();
        const scalar_t* dl = deltas.data_ptr<scalar_t>();
        const scalar_t* pu = rm::opt_ptr<scalar_t>(unc);
        const scalar_t *i_ws = ws.data_ptr<scalar_t>(), *i_unc = unc_sum.data_ptr<scalar_t>();
        const scalar_t *i_depth = depth.data_ptr<scalar_t>(), *i_img = image.data_ptr<scalar_t>();
        const scalar_t *g_w = g_ws.data_ptr<scalar_t>(), *g_a = g_aud.data_ptr<scalar_t>();
        const scalar_t *g_e = g_eye.data_ptr<scalar_t>(), *g_u = g_unc.data_ptr<scalar_t>();
        const scalar_t *g_d = g_depth.data_ptr<scalar_t>(), *g_i = g_image.data_ptr<scalar_t>();
        scalar_t *o_s = gs.data_ptr<scalar_t>(), *o_c = gc.data_ptr<scalar_t>();
        scalar_t* o_a = need_aud ? ga.data_ptr<scalar_t>() : nullptr;
        scalar_t* o_e = need_eye ? ge.data_ptr<scalar_t>() : nullptr;
        scalar_t* o_u = need_unc ? gu.data_ptr<scalar_t>() : nullptr;
        const scalar_t thresh = (scalar_t)T_thresh;
        at::parallel_for(0, N, kRayGrain, [&](int64_t begin, int64_t end) {
            for (int64_t r = begin; r < end; ++r) {
                int64_t i, f, k;
                if (!ray_entry(pr, r, N, M, i, f, k)) continue;
                rm::RaySums<scalar_t> fin, g;
                fin.ws = i_ws[i], fin.unc = i_unc[i], fin.depth = i_depth[i];
                g.ws = g_w[i], g.aud = g_a[i], g.eye = g_e[i], g.unc = g_u[i], g.depth = g_d[i];
                for (int ch = 0; ch < 3; ++ch) fin.rgb[ch] = i_img[3 * i + ch], g.rgb[ch] = g_i[3 * i + ch];
                rm::composite_ray_backward<scalar_t>((int)k, s + f, c + 3 * f, dl + 2 * f, pu ? pu + f : nullptr,
                                                     thresh, fin, g, o_s + f, o_c + 3 * f, o_a ? o_a + f : nullptr,
                                                     o_e ? o_e + f : nullptr, o_u ? o_u + f : nullptr);
            }
        });
    });
    auto wrap = [](const at::Tensor& t) { return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt; };
    return {gs, gc, wrap(ga), wrap(ge), wrap(gu)};
}

std::vector<at::Tensor> march_rays(const at::Tensor& rays_alive, const at::Tensor& rays_t, const at::Tensor& rays_o,
                                   const at::Tensor& rays_d, const at::Tensor& bitfield, const at::Tensor& nears,
                                   const at::Tensor& fars, const std::optional<at::Tensor>& noise, double bound,
                                   double dt_gamma, int64_t max_steps, int64_t C, int64_t H, int64_t n_step) {
    rm::check_march(rays_alive, rays_t, rays_o, rays_d, bitfield, nears, fars, noise, max_steps, C, H, n_step, kCPU);
    const int64_t N = rays_o.size(0), n_alive = rays_alive.size(0);

    const rm::StepRule rule = rm::make_step_rule((float)dt_gamma, (int)max_steps, (int)C, (int)H);
    const rm::OccupancyGrid grid{bitfield.data_ptr<uint8_t>(), (int)C, (int)H, (float)bound};
    auto xyzs = at::zeros({n_alive * n_step, 3}, rays_o.options());
    auto dirs = at::zeros({n_alive * n_step, 3}, rays_o.options());
    auto deltas = at::zeros({n_alive * n_step, 2}, rays_o.options());
    const int32_t* alive = rays_alive.data_ptr<int32_t>();
    const float *pt = rays_t.data_ptr<float>(), *o = rays_o.data_ptr<float>(), *d = rays_d.data_ptr<float>();
    const float *pf = fars.data_ptr<float>(), *pz = rm::opt_ptr<float>(noise);
    float *px = xyzs.data_ptr<float>(), *pdir = dirs.data_ptr<float>(), *pdel = deltas.data_ptr<float>();
    at::parallel_for(0, n_alive, kRayGrain, [&](int64_t begin, int64_t end) {
        float p[3], dt, t_after;
        for (int64_t n = begin; n < end; ++n) {
            const int64_t r = alive[n];
            if (r < 0 || r >= N) continue;
            float t = pt[r];
            if (pz) t += rule.at(t) * pz[n];
            rm::RayWalker walker(o + 3 * r, d + 3 * r, t, pf[r]);
            for (int64_t s = n * n_step; s < (n + 1) * n_step && walker.next(grid, rule, p, dt, t_after); ++s) {
                for (int k = 0; k < 3; ++k) {
                    px[3 * s + k] = p[k];
                    pdir[3 * s + k] = d[3 * r + k];
                }
                pdel[2 * s] = dt;
                pdel[2 * s + 1] = t_after;
            }
        }
    });
    return {xyzs, dirs, deltas};
}

void composite_rays(at::Tensor& rays_alive, at::Tensor& rays_t, const at::Tensor& sigmas, const at::Tensor& rgbs,
                    const at::Tensor& deltas, const std::optional<at::Tensor>& aud,
                    const std::optional<at::Tensor>& eye, const std::optional<at::Tensor>& unc, at::Tensor& weights_sum,
                    at::Tensor& depth, at::Tensor& image, const std::optional<at::Tensor>& aud_sum,
                    const std::optional<at::Tensor>& eye_sum, const std::optional<at::Tensor>& unc_sum,
                    double T_thresh) {
    const int64_t n_step = rm::check_composite(rays_alive, rays_t, sigmas, rgbs, deltas, aud, eye, unc, weights_sum,
                                               depth, image, aud_sum, eye_sum, unc_sum, kCPU);
    const int64_t n_alive = rays_alive.size(0), N = weights_sum.numel();
    const auto dtype = sigmas.scalar_type();

    int32_t* alive = rays_alive.data_ptr<int32_t>();
    AT_DISPATCH_FLOATING_TYPES(dtype, "composite_rays", [&] {
        const scalar_t *s = sigmas.data_ptr<scalar_t>(), *c = rgbs.data_ptr<scalar_t>();
        const scalar_t* dl = deltas.data_ptr<scalar_t>();
        const scalar_t *pa = rm::opt_ptr<scalar_t>(aud), *pe = rm::opt_ptr<scalar_t>(eye);
        const scalar_t* pu = rm::opt_ptr<scalar_t>(unc);
        scalar_t *pt = rays_t.data_ptr<scalar_t>(), *o_ws = weights_sum.data_ptr<scalar_t>();
        scalar_t *o_depth = depth.data_ptr<scalar_t>(), *o_img = image.data_ptr<scalar_t>();
        scalar_t *o_aud = rm::opt_ptr<scalar_t>(aud_sum), *o_eye = rm::opt_ptr<scalar_t>(eye_sum);
        scalar_t* o_unc = rm::opt_ptr<scalar_t>(unc_sum);
        const scalar_t thresh = (scalar_t)T_thresh;
        at::parallel_for(0, n_alive, kRayGrain, [&](int64_t begin, int64_t end) {
            for (int64_t n = begin; n < end; ++n) {
                const int64_t r = alive[n];
                if (r < 0 || r >= N) continue;
                const int64_t f = n * n_step;
                rm::RaySums<scalar_t> sum;
                sum.ws = o_ws[r], sum.depth = o_depth[r];
                for (int ch = 0; ch < 3; ++ch) sum.rgb[ch] = o_img[3 * r + ch];
                if (o_aud) sum.aud = o_aud[r];
                if (o_eye) sum.eye = o_eye[r];
                if (o_unc) sum.unc = o_unc[r];
                scalar_t t_last = pt[r];
                const bool still = rm::composite_ray_inference<scalar_t>(
                    (int)n_step, s + f, c + 3 * f, dl + 2 * f, pa ? pa + f : nullptr, pe ? pe + f : nullptr,
                    pu ? pu + f : nullptr, thresh, sum, t_last);
                o_ws[r] = sum.ws, o_depth[r] = sum.depth;
                for (int ch = 0; ch < 3; ++ch) o_img[3 * r + ch] = sum.rgb[ch];
                if (o_aud) o_aud[r] = sum.aud;
                if (o_eye) o_eye[r] = sum.eye;
                if (o_unc) o_unc[r] = sum.unc;
                if (still)
                    pt[r] = t_last;
                else
                    alive[n] = -1;
            }
        });
    });
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.doc() = "raymarching: C++ CPU kernels (see raymarching/raymarching.py for the documented API)";
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
