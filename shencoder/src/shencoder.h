// Real spherical harmonics up to degree 8 (l = 0..7): math shared by the C++ and CUDA backends.
//
// Convention (instant-ngp): output l*l + l + m for m = -l..l, with
//   Y_l^0  = K_l0 * Pbar_l^0(z)
//   Y_l^m  = sqrt(2) K_lm * Pbar_l^m(z) * Re((x + i y)^m)    (m > 0)
//   Y_l^-m = sqrt(2) K_lm * Pbar_l^m(z) * Im((x + i y)^m)    (m > 0)
// where K_lm = sqrt((2l+1)/(4 pi) * (l-m)!/(l+m)!) and Pbar_l^m = (-1)^m d^m P_l / dz^m is the
// associated Legendre function (Condon-Shortley phase included) without its (1-z^2)^(m/2)
// factor, which (x + i y)^m supplies on the unit sphere. All terms are polynomials in x, y,
// z, so inputs off the sphere get the same polynomials as instant-ngp's closed forms.
#pragma once

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "ext_hd.h"

namespace shenc {

constexpr int kMaxDegree = 8;
constexpr int kNumNorms = kMaxDegree * (kMaxDegree + 1) / 2;  // one per (l, m >= 0)

HD int norm_index(int l, int m) { return l * (l + 1) / 2 + m; }

// K_lm, times sqrt(2) for m > 0; computed on the host and passed to the kernels by value.
template <typename T>
struct Norms {
  T k[kNumNorms];
};

template <typename T>
Norms<T> make_norms() {
  Norms<T> n{};
  for (int l = 0; l < kMaxDegree; ++l) {
    for (int m = 0; m <= l; ++m) {
      double ratio = 1.0;  // (l-m)! / (l+m)!
      for (int j = l - m + 1; j <= l + m; ++j) ratio /= j;
      double k = std::sqrt((2.0 * l + 1.0) / (4.0 * M_PI) * ratio);
      if (m > 0) k *= std::sqrt(2.0);
      n.k[norm_index(l, m)] = static_cast<T>(k);
    }
  }
  return n;
}

inline void check_degree(int64_t degree) {
  if (degree < 1 || degree > kMaxDegree) {
    throw std::invalid_argument("shencoder: degree must be in [1, 8], got " + std::to_string(degree));
  }
}

// Basis of one direction, and/or the gradient of v . basis.
//   xyz: [3]; out: [degree^2] or nullptr; v_out: [degree^2] and v_xyz: [3] (accumulated) or nullptr.
template <typename T>
HD void sh_basis(const T* xyz, int degree, const Norms<T>& norms, T* out, const T* v_out, T* v_xyz) {
  const T x = xyz[0], y = xyz[1], z = xyz[2];
  T gx = T(0), gy = T(0), gz = T(0);
  T cm = T(1), sm = T(0);          // Re, Im of (x + i y)^m
  T cm_prev = T(0), sm_prev = T(0);  // the same for m - 1 (its derivatives need them)
  T pmm = T(1);                    // Pbar_m^m = (-1)^m (2m-1)!!
  for (int m = 0; m < degree; ++m) {
    if (m > 0) {
      cm_prev = cm;
      sm_prev = sm;
      cm = x * cm_prev - y * sm_prev;
      sm = x * sm_prev + y * cm_prev;
      pmm = -pmm * T(2 * m - 1);
    }
    // d(x + i y)^m / dx = m (x + i y)^(m-1);  d/dy = i m (x + i y)^(m-1).
    const T dcm_dx = T(m) * cm_prev, dsm_dx = T(m) * sm_prev;
    const T dcm_dy = -T(m) * sm_prev, dsm_dy = T(m) * cm_prev;
    T p_prev2 = T(0), dp_prev2 = T(0);  // Pbar_{l-2}^m and d/dz
    T p_prev = T(0), dp_prev = T(0);    // Pbar_{l-1}^m and d/dz
    for (int l = m; l < degree; ++l) {
      T p, dp;
      if (l == m) {
        p = pmm;
        dp = T(0);
      } else if (l == m + 1) {
        p = T(2 * m + 1) * z * pmm;
        dp = T(2 * m + 1) * pmm;
      } else {
        p = (T(2 * l - 1) * z * p_prev - T(l + m - 1) * p_prev2) / T(l - m);
        dp = (T(2 * l - 1) * (p_prev + z * dp_prev) - T(l + m - 1) * dp_prev2) / T(l - m);
      }
      p_prev2 = p_prev;
      dp_prev2 = dp_prev;
      p_prev = p;
      dp_prev = dp;
      const T k = norms.k[norm_index(l, m)];
      const int centre = l * l + l;
      if (m == 0) {
        if (out) out[centre] = k * p;
        if (v_out) gz = gz + v_out[centre] * k * dp;
      } else {
        if (out) {
          out[centre + m] = k * p * cm;
          out[centre - m] = k * p * sm;
        }
        if (v_out) {
          const T vc = v_out[centre + m] * k, vs = v_out[centre - m] * k;
          gx = gx + p * (vc * dcm_dx + vs * dsm_dx);
          gy = gy + p * (vc * dcm_dy + vs * dsm_dy);
          gz = gz + dp * (vc * cm + vs * sm);
        }
      }
    }
  }
  if (v_xyz) {
    v_xyz[0] = v_xyz[0] + gx;
    v_xyz[1] = v_xyz[1] + gy;
    v_xyz[2] = v_xyz[2] + gz;
  }
}

// Degree 4 (16 outputs, ER-NeRF's direction encoding) in closed form: the same polynomials as
// the recursion above (instant-ngp's constants), several times faster than walking it.
template <typename T>
HD void sh_basis_deg4(const T* xyz, T* out, const T* v_out, T* v_xyz) {
  const T x = xyz[0], y = xyz[1], z = xyz[2];
  const T C0 = T(0.28209479177387814), C1 = T(0.48860251190291987), A = T(1.0925484305920792),
          B = T(0.94617469575755997), Bc = T(0.31539156525251999), D = T(0.54627421529603959),
          E = T(0.59004358992664352), F = T(2.8906114426405538), G = T(0.45704579946446572),
          H = T(0.3731763325901154), I = T(1.4453057213202769);
  const T xx = x * x, yy = y * y, zz = z * z;
  if (out) {
    out[0] = C0;
    out[1] = -C1 * y;
    out[2] = C1 * z;
    out[3] = -C1 * x;
    out[4] = A * x * y;
    out[5] = -A * y * z;
    out[6] = B * zz - Bc;
    out[7] = -A * x * z;
    out[8] = D * (xx - yy);
    out[9] = E * y * (-T(3) * xx + yy);
    out[10] = F * x * y * z;
    out[11] = G * y * (T(1) - T(5) * zz);
    out[12] = H * z * (T(5) * zz - T(3));
    out[13] = G * x * (T(1) - T(5) * zz);
    out[14] = I * z * (xx - yy);
    out[15] = E * x * (-xx + T(3) * yy);
  }
  if (v_out) {
    const T* v = v_out;
    const T gx = -C1 * v[3] + A * (y * v[4] - z * v[7]) + T(2) * D * x * v[8] - T(6) * E * x * y * v[9] +
                 F * y * z * v[10] + G * (T(1) - T(5) * zz) * v[13] + T(2) * I * x * z * v[14] +
                 T(3) * E * (yy - xx) * v[15];
    const T gy = -C1 * v[1] + A * (x * v[4] - z * v[5]) - T(2) * D * y * v[8] + T(3) * E * (yy - xx) * v[9] +
                 F * x * z * v[10] + G * (T(1) - T(5) * zz) * v[11] - T(2) * I * y * z * v[14] +
                 T(6) * E * x * y * v[15];
    const T gz = C1 * v[2] - A * (y * v[5] + x * v[7]) + T(2) * B * z * v[6] + F * x * y * v[10] -
                 T(10) * G * z * (y * v[11] + x * v[13]) + H * (T(15) * zz - T(3)) * v[12] + I * (xx - yy) * v[14];
    v_xyz[0] = v_xyz[0] + gx;
    v_xyz[1] = v_xyz[1] + gy;
    v_xyz[2] = v_xyz[2] + gz;
  }
}

// Entry point of both backends: the closed form for degree 4, the recursion otherwise.
template <typename T>
HD void sh_point(const T* xyz, int degree, const Norms<T>& norms, T* out, const T* v_out, T* v_xyz) {
  if (degree == 4) {
    sh_basis_deg4(xyz, out, v_out, v_xyz);
  } else {
    sh_basis(xyz, degree, norms, out, v_out, v_xyz);
  }
}

}  // namespace shenc
