"""Benchmark of raymarching: march + composite forward/backward per backend.

4096 rays through a half-occupied 128^3 grid with the renderer's settings
(bound 1, one cascade, max_steps 16, dt_gamma 1/256, T_thresh 1e-4). The model
is replaced by random leaf tensors, so only the kernels are timed.

    python -m scripts.bench.raymarching [--quick] [--device cpu|cuda]      # prints JSON
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    # Run as a file: this folder would shadow the `raymarching` package.
    HERE = Path(__file__).resolve().parent
    sys.path[:] = [str(HERE.parents[1])] + [p for p in sys.path if Path(p or ".").resolve() != HERE]

import torch  # noqa: E402

import raymarching as rm  # noqa: E402
from scripts.bench import available_backends, native_backend  # noqa: E402

ENV = "ERNERF_BACKEND_RAYMARCHING"
AABB = (-1.0, -0.5, -1.0, 1.0, 0.5, 1.0)


def _scene(device: str, n_rays: int = 4096, H: int = 128, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    grid = (torch.rand(1, H ** 3, generator=g) < 0.5).float()  # half of the cells occupied
    rays_o = (torch.randn(n_rays, 3, generator=g) * 0.2 + torch.tensor([0.0, 0.0, -2.5])).to(device)
    rays_d = torch.nn.functional.normalize(
        torch.randn(n_rays, 3, generator=g) * 0.15 + torch.tensor([0.0, 0.0, 1.0]), dim=1).to(device)
    return rays_o, rays_d, grid.to(device)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _time_backend(backend: str, device: str, repeats: int) -> dict:
    """Mean milliseconds of march_rays_train and of composite forward+backward on one backend."""
    os.environ[ENV] = backend
    rays_o, rays_d, grid = _scene(device)
    bitfield = rm.packbits(grid, 0.5)
    nears, fars = rm.near_far_from_aabb(rays_o, rays_d, AABB, min_near=0.05)
    march_s = composite_s = 0.0
    for i in range(repeats + 1):  # the first round warms up (and JIT-loads the backend)
        _sync(device)
        t0 = time.perf_counter()
        xyzs, dirs, deltas, rays = rm.march_rays_train(rays_o, rays_d, 1.0, bitfield, 1, 128, nears, fars,
                                                       dt_gamma=1 / 256, max_steps=16)
        _sync(device)
        t1 = time.perf_counter()
        M = xyzs.shape[0]
        sigmas = torch.rand(M, device=device, requires_grad=True)
        rgbs = torch.rand(M, 3, device=device, requires_grad=True)
        aud = torch.rand(M, device=device, requires_grad=True)
        _sync(device)
        t2 = time.perf_counter()
        out = rm.composite_rays_train(sigmas * 30, rgbs, deltas, rays, 1e-4, ambient_aud=aud)
        (out.image.sum() + out.weights_sum.sum() + out.ambient_aud_sum.sum()).backward()
        _sync(device)
        t3 = time.perf_counter()
        if i:
            march_s += t1 - t0
            composite_s += t3 - t2
    march_ms, composite_ms = 1e3 * march_s / repeats, 1e3 * composite_s / repeats
    return {"march_ms": round(march_ms, 3), "composite_fwd_bwd_ms": round(composite_ms, 3),
            "total_ms": round(march_ms + composite_ms, 3), "samples": M}


def run(quick: bool = False, device: str = "cpu") -> dict:
    """Time the torch reference and the native backend of ``device`` (C++ or CUDA) on that
    device's tensors; returns a JSON-able dict."""
    saved = os.environ.get(ENV)
    repeats = 2 if quick else 5
    native = native_backend(device)
    try:
        result = {"rays": 4096, "grid": 128, "max_steps": 16, "threads": torch.get_num_threads(), "device": device}
        for backend in available_backends(rm.BACKENDS, device):
            result[backend] = _time_backend(backend, device, repeats)
        if native in result:
            result[f"{native}_over_torch_speedup"] = round(result["torch"]["total_ms"] / result[native]["total_ms"], 2)
    finally:
        if saved is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = saved
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the tensors live")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is visible to torch")
    print(json.dumps(run(quick=args.quick, device=args.device), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
