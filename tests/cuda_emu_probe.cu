// Test-only kernels for the CUDA emulation (ext_common/include/cuda_emu.h), built by
// tests/test_cuda_emu.py like a cuda_emu backend: launch indices and limits, atomics,
// and one deliberate out-of-bounds read that the AddressSanitizer build must catch.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <vector>

#include "ext_cuda.h"

namespace {

// hits[global thread id] += 1, so every thread must be visited exactly once.
__global__ void k_count(int* hits) {
  const unsigned block = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
  const unsigned thread = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
  hits[block * blockDim.x * blockDim.y * blockDim.z + thread] += 1;
}

__global__ void k_noop() {}

template <typename T>
__global__ void k_add(T* acc, T value) {
  gpuAtomicAdd(acc, value);
}

// Sums n + 1 values of a buffer of n: the last read is one past the end.
__global__ void k_read_past_end(const float* values, int n, float* sum) {
  for (int i = 0; i <= n; ++i) *sum += values[i];
}

// Visit counts of every thread of a <<<grid, block>>> launch (grid, block: (x, y, z)).
std::vector<int> launch_counts(std::array<unsigned, 3> grid, std::array<unsigned, 3> block) {
  const dim3 g(grid[0], grid[1], grid[2]), b(block[0], block[1], block[2]);
  std::vector<int> hits(static_cast<size_t>(g.x) * g.y * g.z * b.x * b.y * b.z, 0);
  ernerf::launch(k_count, g, b, nullptr, hits.data());
  return hits;
}

// A launch that does nothing, for the limit checks (grid, block: (x, y, z)).
void launch_noop(std::array<unsigned, 3> grid, std::array<unsigned, 3> block) {
  ernerf::launch(k_noop, dim3(grid[0], grid[1], grid[2]), dim3(block[0], block[1], block[2]), nullptr);
}

// `count` threads each atomically add `value` to one float16 (half) or float32 accumulator.
float atomic_sum(float value, int count, bool half) {
  if (half) {
    c10::Half acc(0.0f);
    ernerf::launch(k_add<c10::Half>, dim3(count), dim3(1), nullptr, &acc, c10::Half(value));
    return static_cast<float>(acc);
  }
  float acc = 0.0f;
  ernerf::launch(k_add<float>, dim3(count), dim3(1), nullptr, &acc, value);
  return acc;
}

// Only ever called under AddressSanitizer, which must abort on the read past the end.
float read_past_end(int n) {
  std::vector<float> values(n, 1.0f);
  float sum = 0.0f;
  ernerf::launch(k_read_past_end, dim3(1), dim3(1), nullptr, values.data(), n, &sum);
  return sum;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("launch_counts", &launch_counts);
  m.def("launch_noop", &launch_noop);
  m.def("atomic_sum", &atomic_sum);
  m.def("read_past_end", &read_past_end);
}
