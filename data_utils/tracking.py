"""Head tracking: one rigid 3D face, a pose per frame and one focal length, from 2D landmarks.

The reference fits the BFM 3DMM (identity + expression) to the 68 landmarks. Offline we have no
BFM, so we fit a rigid face: the metric mean face of `face_template` plus a small per-subject
correction shared by all frames, to the landmarks that move with the skull (nose, eyes; brows
barely; not jaw or lips). Conventions are the reference's, so `transforms.py` can build the
cameras exactly as its task 9 does:

- a face point ``s`` (model frame: x image-right, y up, z to the camera; decimetres) is seen at
  ``X = R s + trans`` with ``R = euler_to_rot(euler) = Rx(θ)·Ry(φ)·Rz(−ψ)``, camera at the
  origin looking down −z (``trans_z < 0``);
- it projects to ``u = −f·X/Z + cx``, ``v = f·Y/Z + cy`` (pixels, x = column, y = row).

Fitting, all batched over frames in float64 torch on the CPU:
1. Pose initialisation: frontal rotation, translation from the landmark centroid and the eye
   distance, then a per-frame Levenberg-Marquardt on the 6 pose parameters. Starting frontal
   keeps every frame in the face-towards-camera basin (no 180° flips); frames that still end
   up facing away or fitting badly are re-initialised from their nearest good neighbour.
2. Joint Levenberg-Marquardt of all poses and the shape correction (bundle adjustment with a
   Schur complement on the shape), with a shape prior: stay near the template, which fixes
   the metric scale and so the camera distance.
3. L-BFGS on the same objective plus a temporal prior on the second differences of the face
   points in camera space (skipped for unordered frames).
4. Focal: with a free shape the focal is not observable; against the anchored shape it is,
   through perspective, but weakly. `search_focal` fits steps 1-2 on a subset of frames for
   focal lengths spread over 0.8-4 × image width and logs the cost curve; its minimum is used
   only if it lies inside the range and beats the default focal (AD-NeRF's Obama track:
   1100 px at 450 px width, ≈ 2.4 × width) by at least 2 % of the cost. Otherwise the data
   cannot tell, and the default is used. Real talking-head clips are usually of that kind.
"""
from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch

from data_utils.atomic import atomic_path
from data_utils.face_template import STABLE_IDS, face68_template, stable_weights

DEFAULT_FOCAL_PER_WIDTH = 1100.0 / 450.0
FOCAL_RANGE_PER_WIDTH = (0.8, 4.0)
FOCAL_CANDIDATES = 15
# Minimal relative cost gain over the default focal for a searched focal to be trusted.
FOCAL_MIN_GAIN = 0.02
FOCAL_SEARCH_FRAMES = 100

# Shape prior: per-subject deviation from the mean face, std in decimetres (two subjects'
# mean faces differ by ~4 mm rms); it costs like this many px² of mean reprojection error.
SHAPE_SIGMA_DM = 0.04
SHAPE_PRIOR_PX2 = 1.0
# Weight of the temporal prior: second differences of the camera-space face points, in pixels.
SMOOTH_WEIGHT = 1.0

# A frame whose face normal is tilted more than ~75° away from the camera is a failed fit.
_MIN_FACING = 0.25
_BAD_RMSE_FACTOR = 4.0
# Finite-difference step of the pose Jacobian (radians / decimetres).
_FD_STEP = 1e-6


