"""Head pose jitter: how much a head shakes, from tracked poses or from landmarks on video frames.

Jitter is the mean magnitude of the second difference of the head pose over consecutive frames:
for rotation the change of the frame-to-frame rotation (``|log(R_{k+1} R_kᵀ) − log(R_k R_{k-1}ᵀ)|``,
degrees), for translation ``|t_{k+1} − 2 t_k + t_{k-1}|`` (millimetres). A head moving at a
steady speed scores 0; shaking scores high. Frames are the render's order at 25 fps.

Poses "by landmarks" are fitted frame by frame (no temporal prior) to the 68 landmarks detected
on the frames, with the subject's face shape and focal from ``track_params.pt``
(``data_utils.tracking.fit_rigid``), so GT frames and rendered frames are measured alike.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

DM_TO_MM = 100.0


def pose_jitter(euler: np.ndarray, trans: np.ndarray) -> dict:
    """Jitter of a pose track.

    Args:
        euler: head rotation, tracking convention (``data_utils.tracking.euler_to_rot``),
            radians; NaN rows = unknown  # [N, 3]
        trans: head translation in camera space, decimetres  # [N, 3]
    Returns:
        ``rot_deg``, ``trans_mm`` (means; None with no three consecutive known frames) and
        ``triples`` (how many second differences were averaged).
    """
    from scipy.spatial.transform import Rotation

    from data_utils.tracking import euler_to_rot

    euler, trans = np.asarray(euler, np.float64), np.asarray(trans, np.float64)
    known = np.isfinite(euler).all(1) & np.isfinite(trans).all(1)
    if len(known) < 3:
        return {"rot_deg": None, "trans_mm": None, "triples": 0}
    triple = known[:-2] & known[1:-1] & known[2:]  # [N-2]: frames k-1, k, k+1 all known
    if not triple.any():
        return {"rot_deg": None, "trans_mm": None, "triples": 0}
    rot = euler_to_rot(torch.as_tensor(np.nan_to_num(euler))).numpy()  # [N, 3, 3]
    step = Rotation.from_matrix(rot[1:] @ np.transpose(rot[:-1], (0, 2, 1))).as_rotvec()  # [N-1, 3] rad
    rot_acc = np.degrees(np.linalg.norm(step[1:] - step[:-1], axis=1))[triple]
    trans_acc = DM_TO_MM * np.linalg.norm(trans[2:] - 2 * trans[1:-1] + trans[:-2], axis=1)[triple]
    return {"rot_deg": float(rot_acc.mean()), "trans_mm": float(trans_acc.mean()), "triples": int(triple.sum())}


def motion_lag(tracked: np.ndarray, measured: np.ndarray, max_lag: int = 5) -> dict:
    """Whether a smoothed pose track lags the head: cross-correlation of its rotation speed with
    the speed measured frame by frame.

    Args:
        tracked, measured: euler angles (radians), NaN rows = unknown  # [N, 3] each
        max_lag: largest shift tried, frames.
    Returns:
        ``best_lag`` (frames; positive = the track moves after the measured head), ``best_corr``
        and ``corr_at_0``: Pearson correlations of the frame-to-frame changes of pitch and yaw
        (averaged over the two); None where fewer than 8 frames overlap.
    """
    from .sync import lagged_correlations

    speed_t, speed_m = np.diff(tracked, axis=0), np.diff(measured, axis=0)  # [N-1, 3]
    # Pitch and yaw: roll barely moves in a talking head and carries mostly noise.
    corr = np.mean([lagged_correlations(speed_t[:, a], speed_m[:, a], max_lag) for a in (0, 1)], axis=0)
    if not np.isfinite(corr).any():
        return {"best_lag": None, "best_corr": None, "corr_at_0": None}
    best = int(np.nanargmax(corr))
    at0 = corr[max_lag]
    return {"best_lag": best - max_lag, "best_corr": float(corr[best]),
            "corr_at_0": float(at0) if np.isfinite(at0) else None}


def landmark_poses(lms: np.ndarray, track: dict, image_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame head poses fitted to landmarks, without temporal smoothing.

    Args:
        lms: landmarks in pixels of frames of ``image_size``, NaN rows = no face  # [N, 68, 2]
        track: ``track_params.pt`` content: ``focal`` px, and when the tracker wrote them
            ``shape`` [68, 3] dm (default the mean face) and ``image_size`` (H, W) of the
            tracked frames (default ``image_size``).
        image_size: (H, W) of the frames the landmarks were detected on.
    Returns:
        euler (radians), trans (decimetres), NaN rows where ``lms`` had none  # [N, 3] each
    """
    from data_utils.face_template import face68_template
    from data_utils.tracking import fit_rigid

    h, w = track.get("image_size", image_size)
    shape = track["shape"].double().numpy() if "shape" in track else face68_template()
    lms = np.asarray(lms, np.float64) * [w / image_size[1], h / image_size[0]]
    euler, trans = np.full((len(lms), 3), np.nan), np.full((len(lms), 3), np.nan)
    known = np.isfinite(lms).all(axis=(1, 2))
    if known.any():
        fit = fit_rigid(lms[known], float(track["focal"][0]), w / 2.0, h / 2.0,
                        shape, smooth=0.0)
        euler[known], trans[known] = fit.euler.numpy(), fit.trans.numpy()
    return euler, trans


def jitter_table(data: str | Path, img_ids: list[int], lms_pred: np.ndarray, lms_gt: np.ndarray | None,
                 image_size: tuple[int, int]) -> dict | None:
    """Jitter of the tracked poses under a render, of the GT frames and of the render, by landmarks.

    Args:
        data: training folder (``track_params.pt``).
        img_ids: training-video frame of each rendered frame  # [N]
        lms_pred, lms_gt: landmarks of the rendered and GT frames (None without GT)  # [N, 68, 2]
        image_size: (H, W) of the rendered frames.
    Returns:
        ``tracked`` (the poses the render used, before any ``--smooth_path``), ``gt_landmarks``
        (None without GT) and ``render_landmarks``, each :func:`pose_jitter`'s dict, and
        ``tracked_lag`` (:func:`motion_lag` of the tracked poses against the GT frames' landmark
        poses; None without GT); None when the folder has no ``track_params.pt``.
    """
    path = Path(data) / "track_params.pt"
    if not path.is_file():
        return None
    track = torch.load(path, map_location="cpu", weights_only=False)
    ids = np.asarray(img_ids, dtype=np.int64)
    euler = track["euler"].double().numpy()[ids]
    tracked = pose_jitter(euler, track["trans"].double().numpy()[ids])
    render = pose_jitter(*landmark_poses(lms_pred, track, image_size))
    gt, lag = None, None
    if lms_gt is not None:
        gt_euler, gt_trans = landmark_poses(lms_gt, track, image_size)
        gt, lag = pose_jitter(gt_euler, gt_trans), motion_lag(euler, gt_euler)
    return {"tracked": tracked, "gt_landmarks": gt, "render_landmarks": render, "tracked_lag": lag}
