// What every src/cuda.cu includes instead of the CUDA runtime headers: the real ones
// under nvcc, or (with -DERNERF_CUDA_EMU, plain C++) their serial CPU emulation in
// cuda_emu.h. Kernels are launched with ernerf::launch, never with <<<...>>>, so the
// same source builds both the "cuda" and the "cuda_emu" backend.
#pragma once

#include <c10/core/Device.h>
#include <c10/util/Exception.h>

#include <utility>

#if defined(ERNERF_CUDA_EMU)
#include "cuda_emu.h"
#else
#include <ATen/cuda/Atomic.cuh>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#endif

namespace ernerf {

// Device type the kernels' tensors live on: the CPU when the kernels are emulated.
#if defined(ERNERF_CUDA_EMU)
constexpr c10::DeviceType kDevice = c10::DeviceType::CPU;
#else
constexpr c10::DeviceType kDevice = c10::DeviceType::CUDA;

// Throws on a failed launch; "no kernel image" (a GPU the build has no code for)
// becomes one line saying how to rebuild for it.
inline void check_launch() {
  const cudaError_t err = cudaGetLastError();
  if (err == cudaErrorNoKernelImageForDevice) {
    int device = 0, major = 0, minor = 0;
    cudaGetDevice(&device);
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device);
    TORCH_CHECK(false, "the CUDA kernels were not compiled for this GPU (compute capability ", major, ".", minor,
                "): rebuild with TORCH_CUDA_ARCH_LIST=\"", major, ".", minor,
                "\" (python -m ext_common build --cuda, or pip install --no-build-isolation -e .)");
  }
  C10_CUDA_CHECK(err);
}
#endif

// kernel<<<grid, block, 0, stream>>>(args...), then the launch check; emulated: every
// block and thread of the grid in turn on the calling CPU thread.
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, cudaStream_t stream, Args&&... args) {
#if defined(ERNERF_CUDA_EMU)
  (void)stream;
  emu::run_grid(grid, block, [&] { kernel(args...); });
#else
  kernel<<<grid, block, 0, stream>>>(std::forward<Args>(args)...);
  check_launch();
#endif
}

}  // namespace ernerf
