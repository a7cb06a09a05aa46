// Host/device helpers shared by the C++ and CUDA backends of every kernel package.
// Include from the per-package math headers; no torch here, so the same inline
// functions compile for the CPU (g++) and the GPU (nvcc).
#pragma once

#include <cstdint>
#include <cmath>

#if defined(__CUDACC__)
#define HD __host__ __device__ __forceinline__
#else
#define HD inline
#endif

template <typename T>
HD T div_round_up(T val, T divisor) { return (val + divisor - 1) / divisor; }

template <typename T>
HD T clamp_val(T v, T lo, T hi) { return v < lo ? lo : (v > hi ? hi : v); }
