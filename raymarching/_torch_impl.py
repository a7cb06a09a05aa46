"""Pure-torch reference of every raymarching kernel.

Each function has the name, arguments and results of the compiled modules
(``raymarching/src/cpu.cpp`` / ``cuda.cu``) and performs the same float32
operations in the same order, so sample positions and counts match them bit for
bit; only ``exp`` (used by the compositors) may differ in the last ulp. It is the
runtime fallback when no compiled backend loads, and the reference in the tests.
``composite_rays_train_forward`` is differentiable through torch autograd; it
has no separate backward.
"""
from __future__ import annotations

import numpy as np
import torch

SQRT3 = np.float32(1.7320508075688772)
INV_PI = np.float32(0.3183098861837907)
FLOAT_MAX = float(np.finfo(np.float32).max)
MORTON_BITS = 10


# ----------------------------------------------------------------- Morton order
def _morton(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Interleave the low 10 bits of integer tensors: x at bit 3k, y at 3k+1, z at 3k+2."""
    out = torch.zeros_like(x, dtype=torch.int64)
    for k in range(MORTON_BITS):
        for axis, v in enumerate((x, y, z)):
            out |= ((v.long() >> k) & 1) << (3 * k + axis)
    return out


def _unmorton(idx: torch.Tensor, axis: int) -> torch.Tensor:
    """One coordinate (0 = x, 1 = y, 2 = z) of Morton indices."""
    idx = idx.long()
    out = torch.zeros_like(idx)
    for k in range(MORTON_BITS):
        out |= ((idx >> (3 * k + axis)) & 1) << k
    return out


def morton3D(coords: torch.Tensor) -> torch.Tensor:
    """int32 [N, 3] cell coordinates in [0, 1024) -> int32 [N] Morton indices."""
    return _morton(coords[:, 0], coords[:, 1], coords[:, 2]).int()


def morton3D_invert(indices: torch.Tensor) -> torch.Tensor:
    """int32 [N] Morton indices -> int32 [N, 3] cell coordinates."""
    return torch.stack([_unmorton(indices, a) for a in range(3)], dim=1).int()


def packbits(grid: torch.Tensor, thresh: float, bitfield: torch.Tensor) -> None:
    """Write bit i of bitfield[n] = grid.flatten()[8n + i] > thresh into uint8 ``bitfield`` [C*H^3/8]."""
    bits = (grid.reshape(-1, 8) > thresh).to(torch.uint8)  # [C*H^3/8, 8]
    weights = torch.tensor([1 << i for i in range(8)], dtype=torch.uint8, device=grid.device)
    bitfield.copy_((bits * weights).sum(dim=1, dtype=torch.uint8))


def morton3D_dilation(grid: torch.Tensor) -> torch.Tensor:
    """[C, H^3] Morton grid -> [C, H^3] max over each cell and its 6 face neighbours."""
    C, cells = grid.shape
    H = round(cells ** (1 / 3))
    idx = torch.arange(cells, device=grid.device)
    dense = torch.empty(C, H, H, H, dtype=grid.dtype, device=grid.device)
    x, y, z = (_unmorton(idx, a) for a in range(3))
    dense[:, x, y, z] = grid
    padded = torch.nn.functional.pad(dense, (1, 1, 1, 1, 1, 1), value=-float("inf"))
    best = dense.clone()
    for axis in range(3):
        for shift in (0, 2):
            sl = [slice(None)] + [slice(1, H + 1)] * 3
            sl[1 + axis] = slice(shift, shift + H)
            best = torch.maximum(best, padded[tuple(sl)])
    return best[:, x, y, z]


# -------------------------------------------------------------------- geometry
def near_far_from_aabb(rays_o: torch.Tensor, rays_d: torch.Tensor, aabb: torch.Tensor,
                       min_near: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Slab test of [N, 3] rays against aabb [6] -> (nears [N], fars [N]); a miss gives FLT_MAX for both."""
    N = rays_o.shape[0]
    near = torch.full((N,), -FLOAT_MAX, dtype=torch.float32, device=rays_o.device)
    far = torch.full((N,), FLOAT_MAX, dtype=torch.float32, device=rays_o.device)
    miss = torch.zeros(N, dtype=torch.bool, device=rays_o.device)
    for k in range(3):
        inv = 1.0 / rays_d[:, k]
        lo = (aabb[k] - rays_o[:, k]) * inv
        hi = (aabb[k + 3] - rays_o[:, k]) * inv
        lo, hi = torch.where(lo > hi, hi, lo), torch.where(lo > hi, lo, hi)
        miss |= (near > hi) | (lo > far)
        near = torch.where(lo > near, lo, near)
        far = torch.where(hi < far, hi, far)
    near = torch.where(near < min_near, torch.full_like(near, np.float32(min_near)), near)
    big = torch.full_like(near, FLOAT_MAX)
    return torch.where(miss, big, near), torch.where(miss, big, far)


def sph_from_ray(rays_o: torch.Tensor, rays_d: torch.Tensor, radius: float) -> torch.Tensor:
    """[N, 3] rays -> [N, 2] (2 theta / pi - 1, phi / pi) where they leave the sphere |p| = radius."""
    radius = np.float32(radius)
    a = (rays_d * rays_d).sum(1)
    half_b = (rays_o * rays_d).sum(1)
    c = (rays_o * rays_o).sum(1) - radius * radius
    t = (-half_b + torch.sqrt(half_b * half_b - a * c)) / a
    p = rays_o + t[:, None] * rays_d
    theta = torch.atan2(torch.sqrt(p[:, 0] ** 2 + p[:, 2] ** 2), p[:, 1])
    phi = torch.atan2(p[:, 2], p[:, 0])
    return torch.stack([2 * theta * INV_PI - 1, phi * INV_PI], dim=1)


# ------------------------------------------------------------------- marching
def step_rule(dt_gamma: float, max_steps: int, C: int, H: int) -> tuple[float, float, float]:
    """(dt_min, dt_max, dt_gamma) as float32 values: dt(t) = clamp(t * dt_gamma, dt_min, dt_max)."""
    f = np.float32
    dt_max = f(2.0) * SQRT3 * f(1 << (C - 1)) / f(H)
    dt_min = min(f(2.0) * SQRT3 / f(max_steps), dt_max)
    return float(dt_min), float(dt_max), float(f(dt_gamma))


def _dt(t: torch.Tensor, rule: tuple[float, float, float]) -> torch.Tensor:
    dt_min, dt_max, gamma = rule
    return torch.clamp(t * gamma, dt_min, dt_max)


def _occupied_cells(p: torch.Tensor, dt: torch.Tensor, bitfield: torch.Tensor, C: int, H: int, bound: float):
    """Occupancy of the cells holding [R, 3] points -> (occ [R] bool, cell [R, 3] int, half-extent b [R])."""
    m = p.abs().amax(dim=1)
    e_pos = torch.frexp(m).exponent
    e_dt = torch.frexp(dt * float(H) * 0.5).exponent
    level = torch.clamp(torch.maximum(e_pos, e_dt), 0, C - 1).long()
    b = torch.minimum(torch.pow(2.0, level.float()), torch.tensor(np.float32(bound)))
    inv_b = 1.0 / b
    cell = torch.clamp((p * inv_b[:, None] + 1.0) * 0.5 * float(H), 0.0, float(H - 1)).long()
    idx = level * H ** 3 + _morton(cell[:, 0], cell[:, 1], cell[:, 2])
    occ = ((bitfield.long()[idx >> 3] >> (idx & 7)) & 1).bool()
    return occ, cell, b


def _march(rays_o, rays_d, t0, far, max_samples, bitfield, bound, C, H, rule):
    """Walk R rays front to back, collecting up to ``max_samples`` occupied samples each.

    Args:
        rays_o, rays_d: [R, 3] float32.
        t0, far: [R] start and end of each walk.
        max_samples: samples per ray at most.

    Returns:
        counts: [R] int64 samples per ray.
        samples: (ray [S], k [S] sample number in its ray, xyz [S, 3], dt [S], t_after [S]), unordered.
    """
    R = rays_o.shape[0]
    device = rays_o.device
    t = t0.clone()
    counts = torch.zeros(R, dtype=torch.int64, device=device)
    inv_d = 1.0 / rays_d
    side = torch.where(torch.signbit(rays_d), 0.0, 1.0)  # far face of a cell along each axis
    bound32 = float(np.float32(bound))
    active = torch.arange(R, device=device)
    found = []
    while active.numel():
        ta = t[active]
        keep = (ta < far[active]) & (counts[active] < max_samples)
        active, ta = active[keep], ta[keep]
        if not active.numel():
            break
        p = torch.clamp(rays_o[active] + ta[:, None] * rays_d[active], -bound32, bound32)
        dt = _dt(ta, rule)
        occ, cell, b = _occupied_cells(p, dt, bitfield, C, H, bound)

        hit = active[occ]
        t_after = ta[occ] + dt[occ]
        found.append((hit, counts[hit].clone(), p[occ], dt[occ], t_after))
        counts[hit] += 1
        t[hit] = t_after

        # Empty cell: step by dt until past the nearest face of the cell.
        miss = ~occ
        rays = active[miss]
        face = (((cell[miss].float() + side[rays]) * float(np.float32(2.0) / np.float32(H)) - 1.0)
                * b[miss, None] - p[miss]) * inv_d[rays]
        nearest = torch.fmin(face[:, 0], torch.fmin(face[:, 1], face[:, 2]))
        target = ta[miss] + torch.fmax(torch.zeros_like(nearest), nearest)
        tm = ta[miss]
        stepping = torch.ones_like(tm, dtype=torch.bool)
        while stepping.any():
            tm = torch.where(stepping, tm + _dt(tm, rule), tm)
            stepping &= tm < target
        t[rays] = tm

    if found:
        cols = [torch.cat(c) for c in zip(*found)]
    else:
        cols = [torch.zeros(0, dtype=torch.int64, device=device)] * 2 + [
            torch.zeros(0, 3, device=device), torch.zeros(0, device=device), torch.zeros(0, device=device)]
    return counts, cols


def _start(t: torch.Tensor, noise: torch.Tensor | None, rule) -> torch.Tensor:
    return t if noise is None else t + _dt(t, rule) * noise


def march_rays_train(rays_o, rays_d, bitfield, nears, fars, noise, bound, dt_gamma, max_steps, C, H):
    """March every ray from its near (+ jitter) to its far, at most ``max_steps`` occupied samples.

    Returns:
        [xyzs [M, 3], dirs [M, 3], deltas [M, 2] (dt, t_after), rays int32 [N, 3] (index, offset, count)],
        samples grouped by ray in ray order.
    """
    rule = step_rule(dt_gamma, max_steps, C, H)
    N = rays_o.shape[0]
    t0 = _start(nears, noise, rule)
    counts, (ray, k, xyz, dt, t_after) = _march(rays_o, rays_d, t0, fars, max_steps, bitfield, bound, C, H, rule)
    offsets = torch.cumsum(counts, 0) - counts
    M = int(counts.sum())
    slot = offsets[ray] + k
    xyzs = torch.empty(M, 3, device=rays_o.device)
    dirs = torch.empty(M, 3, device=rays_o.device)
    deltas = torch.empty(M, 2, device=rays_o.device)
    xyzs[slot] = xyz
    dirs[slot] = rays_d[ray]
    deltas[slot] = torch.stack([dt, t_after], dim=1)
    rays = torch.stack([torch.arange(N, device=rays_o.device), offsets, counts], dim=1).int()
    return [xyzs, dirs, deltas, rays]


def march_rays(rays_alive, rays_t, rays_o, rays_d, bitfield, nears, fars, noise, bound, dt_gamma, max_steps,
               C, H, n_step):
    """March alive rays from ``rays_t`` for up to ``n_step`` occupied samples each.

    Returns:
        [xyzs, dirs [n_alive*n_step, 3], deltas [n_alive*n_step, 2]]; ray n owns slots
        [n*n_step, (n+1)*n_step), unused slots are zero (dt = 0 ends the ray).
    """
    rule = step_rule(dt_gamma, max_steps, C, H)
    n_alive, N = rays_alive.shape[0], rays_o.shape[0]
    xyzs = torch.zeros(n_alive * n_step, 3, device=rays_o.device)
    dirs = torch.zeros(n_alive * n_step, 3, device=rays_o.device)
    deltas = torch.zeros(n_alive * n_step, 2, device=rays_o.device)
    pos = torch.nonzero((rays_alive >= 0) & (rays_alive < N)).squeeze(1)  # [R] alive slots
    rid = rays_alive[pos].long()
    t0 = _start(rays_t[rid], None if noise is None else noise[pos], rule)
    _, (ray, k, xyz, dt, t_after) = _march(rays_o[rid], rays_d[rid], t0, fars[rid], n_step, bitfield, bound,
                                           C, H, rule)
    slot = pos[ray] * n_step + k
    xyzs[slot] = xyz
    dirs[slot] = rays_d[rid[ray]]
    deltas[slot] = torch.stack([dt, t_after], dim=1)
    return [xyzs, dirs, deltas]


# ----------------------------------------------------------------- compositing
def _dense(values: torch.Tensor | None, sample: torch.Tensor, valid: torch.Tensor) -> torch.Tensor | None:
    """Gather flat per-sample values [M, ...] into a zero-padded [N, K, ...] layout."""
    if values is None:
        return None
    out = values[sample]
    mask = valid.reshape(valid.shape + (1,) * (out.dim() - 2))
    return torch.where(mask, out, torch.zeros((), dtype=out.dtype, device=out.device))


def composite_rays_train_forward(sigmas, rgbs, deltas, rays, ambient_aud, ambient_eye, uncertainty, T_thresh):
    """Training compositor (differentiable through torch autograd).

    Returns:
        [weights_sum, ambient_aud_sum, ambient_eye_sum, uncertainty_sum, depth [N], image [N, 3]],
        indexed by rays[:, 0]; sums of absent extras are zero.
    """
    N, M = rays.shape[0], sigmas.shape[0]
    index, first, count = rays.long().unbind(1)
    ok = (index >= 0) & (index < N) & (first >= 0) & (count >= 0) & (first + count <= M)
    count = torch.where(ok, count, torch.zeros_like(count))
    K = int(count.max()) if N else 0
    k = torch.arange(K, device=sigmas.device)
    valid = k[None] < count[:, None]  # [N, K]
    sample = torch.where(valid, first[:, None] + k, torch.zeros_like(valid, dtype=torch.int64))

    sig, rgb, dl = _dense(sigmas, sample, valid), _dense(rgbs, sample, valid), _dense(deltas, sample, valid)
    aud, eye, unc = (_dense(v, sample, valid) for v in (ambient_aud, ambient_eye, uncertainty))
    alpha = 1 - torch.exp(-(sig * dl[..., 0]))  # [N, K]

    zero = torch.zeros(N, dtype=sigmas.dtype, device=sigmas.device)
    trans, running = zero + 1, torch.ones(N, dtype=torch.bool, device=sigmas.device)
    weights, used = [], []
    for j in range(K):
        take = running & valid[:, j]
        weights.append(torch.where(take, alpha[:, j] * trans, zero))
        used.append(take)
        trans = torch.where(take, trans * (1 - alpha[:, j]), trans)
        running = running & ~(take & (trans < T_thresh))
    w = torch.stack(weights, 1) if K else torch.zeros(N, 0, dtype=sigmas.dtype, device=sigmas.device)
    used = torch.stack(used, 1) if K else valid

    def plain(v):
        return zero if v is None else torch.where(used, v, torch.zeros_like(v)).sum(1)

    sums = [w.sum(1), plain(aud), plain(eye), zero if unc is None else (w * unc).sum(1),
            (w * dl[..., 1]).sum(1), (w[..., None] * rgb).sum(1)]
    target = torch.where(ok, index, torch.full_like(index, N))  # broken entries go to a dropped row
    return [torch.zeros((N + 1,) + s.shape[1:], dtype=s.dtype, device=s.device).index_copy(0, target, s)[:N]
            for s in sums]


def composite_rays(rays_alive, rays_t, sigmas, rgbs, deltas, ambient_aud, ambient_eye, uncertainty,
                   weights_sum, depth, image, ambient_aud_sum, ambient_eye_sum, uncertainty_sum, T_thresh):
    """Inference compositor: accumulate n_step slots per alive ray into the [N] outputs in place.

    A ray ends (rays_alive[n] = -1) at a slot with dt == 0, or after the sample taken while
    T = 1 - weights_sum < T_thresh; otherwise rays_t[ray] becomes its last slot's t_after.
    """
    n_alive, N = rays_alive.shape[0], weights_sum.shape[0]
    n_step = sigmas.shape[0] // n_alive if n_alive else 0
    pos = torch.nonzero((rays_alive >= 0) & (rays_alive < N)).squeeze(1)
    rid = rays_alive[pos].long()
    ws, d, img = weights_sum[rid], depth[rid], image[rid]
    extras = [(v, s, s[rid]) for v, s in ((ambient_aud, ambient_aud_sum), (ambient_eye, ambient_eye_sum))
              if v is not None]
    unc_acc = None if uncertainty is None else uncertainty_sum[rid]
    t_last = rays_t[rid]
    running = torch.ones_like(pos, dtype=torch.bool)
    for j in range(n_step):
        s = pos * n_step + j
        dt = deltas[s, 0]
        running &= dt != 0
        alpha = 1 - torch.exp(-(sigmas[s] * dt))
        trans = 1 - ws
        w = torch.where(running, alpha * trans, torch.zeros_like(alpha))
        t_last = torch.where(running, deltas[s, 1], t_last)
        ws = ws + w
        d = d + w * t_last
        img = img + w[:, None] * rgbs[s]
        if unc_acc is not None:
            unc_acc = unc_acc + w * uncertainty[s]
        extras = [(v, out, acc + torch.where(running, v[s], torch.zeros_like(acc))) for v, out, acc in extras]
        running &= ~(trans < T_thresh)
    weights_sum[rid], depth[rid], image[rid] = ws, d, img
    for _, out, acc in extras:
        out[rid] = acc
    if unc_acc is not None:
        uncertainty_sum[rid] = unc_acc
    rays_t[rid[running]] = t_last[running]
    rays_alive[pos[~running]] = -1
