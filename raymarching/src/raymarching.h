// Per-ray math of the raymarching package, shared by the C++ (cpu.cpp) and CUDA
// (cuda.cu) backends so both march and composite with the same float operations
// as each other and as raymarching/_torch_impl.py.
//
// Conventions: positions live in [-bound, bound]^3; cascade c covers
// [-b_c, b_c]^3 with b_c = min(2^c, bound) on an H^3 grid stored in Morton order;
// the occupancy bitfield holds bit (c * H^3 + morton(cell)) for every cell.
//
// Both compilers build this without fusing a*b+c into one FMA (ext_common/build.py:
// -ffp-contract=off, nvcc --fmad=false), so every product and sum rounds alike on the
// CPU and the GPU and the walk visits the same cells with the same t.
#pragma once

#include "ext_hd.h"

namespace raymarching {

constexpr float kSqrt3 = 1.7320508075688772f;
constexpr float kInvPi = 0.3183098861837907f;
constexpr float kFloatMax = 3.402823466e+38f;

// ---------------------------------------------------------------- Morton order
// Morton index: bit k of x goes to bit 3k, of y to 3k+1, of z to 3k+2 (10 bits each).
HD uint32_t spread_bits(uint32_t v) {
    v &= 0x3FFu;
    v = (v | (v << 16)) & 0x030000FFu;
    v = (v | (v << 8)) & 0x0300F00Fu;
    v = (v | (v << 4)) & 0x030C30C3u;
    v = (v | (v << 2)) & 0x09249249u;
    return v;
}

HD uint32_t gather_bits(uint32_t v) {
    v &= 0x09249249u;
    v = (v | (v >> 2)) & 0x030C30C3u;
    v = (v | (v >> 4)) & 0x0300F00Fu;
    v = (v | (v >> 8)) & 0x030000FFu;
    v = (v | (v >> 16)) & 0x000003FFu;
    return v;
}

HD uint32_t morton3d(uint32_t x, uint32_t y, uint32_t z) {
    return spread_bits(x) | (spread_bits(y) << 1) | (spread_bits(z) << 2);
}

// ------------------------------------------------------------------ geometry
// Slab test against aabb = (xmin, ymin, zmin, xmax, ymax, zmax). A miss gives
// near = far = FLT_MAX; a hit clamps near to at least min_near.
HD void ray_aabb(const float o[3], const float d[3], const float* aabb, float min_near,
                 float& near, float& far) {
    near = -kFloatMax;
    far = kFloatMax;
    for (int k = 0; k < 3; ++k) {
        const float inv = 1.0f / d[k];
        float lo = (aabb[k] - o[k]) * inv;
        float hi = (aabb[k + 3] - o[k]) * inv;
        if (lo > hi) { const float s = lo; lo = hi; hi = s; }
        if (near > hi || lo > far) {
            near = far = kFloatMax;
            return;
        }
        if (lo > near) near = lo;
        if (hi < far) far = hi;
    }
    if (near < min_near) near = min_near;
}

// Where the ray leaves the sphere |p| = radius (the far root), as normalised polar
// angles (2 theta / pi - 1, phi / pi) in [-1, 1]^2 with y as the up axis.
HD void sphere_exit_angles(const float o[3], const float d[3], float radius, float out[2]) {
    const float a = d[0] * d[0] + d[1] * d[1] + d[2] * d[2];
    const float half_b = o[0] * d[0] + o[1] * d[1] + o[2] * d[2];
    const float c = o[0] * o[0] + o[1] * o[1] + o[2] * o[2] - radius * radius;
    const float t = (-half_b + sqrtf(half_b * half_b - a * c)) / a;
    const float x = o[0] + t * d[0], y = o[1] + t * d[1], z = o[2] + t * d[2];
    const float theta = atan2f(sqrtf(x * x + z * z), y);
    const float phi = atan2f(z, x);
    out[0] = 2.0f * theta * kInvPi - 1.0f;
    out[1] = phi * kInvPi;
}

// ----------------------------------------------------------------- step rule
// dt = clamp(t * dt_gamma, dt_min, dt_max): dt_max is one coarsest-cell diagonal,
// dt_min spreads max_steps samples over the [-1, 1]^3 diagonal (never above dt_max).
struct StepRule {
    float dt_min, dt_max, dt_gamma;

