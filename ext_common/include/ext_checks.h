// Argument checks used by the torch-facing entry points of every backend.
#pragma once

#include <torch/extension.h>

// `dev` is the c10::DeviceType of the calling backend, e.g. "inputs must be a CUDA tensor".
#define CHECK_DEVICE(x, dev) \
  TORCH_CHECK((x).device().type() == (dev), #x " must be a ", c10::DeviceTypeName(dev), " tensor")
#define CHECK_CONTIGUOUS(x) TORCH_CHECK((x).is_contiguous(), #x " must be contiguous")
#define CHECK_DTYPE(x, t) TORCH_CHECK((x).scalar_type() == (t), #x " must be ", (t), ", got ", (x).scalar_type())
#define CHECK_DIM(x, d) TORCH_CHECK((x).dim() == (d), #x " must have ", (d), " dims, got ", (x).dim())
#define CHECK_SIZE(x, i, n) TORCH_CHECK((x).size(i) == (n), #x ".size(", (i), ") must be ", (n), ", got ", (x).size(i))
