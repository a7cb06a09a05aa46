// Argument checks and module metadata shared by the torch-facing entry points of every backend.
#pragma once

#include <torch/extension.h>

// The device every tensor of one call must share: that of `first`, whose type must be
// `kind` (the backend's). The other tensors are then checked against this full device,
// type and index, so embeddings on cuda:1 never reach a kernel launched for cuda:0.
inline c10::Device call_device(const at::Tensor& first, const char* name, c10::DeviceType kind) {
  TORCH_CHECK(first.device().type() == kind, name, " must be a ", c10::DeviceTypeName(kind), " tensor, got one on ",
              first.device());
  return first.device();
}

#define CHECK_DEVICE(x, dev) \
  TORCH_CHECK((x).device() == (dev), #x " must be on ", (dev), " like the other inputs, got ", (x).device())
#define CHECK_CONTIGUOUS(x) TORCH_CHECK((x).is_contiguous(), #x " must be contiguous")
#define CHECK_DTYPE(x, t) TORCH_CHECK((x).scalar_type() == (t), #x " must be ", (t), ", got ", (x).scalar_type())
#define CHECK_DIM(x, d) TORCH_CHECK((x).dim() == (d), #x " must have ", (d), " dims, got ", (x).dim())
#define CHECK_SIZE(x, i, n) TORCH_CHECK((x).size(i) == (n), #x ".size(", (i), ") must be ", (n), ", got ", (x).size(i))

// ext_common/build.py compiles the hash of a module's sources and flags into it; the
// loader compares it with the current sources' to refuse a stale ahead-of-time build.
#ifndef ERNERF_SOURCE_HASH
#error "build through ext_common/build.py or setup.py, which define ERNERF_SOURCE_HASH"
#endif
#define ERNERF_STRINGIFY_(x) #x
#define ERNERF_STRINGIFY(x) ERNERF_STRINGIFY_(x)

inline void set_source_hash(pybind11::module_& m) { m.attr("source_hash") = ERNERF_STRINGIFY(ERNERF_SOURCE_HASH); }
