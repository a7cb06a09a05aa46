"""Public raymarching API: input checks, autograd, and dispatch to a backend.

Every function runs on the backend picked for its tensors' device by
``raymarching.backend.BACKENDS`` (CUDA kernels, C++ CPU kernels, or the torch
reference ``_torch_impl``). Positions live in ``[-bound, bound]^3``; the
occupancy grid has C cascades of H^3 cells in Morton order, packed into a
uint8 bitfield of C*H^3/8 bytes (``packbits``).

Step rule (all marchers): ``dt = clamp(t * dt_gamma, dt_min, dt_max)`` with
``dt_max = 2*sqrt(3)*2^(C-1)/H`` and ``dt_min = min(dt_max, 2*sqrt(3)/max_steps)``.
An occupied cell yields a sample at t (clamped into the bound) with
``deltas = (dt, t + dt)``; an empty cell is skipped with dt-sized steps up to
its far face.

Training (one pass over all rays, differentiable compositing)::

    nears, fars = near_far_from_aabb(rays_o, rays_d, aabb, min_near=0.05)
    xyzs, dirs, deltas, rays = march_rays_train(rays_o, rays_d, bound, bitfield, C, H,
                                                nears, fars, perturb=True, dt_gamma=1/256,
                                                max_steps=16)
    sigmas, rgbs = model(xyzs, dirs)                      # [M], [M, 3]
    out = composite_rays_train(sigmas, rgbs, deltas, rays, T_thresh=1e-4)
    loss = ((out.image - target) ** 2).mean()             # out.image [N, 3]

Inference (march a few samples per alive ray, composite in place, repeat)::

    N = rays_o.shape[0]
    weights_sum, depth, image = torch.zeros(N), torch.zeros(N), torch.zeros(N, 3)
    rays_alive = torch.arange(N, dtype=torch.int32)      # ray ids still marching
    rays_t = nears.clone()                               # [N] where each ray resumes
    step = 0
    while step < max_steps and rays_alive.numel() > 0:
        n_alive = rays_alive.numel()
        n_step = min(max(min(N // n_alive, 8), 1), max_steps - step)
        xyzs, dirs, deltas = march_rays(n_alive, n_step, rays_alive, rays_t, rays_o, rays_d,
                                        bound, bitfield, C, H, nears, fars,
                                        perturb=perturb and step == 0, dt_gamma=dt_gamma,
                                        max_steps=max_steps)
        sigmas, rgbs = model(xyzs, dirs)                  # [n_alive*n_step], [.., 3]
        composite_rays(n_alive, n_step, rays_alive, rays_t, sigmas, rgbs, deltas,
                       weights_sum, depth, image, T_thresh=1e-4)
        rays_alive = rays_alive[rays_alive >= 0]          # drop finished rays
        step += n_step

``raymarching.render.render_train`` / ``render_inference`` wrap these two loops.

Dtypes: an input documented as float32 also takes float16/bfloat16 (what a network under
autocast gives), widened to float32 before the kernel (losslessly), like
``torch.amp.custom_fwd(cast_inputs=torch.float32)`` but on every device; gradients flow
back in the input's dtype. Outputs updated in place must be float32.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from . import _torch_impl
from .backend import BACKENDS

FLOAT_TYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# Accepted where the kernels read float32 (as an autocast network gives them), widened losslessly.
FLOAT32_INPUTS = (torch.float16, torch.bfloat16, torch.float32)


class CompositeResult(NamedTuple):
    """Per-ray outputs of the compositors (all [N] except image [N, 3])."""

    weights_sum: torch.Tensor
    ambient_aud_sum: torch.Tensor
    ambient_eye_sum: torch.Tensor
    uncertainty_sum: torch.Tensor
    depth: torch.Tensor
    image: torch.Tensor


# ---------------------------------------------------------------- validation
def _impl(device: torch.device):
    """The module (compiled or ``_torch_impl``) that runs kernels on ``device``."""
    _, module = BACKENDS.get(device)
    return module if module is not None else _torch_impl


def _check(t, name: str, shape: tuple, dtypes: tuple, device: torch.device | None = None) -> torch.Tensor:
    """Validate one tensor argument (shape entries of -1 are free); returns it contiguous."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != len(shape) or any(s >= 0 and s != n for s, n in zip(shape, t.shape)):
        want = "[" + ", ".join("*" if s < 0 else str(s) for s in shape) + "]"
        raise ValueError(f"{name} must have shape {want}, got {list(t.shape)}")
    if t.dtype not in dtypes:
        raise ValueError(f"{name} must be {' or '.join(str(d) for d in dtypes)}, got {t.dtype}")
    if device is not None and t.device != device:
        raise ValueError(f"{name} is on {t.device} but the rays are on {device}: move all inputs to one device")
    return t.contiguous()


