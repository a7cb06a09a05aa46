"""Volume rendering for ER-NeRF: occupancy grids, ray marching, compositing, torso.

Two head samplers share one compositing rule (ERNERF_FACTS.md §3):

* ``opt.cuda_ray``: occupancy-grid marching through the ``raymarching`` package
  (CUDA, C++ CPU or torch backend), at most ``max_steps`` occupied samples per ray;
* otherwise: ``opt.num_steps`` stratified samples between the ray's AABB near/far,
  in pure torch.

Per sample ``alpha_i = 1 - exp(-sigma_i * delta_i)``, ``T_i = prod_{j<i} (1 - alpha_j)``,
``w_i = alpha_i * T_i``; a ray stops after the first sample whose transmittance falls
below ``T_thresh``. Image, depth and uncertainty are ``w``-weighted sums; the ambient
audio/eye sums are plain sums over the samples the ray used. The background (static
image, or the torso composited over it) shows through ``1 - sum(w)``.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

import raymarching

from .provider import audio_window

# Head-grid cells per network call of a refresh: 8192 points keep the MLP activations
# (8192 x 64 float32 = 2 MiB) near the CPU caches; one call for all 64³ cells went to DRAM.
GRID_BLOCK = 8192
# Refreshes that evaluate every cell before --grid_sample takes effect (instant-ngp: 16).
GRID_FULL_REFRESHES = 16


def near_far_from_aabb(rays_o: torch.Tensor, rays_d: torch.Tensor, aabb: torch.Tensor,
                       min_near: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Slab test of rays against a box.

    Args:
        rays_o, rays_d: [N, 3], any float dtype.
        aabb: (xmin, ymin, zmin, xmax, ymax, zmax) [6].
        min_near: smallest allowed near distance.
    Returns:
        nears, fars [N], float32 (float64 for float64 rays); a ray that misses the box gets
        ``far == near`` (no samples).
    """
    # At least float32: in half precision the 1e-15 guard is 0 and 1/d overflows below 2e-5.
    dtype = torch.promote_types(torch.promote_types(rays_o.dtype, rays_d.dtype), torch.float32)
    rays_o, rays_d = rays_o.to(dtype), rays_d.to(dtype)
    inv_d = 1.0 / torch.where(rays_d.abs() < 1e-15, torch.full_like(rays_d, 1e-15), rays_d)
    t0 = (aabb[:3] - rays_o) * inv_d
    t1 = (aabb[3:] - rays_o) * inv_d
    nears = torch.minimum(t0, t1).amax(dim=-1).clamp(min=min_near)
    fars = torch.maximum(t0, t1).amin(dim=-1)
    return nears, torch.maximum(fars, nears)


def euler_xyz_to_matrix(angles: torch.Tensor) -> torch.Tensor:
    """Rotation ``Rx(a) @ Ry(b) @ Rz(c)`` from angles (a, b, c) in radians [3] -> [3, 3]."""
    c, s = torch.cos(angles), torch.sin(angles)
    one, zero = torch.ones_like(angles[0]), torch.zeros_like(angles[0])
    rx = torch.stack([one, zero, zero, zero, c[0], -s[0], zero, s[0], c[0]]).view(3, 3)
    ry = torch.stack([c[1], zero, s[1], zero, one, zero, -s[1], zero, c[1]]).view(3, 3)
    rz = torch.stack([c[2], -s[2], zero, s[2], c[2], zero, zero, zero, one]).view(3, 3)
    return rx @ ry @ rz


def composite_dense(sigmas: torch.Tensor, deltas: torch.Tensor, T_thresh: float):
    """Per-sample weights along dense rays, with early termination.

    Args:
        sigmas, deltas: [N, S] densities and step lengths.
        T_thresh: a ray stops after the first sample whose transmittance drops below this.
    Returns:
        weights [N, S] and the mask of samples the ray used [N, S] (bool).
    """
    tau = sigmas * deltas
    # Transmittance before each sample, from an exclusive cumulative sum (exact gradients,
    # unlike a cumprod through alphas that may be exactly 1).
    trans = torch.exp(-(torch.cumsum(tau, dim=-1) - tau))
    used = trans >= T_thresh
    weights = (1 - torch.exp(-tau)) * trans * used
    return weights, used


