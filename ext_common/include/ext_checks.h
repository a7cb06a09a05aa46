// Argument checks used by the torch-facing entry points of every backend.
#pragma once

#include <torch/extension.h>

#define CHECK_CUDA(x) TORCH_CHECK((x).is_cuda(), #x " must be a CUDA tensor")
#define CHECK_CPU(x) TORCH_CHECK((x).device().is_cpu(), #x " must be a CPU tensor")
#define CHECK_CONTIGUOUS(x) TORCH_CHECK((x).is_contiguous(), #x " must be contiguous")
#define CHECK_DTYPE(x, t) TORCH_CHECK((x).scalar_type() == (t), #x " must be ", (t), ", got ", (x).scalar_type())
#define CHECK_DIM(x, d) TORCH_CHECK((x).dim() == (d), #x " must have ", (d), " dims, got ", (x).dim())
#define CHECK_SIZE(x, i, n) TORCH_CHECK((x).size(i) == (n), #x ".size(", (i), ") must be ", (n), ", got ", (x).size(i))
