"""Pose conventions and path smoothing, on the real tracked Obama poses where possible."""
import json

import numpy as np
import pytest

from nerf_triplane.poses import (euler_to_rotation, ngp_matrix_to_nerf, nerf_matrix_to_ngp,
                                 rotation_to_euler, smooth_path, tracked_to_c2w)
from tests.conftest import shared_file


@pytest.fixture(scope="module")
def obama_poses():
    transform = json.loads(shared_file("obama_transforms_val.json").read_text())
    return np.array([f["transform_matrix"] for f in transform["frames"]], dtype=np.float64)


def _rot(axis: str, a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return {"x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
            "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
            "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]


def test_nerf_to_ngp_matches_the_reference_layout():
    rng = np.random.default_rng(0)
    P = np.eye(4)
    P[:3] = rng.normal(size=(3, 4))
    s, o = 4.0, np.array([0.1, -0.2, 0.3])
    expected = np.array([
        [P[1, 0], -P[1, 1], -P[1, 2], s * P[1, 3] + o[0]],
        [P[2, 0], -P[2, 1], -P[2, 2], s * P[2, 3] + o[1]],
        [P[0, 0], -P[0, 1], -P[0, 2], s * P[0, 3] + o[2]],
        [0, 0, 0, 1]])
    np.testing.assert_allclose(nerf_matrix_to_ngp(P, s, o), expected, atol=1e-6)
    assert nerf_matrix_to_ngp(P).dtype == np.float32


def test_round_trip_on_real_poses(obama_poses):
    offset = (0.05, -0.1, 0.2)
    ngp = nerf_matrix_to_ngp(obama_poses, scale=4, offset=offset)
    assert ngp.shape == obama_poses.shape
    np.testing.assert_allclose(ngp_matrix_to_nerf(ngp, scale=4, offset=offset), obama_poses, atol=1e-6)
    # The converted rotation is still a rotation, and the camera keeps the real distance x4.
    R = ngp[:, :3, :3].astype(np.float64)
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-5)
    np.testing.assert_allclose(np.linalg.det(R), 1, atol=1e-5)
    dist = np.linalg.norm(nerf_matrix_to_ngp(obama_poses)[:, :3, 3], axis=1)
    np.testing.assert_allclose(dist, 4 * np.linalg.norm(obama_poses[:, :3, 3], axis=1), rtol=1e-5)


def test_real_cameras_look_at_the_head(obama_poses):
    # ngp cameras look down their +z (OpenCV); the head sits at the origin in front of them.
    ngp = nerf_matrix_to_ngp(obama_poses)
    forward, pos = ngp[:, :3, 2], ngp[:, :3, 3]
    cos = np.einsum("ni,ni->n", forward, -pos) / np.linalg.norm(pos, axis=1)
    assert cos.min() > 0.9


def test_euler_convention_and_inverse():
    rng = np.random.default_rng(1)
    euler = rng.uniform(-0.5, 0.5, size=(20, 3))
    R = euler_to_rotation(euler)
    for e, r in zip(euler, R):
        np.testing.assert_allclose(r, _rot("x", e[0]) @ _rot("y", e[1]) @ _rot("z", -e[2]), atol=1e-12)
    np.testing.assert_allclose(rotation_to_euler(R), euler, atol=1e-10)
    with pytest.raises(ValueError, match="euler"):
        euler_to_rotation(np.zeros(3))


def test_tracked_to_c2w_places_the_camera():
    rng = np.random.default_rng(2)
    euler = rng.uniform(-0.2, 0.2, size=(5, 3))
    trans = np.array([[0.1, 0.3, -7.6]] * 5) + rng.normal(0, 0.1, size=(5, 3))
    c2w = tracked_to_c2w(euler, trans).astype(np.float64)
    R = euler_to_rotation(euler)
    # The c2w inverse maps head points to camera space like the tracker: X_cam = R X + t/10.
    X = rng.normal(size=3) * 0.1
    for k in range(5):
        w2c = np.linalg.inv(c2w[k])
        np.testing.assert_allclose(w2c[:3, :3] @ X + w2c[:3, 3], R[k] @ X + trans[k] / 10, atol=1e-5)


def _jerk(poses: np.ndarray) -> tuple[float, float]:
    from scipy.spatial.transform import Rotation

    trans = poses[:, :3, 3]
    angles = np.unwrap(Rotation.from_matrix(poses[:, :3, :3]).as_euler("xyz"), axis=0)
    return (np.sqrt((np.diff(trans, 3, axis=0) ** 2).mean()),
            np.sqrt((np.diff(angles, 3, axis=0) ** 2).mean()))


def test_smooth_path_lowers_jerk_on_real_poses(obama_poses):
    ngp = nerf_matrix_to_ngp(obama_poses)
    smoothed = smooth_path(ngp, window=7)
    assert smoothed.shape == ngp.shape and smoothed.dtype == ngp.dtype
    jt, jr = _jerk(ngp)
    st, sr = _jerk(smoothed)
    assert st < 0.5 * jt and sr < 0.5 * jr
    R = smoothed[:, :3, :3].astype(np.float64)
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-5)
    # Smoothing follows the path (no drift): on average within 1 cm (ngp units / 4) of it.
    assert np.linalg.norm(smoothed[:, :3, 3] - ngp[:, :3, 3], axis=1).mean() < 0.04
    np.testing.assert_allclose(smooth_path(ngp, window=1), ngp, atol=1e-6)
    assert not np.shares_memory(smoothed, ngp)


def test_smooth_path_window_edges():
    poses = np.tile(np.eye(4), (5, 1, 1))
    poses[:, 0, 3] = [0, 1, 2, 3, 10]
    out = smooth_path(poses, window=3)
    np.testing.assert_allclose(out[:, 0, 3], [0.5, 1, 2, 5, 6.5])
    with pytest.raises(ValueError, match="window"):
        smooth_path(poses, window=0)
