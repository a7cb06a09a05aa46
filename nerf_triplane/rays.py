"""Pixel sampling and camera rays (OpenCV pinhole on instant-ngp c2w poses).

Pixels are addressed by their flat row-major index ``row * W + col``; a ray goes through the
pixel centre ``(col + 0.5, row + 0.5)``. Sampling is split from ray generation so every
sampler (random, patches, rectangle, full image) feeds the same :func:`rays_from_pixels`.
"""
from __future__ import annotations

from typing import Sequence

import torch


def random_pixels(H: int, W: int, N: int, device="cpu",
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """``N`` pixel indices drawn uniformly with replacement.

    Returns:
        flat pixel indices, int64  # [N]
    """
    if N <= 0:
        raise ValueError(f"number of rays must be positive, got {N}")
    return torch.randint(0, H * W, (N,), device=device, generator=generator)


def patch_pixels(H: int, W: int, N: int, patch_size: int, device="cpu",
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """``N // patch_size**2`` random square patches, patch-major and row-major inside a patch.

    Top-left corners are uniform over rows ``[0, H - p)`` and columns ``[0, W - p)``, as the
    reference does (the last row/column is never a corner).

    Returns:
        flat pixel indices, int64  # [P * p * p]
    """
    p = patch_size
    if p < 2 or p >= min(H, W):
        raise ValueError(f"patch_size must be in [2, min(H, W) = {min(H, W)}), got {p}")
    n_patch = N // (p * p)
    if n_patch < 1:
        raise ValueError(f"num_rays ({N}) must hold at least one {p}x{p} patch")
    top = torch.randint(0, H - p, (n_patch,), device=device, generator=generator)
    left = torch.randint(0, W - p, (n_patch,), device=device, generator=generator)
    dr, dc = torch.meshgrid(torch.arange(p, device=device), torch.arange(p, device=device),
                            indexing="ij")
    rows = top[:, None] + dr.reshape(1, -1)  # [P, p*p]
    cols = left[:, None] + dc.reshape(1, -1)  # [P, p*p]
    return (rows * W + cols).reshape(-1)


def rect_pixels(H: int, W: int, rect: Sequence[int], device="cpu") -> torch.Tensor:
    """All pixels of rows ``[xmin, xmax)`` x columns ``[ymin, ymax)``, row-major.

    Args:
        rect: (xmin, xmax, ymin, ymax), x = rows, y = columns, already inside the image.
    Returns:
        flat pixel indices, int64  # [(xmax - xmin) * (ymax - ymin)]
    """
    xmin, xmax, ymin, ymax = (int(v) for v in rect)
    if not (0 <= xmin < xmax <= H and 0 <= ymin < ymax <= W):
        raise ValueError(f"rect {tuple(rect)} is empty or outside the {H}x{W} image")
    rows = torch.arange(xmin, xmax, device=device)
    cols = torch.arange(ymin, ymax, device=device)
    return (rows[:, None] * W + cols[None, :]).reshape(-1)


def rect_random_pixels(H: int, W: int, N: int, rect: Sequence[int], device="cpu",
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """``N`` pixels drawn uniformly with replacement from rows ``[xmin, xmax)`` x columns
    ``[ymin, ymax)`` (clipped to the image).

    Args:
        rect: (xmin, xmax, ymin, ymax), x = rows, y = columns.
    Returns:
        flat pixel indices, int64  # [N]
    """
    xmin, xmax, ymin, ymax = (int(v) for v in rect)
    xmin, xmax, ymin, ymax = max(0, xmin), min(H, xmax), max(0, ymin), min(W, ymax)
    if N <= 0 or xmin >= xmax or ymin >= ymax:
        raise ValueError(f"need N > 0 and a non-empty rect inside the {H}x{W} image, got N={N}, "
                         f"rect={tuple(rect)}")
    rows = torch.randint(xmin, xmax, (N,), device=device, generator=generator)
    cols = torch.randint(ymin, ymax, (N,), device=device, generator=generator)
    return rows * W + cols


def all_pixels(H: int, W: int, device="cpu") -> torch.Tensor:
    """Every pixel, row-major: ``arange(H * W)``  # [H*W]"""
    return torch.arange(H * W, device=device)


def rays_from_pixels(poses: torch.Tensor, intrinsics, W: int, inds: torch.Tensor) -> dict:
    """Rays through the centres of the given pixels.

    ``dir_cam = ((col + 0.5 - cx) / fx, (row + 0.5 - cy) / fy, 1)`` normalised, rotated by the
    pose; the origin is the pose translation.

    Args:
        poses: ngp c2w  # [B, 4, 4]
        intrinsics: (fx, fy, cx, cy) in pixels  # [4]
        W: image width in pixels.
        inds: flat pixel indices  # [N]
    Returns:
        dict with ``rays_o``, ``rays_d`` (unit)  # [B, N, 3]; ``i`` = col + 0.5, ``j`` = row + 0.5
        (float32), ``inds`` (int64)  # [B, N]
    """
    if poses.ndim != 3 or poses.shape[1:] != (4, 4):
        raise ValueError(f"poses must have shape [B, 4, 4], got {tuple(poses.shape)}")
    B, device = poses.shape[0], poses.device
    poses = poses.float()
    fx, fy, cx, cy = (float(v) for v in intrinsics)
    inds = inds.to(device=device, dtype=torch.long)
    i = (inds % W).float() + 0.5  # [N]
    j = torch.div(inds, W, rounding_mode="floor").float() + 0.5  # [N]
    dirs = torch.stack([(i - cx) / fx, (j - cy) / fy, torch.ones_like(i)], dim=-1)  # [N, 3]
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    rays_d = dirs[None] @ poses[:, :3, :3].transpose(1, 2)  # [B, N, 3]
    rays_o = poses[:, None, :3, 3].expand_as(rays_d)  # [B, N, 3]
    expand = (B, inds.shape[0])
    return {"rays_o": rays_o, "rays_d": rays_d, "i": i.expand(expand), "j": j.expand(expand),
            "inds": inds.expand(expand)}


def get_rays(poses: torch.Tensor, intrinsics, H: int, W: int, N: int = -1, patch_size: int = 1,
             rect: Sequence[int] | None = None,
             generator: torch.Generator | None = None) -> dict:
    """Sample pixels then build their rays (reference ``get_rays``).

    ``rect`` given: every pixel of the rectangle. Else ``N > 0``: ``min(N, H*W)`` random pixels,
    or random ``patch_size`` patches when ``patch_size > 1``. Else: the full image.

    Args:
        poses: ngp c2w  # [B, 4, 4]
        intrinsics: (fx, fy, cx, cy)  # [4]
    Returns:
        see :func:`rays_from_pixels`.
    """
    device = poses.device
    if rect is not None:
        inds = rect_pixels(H, W, rect, device)
    elif N > 0:
        N = min(N, H * W)
        if patch_size > 1:
            inds = patch_pixels(H, W, N, patch_size, device, generator)
        else:
            inds = random_pixels(H, W, N, device, generator)
    else:
        inds = all_pixels(H, W, device)
    return rays_from_pixels(poses, intrinsics, W, inds)


def get_bg_coords(H: int, W: int, device="cpu") -> torch.Tensor:
    """Normalised pixel coordinates for the torso branch, row-major.

    Returns:
        (row / (H-1) * 2 - 1, col / (W-1) * 2 - 1)  # [1, H*W, 2]
    """
    rows = torch.arange(H, device=device, dtype=torch.float32) / (H - 1) * 2 - 1
    cols = torch.arange(W, device=device, dtype=torch.float32) / (W - 1) * 2 - 1
    rr, cc = torch.meshgrid(rows, cols, indexing="ij")
    return torch.stack([rr.reshape(-1), cc.reshape(-1)], dim=-1)[None]


def rect_mask(i: torch.Tensor, j: torch.Tensor, rect: Sequence[int]) -> torch.Tensor:
    """Which rays fall in a landmark rectangle: ``j`` in [xmin, xmax) and ``i`` in [ymin, ymax).

    Args:
        i: pixel-centre columns  # [B, N]
        j: pixel-centre rows  # [B, N]
        rect: (xmin, xmax, ymin, ymax), x = rows, y = columns.
    Returns:
        bool mask  # [B, N]
    """
    xmin, xmax, ymin, ymax = rect
    return (j >= xmin) & (j < xmax) & (i >= ymin) & (i < ymax)