def _check_inplace(t, name: str, shape: tuple, dtypes: tuple, device: torch.device) -> torch.Tensor:
    """Like ``_check`` for an output written in place, which cannot be made contiguous by a copy."""
    _check(t, name, shape, dtypes, device)
    if not t.is_contiguous():
        raise ValueError(f"{name} is updated in place and must be contiguous")
    return t


def _check_f32(t, name: str, shape: tuple, device: torch.device | None = None) -> torch.Tensor:
    """``_check`` for a float32 kernel input: float16/bfloat16 (autocast) come back as float32."""
    return _check(t, name, shape, FLOAT32_INPUTS, device).float()


def _check_rays(rays_o, rays_d) -> tuple[torch.Tensor, torch.Tensor]:
    rays_o = _check_f32(rays_o, "rays_o", (-1, 3))
    rays_d = _check_f32(rays_d, "rays_d", (rays_o.shape[0], 3), rays_o.device)
    return rays_o, rays_d


def _check_grid(density_bitfield, C: int, H: int, device) -> torch.Tensor:
    if int(C) != C or not 1 <= C <= 8:
        raise ValueError(f"C (number of cascades) must be an integer in [1, 8], got {C}")
    if int(H) != H or H < 2 or H > 1024 or H & (H - 1):
        raise ValueError(f"H (grid size) must be a power of two in [2, 1024], got {H}")
    return _check(density_bitfield, "density_bitfield", (C * H ** 3 // 8,), (torch.uint8,), device)


def _check_march(max_steps: int, bound: float) -> None:
    if int(max_steps) != max_steps or max_steps < 1:
        raise ValueError(f"max_steps must be a positive integer, got {max_steps}")
    if not bound > 0:
        raise ValueError(f"bound must be > 0, got {bound}")


def _noise(perturb: bool, noise, n: int, device) -> torch.Tensor | None:
    if not perturb:
        if noise is not None:
            raise ValueError("noise is only used with perturb=True: pass perturb=True or drop noise")
        return None
    if noise is None:
        return torch.rand(n, device=device)
    return _check_f32(noise, "noise", (n,), device)


def _compute_dtype(values: torch.Tensor) -> torch.dtype:
    # Half-precision network outputs are processed in float32.
    return torch.float64 if values.dtype == torch.float64 else torch.float32


# ---------------------------------------------------------------- utilities
def near_far_from_aabb(rays_o: torch.Tensor, rays_d: torch.Tensor, aabb, min_near: float = 0.2):
    """Entry and exit distances of rays through an axis-aligned box.

    Args:
        rays_o: ray origins, float32 [N, 3].
        rays_d: ray directions (need not be unit), float32 [N, 3].
        aabb: (xmin, ymin, zmin, xmax, ymax, zmax), tensor or sequence [6].
        min_near: smallest near returned, in units of t.

    Returns:
        nears, fars: float32 [N]; both are FLT_MAX for a ray that misses the box.
    """
    rays_o, rays_d = _check_rays(rays_o, rays_d)
    aabb = torch.as_tensor(aabb, dtype=torch.float32, device=rays_o.device)
    aabb = _check(aabb, "aabb", (6,), (torch.float32,))
    return tuple(_impl(rays_o.device).near_far_from_aabb(rays_o, rays_d, aabb, float(min_near)))


def sph_from_ray(rays_o: torch.Tensor, rays_d: torch.Tensor, radius: float) -> torch.Tensor:
    """Where rays leave the sphere |p| = radius, as polar angles (y up).

    Args:
        rays_o, rays_d: float32 [N, 3], origins inside the sphere.
        radius: sphere radius.

    Returns:
        float32 [N, 2]: (2 theta / pi - 1, phi / pi), both in [-1, 1].
    """
    rays_o, rays_d = _check_rays(rays_o, rays_d)
    return _impl(rays_o.device).sph_from_ray(rays_o, rays_d, float(radius))


def morton3D(coords: torch.Tensor) -> torch.Tensor:
    """Morton index of cells: int32 [N, 3] coordinates in [0, 1024) -> int32 [N].

    Bit k of x lands at bit 3k, of y at 3k+1, of z at 3k+2.
    """
    coords = _check(coords, "coords", (-1, 3), (torch.int32,))
    return _impl(coords.device).morton3D(coords)


def morton3D_invert(indices: torch.Tensor) -> torch.Tensor:
    """Inverse of ``morton3D``: int32 [N] -> int32 [N, 3]."""
    indices = _check(indices, "indices", (-1,), (torch.int32,))
    return _impl(indices.device).morton3D_invert(indices)


def packbits(grid: torch.Tensor, thresh: float, bitfield: torch.Tensor | None = None) -> torch.Tensor:
    """Occupancy bitfield of a density grid.

    Args:
        grid: density per cell, float [C, H^3] (Morton order).
        thresh: a cell is occupied when its density is > thresh.
        bitfield: optional uint8 [C*H^3/8] to write into.

    Returns:
        uint8 [C*H^3/8]: bit i of byte n is grid.flatten()[8n + i] > thresh.
    """
    grid = _check(grid, "grid", (-1, -1), FLOAT_TYPES)
    grid = grid.to(_compute_dtype(grid))
    if grid.numel() % 8:
        raise ValueError(f"grid must hold a multiple of 8 cells, got {grid.numel()}")
    if bitfield is None:
        bitfield = torch.empty(grid.numel() // 8, dtype=torch.uint8, device=grid.device)
    bitfield = _check_inplace(bitfield, "bitfield", (grid.numel() // 8,), (torch.uint8,), grid.device)
    _impl(grid.device).packbits(grid, float(thresh), bitfield)
    return bitfield


def morton3D_dilation(grid: torch.Tensor) -> torch.Tensor:
    """Max filter over each cell and its 6 face neighbours of a Morton-ordered grid.

    Args:
        grid: float [C, H^3] with H a power of two.

    Returns:
        [C, H^3], same layout; float64 for float64 grids, else float32.
    """
    grid = _check(grid, "grid", (-1, -1), FLOAT_TYPES)
    grid = grid.to(_compute_dtype(grid))
    H = round(grid.shape[1] ** (1 / 3))
    if H ** 3 != grid.shape[1] or H < 2 or H & (H - 1):
        raise ValueError(f"grid must be [C, H^3] with H a power of two, got {list(grid.shape)}")
    return _impl(grid.device).morton3D_dilation(grid)


# ------------------------------------------------------------------ training
@torch.no_grad()
def march_rays_train(rays_o: torch.Tensor, rays_d: torch.Tensor, bound: float, density_bitfield: torch.Tensor,
                     C: int, H: int, nears: torch.Tensor, fars: torch.Tensor, perturb: bool = False,
                     dt_gamma: float = 0.0, max_steps: int = 1024, noise: torch.Tensor | None = None):
    """Sample every ray in the occupied cells between its near and far.

    Counts samples per ray first and then writes them, so M is exact, samples are
    grouped by ray in ray order, and no ray is dropped. Not differentiable.

    Args:
        rays_o, rays_d: float32 [N, 3].
        bound: half-extent of the scene box [-bound, bound]^3.
        density_bitfield: uint8 [C*H^3/8] occupancy (``packbits``).
        C, H: cascades and grid size (H a power of two).
        nears, fars: float32 [N] (``near_far_from_aabb``).
        perturb: jitter each ray's start by dt(near) * noise.
        dt_gamma: step growth with distance (0 = constant steps).
        max_steps: samples per ray at most; also sets dt_min.
        noise: float32 [N] uniform [0, 1) jitter; drawn with torch.rand when perturb and None.

    Returns:
        xyzs: sample positions, float32 [M, 3].
        dirs: the rays' directions per sample, float32 [M, 3].
        deltas: (dt, t after the sample), float32 [M, 2].
        rays: (ray index, first sample, sample count), int32 [N, 3].
    """
    rays_o, rays_d = _check_rays(rays_o, rays_d)
    N, device = rays_o.shape[0], rays_o.device
    bitfield = _check_grid(density_bitfield, C, H, device)
    _check_march(max_steps, bound)
    nears = _check_f32(nears, "nears", (N,), device)
    fars = _check_f32(fars, "fars", (N,), device)
    noise = _noise(perturb, noise, N, device)
    # Named for torch.profiler: the compiled backends' calls are not aten ops, so they would not show.
    with torch.profiler.record_function("raymarching.march_rays_train"):
        return tuple(_impl(device).march_rays_train(rays_o, rays_d, bitfield, nears, fars, noise, float(bound),
                                                    float(dt_gamma), int(max_steps), int(C), int(H)))


class _CompositeRaysTrain(torch.autograd.Function):
    """Compiled training compositor with its analytic backward."""

    @staticmethod
    def forward(ctx, module, T_thresh, sigmas, rgbs, deltas, rays, ambient_aud, ambient_eye, uncertainty):
        outs = module.composite_rays_train_forward(sigmas, rgbs, deltas, rays, ambient_aud, ambient_eye,
                                                   uncertainty, T_thresh)
        ws, _, _, unc_sum, depth, image = outs
        ctx.module, ctx.T_thresh = module, T_thresh
        ctx.save_for_backward(sigmas, rgbs, deltas, rays, uncertainty, ws, unc_sum, depth, image)
        return tuple(outs)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, v_ws, v_aud, v_eye, v_unc, v_depth, v_image):
        sigmas, rgbs, deltas, rays, uncertainty, ws, unc_sum, depth, image = ctx.saved_tensors
        need = ctx.needs_input_grad
        v_sigmas, v_rgbs, v_aud_in, v_eye_in, v_unc_in = ctx.module.composite_rays_train_backward(
            v_ws.contiguous(), v_aud.contiguous(), v_eye.contiguous(), v_unc.contiguous(), v_depth.contiguous(),
            v_image.contiguous(), sigmas, rgbs, deltas, rays, uncertainty, ws, unc_sum, depth, image,
            ctx.T_thresh, need[6], need[7], need[8])
        return (None, None, v_sigmas if need[2] else None, v_rgbs if need[3] else None, None, None,
                v_aud_in, v_eye_in, v_unc_in)


def composite_rays_train(sigmas: torch.Tensor, rgbs: torch.Tensor, deltas: torch.Tensor, rays: torch.Tensor,
                         T_thresh: float = 1e-4, ambient_aud: torch.Tensor | None = None,
                         ambient_eye: torch.Tensor | None = None,
                         uncertainty: torch.Tensor | None = None) -> CompositeResult:
    """Front-to-back volume rendering of the samples of ``march_rays_train``.

    .. math::
        \\alpha_i = 1 - e^{-\\sigma_i \\delta_i},\\quad T_i = \\prod_{j<i} (1 - \\alpha_j),\\quad w_i = \\alpha_i T_i

    A ray stops after the sample that brings T below ``T_thresh``. Then
    image = sum w c, depth = sum w t_after, weights_sum = sum w,
    uncertainty_sum = sum w u, and ambient_*_sum are plain (unweighted) sums over
    the ray's accumulated samples. Rays with count 0 get zeros.

    Args:
        sigmas: densities, float [M] (half inputs are composited in float32).
        rgbs: colours, float [M, 3].
        deltas: (dt, t_after), float [M, 2].
        rays: (ray index, first sample, count), int32 [N, 3].
        T_thresh: transmittance below which a ray stops.
        ambient_aud, ambient_eye, uncertainty: optional per-sample values, float [M].

    Returns:
        CompositeResult of [N] tensors (image [N, 3]), rows indexed by rays[:, 0].

    Note:
        Differentiable w.r.t. sigmas, rgbs, ambient_aud, ambient_eye and uncertainty,
        for every output including depth (the reference CUDA kernel drops the depth
        term); not w.r.t. deltas. The early stop is treated as a constant.
    """
    sigmas = _check(sigmas, "sigmas", (-1,), FLOAT_TYPES)
    M, device, dtype = sigmas.shape[0], sigmas.device, _compute_dtype(sigmas)
    sigmas = sigmas.to(dtype)
    rgbs = _check(rgbs, "rgbs", (M, 3), FLOAT_TYPES, device).to(dtype)
    deltas = _check(deltas, "deltas", (M, 2), FLOAT_TYPES, device).to(dtype)
    rays = _check(rays, "rays", (-1, 3), (torch.int32,), device)
    extras = [None if v is None else _check(v, name, (M,), FLOAT_TYPES, device).to(dtype)
              for v, name in ((ambient_aud, "ambient_aud"), (ambient_eye, "ambient_eye"),
                              (uncertainty, "uncertainty"))]
    if device.type == "cpu" and rays.shape[0]:
        last = rays[:, 1].long() + rays[:, 2].long()
        if rays[:, 0].min() < 0 or rays[:, 0].max() >= rays.shape[0] or rays[:, 1:].min() < 0 or last.max() > M:
            raise ValueError(f"rays must hold (index in [0, {rays.shape[0]}), offset, count) with "
                             f"offset + count <= {M} samples: pass the rays of march_rays_train")
    module = _impl(device)
    if module is _torch_impl:
        outs = _torch_impl.composite_rays_train_forward(sigmas, rgbs, deltas, rays, *extras, float(T_thresh))
    else:
        outs = _CompositeRaysTrain.apply(module, float(T_thresh), sigmas, rgbs, deltas, rays, *extras)
    return CompositeResult(*outs)


# ----------------------------------------------------------------- inference
@torch.no_grad()
def march_rays(n_alive: int, n_step: int, rays_alive: torch.Tensor, rays_t: torch.Tensor, rays_o: torch.Tensor,
               rays_d: torch.Tensor, bound: float, density_bitfield: torch.Tensor, C: int, H: int,
               nears: torch.Tensor, fars: torch.Tensor, perturb: bool = False, dt_gamma: float = 0.0,
               max_steps: int = 1024, noise: torch.Tensor | None = None):
    """Next ``n_step`` occupied samples of each alive ray, resuming at ``rays_t``.

    Args:
        n_alive: number of alive rays (the first n_alive entries of rays_alive).
        n_step: samples to take per ray.
        rays_alive: ids of the alive rays, int32 [>= n_alive].
        rays_t: where each ray resumes, float32 [N] indexed by ray id.
        rays_o, rays_d: float32 [N, 3].
        bound, density_bitfield, C, H, dt_gamma, max_steps: as in ``march_rays_train``.
        nears, fars: float32 [N] (only fars is read: the walk ends there).
        perturb: jitter the start by dt(rays_t) * noise (use on the first call only).
        noise: float32 [n_alive] in [0, 1); drawn with torch.rand when perturb and None.

    Returns:
        xyzs, dirs: float32 [n_alive*n_step, 3]; deltas: float32 [n_alive*n_step, 2].
        Alive ray n owns slots [n*n_step, (n+1)*n_step); unused slots are all zero,
        and their dt = 0 tells ``composite_rays`` that the ray has left the box.
    """
    rays_o, rays_d = _check_rays(rays_o, rays_d)
    N, device = rays_o.shape[0], rays_o.device
    if int(n_step) != n_step or n_step < 1:
        raise ValueError(f"n_step must be a positive integer, got {n_step}")
    rays_alive = _check(rays_alive, "rays_alive", (-1,), (torch.int32,), device)
    if not 0 <= n_alive <= rays_alive.shape[0]:
        raise ValueError(f"n_alive must be in [0, {rays_alive.shape[0]}] (len(rays_alive)), got {n_alive}")
    rays_t = _check(rays_t, "rays_t", (N,), (torch.float32,), device)
    bitfield = _check_grid(density_bitfield, C, H, device)
    _check_march(max_steps, bound)
    nears = _check_f32(nears, "nears", (N,), device)
    fars = _check_f32(fars, "fars", (N,), device)
    noise = _noise(perturb, noise, n_alive, device)
    return tuple(_impl(device).march_rays(rays_alive[:n_alive], rays_t, rays_o, rays_d, bitfield, nears, fars,
                                          noise, float(bound), float(dt_gamma), int(max_steps), int(C), int(H),
                                          int(n_step)))


@torch.no_grad()
def composite_rays(n_alive: int, n_step: int, rays_alive: torch.Tensor, rays_t: torch.Tensor,
                   sigmas: torch.Tensor, rgbs: torch.Tensor, deltas: torch.Tensor, weights_sum: torch.Tensor,
                   depth: torch.Tensor, image: torch.Tensor, T_thresh: float = 1e-2,
                   ambient_aud: torch.Tensor | None = None, ambient_eye: torch.Tensor | None = None,
                   uncertainty: torch.Tensor | None = None, ambient_aud_sum: torch.Tensor | None = None,
                   ambient_eye_sum: torch.Tensor | None = None,
                   uncertainty_sum: torch.Tensor | None = None) -> None:
    """Accumulate the samples of ``march_rays`` into the per-ray outputs, in place.

    With T = 1 - weights_sum before a sample, w = (1 - exp(-sigma dt)) T is added
    to weights_sum, w t_after to depth, w rgb to image, w u to uncertainty_sum, and
    the plain ambient values to ambient_*_sum. A ray ends (rays_alive[n] = -1) at
    a slot with dt == 0 or after a sample taken with T < T_thresh, so it can take
    one sample more than ``composite_rays_train``; otherwise rays_t[ray] becomes
    its last sample's t_after.

    Args:
        n_alive, n_step: as passed to ``march_rays``.
        rays_alive: int32 [>= n_alive], updated in place.
        rays_t: float32 [N], updated in place.
        sigmas: float [n_alive*n_step]; rgbs: [n_alive*n_step, 3]; deltas: [n_alive*n_step, 2].
        weights_sum, depth: float32 [N]; image: float32 [N, 3]; updated in place.
        T_thresh: transmittance below which a ray stops.
        ambient_aud, ambient_eye, uncertainty: optional float [n_alive*n_step], each with
            its float32 [N] ``*_sum`` output.
    """
    device = weights_sum.device
    weights_sum = _check_inplace(weights_sum, "weights_sum", (-1,), (torch.float32,), device)
    N, S = weights_sum.shape[0], n_alive * n_step
    rays_alive = _check_inplace(rays_alive, "rays_alive", (-1,), (torch.int32,), device)
    if not 0 <= n_alive <= rays_alive.shape[0]:
        raise ValueError(f"n_alive must be in [0, {rays_alive.shape[0]}] (len(rays_alive)), got {n_alive}")
    rays_t = _check_inplace(rays_t, "rays_t", (N,), (torch.float32,), device)
    depth = _check_inplace(depth, "depth", (N,), (torch.float32,), device)
    image = _check_inplace(image, "image", (N, 3), (torch.float32,), device)
    sigmas = _check(sigmas, "sigmas", (S,), FLOAT_TYPES, device).float()
    rgbs = _check(rgbs, "rgbs", (S, 3), FLOAT_TYPES, device).float()
    deltas = _check(deltas, "deltas", (S, 2), FLOAT_TYPES, device).float()
    pairs = []
    for name, v, out in (("ambient_aud", ambient_aud, ambient_aud_sum), ("ambient_eye", ambient_eye, ambient_eye_sum),
                         ("uncertainty", uncertainty, uncertainty_sum)):
        if (v is None) != (out is None):
            raise ValueError(f"{name} and {name}_sum must be given together")
        if v is not None:
            v = _check(v, name, (S,), FLOAT_TYPES, device).float()
            out = _check_inplace(out, name + "_sum", (N,), (torch.float32,), device)
        pairs += [v, out]
    aud, aud_sum, eye, eye_sum, unc, unc_sum = pairs
    _impl(device).composite_rays(rays_alive[:n_alive], rays_t, sigmas, rgbs, deltas, aud, eye, unc, weights_sum,
                                 depth, image, aud_sum, eye_sum, unc_sum, float(T_thresh))