    HD float at(float t) const { return clamp_val(t * dt_gamma, dt_min, dt_max); }
};

HD StepRule make_step_rule(float dt_gamma, int max_steps, int C, int H) {
    StepRule r;
    r.dt_max = 2.0f * kSqrt3 * (float)(1 << (C - 1)) / (float)H;
    const float lo = 2.0f * kSqrt3 / (float)max_steps;
    r.dt_min = lo < r.dt_max ? lo : r.dt_max;
    r.dt_gamma = dt_gamma;
    return r;
}

// ------------------------------------------------------------ occupancy grid
struct OccupancyGrid {
    const uint8_t* bits;  // [C * H^3 / 8]
    int C, H;
    float bound;
};

HD int frexp_exponent(float v) {
    int e;
    frexpf(v, &e);
    return e;
}

// Cascade holding a sample: the finest one that contains the point and whose cells
// are no smaller than the step.
HD int cascade_level(float x, float y, float z, float dt, int C, int H) {
    const float m = fmaxf(fabsf(x), fmaxf(fabsf(y), fabsf(z)));
    const int e_pos = frexp_exponent(m);
    const int e_dt = frexp_exponent(dt * (float)H * 0.5f);
    return clamp_val(e_pos > e_dt ? e_pos : e_dt, 0, C - 1);
}

HD int cell_of(float p, float inv_b, int H) {
    return (int)clamp_val((p * inv_b + 1.0f) * 0.5f * (float)H, 0.0f, (float)(H - 1));
}

// Distance along the ray to the far face of cell n on one axis (inf/NaN for d = 0,
// which fminf/fmaxf ignore).
HD float face_distance(int n, float p, float d, float inv_d, float b, int H) {
    const float side = copysignf(1.0f, d) < 0.0f ? 0.0f : 1.0f;  // -0 counts as negative, like 1/d
    return ((((float)n + side) * (2.0f / (float)H) - 1.0f) * b - p) * inv_d;
}

// Front-to-back walk of one ray through the occupied cells. `next` yields the
// sample at the current t when its cell is occupied (and advances t by dt), or
// skips whole empty cells with dt-sized steps, so every backend produces the
// same t sequence.
struct RayWalker {
    float o[3], d[3], inv_d[3];
    float t, far;

    HD RayWalker(const float* ro, const float* rd, float t0, float far_) : t(t0), far(far_) {
        for (int k = 0; k < 3; ++k) {
            o[k] = ro[k];
            d[k] = rd[k];
            inv_d[k] = 1.0f / rd[k];
        }
    }

