// Host-compiler stand-in for the parts of CUDA that the kernel sources use, so that a
// src/cuda.cu compiled as C++ (-DERNERF_CUDA_EMU, the "cuda_emu" backend) runs its
// kernels on the CPU: one thread at a time, every block of the grid in order.
//
// Serial execution is exact for these kernels because none uses shared memory,
// __syncthreads or warp intrinsics (none is defined here, so one that did would not
// compile), and their atomics only add. Include through ext_cuda.h.
#pragma once

#if !defined(ERNERF_CUDA_EMU) || defined(__CUDACC__)
#error "cuda_emu.h replaces CUDA in a host-compiler build: include ext_cuda.h and define ERNERF_CUDA_EMU"
#endif

#include <c10/core/Device.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

#include <cstdint>

#define __global__
#define __device__

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

// Set by ernerf::emu::run_grid before each emulated thread; thread_local so that two
// host threads running kernels at once keep their own.
inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

using cudaStream_t = struct CUstream_st*;

namespace c10::cuda {
struct CUDAStream {
  operator cudaStream_t() const { return nullptr; }
};
inline CUDAStream getCurrentCUDAStream(c10::DeviceIndex = -1) { return {}; }
// The emulated device is the CPU: there is no current device to switch.
struct CUDAGuard {
  explicit CUDAGuard(c10::Device) {}
};
struct OptionalCUDAGuard {
  explicit OptionalCUDAGuard(c10::Device) {}
};
}  // namespace c10::cuda

// One thread runs at a time, so an atomic add is a plain read-add-write. Like the GPU's
// half atomicAdd, a c10::Half target is rounded to half after every single add.
template <typename T>
inline T gpuAtomicAdd(T* address, T value) {
  const T old = *address;
  *address = old + value;
  return old;
}

inline c10::Half gpuAtomicAdd(c10::Half* address, c10::Half value) {
  const c10::Half old = *address;
  *address = c10::Half(static_cast<float>(old) + static_cast<float>(value));
  return old;
}

namespace ernerf::emu {

// Rejects what a GPU would reject with "invalid configuration argument".
inline void check_limits(dim3 grid, dim3 block) {
  TORCH_CHECK(grid.x >= 1 && grid.y >= 1 && grid.z >= 1, "CUDA launch with an empty grid (", grid.x, ", ", grid.y,
              ", ", grid.z, ")");
  TORCH_CHECK(grid.x <= 2147483647u && grid.y <= 65535u && grid.z <= 65535u, "CUDA grid (", grid.x, ", ", grid.y,
              ", ", grid.z, ") exceeds gridDim limits (2^31-1, 65535, 65535)");
  TORCH_CHECK(block.x >= 1 && block.y >= 1 && block.z >= 1 && block.x <= 1024u && block.y <= 1024u &&
                  block.z <= 64u && static_cast<uint64_t>(block.x) * block.y * block.z <= 1024u,
              "CUDA block (", block.x, ", ", block.y, ", ", block.z,
              ") exceeds blockDim limits (1024, 1024, 64; 1024 threads)");
}

// Calls thread() once per (block, thread) of the launch with the indices set.
template <typename F>
void run_grid(dim3 grid, dim3 block, F&& thread) {
  check_limits(grid, block);
  gridDim = grid;
  blockDim = block;
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        blockIdx = dim3(bx, by, bz);
        for (unsigned tz = 0; tz < block.z; ++tz)
          for (unsigned ty = 0; ty < block.y; ++ty)
            for (unsigned tx = 0; tx < block.x; ++tx) {
              threadIdx = dim3(tx, ty, tz);
              thread();
            }
      }
}

}  // namespace ernerf::emu
