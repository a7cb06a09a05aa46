"""Camera-pose conventions: tracker Euler angles, NeRF c2w matrices, instant-ngp c2w matrices.

Three frames are involved (all right-handed):

- tracker: the head pose in camera space, ``X_cam = R(euler) @ X_head + trans / 10`` with
  ``R = Rx(theta) @ Ry(phi) @ Rz(-psi)`` (the 3DMM tracker's convention);
- NeRF / OpenGL c2w (``transform_matrix`` in ``transforms_*.json``): head fixed at the origin,
  camera looking down its own -z with +y up;
- instant-ngp c2w (what the renderer uses): world axes cycled (ngp x, y, z = nerf y, z, x),
  camera looking down its own +z with +y down (OpenCV), translation scaled by ``--scale`` and
  shifted by ``--offset``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.spatial.transform import Rotation

# Intrinsic X-Y-Z: R = Rx(a) @ Ry(b) @ Rz(c); the tracker's third angle enters negated.
_TRACKER_EULER_ORDER = "XYZ"


def _check_poses(poses: np.ndarray, name: str = "poses") -> np.ndarray:
    poses = np.asarray(poses)
    if poses.shape[-2:] != (4, 4):
        raise ValueError(f"{name} must have shape [..., 4, 4], got {poses.shape}")
    return poses


def nerf_matrix_to_ngp(pose: np.ndarray, scale: float = 4.0,
                       offset: Sequence[float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """Convert NeRF (OpenGL) camera-to-world matrices to the instant-ngp convention.

    The new rows are the input rows (1, 2, 0); columns 1 and 2 (camera y and z) are negated;
    the translation is multiplied by ``scale`` then shifted by ``offset``.

    Args:
        pose: NeRF c2w  # [..., 4, 4]
        scale: translation scale (``--scale``).
        offset: translation offset added after scaling (``--offset``)  # [3]
    Returns:
        ngp c2w, float32  # [..., 4, 4]
    """
    pose = _check_poses(pose, "pose").astype(np.float64)
    offset = np.asarray(offset, dtype=np.float64)
    out = np.zeros_like(pose)
    out[..., :3, :] = pose[..., [1, 2, 0], :]
    out[..., :3, 1:3] *= -1.0
    out[..., :3, 3] = out[..., :3, 3] * scale + offset
    out[..., 3, 3] = 1.0
    return out.astype(np.float32)


def ngp_matrix_to_nerf(pose: np.ndarray, scale: float = 4.0,
                       offset: Sequence[float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """Inverse of :func:`nerf_matrix_to_ngp` (same ``scale`` and ``offset``).

    Args:
        pose: ngp c2w  # [..., 4, 4]
    Returns:
        NeRF c2w, float32  # [..., 4, 4]
    """
    pose = _check_poses(pose, "pose").astype(np.float64)
    if scale == 0:
        raise ValueError("scale must be non-zero to invert the pose conversion")
    offset = np.asarray(offset, dtype=np.float64)
    rows = pose[..., :3, :].copy()
    rows[..., 3] = (rows[..., 3] - offset) / scale
    rows[..., 1:3] *= -1.0
    out = np.zeros_like(pose)
    out[..., :3, :] = rows[..., [2, 0, 1], :]
    out[..., 3, 3] = 1.0
    return out.astype(np.float32)


def euler_to_rotation(euler: np.ndarray) -> np.ndarray:
    """Tracker Euler angles to rotation matrices, ``R = Rx(theta) @ Ry(phi) @ Rz(-psi)``.

    Args:
        euler: (theta, phi, psi) in radians  # [N, 3]
    Returns:
        rotations  # [N, 3, 3]
    """
    euler = np.asarray(euler, dtype=np.float64)
    if euler.ndim != 2 or euler.shape[1] != 3:
        raise ValueError(f"euler must have shape [N, 3], got {euler.shape}")
    angles = euler * np.array([1.0, 1.0, -1.0])
    return Rotation.from_euler(_TRACKER_EULER_ORDER, angles).as_matrix()


def rotation_to_euler(rot: np.ndarray) -> np.ndarray:
    """Inverse of :func:`euler_to_rotation` (angles in radians, |phi| < pi/2).

    Args:
        rot: rotations  # [N, 3, 3]
    Returns:
        (theta, phi, psi)  # [N, 3]
    """
    rot = np.asarray(rot, dtype=np.float64)
    if rot.ndim != 3 or rot.shape[1:] != (3, 3):
        raise ValueError(f"rot must have shape [N, 3, 3], got {rot.shape}")
    angles = Rotation.from_matrix(rot).as_euler(_TRACKER_EULER_ORDER)
    return angles * np.array([1.0, 1.0, -1.0])


def tracked_to_c2w(euler: np.ndarray, trans: np.ndarray) -> np.ndarray:
    """Tracker head poses to NeRF camera-to-world matrices (head fixed, camera moves).

    With ``X_cam = R X_head + t`` and ``t = trans / 10``, the camera pose in the head frame is
    ``[R^T | -R^T t]``.

    Args:
        euler: (theta, phi, psi) radians  # [N, 3]
        trans: tracker translation (10x the c2w units)  # [N, 3]
    Returns:
        NeRF c2w, float32  # [N, 4, 4]
    """
    rot = euler_to_rotation(euler)
    trans = np.asarray(trans, dtype=np.float64)
    if trans.shape != (rot.shape[0], 3):
        raise ValueError(f"trans must have shape [{rot.shape[0]}, 3], got {trans.shape}")
    rot_t = np.transpose(rot, (0, 2, 1))
    c2w = np.tile(np.eye(4), (rot.shape[0], 1, 1))
    c2w[:, :3, :3] = rot_t
    c2w[:, :3, 3] = -np.einsum("nij,nj->ni", rot_t, trans / 10.0)
    return c2w.astype(np.float32)


def smooth_path(poses: np.ndarray, window: int = 7) -> np.ndarray:
    """Smooth a camera trajectory with a centred moving window (``--smooth_path``).

    Frame i takes the mean translation and the chordal mean rotation (scipy ``Rotation.mean``)
    of frames ``[i - K, i + K]`` with ``K = window // 2``, the window clipped at both ends.

    Args:
        poses: c2w matrices (any convention)  # [N, 4, 4]
        window: window length in frames (>= 1).
    Returns:
        smoothed copy, same dtype  # [N, 4, 4]
    """
    poses = _check_poses(poses)
    if poses.ndim != 3:
        raise ValueError(f"poses must have shape [N, 4, 4], got {poses.shape}")
    if window < 1:
        raise ValueError(f"smooth_path window must be >= 1, got {window}")
    n, k = poses.shape[0], window // 2
    trans = poses[:, :3, 3].astype(np.float64)
    rots = Rotation.from_matrix(poses[:, :3, :3].astype(np.float64))
    out = poses.copy()
    for i in range(n):
        lo, hi = max(0, i - k), min(n, i + k + 1)
        out[i, :3, 3] = trans[lo:hi].mean(axis=0)
        out[i, :3, :3] = rots[lo:hi].mean().as_matrix()
    return out