    // Returns false once t >= far; otherwise fills p (clamped to the bound), dt
    // and t_after = t + dt of the next occupied sample.
    HD bool next(const OccupancyGrid& g, const StepRule& rule, float p[3], float& dt, float& t_after) {
        const int H = g.H;
        const uint32_t cells = (uint32_t)H * (uint32_t)H * (uint32_t)H;
        while (t < far) {
            for (int k = 0; k < 3; ++k) p[k] = clamp_val(o[k] + t * d[k], -g.bound, g.bound);
            dt = rule.at(t);
            const int level = cascade_level(p[0], p[1], p[2], dt, g.C, H);
            const float b = fminf((float)(1 << level), g.bound);
            const float inv_b = 1.0f / b;
            int n[3];
            for (int k = 0; k < 3; ++k) n[k] = cell_of(p[k], inv_b, H);
            const uint32_t idx = (uint32_t)level * cells + morton3d(n[0], n[1], n[2]);
            if (g.bits[idx >> 3] & (1u << (idx & 7u))) {
                t += dt;
                t_after = t;
                return true;
            }
            const float tx = face_distance(n[0], p[0], d[0], inv_d[0], b, H);
            const float ty = face_distance(n[1], p[1], d[1], inv_d[1], b, H);
            const float tz = face_distance(n[2], p[2], d[2], inv_d[2], b, H);
            const float target = t + fmaxf(0.0f, fminf(tx, fminf(ty, tz)));
            do {
                t += rule.at(t);
            } while (t < target);
        }
        return false;
    }
};

// ----------------------------------------------------------------- compositing
HD float exp_of(float v) { return expf(v); }
HD double exp_of(double v) { return exp(v); }

// Per-ray sums of the training compositor.
template <typename T>
struct RaySums {
    T ws = 0, aud = 0, eye = 0, unc = 0, depth = 0, rgb[3] = {0, 0, 0};
};

// Training compositor of one ray with `count` samples (pointers already offset
// to the ray's first sample; aud/eye/unc may be null): alpha_i = 1 - exp(-sigma_i dt_i),
// w_i = alpha_i T_i, stopping after the sample that brings T below T_thresh.
// Returns the number of samples accumulated.
template <typename T>
HD int composite_ray(int count, const T* sigmas, const T* rgbs, const T* deltas, const T* aud,
                     const T* eye, const T* unc, T T_thresh, RaySums<T>& s) {
    T trans = 1;
    int i = 0;
    while (i < count) {
        const T alpha = 1 - exp_of(-(sigmas[i] * deltas[2 * i]));
        const T w = alpha * trans;
        s.ws += w;
        s.depth += w * deltas[2 * i + 1];
        for (int c = 0; c < 3; ++c) s.rgb[c] += w * rgbs[3 * i + c];
        if (unc) s.unc += w * unc[i];
        if (aud) s.aud += aud[i];
        if (eye) s.eye += eye[i];
        trans *= 1 - alpha;
        ++i;
        if (trans < T_thresh) break;
    }
    return i;
}

// Analytic backward of composite_ray. With T_{i+1} the transmittance after sample
// i and Q = sum_j w_j q_j any weighted output, dQ/dsigma_i = dt_i (T_{i+1} q_i - sum_{j>i} w_j q_j).
// `fin` holds the forward sums of this ray, `g` their upstream gradients; the
// per-sample gradients of accumulated samples are written (others are left as is).
template <typename T>
HD void composite_ray_backward(int count, const T* sigmas, const T* rgbs, const T* deltas, const T* unc,
                               T T_thresh, const RaySums<T>& fin, const RaySums<T>& g, T* g_sigmas,
                               T* g_rgbs, T* g_aud, T* g_eye, T* g_unc) {
    T trans = 1;
    RaySums<T> acc;
    int i = 0;
    while (i < count) {
        const T alpha = 1 - exp_of(-(sigmas[i] * deltas[2 * i]));
        const T w = alpha * trans;
        const T z = deltas[2 * i + 1];
        const T u = unc ? unc[i] : T(0);
        acc.ws += w;
        acc.depth += w * z;
        acc.unc += w * u;
        for (int c = 0; c < 3; ++c) acc.rgb[c] += w * rgbs[3 * i + c];
        trans *= 1 - alpha;

        T gs = g.ws * (trans - (fin.ws - acc.ws)) + g.depth * (trans * z - (fin.depth - acc.depth));
        if (unc) gs += g.unc * (trans * u - (fin.unc - acc.unc));
        for (int c = 0; c < 3; ++c) {
            gs += g.rgb[c] * (trans * rgbs[3 * i + c] - (fin.rgb[c] - acc.rgb[c]));
            g_rgbs[3 * i + c] = g.rgb[c] * w;
        }
        g_sigmas[i] = deltas[2 * i] * gs;
        if (g_unc) g_unc[i] = g.unc * w;
        if (g_aud) g_aud[i] = g.aud;
        if (g_eye) g_eye[i] = g.eye;
        ++i;
        if (trans < T_thresh) break;
    }
}

// Inference compositor of one ray over its n_step slots, accumulating into the
// running sums `s` (T = 1 - ws). A slot with dt == 0 ends the ray; so does a
// sample taken while T (before it) < T_thresh, after it is added. Returns true if
// the ray is still alive, and then t_last is the t_after of its last slot.
template <typename T>
HD bool composite_ray_inference(int n_step, const T* sigmas, const T* rgbs, const T* deltas, const T* aud,
                                const T* eye, const T* unc, T T_thresh, RaySums<T>& s, T& t_last) {
    for (int i = 0; i < n_step; ++i) {
        const T dt = deltas[2 * i];
        if (dt == 0) return false;
        const T alpha = 1 - exp_of(-(sigmas[i] * dt));
        const T trans = 1 - s.ws;
        const T w = alpha * trans;
        t_last = deltas[2 * i + 1];
        s.ws += w;
        s.depth += w * t_last;
        for (int c = 0; c < 3; ++c) s.rgb[c] += w * rgbs[3 * i + c];
        if (unc) s.unc += w * unc[i];
        if (aud) s.aud += aud[i];
        if (eye) s.eye += eye[i];
        if (trans < T_thresh) return false;
    }
    return true;
}

}  // namespace raymarching
