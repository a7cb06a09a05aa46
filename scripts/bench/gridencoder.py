"""Grid-encoder benchmark: forward+backward of 2^16 points through ER-NeRF's grids.

Tri-plane: three 2D hash grids (12 levels x 1 channel, 64 -> 512) on the xy, yz and xz
projections of 3D points, as the head model does. Torso: one 2D tiled grid
(16 levels x 2 channels, 16 -> 2048). Backward goes to the embeddings, as in training.
"""
from __future__ import annotations

import torch

from gridencoder import GridEncoder
from gridencoder.backend import BACKENDS

from . import available_backends, forced_backend, median_ms, native_backend

PLANES = ((0, 1), (1, 2), (0, 2))


def _triplane(device):
    grids = [GridEncoder(input_dim=2, num_levels=12, level_dim=1, base_resolution=64, log2_hashmap_size=14,
                         desired_resolution=512, gridtype="hash", align_corners=False).to(device)
             for _ in PLANES]
    points = torch.rand(2 ** 16, 3, device=device) * 2 - 1  # [N, 3]

    def step():
        feats = torch.cat([g(points[:, list(p)]) for g, p in zip(grids, PLANES)], dim=-1)  # [N, 36]
        feats.square().sum().backward()

    return step


def _torso(device):
    grid = GridEncoder(input_dim=2, num_levels=16, level_dim=2, base_resolution=16, log2_hashmap_size=16,
                       desired_resolution=2048, gridtype="tiled").to(device)
    points = torch.rand(2 ** 16, 2, device=device) * 2 - 1  # [N, 2]

    def step():
        grid(points).square().sum().backward()  # [N, 32] features

    return step


def run(quick: bool = False, device: str = "cpu") -> dict:
    """Median milliseconds per forward+backward for each backend and config, on ``device``."""
    repeats = 3 if quick else 9
    native = native_backend(device)
    result: dict = {"points": 2 ** 16, "repeats": repeats, "device": device}
    totals: dict[str, float] = {}
    for name, make in (("triplane", _triplane), ("torso", _torso)):
        timings = {}
        for backend in available_backends(BACKENDS, device):
            torch.manual_seed(0)
            step = make(device)
            with forced_backend("gridencoder", backend):
                timings[f"{backend}_ms"] = round(median_ms(step, repeats, device), 3)
            totals[backend] = totals.get(backend, 0.0) + timings[f"{backend}_ms"]
        if native in totals:
            timings[f"{native}_over_torch_speedup"] = round(timings["torch_ms"] / timings[f"{native}_ms"], 2)
        result[name] = timings
    if native in totals:
        result[f"{native}_over_torch_speedup"] = round(totals["torch"] / totals[native], 2)
    return result
