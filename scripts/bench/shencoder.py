"""Spherical-harmonics benchmark: forward+backward of 2^16 unit directions at degree 4."""
from __future__ import annotations

import torch

from shencoder import SHEncoder
from shencoder.backend import BACKENDS

from . import available_backends, forced_backend, median_ms, native_backend


def run(quick: bool = False, device: str = "cpu") -> dict:
    """Median milliseconds per forward+backward (gradient w.r.t. the directions) per backend, on ``device``."""
    repeats = 3 if quick else 9
    native = native_backend(device)
    result: dict = {"points": 2 ** 16, "degree": 4, "repeats": repeats, "device": device}
    encoder = SHEncoder(degree=4)
    for backend in available_backends(BACKENDS, device):
        torch.manual_seed(0)
        dirs = torch.nn.functional.normalize(torch.randn(2 ** 16, 3, device=device), dim=-1).requires_grad_()

        cotangent = torch.randn(2 ** 16, 16, device=device)

        def step():
            torch.autograd.grad(encoder(dirs), dirs, cotangent)  # [N, 16] basis -> [N, 3]

        with forced_backend("shencoder", backend):
            result[f"{backend}_ms"] = round(median_ms(step, repeats, device), 3)
    if f"{native}_ms" in result:
        result[f"{native}_over_torch_speedup"] = round(result["torch_ms"] / result[f"{native}_ms"], 2)
    return result
