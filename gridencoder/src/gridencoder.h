// Multi-resolution hash/tiled grid encoding: the math shared by the C++ and CUDA backends.
//
// A point u in [0, 1]^D is looked up in L levels. In level l it sits at
// pos = u * scale_l (+ 0.5 unless align_corners); its 2^D surrounding vertices are
// mapped to rows of that level's table (dense index while it fits, else a spatial
// hash or a modulo wrap) and their C-channel embeddings are blended with
// (smoothstepped) multi-linear weights. A point with any coordinate outside [0, 1]
// gets zero features and zero gradients.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "ext_hd.h"

namespace gridenc {

constexpr int kMaxLevels = 32;  // levels.py: MAX_LEVELS
enum GridType : int { kHash = 0, kTiled = 1 };
enum Interpolation : int { kLinear = 0, kSmoothstep = 1 };

// Per-level constants, computed once in Python (float64) and passed by value, so
// every backend indexes exactly the same rows.
struct Levels {
  int num_levels;
  uint32_t offset[kMaxLevels + 1];  // first row of each level, then the total
  uint32_t resolution[kMaxLevels];  // cells per side
  double scale[kMaxLevels];         // grid units per unit of u
  int gridtype;
  bool align_corners;
  int interpolation;
};

HD float floor_t(float x) { return floorf(x); }
HD double floor_t(double x) { return floor(x); }

// Spatial hash of an integer vertex: XOR of coordinate * prime, modulo 2^32.
template <int D>
HD uint32_t spatial_hash(const uint32_t* vertex) {
  constexpr uint32_t primes[7] = {1u, 2654435761u, 805459861u, 3674653429u,
                                  2097192037u, 1434869437u, 2165219737u};
  static_assert(D <= 7, "spatial_hash has primes for at most 7 dimensions");
  uint32_t h = 0;
  for (int d = 0; d < D; ++d) h ^= vertex[d] * primes[d];
  return h;
}

// Row of an integer vertex in one level's table of `table_size` rows.  vertex: [D]
template <int D>
HD uint32_t vertex_row(const uint32_t* vertex, uint32_t table_size, uint32_t resolution,
                       int gridtype, bool align_corners) {
  const uint64_t side = align_corners ? resolution : resolution + 1;
  uint64_t stride = 1, index = 0;
  // The dense layout stops growing once one more axis would overflow the table.
  for (int d = 0; d < D && stride <= table_size; ++d) {
    index += vertex[d] * stride;
    stride *= side;
  }
  if (gridtype == kHash && stride > table_size) {
    const uint32_t h = spatial_hash<D>(vertex);
    // Hash tables have 2^k rows: a mask gives the same row without an integer division per
    // corner (the CPU forward takes ~6 % less time).
    return (table_size & (table_size - 1)) == 0 ? (h & (table_size - 1)) : h % table_size;
  }
  // A complete dense index is already in range; skip the (slow) 64-bit modulo then.
  return static_cast<uint32_t>(index < table_size ? index : index % table_size);
}

// The cell enclosing a point in one level, and its 2^D corners.
template <typename T, int D>
struct Cell {
  static constexpr int kCorners = 1 << D;
  uint32_t lower[D];         // integer coordinates of the lower vertex
  T w_upper[D];              // weight of the upper vertex along each axis
  T dw_upper[D];             // d w_upper / d u, in 1 / (unit of u)
  uint32_t row[kCorners];    // embedding row of corner k (bit d of k: upper along axis d)
  T weight[kCorners];        // interpolation weight of corner k
};

// Locates u in `level` and fills `cell`; false when u lies outside [0, 1]^D.  u: [D]
template <typename T, int D>
HD bool locate(const T* u, const Levels& lv, int level, Cell<T, D>& cell) {
  for (int d = 0; d < D; ++d) {
    if (!(u[d] >= T(0) && u[d] <= T(1))) return false;
  }
  const T scale = static_cast<T>(lv.scale[level]);
  const T shift = lv.align_corners ? T(0) : T(0.5);
  for (int d = 0; d < D; ++d) {
    // Rounded product then sum (no FMA: build.py's flags), as in the CPU and torch paths,
    // so floor() picks the same cell everywhere.
    const T pos = u[d] * scale + shift;
    const T fl = floor_t(pos);
    const T f = pos - fl;
    cell.lower[d] = static_cast<uint32_t>(fl);
    if (lv.interpolation == kSmoothstep) {
      cell.w_upper[d] = f * f * (T(3) - T(2) * f);
      cell.dw_upper[d] = T(6) * f * (T(1) - f) * scale;
    } else {
      cell.w_upper[d] = f;
      cell.dw_upper[d] = scale;
    }
  }
  const uint32_t table_size = lv.offset[level + 1] - lv.offset[level];
  for (int k = 0; k < Cell<T, D>::kCorners; ++k) {
    uint32_t vertex[D];
    T w = T(1);
    for (int d = 0; d < D; ++d) {
      const bool upper = (k >> d) & 1;
      vertex[d] = cell.lower[d] + (upper ? 1u : 0u);
      w = w * (upper ? cell.w_upper[d] : T(1) - cell.w_upper[d]);
    }
    cell.weight[k] = w;
    cell.row[k] = lv.offset[level] +
                  vertex_row<D>(vertex, table_size, lv.resolution[level], lv.gridtype, lv.align_corners);
  }
  return true;
}

// d weight[k] / d u[axis].
template <typename T, int D>
HD T corner_weight_grad(const Cell<T, D>& cell, int k, int axis) {
  T w = ((k >> axis) & 1) ? cell.dw_upper[axis] : -cell.dw_upper[axis];
  for (int d = 0; d < D; ++d) {
    if (d == axis) continue;
    w = w * (((k >> d) & 1) ? cell.w_upper[d] : T(1) - cell.w_upper[d]);
  }
  return w;
}

// Features of one point in one level.  u: [D], emb: [rows, C], out: [C]
template <typename T, typename E, int D, int C>
HD void encode_level(const T* u, const E* emb, const Levels& lv, int level, E* out) {
  Cell<T, D> cell;
  if (!locate<T, D>(u, lv, level, cell)) {
    for (int c = 0; c < C; ++c) out[c] = static_cast<E>(T(0));
    return;
  }
  T acc[C] = {};
  for (int k = 0; k < Cell<T, D>::kCorners; ++k) {
    const E* e = emb + static_cast<uint64_t>(cell.row[k]) * C;
    for (int c = 0; c < C; ++c) acc[c] = acc[c] + cell.weight[k] * static_cast<T>(e[c]);
  }
  for (int c = 0; c < C; ++c) out[c] = static_cast<E>(acc[c]);
}

// Adds d(v_out . features) / d u of one level to v_u.  u: [D], v_out: [C], v_u: [D]
template <typename T, typename E, int D, int C>
HD void encode_level_input_grad(const T* u, const E* emb, const E* v_out, const Levels& lv, int level,
                                T* v_u) {
  Cell<T, D> cell;
  if (!locate<T, D>(u, lv, level, cell)) return;
  for (int k = 0; k < Cell<T, D>::kCorners; ++k) {
    const E* e = emb + static_cast<uint64_t>(cell.row[k]) * C;
    T dot = T(0);
    for (int c = 0; c < C; ++c) dot = dot + static_cast<T>(v_out[c]) * static_cast<T>(e[c]);
    for (int d = 0; d < D; ++d) v_u[d] = v_u[d] + corner_weight_grad<T, D>(cell, k, d) * dot;
  }
}

// ---- host-only helpers shared by both backends' entry points ----

inline Levels make_levels(const std::vector<int64_t>& offsets, const std::vector<double>& scales,
                          const std::vector<int64_t>& resolutions, int64_t gridtype, bool align_corners,
                          int64_t interpolation) {
  const size_t L = scales.size();
  if (L < 1 || L > static_cast<size_t>(kMaxLevels) || offsets.size() != L + 1 || resolutions.size() != L) {
    throw std::invalid_argument("gridencoder: need 1.." + std::to_string(kMaxLevels) +
                                " levels with len(offsets) == len(scales) + 1 == len(resolutions) + 1");
  }
  if (gridtype != kHash && gridtype != kTiled) throw std::invalid_argument("gridencoder: gridtype must be 0 or 1");
  if (interpolation != kLinear && interpolation != kSmoothstep) {
    throw std::invalid_argument("gridencoder: interpolation must be 0 or 1");
  }
  for (size_t l = 0; l < L; ++l) {
    // A decreasing offset would wrap the level's row count and index past the table.
    if (offsets[l] < 0 || offsets[l + 1] <= offsets[l] || offsets[l + 1] > UINT32_MAX) {
      throw std::invalid_argument("gridencoder: offsets must increase from >= 0 and fit in 32 bits");
    }
  }
  Levels lv{};
  lv.num_levels = static_cast<int>(L);
  for (size_t l = 0; l <= L; ++l) lv.offset[l] = static_cast<uint32_t>(offsets[l]);
  for (size_t l = 0; l < L; ++l) {
    lv.scale[l] = scales[l];
    lv.resolution[l] = static_cast<uint32_t>(resolutions[l]);
  }
  lv.gridtype = static_cast<int>(gridtype);
  lv.align_corners = align_corners;
  lv.interpolation = static_cast<int>(interpolation);
  return lv;
}

// Calls f(std::integral_constant<int, D>{}, std::integral_constant<int, C>{}) for the
// supported input dims D in {2, 3} and channel counts C in {1, 2, 4, 8}.
template <int D, typename F>
void dispatch_channels(int64_t C, F&& f) {
  switch (C) {
    case 1: f(std::integral_constant<int, D>{}, std::integral_constant<int, 1>{}); return;
    case 2: f(std::integral_constant<int, D>{}, std::integral_constant<int, 2>{}); return;
    case 4: f(std::integral_constant<int, D>{}, std::integral_constant<int, 4>{}); return;
    case 8: f(std::integral_constant<int, D>{}, std::integral_constant<int, 8>{}); return;
    default: throw std::invalid_argument("gridencoder: level_dim must be 1, 2, 4 or 8, got " + std::to_string(C));
  }
}

template <typename F>
void dispatch_dims(int64_t D, int64_t C, F&& f) {
  switch (D) {
    case 2: dispatch_channels<2>(C, f); return;
    case 3: dispatch_channels<3>(C, f); return;
    default: throw std::invalid_argument("gridencoder: input_dim must be 2 or 3, got " + std::to_string(D));
  }
}

}  // namespace gridenc