def _one_thread(fn):
    """Run ``fn`` with one torch thread: its tensors are small, and on a busy machine the
    thread synchronisation of every op costs more than it saves (measured 4× slower with 2)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(before)

    return wrapper


def euler_to_rot(euler: torch.Tensor) -> torch.Tensor:
    """Reference rotation ``Rx(θ)·Ry(φ)·Rz(−ψ)`` (standard right-handed factors).

    Args:
        euler: ``[N, 3]`` (θ, φ, ψ) in radians.

    Returns:
        ``[N, 3, 3]`` rotation matrices.
    """
    (ct, cp, cs), (st, sp, ss) = torch.cos(euler).unbind(-1), torch.sin(euler).unbind(-1)
    # the product written out: one stack instead of three matrix products
    rows = [
        cp * cs, cp * ss, sp,
        -ct * ss + st * sp * cs, ct * cs + st * sp * ss, -st * cp,
        -st * ss - ct * sp * cs, st * cs - ct * sp * ss, ct * cp,
    ]
    return torch.stack(rows, dim=-1).reshape(*euler.shape[:-1], 3, 3)


def rot_to_euler(rot: torch.Tensor) -> torch.Tensor:
    """Inverse of `euler_to_rot` for ``|φ| < 90°``: ``[N, 3, 3]`` -> ``[N, 3]`` radians."""
    theta = torch.atan2(-rot[:, 1, 2], rot[:, 2, 2])
    phi = torch.asin(rot[:, 0, 2].clamp(-1.0, 1.0))
    psi = torch.atan2(rot[:, 0, 1], rot[:, 0, 0])
    return torch.stack([theta, phi, psi], dim=-1)


def to_camera(shape: torch.Tensor, euler: torch.Tensor, trans: torch.Tensor) -> torch.Tensor:
    """Face points in camera space ``R s + t``: shape ``[P, 3]``, euler/trans ``[N, 3]`` -> ``[N, P, 3]``."""
    return torch.einsum("nij,pj->npi", euler_to_rot(euler), shape) + trans[:, None, :]


def project(cam: torch.Tensor, focal: float, cx: float, cy: float) -> torch.Tensor:
    """Reference pinhole projection of camera-space points ``[..., 3]`` -> pixels ``[..., 2]``."""
    z = cam[..., 2]
    return torch.stack([-focal * cam[..., 0] / z + cx, focal * cam[..., 1] / z + cy], dim=-1)


def load_landmarks(ori_dir: str | Path) -> tuple[np.ndarray, tuple[int, int]]:
    """Read ``ori_dir/<k>.lms`` for every frame ``<k>.jpg`` (k = 0..N-1).

    Returns:
        landmarks ``[N, 68, 2]`` float64 (x = column, y = row, pixels) and the frame size (H, W).
    """
    from data_utils.landmarks import list_frames

    frames = list_frames(ori_dir)
    ids = [int(p.stem) for p in frames]
    if ids != list(range(len(frames))):
        raise ValueError(f"{ori_dir}: frames must be numbered 0..{len(frames) - 1} without gaps; "
                         "re-extract frames (process.py --task 3 --force)")
    first = cv2.imread(str(frames[0]), cv2.IMREAD_UNCHANGED)
    if first is None:
        raise ValueError(f"cannot read {frames[0]}; re-extract frames (process.py --task 3 --force)")
    lms = []
    for p in frames:
        path = p.with_suffix(".lms")
        if not path.exists():
            raise FileNotFoundError(f"landmarks {path} missing; run the landmark step (process.py --task 4)")
        try:
            pts = np.loadtxt(path, dtype=np.float64)
        except ValueError:
            pts = np.empty(0)
        if pts.shape != (68, 2) or not np.isfinite(pts).all():
            raise ValueError(f"{path} must hold 68 finite 'x y' rows, got shape {pts.shape}; "
                             "re-run the landmark step (process.py --task 4 --force)")
        lms.append(pts)
    return np.stack(lms), first.shape[:2]


@dataclass
class RigidFit:
    """Result of `fit_rigid` (all tensors float64).

    Attributes:
        euler: ``[N, 3]`` radians. trans: ``[N, 3]`` decimetres. shape: ``[68, 3]`` decimetres
        (template plus the fitted correction on the stable points). cost: total objective
        (mean px² + priors). rmse_px: reprojection RMSE over the stable points.
        frame_rmse_px: ``[N]`` per-frame RMSE. focal: pixels. n_repaired: frames re-initialised
        by the outlier check.
    """

    euler: torch.Tensor
    trans: torch.Tensor
    shape: torch.Tensor
    cost: float
    rmse_px: float
    frame_rmse_px: torch.Tensor
    focal: float
    n_repaired: int


class _Problem:
    """Landmarks, camera and priors of one fit.

    Poses are ``[N, 6]`` rows (euler θ φ ψ in radians, trans in decimetres); ``shape_p`` is
    ``[P, 3]``, the face at the P stable points. Costs are in px²: the weighted mean squared
    reprojection error per frame, plus the shape prior and the temporal prior.
    """

    def __init__(self, lms, template, weights, focal, cx, cy, smooth, shape_sigma):
        self.ids = torch.as_tensor(STABLE_IDS)
        w = torch.as_tensor(weights, dtype=torch.float64)[self.ids]
        self.w = w / w.sum()  # [P]
        self.lms = torch.as_tensor(lms, dtype=torch.float64)[:, self.ids]  # [N, P, 2]
        self.template = torch.as_tensor(template, dtype=torch.float64)  # [68, 3]
        self.base = self.template[self.ids]  # [P, 3]
        self.focal, self.cx, self.cy = float(focal), float(cx), float(cy)
        self.smooth = smooth
        # prior weight per point so that prior = Σ_p c_p |δ_p|² (px² per frame)
        self.c_prior = SHAPE_PRIOR_PX2 * self.w / shape_sigma ** 2  # [P]

    def subset(self, frames: torch.Tensor) -> "_Problem":
        sub = _Problem.__new__(_Problem)
        sub.__dict__.update(self.__dict__)
        sub.lms = self.lms[frames]
        return sub

    def init_poses(self) -> torch.Tensor:
        """Frontal poses ``[N, 6]`` whose projection matches the landmark centroid and eye distance."""
        pos = {i: k for k, i in enumerate(STABLE_IDS)}
        eyes_2d = [self.lms[:, [pos[a], pos[b]]].mean(1) for a, b in ((36, 39), (42, 45))]
        eyes_3d = [self.base[[pos[a], pos[b]]].mean(0) for a, b in ((36, 39), (42, 45))]
        d2 = (eyes_2d[1] - eyes_2d[0]).norm(dim=-1).clamp_min(1.0)  # [N]
        tz = -self.focal * (eyes_3d[1] - eyes_3d[0]).norm() / d2
        c3 = (self.w[:, None] * self.base).sum(0)
        c2 = (self.w[None, :, None] * self.lms).sum(1)  # [N, 2]
        zc = c3[2] + tz
        tx = -(c2[:, 0] - self.cx) * zc / self.focal - c3[0]
        ty = (c2[:, 1] - self.cy) * zc / self.focal - c3[1]
        return torch.cat([torch.zeros(len(tz), 3, dtype=torch.float64), torch.stack([tx, ty, tz], -1)], -1)

    def residuals(self, shape_p, pose) -> torch.Tensor:
        """Reprojection residuals × sqrt(weight): ``[N, P, 2]`` px."""
        uv = project(to_camera(shape_p, pose[:, :3], pose[:, 3:]), self.focal, self.cx, self.cy)
        return (uv - self.lms) * self.w.sqrt()[None, :, None]

    def px_per_dm(self, pose) -> float:
        return self.focal / float(pose[:, 5].detach().abs().mean())

    def cost(self, shape_p, pose) -> torch.Tensor:
        """Total objective (px²): data + shape prior (+ temporal prior when ``smooth`` > 0)."""
        data = self.residuals(shape_p, pose).pow(2).sum((1, 2)).mean()
        total = data + (self.c_prior[:, None] * (shape_p - self.base).pow(2)).sum()
        if self.smooth > 0 and pose.shape[0] >= 3:
            cam = to_camera(shape_p, pose[:, :3], pose[:, 3:])
            acc = (cam[2:] - 2 * cam[1:-1] + cam[:-2]) * self.px_per_dm(pose)
            total = total + self.smooth * (self.w[None, :, None] * acc.pow(2)).sum((1, 2)).mean()
        return total

    def frame_rmse(self, shape_p, pose) -> torch.Tensor:
        """Unweighted reprojection RMSE over the stable points per frame: ``[N]`` px."""
        uv = project(to_camera(shape_p, pose[:, :3], pose[:, 3:]), self.focal, self.cx, self.cy)
        return (uv - self.lms).pow(2).sum(-1).mean(-1).sqrt()


def _pose_lm(problem: _Problem, shape_p, pose, iters: int = 30, rtol: float = 1e-9) -> torch.Tensor:
    """Per-frame Levenberg-Marquardt on the poses ``[N, 6]`` (shape fixed), batched over frames."""
    eye = torch.eye(6, dtype=torch.float64)

    def res_fn(p):  # [N, 6] -> [N, 2P]
        return problem.residuals(shape_p, p).flatten(1)

    mu = torch.full((pose.shape[0], 1, 1), 1e-3, dtype=torch.float64)
    res = res_fn(pose)
    cost = res.pow(2).sum(-1)
    for _ in range(iters):
        # Frames are independent, so one central difference per pose parameter gives every
        # frame's Jacobian column at once (float64: plenty accurate for Gauss-Newton steps).
        jac = torch.stack([(res_fn(pose + h) - res_fn(pose - h)) / (2 * _FD_STEP)
                           for h in _FD_STEP * eye], dim=-1)  # [N, 2P, 6]
        jtj = jac.transpose(1, 2) @ jac
        grad = (jac.transpose(1, 2) @ res[..., None])[..., 0]  # [N, 6]
        damp = mu * (torch.diagonal(jtj, dim1=1, dim2=2)[:, :, None] * eye + 1e-9 * eye)
        step = torch.linalg.solve(jtj + damp, -grad[..., None])[..., 0]
        # stop once no frame expects a relative gain above rtol from its next step
        if bool((-(step * grad).sum(-1) <= rtol * cost + 1e-15).all()):
            break
        cand = pose + step
        cand_res = res_fn(cand)
        cand_cost = cand_res.pow(2).sum(-1)
        better = (cand_cost < cost) & (cand[:, 5] < 0)
        pose = torch.where(better[:, None], cand, pose)
        res = torch.where(better[:, None], cand_res, res)
        cost = torch.where(better, cand_cost, cost)
        mu = torch.where(better[:, None, None], mu * 0.3, mu * 10.0).clamp(1e-9, 1e9)
    return pose


def _joint_lm(problem: _Problem, shape_p, pose, iters: int = 30, rtol: float = 1e-9):
    """Levenberg-Marquardt on all poses and the shape jointly (no temporal prior).

    Bundle-adjustment structure: the normal equations are block diagonal in the poses, so the
    shape step is solved on the Schur complement (3P × 3P) and the pose steps back-substituted.
    Returns (shape_p ``[P, 3]``, pose ``[N, 6]``).
    """
    n, npts = pose.shape[0], shape_p.shape[0]
    eye6, eye3 = torch.eye(6, dtype=torch.float64), torch.eye(3, dtype=torch.float64)
    c = n * problem.c_prior  # prior weights in the summed (not per-frame mean) objective

    def energy(s, p):
        return problem.residuals(s, p).pow(2).sum() + (c[:, None] * (s - problem.base).pow(2)).sum()

    mu = 1e-3
    e_cur = energy(shape_p, pose)
    for _ in range(iters):
        r = problem.residuals(shape_p, pose)  # [N, P, 2]
        jp = torch.stack([(problem.residuals(shape_p, pose + h) - problem.residuals(shape_p, pose - h))
                          / (2 * _FD_STEP) for h in _FD_STEP * eye6], dim=-1)  # [N, P, 2, 6]
        # residual p only depends on point p, so moving all points at once gives every column
        js = torch.stack([(problem.residuals(shape_p + h, pose) - problem.residuals(shape_p - h, pose))
                          / (2 * _FD_STEP) for h in _FD_STEP * eye3], dim=-1)  # [N, P, 2, 3]
        u = torch.einsum("npik,npil->nkl", jp, jp)
        g = torch.einsum("npik,npi->nk", jp, r)
        v = torch.einsum("npij,npil->pjl", js, js) + c[:, None, None] * eye3
        hs = torch.einsum("npij,npi->pj", js, r) + c[:, None] * (shape_p - problem.base)
        w = torch.einsum("npik,npij->nkpj", jp, js).reshape(n, 6, 3 * npts)
        while True:
            u_d = u + mu * torch.diagonal(u, dim1=1, dim2=2)[:, :, None] * eye6 + 1e-12 * eye6
            v_d = v + mu * torch.diagonal(v, dim1=1, dim2=2)[:, :, None] * eye3
            u_inv = torch.linalg.inv(u_d)  # [N, 6, 6]
            uw = u_inv @ w  # [N, 6, 3P]
            schur = torch.block_diag(*v_d) - torch.einsum("nka,nkb->ab", w, uw)
            rhs = hs.reshape(-1) - torch.einsum("nka,nk->a", uw, g)
            ds = -torch.linalg.solve(schur, rhs)  # [3P]
            dp = -(u_inv @ (g + w @ ds)[..., None])[..., 0]  # [N, 6]
            cand_s, cand_p = shape_p + ds.reshape(npts, 3), pose + dp
            e_cand = energy(cand_s, cand_p)
            if e_cand < e_cur and bool((cand_p[:, 5] < 0).all()):
                converged = float(e_cur - e_cand) <= rtol * float(e_cur)
                shape_p, pose, e_cur, mu = cand_s, cand_p, e_cand, max(mu * 0.3, 1e-9)
                break
            mu *= 10.0
            if mu > 1e9:
                return shape_p, pose
        if converged:
            break
    return shape_p, pose


def _smooth_refine(problem: _Problem, shape_p, pose, iters: int):
    """L-BFGS on the full objective including the temporal prior. Returns (shape_p, pose)."""
    # Variables scaled so one unit moves the landmarks by about one pixel.
    k = problem.px_per_dm(pose)
    z_mean = float(pose[:, 5].abs().mean())
    pose_scale = torch.tensor([2.0 / k] * 3 + [1.0 / k, 1.0 / k, 2.0 * z_mean / k], dtype=torch.float64)
    s0, p0 = shape_p.clone(), pose.clone()
    v_s = torch.zeros_like(shape_p, requires_grad=True)
    v_p = torch.zeros_like(pose, requires_grad=True)
    opt = torch.optim.LBFGS([v_s, v_p], lr=1.0, max_iter=iters, history_size=20,
                            tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        cost = problem.cost(s0 + v_s / k, p0 + pose_scale * v_p)
        cost.backward()
        return cost

    opt.step(closure)
    with torch.no_grad():
        return s0 + v_s / k, p0 + pose_scale * v_p


def _repair_outliers(problem: _Problem, shape_p, pose) -> tuple[torch.Tensor, int]:
    """Re-fit frames that face away from the camera or fit far worse than the rest."""
    rmse = problem.frame_rmse(shape_p, pose)
    facing = euler_to_rot(pose[:, :3])[:, 2, 2]
    bad = (facing < _MIN_FACING) | (rmse > _BAD_RMSE_FACTOR * rmse.median().clamp_min(0.5))
    good = torch.nonzero(~bad)[:, 0]
    if not bad.any() or len(good) == 0:
        return pose, int(bad.sum())
    bad_ids = torch.nonzero(bad)[:, 0]
    nearest = good[(bad_ids[:, None] - good[None, :]).abs().argmin(dim=1)]
    sub = problem.subset(bad_ids)
    fixed = _pose_lm(sub, shape_p, pose[nearest])
    keep = sub.frame_rmse(shape_p, fixed) < rmse[bad_ids]
    pose = pose.clone()
    pose[bad_ids[keep]] = fixed[keep]
    return pose, int(bad.sum())


@_one_thread
def fit_rigid(lms: np.ndarray, focal: float, cx: float, cy: float, template: np.ndarray,
              weights: np.ndarray | None = None, smooth: float = SMOOTH_WEIGHT,
              shape_sigma: float = SHAPE_SIGMA_DM, init: RigidFit | None = None,
              iters: int = 100) -> RigidFit:
    """Fit one rigid face and per-frame poses to landmarks for a fixed focal.

    Args:
        lms: ``[N, 68, 2]`` landmarks (x = column, y = row, pixels).
        focal, cx, cy: pinhole camera, pixels.
        template: ``[68, 3]`` mean face, decimetres, model frame.
        weights: ``[68]`` per-point weights (default `face_template.stable_weights`).
        smooth: weight of the temporal prior (0 for unordered frames).
        shape_sigma: std of the shape correction, decimetres.
        init: fit of the same frames at another focal to start from (depth rescaled).
        iters: L-BFGS iterations of the temporal refinement (skipped when ``smooth`` is 0).
    """
    lms = np.asarray(lms, dtype=np.float64)
    if lms.ndim != 3 or lms.shape[1:] != (68, 2) or len(lms) == 0 or not np.isfinite(lms).all():
        raise ValueError(f"landmarks must be finite [N, 68, 2] pixels, got shape {lms.shape}")
    if not focal > 0:
        raise ValueError(f"focal must be a positive number of pixels, got {focal}")
    problem = _Problem(lms, template, stable_weights() if weights is None else weights,
                       focal, cx, cy, smooth, shape_sigma)
    if init is None:
        shape_p, pose = problem.base.clone(), problem.init_poses()
    else:
        shape_p, pose = init.shape[problem.ids].clone(), torch.cat([init.euler, init.trans], -1)
        # Keep the face's image size: its depth scales with the focal.
        ratio = focal / init.focal
        z_face = pose[:, 5] + (euler_to_rot(pose[:, :3]) @ shape_p.mean(0))[:, 2]
        pose[:, 5] = z_face * ratio - (z_face - pose[:, 5])
        pose[:, 3:5] = pose[:, 3:5] * ratio
    pose = _pose_lm(problem, shape_p, pose)
    pose, n_repaired = _repair_outliers(problem, shape_p, pose)
    shape_p, pose = _joint_lm(problem, shape_p, pose)
    if smooth > 0 and len(pose) >= 3:
        shape_p, pose = _smooth_refine(problem, shape_p, pose, iters)
    with torch.no_grad():
        cost = float(problem.cost(shape_p, pose))
        frame_rmse = problem.frame_rmse(shape_p, pose)
        shape = problem.template.clone()
        shape[problem.ids] = shape_p
    return RigidFit(pose[:, :3].clone(), pose[:, 3:].clone(), shape, cost,
                    float(frame_rmse.pow(2).mean().sqrt()), frame_rmse, float(focal), n_repaired)


@_one_thread
def search_focal(lms: np.ndarray, width: int, height: int, template: np.ndarray,
                 weights: np.ndarray | None = None, max_frames: int = FOCAL_SEARCH_FRAMES,
                 candidates: int = FOCAL_CANDIDATES) -> dict:
    """Choose the focal length whose rigid fit explains the landmarks best.

    Fits (without temporal prior) ``max_frames`` evenly spread frames for ``candidates`` focal
    lengths log-spaced over `FOCAL_RANGE_PER_WIDTH` × width plus the default, and refines the
    minimum by a parabola in log-focal. The default focal is kept when the curve does not
    discriminate: its minimum lies on the edge of the range (not bracketed), or beats the
    default by less than `FOCAL_MIN_GAIN` of the cost.

    Returns:
        dict(focal (px), source ('search' | 'default'), gain (relative cost gain of the
        minimum over the default), reason (text), curve: dict(focal, cost, rmse) lists in
        increasing focal).
    """
    sel = np.unique(np.linspace(0, len(lms) - 1, min(max_frames, len(lms))).round().astype(int))
    sub = lms[sel]
    default = DEFAULT_FOCAL_PER_WIDTH * width
    grid = np.geomspace(FOCAL_RANGE_PER_WIDTH[0] * width, FOCAL_RANGE_PER_WIDTH[1] * width, candidates)
    focals = np.sort(np.append(grid, default))
    i_default = int(np.argmin(np.abs(focals - default)))
    # Walk outwards from the default, each fit warm-started from its neighbour's.
    fits: dict[int, RigidFit] = {}
    for i in list(range(i_default, len(focals))) + list(range(i_default - 1, -1, -1)):
        init = fits.get(i - 1, fits.get(i + 1))
        fits[i] = fit_rigid(sub, focals[i], width / 2.0, height / 2.0, template, weights,
                            smooth=0.0, init=init)
    costs = np.array([fits[i].cost for i in range(len(focals))])
    rmses = np.array([fits[i].rmse_px for i in range(len(focals))])
    best = int(np.argmin(costs))
    gain = float((costs[i_default] - costs[best]) / max(costs[best], 1e-12))
    curve = dict(focal=focals.tolist(), cost=costs.tolist(), rmse=rmses.tolist())
    if best in (0, len(focals) - 1):
        reason = f"the cost keeps falling to the edge of the range ({focals[best]:.0f} px)"
    elif gain < FOCAL_MIN_GAIN:
        reason = f"the minimum beats the default by {gain:.1%} < {FOCAL_MIN_GAIN:.0%}"
    else:
        x = np.log(focals[best - 1:best + 2])
        a, b, _ = np.polyfit(x, costs[best - 1:best + 2], 2)
        focal = float(np.exp(np.clip(-b / (2 * a), x[0], x[2]))) if a > 0 else float(focals[best])
        return dict(focal=focal, source="search", gain=gain, curve=curve,
                    reason=f"the minimum beats the default by {gain:.1%}")
    return dict(focal=float(default), source="default", gain=gain, curve=curve, reason=reason)


def track_folder(ori_dir: str | Path, out_pt: str | Path, focal: float | None = None,
                 log: Callable[[str], None] | None = None) -> dict:
    """Track the head in ``ori_dir`` (``<k>.jpg`` + ``<k>.lms``) and save ``out_pt``.

    Args:
        ori_dir: frame folder with landmarks.
        out_pt: output ``track_params.pt`` (written atomically): dict(euler ``[N, 3]``,
            trans ``[N, 3]`` (decimetres), focal ``[1]`` (px), shape ``[68, 3]``, rmse_px,
            frame_rmse_px ``[N]``, focal_curve, focal_source, image_size (H, W)).
        focal: focal length in pixels; None searches it (see `search_focal`).
        log: callable taking one line of text (default: this module's logger).

    Returns:
        dict(focal, focal_source, focal_gain, focal_curve, rmse_px, max_frame_rmse_px,
        n_frames, n_repaired, cam_distance_m, seconds).
    """
    log = log or logging.getLogger(__name__).info
    t0 = time.perf_counter()
    lms, (h, w) = load_landmarks(ori_dir)
    template = face68_template()
    if focal is None:
        found = search_focal(lms, w, h, template)
        curve = found["curve"]
        log("focal search (px: cost / rmse px): " + ", ".join(
            f"{f:.0f}: {c:.3f}/{r:.2f}" for f, c, r in zip(curve["focal"], curve["cost"], curve["rmse"])))
        log(f"focal {found['focal']:.0f} px ({found['source']}: {found['reason']})")
        focal, source, gain = found["focal"], found["source"], found["gain"]
    else:
        curve, source, gain = None, "given", None
    fit = fit_rigid(lms, focal, w / 2.0, h / 2.0, template)
    cam_dist = float(fit.trans.norm(dim=-1).mean()) / 10.0  # |−Rᵀt| = |t|; dm -> m
    log(f"tracked {len(lms)} frames: rmse {fit.rmse_px:.2f} px (stable points), worst frame "
        f"{float(fit.frame_rmse_px.max()):.2f} px, camera distance {cam_dist:.3f} m")
    params = dict(
        euler=fit.euler.float(), trans=fit.trans.float(), focal=torch.tensor([focal], dtype=torch.float32),
        shape=fit.shape.float(), rmse_px=fit.rmse_px, frame_rmse_px=fit.frame_rmse_px.float(),
        focal_curve=curve, focal_source=source, image_size=(int(h), int(w)))
    # Through a file object: torch.save names the archive inside after a path's random temporary
    # name, which would make identical results differ byte-wise.
    with atomic_path(out_pt) as tmp, open(tmp, "wb") as f:
        torch.save(params, f)
    return dict(focal=float(focal), focal_source=source, focal_gain=gain, focal_curve=curve,
                rmse_px=fit.rmse_px, max_frame_rmse_px=float(fit.frame_rmse_px.max()),
                n_frames=len(lms), n_repaired=fit.n_repaired, cam_distance_m=cam_dist,
                seconds=time.perf_counter() - t0)
