"""The training and inference render loops, around a model callback.

``fn(xyzs [S, 3], dirs [S, 3]) -> (sigmas [S], rgbs [S, 3], extras)`` where
``extras`` is a dict holding any of ``ambient_aud``, ``ambient_eye``,
``uncertainty`` (each [S]); return the same keys on every call.
"""
from __future__ import annotations

from typing import Callable

import torch

from .raymarching import CompositeResult, composite_rays, composite_rays_train, march_rays, march_rays_train

ModelFn = Callable[[torch.Tensor, torch.Tensor], tuple]
EXTRAS = ("ambient_aud", "ambient_eye", "uncertainty")


def _extras(extras: dict) -> dict:
    unknown = set(extras) - set(EXTRAS)
    if unknown:
        raise ValueError(f"model extras must be among {EXTRAS}, got {sorted(unknown)}")
    return extras


def render_train(rays_o: torch.Tensor, rays_d: torch.Tensor, nears: torch.Tensor, fars: torch.Tensor,
                 density_bitfield: torch.Tensor, fn: ModelFn, *, bound: float = 1.0, C: int = 1, H: int = 128,
                 dt_gamma: float = 1 / 256, max_steps: int = 16, T_thresh: float = 1e-4, perturb: bool = False,
                 noise: torch.Tensor | None = None) -> tuple[CompositeResult, tuple]:
    """March all rays, evaluate ``fn`` once on every sample, composite differentiably.

    Args:
        rays_o, rays_d: float32 [N, 3]; nears, fars: float32 [N].
        density_bitfield: uint8 [C*H^3/8].
        fn: the model callback (see the module docstring).
        perturb, noise: start jitter, as in ``march_rays_train``.

    Returns:
        (CompositeResult with [N] outputs, (xyzs [M, 3], dirs [M, 3], deltas [M, 2], rays [N, 3])).
    """
    samples = march_rays_train(rays_o, rays_d, bound, density_bitfield, C, H, nears, fars, perturb=perturb,
                               dt_gamma=dt_gamma, max_steps=max_steps, noise=noise)
    xyzs, dirs, deltas, rays = samples
    sigmas, rgbs, extras = fn(xyzs, dirs)
    return composite_rays_train(sigmas, rgbs, deltas, rays, T_thresh, **_extras(extras)), samples


@torch.no_grad()
def render_inference(rays_o: torch.Tensor, rays_d: torch.Tensor, nears: torch.Tensor, fars: torch.Tensor,
                     density_bitfield: torch.Tensor, fn: ModelFn, *, bound: float = 1.0, C: int = 1, H: int = 128,
                     dt_gamma: float = 1 / 256, max_steps: int = 16, T_thresh: float = 1e-4,
                     perturb: bool = False, noise: torch.Tensor | None = None,
                     max_step_per_call: int = 8) -> CompositeResult:
    """Render rays by marching a few samples per alive ray at a time.

    Each round takes n_step = clamp(N // n_alive, 1, max_step_per_call) samples per
    alive ray (fewer in the last round, so no ray gets more than ``max_steps``
    samples: the reference may overshoot by up to n_step - 1), composites them in
    place and drops the rays that ended.

    Args:
        as ``render_train``; noise [N] jitters the first round only.
        max_step_per_call: upper bound of n_step.

    Returns:
        CompositeResult of [N] tensors; sums of extras ``fn`` does not return are zero.
    """
    N, device = rays_o.shape[0], rays_o.device
    weights_sum = torch.zeros(N, device=device)
    depth = torch.zeros(N, device=device)
    image = torch.zeros(N, 3, device=device)
    sums = {}
    rays_alive = torch.arange(N, dtype=torch.int32, device=device)
    rays_t = nears.float().clone()  # written in place by the float32 kernels
    step = 0
    while step < max_steps and rays_alive.numel() > 0:
        n_alive = rays_alive.numel()
        n_step = min(max(min(N // n_alive, max_step_per_call), 1), max_steps - step)
        first = step == 0
        xyzs, dirs, deltas = march_rays(n_alive, n_step, rays_alive, rays_t, rays_o, rays_d, bound,
                                        density_bitfield, C, H, nears, fars, perturb=perturb and first,
                                        dt_gamma=dt_gamma, max_steps=max_steps,
                                        noise=noise if perturb and first else None)
        sigmas, rgbs, extras = fn(xyzs, dirs)
        extras = _extras(extras)
        for k in extras:
            sums.setdefault(k + "_sum", torch.zeros(N, device=device))
        composite_rays(n_alive, n_step, rays_alive, rays_t, sigmas, rgbs, deltas, weights_sum, depth, image,
                       T_thresh, **extras, **{k + "_sum": sums[k + "_sum"] for k in extras})
        rays_alive = rays_alive[rays_alive >= 0]
        step += n_step
    zero = torch.zeros(N, device=device)
    return CompositeResult(weights_sum, sums.get("ambient_aud_sum", zero), sums.get("ambient_eye_sum", zero),
                           sums.get("uncertainty_sum", zero), depth, image)