class NeRFRenderer(nn.Module):
    """Occupancy-grid state and rendering of the ER-NeRF head and torso.

    Subclasses provide ``forward(x, d, enc_a, c, e)``, ``density(x, enc_a, e)``,
    ``encode_audio(a)``, ``forward_torso(x, poses, c)`` and the audio attention mode ``att``.

    Before training the trainer sets ``aud_features`` [N, A, T], ``eye_area`` [N, eye_dim]
    (or None) and ``poses`` [N, 4, 4] from the training set; ``update_extra_state``
    draws random frames from them.
    """

    def __init__(self, opt, grid_size: int | None = None):
        super().__init__()
        self.opt = opt
        self.bound = float(opt.bound)
        self.cascade = 1 + math.ceil(math.log2(self.bound))
        self.grid_size = int(grid_size if grid_size is not None else getattr(opt, "grid_size", 128))
        H = self.grid_size
        if H < 8 or H > 512 or H & (H - 1):
            raise ValueError(f"grid_size must be a power of two in [8, 512] (Morton layout), got {H}")
        self.density_scale = 1.0
        self.min_near = opt.min_near
        self.density_thresh = opt.density_thresh
        self.density_thresh_torso = opt.density_thresh_torso
        self.exp_eye = bool(opt.exp_eye)
        self.torso = bool(opt.torso)
        self.train_camera = bool(opt.train_camera)
        self.testing = False

        b = self.bound
        aabb = torch.tensor([-b, -b / 2, -b, b, b / 2, b])
        self.register_buffer("aabb_train", aabb)
        self.register_buffer("aabb_infer", aabb.clone())

        self.individual_dim = int(opt.ind_dim)
        if self.individual_dim > 0:
            self.individual_codes = nn.Parameter(torch.randn(opt.ind_num, self.individual_dim) * 0.1)
        self.individual_dim_torso = int(opt.ind_dim_torso) if self.torso else 0
        if self.individual_dim_torso > 0:
            self.individual_codes_torso = nn.Parameter(torch.randn(opt.ind_num, self.individual_dim_torso) * 0.1)
        if self.train_camera:
            self.camera_dR = nn.Parameter(torch.zeros(opt.ind_num, 3))  # Euler angles, degrees
            self.camera_dT = nn.Parameter(torch.zeros(opt.ind_num, 3))

        # Head occupancy: sigma per cell in Morton order, and its packed bitfield.
        self.register_buffer("density_grid", torch.zeros(self.cascade, H ** 3))
        self.register_buffer("density_bitfield", torch.zeros(self.cascade * H ** 3 // 8, dtype=torch.uint8))
        self.mean_density = 0.0
        self.iter_density = 0
        self.grid_block = GRID_BLOCK  # head cells per network call of a grid refresh
        if self.torso:
            # Torso occupancy: alpha per image-plane cell, stored row c1, column c0.
            self.register_buffer("density_grid_torso", torch.zeros(H ** 2))
        self.mean_density_torso = 0.0

        self.aud_features: torch.Tensor | None = None
        self.eye_area: torch.Tensor | None = None
        self.poses: torch.Tensor | None = None
        # Previous audio code for --smooth_lips (inference only); reset between videos.
        self.prev_enc_a: torch.Tensor | None = None

    # ---- helpers -----------------------------------------------------------------------

    def _codes(self, index) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Head code [1, ind_dim] and torso code [1, ind_dim_torso] (None when off) for a batch.

        Training uses the frame's own codes; evaluation always uses code 0.
        """
        idx = int(torch.as_tensor(index).reshape(-1)[0]) if self.training else 0
        code = self.individual_codes[idx:idx + 1] if self.individual_dim > 0 else None
        code_torso = self.individual_codes_torso[idx:idx + 1] if self.individual_dim_torso > 0 else None
        return code, code_torso

    def _refine_camera(self, rays_o: torch.Tensor, rays_d: torch.Tensor, index) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply the learned per-frame camera correction (``--train_camera``) to rays [N, 3]."""
        if not self.train_camera or not (self.training or self.opt.test_train):
            return rays_o, rays_d
        idx = int(torch.as_tensor(index).reshape(-1)[0])
        # Ray geometry stays float32: autocast would round the directions to fp16 (~5e-4 rad).
        with torch.autocast(rays_d.device.type, enabled=False):
            rot = euler_xyz_to_matrix(self.camera_dR[idx] / 180 * math.pi + 1e-8)
            return rays_o + self.camera_dT[idx], rays_d @ rot

    def _encode_audio_smoothed(self, auds: torch.Tensor | None) -> torch.Tensor | None:
        """``encode_audio``, blended with the previous frame's code at inference with --smooth_lips."""
        enc_a = self.encode_audio(auds)
        if self.opt.smooth_lips and not self.training and enc_a is not None:
            if self.prev_enc_a is not None:
                enc_a = 0.35 * self.prev_enc_a + 0.65 * enc_a
            self.prev_enc_a = enc_a.detach()
        return enc_a

    @staticmethod
    def _flat_bg(bg_color, n: int, ref: torch.Tensor) -> torch.Tensor:
        """Background colour as [n, 3] from None (white), a scalar, [3] or [..., n, 3]."""
        if bg_color is None:
            bg_color = 1.0
        bg = torch.as_tensor(bg_color, dtype=ref.dtype, device=ref.device)
        if bg.numel() in (1, 3):
            return bg.reshape(1, -1).expand(n, 3)
        return bg.reshape(n, 3)

    # ---- head samplers -----------------------------------------------------------------

    def _head_stratified(self, rays_o, rays_d, nears, fars, enc_a, code, eye, perturb, T_thresh):
        """Pure-torch sampler: ``opt.num_steps`` samples per ray, one per equal bin of [near, far]."""
        S = int(self.opt.num_steps)
        chunk = max(int(self.opt.max_ray_batch), 1)
        aabb = self.aabb_train if self.training else self.aabb_infer
        parts = []
        for s in range(0, rays_o.shape[0], chunk):
            o, d, near, far = rays_o[s:s + chunk], rays_d[s:s + chunk], nears[s:s + chunk], fars[s:s + chunk]
            n = o.shape[0]
            step = ((far - near) / S)[:, None].expand(n, S)  # [n, S]
            jitter = torch.rand(n, S, device=o.device) if perturb else torch.full((n, S), 0.5, device=o.device)
            ts = near[:, None] + step * (torch.arange(S, device=o.device) + jitter)  # [n, S]
            xyzs = torch.minimum(torch.maximum(o[:, None] + d[:, None] * ts[..., None], aabb[:3]), aabb[3:])
            dirs = d[:, None].expand(n, S, 3)
            sigma, rgb, amb_aud, amb_eye, unc = self(xyzs.reshape(-1, 3), dirs.reshape(-1, 3), enc_a, code, eye)
            weights, used = composite_dense(sigma.float().view(n, S), step, T_thresh)
            parts.append({
                "weights_sum": weights.sum(-1),
                "depth": (weights * (ts + step)).sum(-1),
                "image": (weights[..., None] * rgb.float().view(n, S, 3)).sum(-2),
                "ambient_aud": (amb_aud.float().view(n, S) * used).sum(-1),
                "ambient_eye": (amb_eye.float().view(n, S) * used).sum(-1),
                "uncertainty": (weights * unc.float().view(n, S)).sum(-1),
                "xyzs": xyzs.reshape(-1, 3),
                "dirs": dirs.reshape(-1, 3),
            })
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    def _head_march(self, rays_o, rays_d, nears, fars, enc_a, code, eye, dt_gamma, perturb, max_steps, T_thresh):
        """Occupancy-grid marching (``raymarching``): all samples at once with gradients, or
        without gradients a few samples per alive ray per round, dropping finished rays."""
        samples = {}

        def fn(xyzs, dirs):
            samples.update(xyzs=xyzs, dirs=dirs)  # kept for the regulariser (training: one call)
            if xyzs.shape[0] == 0:
                # Nothing occupied: shade one dummy point and keep none of it, so the outputs
                # stay attached to the graph and the trainer's backward() still works.
                outs = self(xyzs.new_zeros(1, 3), dirs.new_tensor([[0.0, 0.0, 1.0]]), enc_a, code, eye)
                sigma, rgb, amb_aud, amb_eye, unc = (v[:0] for v in outs)
            else:
                sigma, rgb, amb_aud, amb_eye, unc = self(xyzs, dirs, enc_a, code, eye)
            extras = {"ambient_aud": amb_aud.float().view(-1), "ambient_eye": amb_eye.float().view(-1),
                      "uncertainty": unc.float().view(-1)}
            return sigma.float(), rgb.float(), extras

        kw = dict(bound=self.bound, C=self.cascade, H=self.grid_size, dt_gamma=dt_gamma, max_steps=max_steps,
                  T_thresh=T_thresh, perturb=perturb)
        if torch.is_grad_enabled():
            out, _ = raymarching.render_train(rays_o, rays_d, nears, fars, self.density_bitfield, fn, **kw)
        else:
            out = raymarching.render_inference(rays_o, rays_d, nears, fars, self.density_bitfield, fn, **kw)
        return {"weights_sum": out.weights_sum, "depth": out.depth, "image": out.image,
                "ambient_aud": out.ambient_aud_sum, "ambient_eye": out.ambient_eye_sum,
                "uncertainty": out.uncertainty_sum, **samples}

    # ---- rendering ---------------------------------------------------------------------

    def run_torso(self, rays_o: torch.Tensor, bg_coords: torch.Tensor, poses: torch.Tensor, index=0,
                  bg_color=None) -> dict:
        """Composite the torso over the background.

        Args:
            rays_o: [N, 3] (device/dtype reference only).
            bg_coords: [N, 2] pixel coordinates in [-1, 1] (row, col).
            poses: [1, 4, 4] head pose.
            index: frame index (selects the torso code when training).
            bg_color: background [N, 3], [3], scalar or None (white).
        Returns:
            ``bg_color`` [N, 3] (torso over background); with the torso branch also
            ``torso_alpha`` [N, 1], ``torso_color`` [N, 3] (same composite) and ``deform`` [M, 2]
            for the M pixels inside the torso occupancy.
        """
        N = rays_o.shape[0]
        bg = self._flat_bg(bg_color, N, rays_o)
        if not self.torso:
            return {"bg_color": bg}
        _, code = self._codes(index)
        H = self.grid_size
        occupancy = F.grid_sample(self.density_grid_torso.view(1, 1, H, H), bg_coords.reshape(1, -1, 1, 2).float(),
                                  align_corners=True).view(-1)
        mask = occupancy > min(self.density_thresh_torso, self.mean_density_torso)
        rows = mask.nonzero()[:, 0]
        torso_alpha, torso_rgb = rays_o.new_zeros(N, 1), rays_o.new_zeros(N, 3)
        deform = rays_o.new_zeros(0, 2)
        if rows.numel() > 0:
            alpha, color, deform = self.forward_torso(bg_coords.reshape(-1, 2)[rows].float(), poses.float(), code)
            torso_alpha = torso_alpha.index_put((rows,), alpha.float())
            torso_rgb = torso_rgb.index_put((rows,), color.float())
        composite = torso_rgb * torso_alpha + bg * (1 - torso_alpha)
        return {"bg_color": composite, "torso_alpha": torso_alpha, "torso_color": composite, "deform": deform}

    def render(self, rays_o: torch.Tensor, rays_d: torch.Tensor, auds: torch.Tensor | None,
               bg_coords: torch.Tensor, poses: torch.Tensor, eye: torch.Tensor | None = None, index=0,
               dt_gamma: float = 0.0, bg_color=None, perturb: bool = False, force_all_rays: bool = False,
               max_steps: int = 16, T_thresh: float = 1e-4, mouth: torch.Tensor | None = None) -> dict:
        """Render the rays of one frame: head over (torso over background).

        Args:
            rays_o, rays_d: ray origins and unit directions [B, N, 3] (B = 1 frame).
            auds: audio window [8, A, T] (att 1/2) or [1, A, T].
            bg_coords: [B, N, 2] pixel coordinates in [-1, 1] (torso branch).
            poses: [1, 4, 4] head pose (torso branch).
            eye: eye input [1, eye_dim] (exp_eye; blink, then the --exp_upper values).
            index: frame index (codes, camera refinement) when training.
            dt_gamma: marching step growth (``cuda_ray``).
            bg_color: background, [B, N, 3], [3], scalar or None (white).
            perturb: jitter sample positions (training).
            force_all_rays: accepted for reference compatibility; the deterministic
                marcher never drops rays.
            max_steps: samples per ray of the marcher.
            T_thresh: early-termination transmittance.
            mouth: measured mouth-shape coefficients [1, K] that replace the first K channels
                of the audio code (training with ``--mouth_teacher``); None keeps the audio's.
        Returns:
            ``image`` [B, N, 3] in [0, 1], ``depth`` [B, N] (normalised to [0, 1] between
            near and far), ``weights_sum``, ``ambient_aud``, ``ambient_eye``, ``uncertainty``
            [B, N]; with the torso branch ``torso_alpha`` [B, N, 1], ``torso_color`` [B, N, 3];
            when training with gradients ``rays`` = (xyzs [M, 3], dirs [M, 3], enc_a [1, 32],
            ind_code [1, ind_dim] or None, eye) for the smoothness regulariser.
        """
        prefix = rays_o.shape[:-1]
        rays_o, rays_d = rays_o.reshape(-1, 3).float(), rays_d.reshape(-1, 3).float()
        rays_o, rays_d = self._refine_camera(rays_o, rays_d, index)
        aabb = self.aabb_train if self.training else self.aabb_infer
        nears, fars = near_far_from_aabb(rays_o, rays_d, aabb, self.min_near)
        enc_a = self._encode_audio_smoothed(auds)
        if mouth is not None:
            k = mouth.shape[-1]
            enc_a = torch.cat([mouth.reshape(1, k).to(enc_a), enc_a[:, k:]], dim=1)
        code, _ = self._codes(index)
        eye = eye.reshape(1, -1).float() if (self.exp_eye and eye is not None) else None
        if self.exp_eye and eye is None:
            raise ValueError("the model was built with --exp_eye (-O): render() needs eye [1, eye_dim]")

        if self.opt.cuda_ray:
            head = self._head_march(rays_o, rays_d, nears, fars, enc_a, code, eye, dt_gamma, perturb, max_steps,
                                    T_thresh)
        else:
            head = self._head_stratified(rays_o, rays_d, nears, fars, enc_a, code, eye, perturb, T_thresh)

        torso = self.run_torso(rays_o, bg_coords, poses, index, bg_color)
        image = (head["image"] + (1 - head["weights_sum"])[:, None] * torso["bg_color"]).clamp(0, 1)
        hit = fars > nears
        depth = torch.where(hit, (head["depth"] - nears).clamp(min=0) / torch.where(hit, fars - nears, 1.0), 0.0)

        results = {"image": image.view(*prefix, 3), "depth": depth.view(prefix)}
        for key in ("weights_sum", "ambient_aud", "ambient_eye", "uncertainty"):
            results[key] = head[key].view(prefix)
        if self.torso:
            results["torso_alpha"] = torso["torso_alpha"].view(*prefix, 1)
            results["torso_color"] = torso["torso_color"].view(*prefix, 3)
        if self.training and torch.is_grad_enabled():
            results["rays"] = (head["xyzs"], head["dirs"], enc_a, code, eye)
        return results

    def render_torso(self, rays_o: torch.Tensor, rays_d: torch.Tensor, auds: torch.Tensor | None,
                     bg_coords: torch.Tensor, poses: torch.Tensor, eye: torch.Tensor | None = None, index=0,
                     bg_color=None, **unused) -> dict:
        """Torso-only render used for torso training (the head is not rendered).

        Args as ``render``; ``rays_d``, ``auds``, ``eye`` and the marching keywords are
        accepted so both calls share one argument list.
        Returns:
            ``torso_alpha`` [B, N, 1], ``torso_color`` [B, N, 3] (torso over ``bg_color``),
            ``image`` (= torso_color), ``deform`` [M, 2].
        """
        if not self.torso:
            raise ValueError("render_torso needs a model built with --torso")
        prefix = rays_o.shape[:-1]
        out = self.run_torso(rays_o.reshape(-1, 3).float(), bg_coords, poses, index, bg_color)
        color = out["torso_color"].view(*prefix, 3)
        return {"torso_alpha": out["torso_alpha"].view(*prefix, 1), "torso_color": color, "image": color,
                "deform": out["deform"]}

    # ---- occupancy grids ---------------------------------------------------------------

    def _cell_centres(self, indices: torch.Tensor, cas: int) -> tuple[torch.Tensor, float]:
        """World positions [M, 3] of Morton-indexed cells of cascade ``cas``, and half a cell."""
        H = self.grid_size
        bound_c = min(2 ** cas, self.bound)
        half = bound_c / H
        coords = raymarching.morton3D_invert(indices.int()).float()  # [M, 3]
        return (2 * coords / (H - 1) - 1) * (bound_c - half), half

    @torch.no_grad()
    def mark_untrained_grid(self, poses: torch.Tensor, intrinsics: torch.Tensor, S: int = 64) -> None:
        """Set cells that no training camera sees to -1, so they stay empty for good.

        A cell centre p counts as seen by a camera when, in camera space (p - t) @ R,
        z > 0, |x| < (cx/fx) z + 2h and |y| < (cy/fy) z + 2h (h: half a cell). Along one
        grid column (fixed x, y cell index) these are linear in the z index, so each
        camera sees one interval of every column; the intervals are counted with a
        difference array, which costs O(cameras * H²) instead of O(cameras * H³).

        Args:
            poses: training camera-to-world matrices [N, 4, 4].
            intrinsics: (fx, fy, cx, cy) [4].
            S: cameras per chunk (memory vs. speed).
        """
        fx, fy, cx, cy = [float(v) for v in intrinsics]
        device = self.density_grid.device
        poses = poses.to(device).float()
        H = self.grid_size
        cells = torch.arange(H, device=device, dtype=torch.float32)
        morton_xyz = raymarching.morton3D_invert(torch.arange(H ** 3, device=device, dtype=torch.int32)).long()
        for cas in range(self.cascade):
            bound_c = min(2 ** cas, self.bound)
            half = bound_c / H
            scale, origin = 2 * (bound_c - half) / (H - 1), -(bound_c - half)  # p = scale * index + origin
            diff = torch.zeros(H * H * (H + 1), device=device, dtype=torch.int64)
            for c in range(0, poses.shape[0], S):
                rot, trans = poses[c:c + S, :3, :3], poses[c:c + S, :3, 3]  # [n, 3, 3], [n, 3]
                base = torch.einsum("nk,nkm->nm", origin - trans, rot)  # camera coords of cell (0, 0, 0)
                step = scale * rot  # [n, 3 (grid axis), 3 (camera axis)]
                # Camera coords along column (i, j): A + B * k, A/B [n, H, H, 3].
                A = base[:, None, None] + cells[:, None, None] * step[:, None, None, 0] \
                    + cells[None, :, None] * step[:, None, None, 1]
                B = step[:, 2][:, None, None].expand_as(A)
                # Each visibility condition reads alpha + beta * k > 0.
                reach_x, reach_y = cx / fx * A[..., 2] + 2 * half, cy / fy * A[..., 2] + 2 * half
                alpha = torch.stack([A[..., 2], reach_x - A[..., 0], reach_x + A[..., 0],
                                     reach_y - A[..., 1], reach_y + A[..., 1]])  # [5, n, H, H]
                slope_x, slope_y = cx / fx * B[..., 2], cy / fy * B[..., 2]
                beta = torch.stack([B[..., 2], slope_x - B[..., 0], slope_x + B[..., 0],
                                    slope_y - B[..., 1], slope_y + B[..., 1]])
                root = (-alpha / torch.where(beta == 0, torch.ones_like(beta), beta)).clamp(-2, H + 1)
                lo = torch.where(beta > 0, torch.floor(root) + 1, torch.zeros_like(root)).amax(dim=0)
                hi = torch.where(beta < 0, torch.ceil(root) - 1, torch.full_like(root, H - 1.0)).amin(dim=0)
                never = ((beta == 0) & (alpha <= 0)).any(dim=0)
                lo, hi = lo.clamp(0, H).long(), hi.clamp(-1, H - 1).long()  # [n, H, H]
                ok = (lo <= hi) & ~never
                column = torch.arange(H * H, device=device).view(1, H, H) * (H + 1)
                diff.scatter_add_(0, (column + lo)[ok], torch.ones_like(lo[ok]))
                diff.scatter_add_(0, (column + hi + 1)[ok], -torch.ones_like(hi[ok]))
            seen = diff.view(H, H, H + 1).cumsum(dim=-1)[..., :H] > 0  # [x, y, z]
            unseen = ~seen[morton_xyz[:, 0], morton_xyz[:, 1], morton_xyz[:, 2]]
            self.density_grid[cas, unseen] = -1

    @torch.no_grad()
    def update_extra_state(self, decay: float = 0.95, block: int | None = None) -> None:
        """Refresh the occupancy grids from the current network (every few training steps).

        Head (``cuda_ray``, not torso mode): sigma at a jittered point of every cell, for a
        random training frame's audio/eye; 6-neighbour dilation; decayed running max;
        bitfield thresholded at ``min(mean_density, density_thresh)``. With ``opt.grid_sample``
        f < 1, after the first ``GRID_FULL_REFRESHES`` refreshes only about f * grid_size³ cells
        per cascade are evaluated (see ``_refresh_cells``); the others keep their value
        undecayed unless the dilation reaches them. Torso: alpha on the image-plane grid for a
        random pose, 5x5 max-pool dilation, decayed running max. On the CPU a full head update
        costs one density evaluation of grid_size³ points.

        Args:
            decay: running-max decay of old grid values.
            block: head cells evaluated per network call (memory vs. speed; the result does
                not depend on it); None uses ``self.grid_block`` (``GRID_BLOCK``).
        """
        with torch.profiler.record_function("density_grid_refresh"):
            if self.torso:
                self._update_torso_grid(decay)
            elif self.opt.cuda_ray:
                self._update_head_grid(decay, self.grid_block if block is None else block)

    def _refresh_cells(self, cas: int) -> torch.Tensor:
        """Morton indices (sorted, unique, int64) of the head-grid cells of cascade ``cas`` that
        this refresh evaluates.

        Every cell while ``opt.grid_sample`` >= 1 or during the first ``GRID_FULL_REFRESHES``
        refreshes; afterwards ``f * grid_size³ / 2`` cells drawn uniformly among the cells some
        training camera sees plus as many among the occupied ones (above the marching
        threshold), duplicates removed, as instant-ngp does after its warm-up.
        """
        H3 = self.grid_size ** 3
        device = self.density_grid.device
        frac = float(getattr(self.opt, "grid_sample", 1.0))
        if frac >= 1 or self.iter_density < GRID_FULL_REFRESHES:
            return torch.arange(H3, device=device)
        half = max(1, round(frac * H3 / 2))
        grid = self.density_grid[cas]
        picks = []
        for pool in (grid >= 0, grid > min(self.mean_density, self.density_thresh)):
            cells = pool.nonzero()[:, 0]
            if cells.numel() > 0:
                picks.append(cells[torch.randint(cells.numel(), (half,), device=device)])
        if not picks:
            return torch.arange(H3, device=device)
        return torch.unique(torch.cat(picks))

    def _update_head_grid(self, decay: float, block: int) -> None:
        if self.aud_features is None:
            raise ValueError("update_extra_state needs model.aud_features (set it from the training set)")
        device = self.density_grid.device
        r = int(torch.randint(self.aud_features.shape[0], (1,)))
        enc_a = self.encode_audio(audio_window(self.aud_features, self.att, r).to(device))
        eye = None
        if self.exp_eye:
            if self.eye_area is None:
                raise ValueError("update_extra_state needs model.eye_area with --exp_eye")
            eye = self.eye_area[r % self.eye_area.shape[0]].reshape(1, -1).to(device).float()
        # Cells left out of a partial refresh stay -1 here, so the update below keeps them.
        fresh = torch.full_like(self.density_grid, -1.0)
        for cas in range(self.cascade):
            cells = self._refresh_cells(cas)
            pts, half = self._cell_centres(cells, cas)
            # One draw for all cells, so the jitter does not depend on the block size.
            pts = pts + (torch.rand_like(pts) * 2 - 1) * half
            for start in range(0, cells.numel(), block):
                fresh[cas, cells[start:start + block]] = \
                    self.density(pts[start:start + block], enc_a, eye)["sigma"].float() * self.density_scale
        fresh = raymarching.morton3D_dilation(fresh)
        valid = (self.density_grid >= 0) & (fresh >= 0)
        self.density_grid.copy_(torch.where(valid, torch.maximum(self.density_grid * decay, fresh), self.density_grid))
        self.mean_density = float(self.density_grid.clamp(min=0).mean())
        self.iter_density += 1
        self.density_bitfield.copy_(
            raymarching.packbits(self.density_grid, min(self.mean_density, self.density_thresh)))

    def _update_torso_grid(self, decay: float) -> None:
        if self.poses is None:
            raise ValueError("update_extra_state needs model.poses (set it from the training set)")
        H = self.grid_size
        device = self.density_grid_torso.device
        r = int(torch.randint(self.poses.shape[0], (1,)))
        pose = self.poses[r:r + 1].to(device).float()
        code = self.individual_codes_torso[r:r + 1] if self.individual_dim_torso > 0 else None
        cells = torch.arange(H, device=device, dtype=torch.float32)
        c1, c0 = torch.meshgrid(cells, cells, indexing="ij")  # row-major: flat index c1 * H + c0
        xy = torch.stack([c0.reshape(-1), c1.reshape(-1)], dim=-1)
        xy = (2 * xy / (H - 1) - 1) * (1 - 1 / H) + (torch.rand_like(xy) * 2 - 1) / H
        alpha = self.forward_torso(xy, pose, code)[0].float().view(1, 1, H, H)
        alpha = F.max_pool2d(alpha, kernel_size=5, stride=1, padding=2).view(-1)
        self.density_grid_torso.copy_(torch.maximum(self.density_grid_torso * decay, alpha))
        self.mean_density_torso = float(self.density_grid_torso.mean())
