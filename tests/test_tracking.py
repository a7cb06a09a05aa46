"""Head tracking and camera json: synthetic known-pose recovery, focal search, json conventions."""
import json
import math

import cv2
import numpy as np
import pytest
import torch

from data_utils import tracking
from data_utils.face_template import STABLE_IDS, face68_template, mean_mesh
from data_utils.tracking import euler_to_rot, fit_rigid, project, rot_to_euler, search_focal, to_camera
from data_utils.transforms import camera_to_world, write_transforms
from tests.conftest import shared_file

W = 512


def synthetic_track(n, focal, dist_dm, yaw, noise_px, seed=0):
    """Landmarks of a slightly personalised template moving along a smooth known trajectory.

    Returns (lms [n, 68, 2], euler [n, 3], trans [n, 3] (dm), shape [68, 3]).
    """
    g = np.random.default_rng(seed)
    shape = face68_template() + g.normal(0.0, 0.01, (68, 3))  # ~1 mm personal deviation
    t = np.arange(n) / 25.0
    euler = np.stack([0.15 * np.sin(2 * np.pi * 0.3 * t),
                      yaw * np.sin(2 * np.pi * 0.2 * t + 1.0),
                      0.1 * np.sin(2 * np.pi * 0.45 * t + 2.0)], axis=1)
    trans = np.stack([0.3 * np.sin(2 * np.pi * 0.25 * t),
                      0.2 * np.cos(2 * np.pi * 0.15 * t),
                      -dist_dm + 0.5 * np.sin(2 * np.pi * 0.1 * t)], axis=1)
    cam = to_camera(torch.as_tensor(shape), torch.as_tensor(euler), torch.as_tensor(trans))
    lms = project(cam, focal, W / 2, W / 2).numpy() + g.normal(0.0, noise_px, (n, 68, 2))
    return lms, euler, trans, shape


def rotation_error_deg(e_fit, e_true):
    r = euler_to_rot(torch.as_tensor(e_fit, dtype=torch.float64)).transpose(1, 2) @ \
        euler_to_rot(torch.as_tensor(e_true, dtype=torch.float64))
    cos = ((r.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1)
    return torch.rad2deg(torch.arccos(cos)).numpy()


def camera_error(e_fit, t_fit, e_true, t_true):
    """Camera-centre error relative to the camera distance: ``[N]``."""
    c_fit = camera_to_world(torch.as_tensor(e_fit), torch.as_tensor(t_fit))[:, :3, 3].double()
    c_true = camera_to_world(torch.as_tensor(e_true), torch.as_tensor(t_true))[:, :3, 3].double()
    return ((c_fit - c_true).norm(dim=-1) / c_true.norm(dim=-1)).numpy()


def test_euler_is_reference_product():
    theta, phi, psi = 0.3, -0.4, 0.7
    c, s = math.cos, math.sin
    rx = torch.tensor([[1, 0, 0], [0, c(theta), -s(theta)], [0, s(theta), c(theta)]], dtype=torch.float64)
    ry = torch.tensor([[c(phi), 0, s(phi)], [0, 1, 0], [-s(phi), 0, c(phi)]], dtype=torch.float64)
    rz_minus = torch.tensor([[c(psi), s(psi), 0], [-s(psi), c(psi), 0], [0, 0, 1]], dtype=torch.float64)
    euler = torch.tensor([[theta, phi, psi]], dtype=torch.float64)
    torch.testing.assert_close(euler_to_rot(euler)[0], rx @ ry @ rz_minus)
    many = torch.rand(64, 3, dtype=torch.float64) * 2.4 - 1.2
    torch.testing.assert_close(rot_to_euler(euler_to_rot(many)), many)


def test_projection_axes_follow_reference():
    # camera at the origin looking down -z: +x is image right, +y is image up
    pts = torch.tensor([[[0.0, 0.0, -8.0], [0.5, 0.0, -8.0], [0.0, 0.5, -8.0]]], dtype=torch.float64)
    uv = project(pts, 1000.0, 256.0, 200.0)[0]
    torch.testing.assert_close(uv[0], torch.tensor([256.0, 200.0], dtype=torch.float64))
    assert uv[1, 0] > 256.0 and uv[2, 1] < 200.0


def test_template_is_metric_and_frontal():
    t = face68_template()
    eye_r, eye_l = t[[36, 39]].mean(0), t[[42, 45]].mean(0)
    assert np.linalg.norm(eye_l - eye_r) == pytest.approx(0.65, rel=1e-3)
    assert eye_l[0] > eye_r[0]  # subject's left eye on the image right
    assert t[30, 2] > t[36, 2] + 0.2  # nose tip in front of the eye corners (z to camera)
    assert t[27, 1] > t[8, 1] + 0.8  # brows above chin


def test_mean_mesh_recovers_a_rotated_scaled_face():
    base = np.random.default_rng(1).normal(0, 50, (478, 3))
    ang = 0.3
    rot = np.array([[math.cos(ang), 0, math.sin(ang)], [0, 1, 0], [-math.sin(ang), 0, math.cos(ang)]])
    meshes = np.stack([base, 1.7 * base @ rot.T + 40.0])
    meshes[1, 5] = np.nan
    out = mean_mesh(meshes)
    assert out.shape == (478, 3) and np.isfinite(out).all()
    with pytest.raises(ValueError, match=r"\[K, 478, 3\]"):
        mean_mesh(np.zeros((2, 68, 3)))


def test_known_focal_recovers_poses():
    lms, euler, trans, _ = synthetic_track(150, focal=1200.0, dist_dm=8.0, yaw=0.35, noise_px=0.7)
    fit = fit_rigid(lms, 1200.0, W / 2, W / 2, face68_template())
    rot_err = rotation_error_deg(fit.euler, euler)
    cam_err = camera_error(fit.euler, fit.trans, euler, trans)
    assert rot_err.max() < 1.5, rot_err.max()
    assert cam_err.mean() < 0.02 and cam_err.max() < 0.03, (cam_err.mean(), cam_err.max())
    assert fit.rmse_px < 1.3  # noise 0.7 px per axis -> ~1 px per point


def test_focal_search_finds_wide_angle_focal():
    true_focal = 460.0  # close wide-angle camera: strong perspective, so focal is observable
    lms, euler, trans, _ = synthetic_track(100, focal=true_focal, dist_dm=3.5, yaw=0.5, noise_px=0.7)
    found = search_focal(lms, W, W, face68_template())
    assert found["source"] == "search", found["reason"]
    assert abs(found["focal"] / true_focal - 1) < 0.10, found["focal"]
    fit = fit_rigid(lms, found["focal"], W / 2, W / 2, face68_template())
    assert rotation_error_deg(fit.euler, euler).mean() < 1.5


def test_focal_search_falls_back_when_uninformative():
    # a small, distant face: perspective is below the landmark noise
    lms, *_ = synthetic_track(40, focal=1000.0, dist_dm=25.0, yaw=0.1, noise_px=1.0, seed=3)
    found = search_focal(lms, W, W, face68_template(), candidates=7)
    assert found["source"] == "default", found
    assert found["focal"] == pytest.approx(tracking.DEFAULT_FOCAL_PER_WIDTH * W)
    curve = found["curve"]
    assert len(curve["focal"]) == len(curve["cost"]) == 8
    assert curve["focal"] == sorted(curve["focal"])


def make_folder(root, lms, size=(W, W)):
    ori = root / "ori_imgs"
    ori.mkdir()
    img = np.zeros((*size, 3), np.uint8)
    for k, pts in enumerate(lms):
        cv2.imwrite(str(ori / f"{k}.jpg"), img)
        np.savetxt(ori / f"{k}.lms", pts, fmt="%f")
    return ori


def nerf_matrix_to_ngp(pose, scale, offset):
    """Provider convention (ERNERF_FACTS §5): rows (1, 2, 0), columns 1 and 2 negated."""
    return np.array([
        [pose[1, 0], -pose[1, 1], -pose[1, 2], pose[1, 3] * scale + offset[0]],
        [pose[2, 0], -pose[2, 1], -pose[2, 2], pose[2, 3] * scale + offset[1]],
        [pose[0, 0], -pose[0, 1], -pose[0, 2], pose[0, 3] * scale + offset[2]],
        [0, 0, 0, 1]])


def test_track_folder_and_transforms_json(tmp_path):
    lms, euler, trans, _ = synthetic_track(23, focal=1250.0, dist_dm=8.0, yaw=0.3, noise_px=0.5)
    ori = make_folder(tmp_path, lms)
    lines = []
    info = tracking.track_folder(ori, tmp_path / "track_params.pt", log=lines.append)
    assert any("focal" in ln for ln in lines) and any("rmse" in ln for ln in lines)
    assert info["n_frames"] == 23 and info["rmse_px"] < 1.5
    assert 0.5 < info["cam_distance_m"] < 1.2
    params = torch.load(tmp_path / "track_params.pt", weights_only=True)
    assert params["euler"].shape == (23, 3) and params["trans"].shape == (23, 3)
    assert params["focal"].shape == (1,) and params["shape"].shape == (68, 3)

    out = write_transforms(tmp_path / "track_params.pt", ori, tmp_path)
    assert (out["n_train"], out["n_val"]) == (20, 3)  # int(23 * 10 / 11) = 20
    train = json.loads((tmp_path / "transforms_train.json").read_text())
    val = json.loads((tmp_path / "transforms_val.json").read_text())
    assert set(train) == {"focal_len", "cx", "cy", "frames"}
    assert (train["cx"], train["cy"]) == (W / 2, W / 2) and train["focal_len"] == float(params["focal"][0])
    ids = [f["img_id"] for f in train["frames"] + val["frames"]]
    assert ids == list(range(23)) and all(f["aud_id"] == f["img_id"] for f in train["frames"] + val["frames"])

    # The provider's rays (ngp pose, dir = ((u-cx)/f, (v-cy)/f, 1)) must see the tracked face
    # points on the landmarks: project the shape (metres, same world permutation and scale).
    scale, offset = 4.0, np.array([0.1, -0.2, 0.3])
    f, cx, cy = train["focal_len"], train["cx"], train["cy"]
    shape_m = params["shape"].double().numpy()[list(STABLE_IDS)] / 10.0
    world = shape_m[:, [1, 2, 0]] * scale + offset  # the conversion permutes world axes too
    errs = []
    for frame in train["frames"] + val["frames"]:
        c2w = nerf_matrix_to_ngp(np.array(frame["transform_matrix"]), scale, offset)
        cam = (world - c2w[:3, 3]) @ c2w[:3, :3]  # world -> camera (OpenCV axes)
        assert (cam[:, 2] > 0).all()
        uv = np.stack([f * cam[:, 0] / cam[:, 2] + cx, f * cam[:, 1] / cam[:, 2] + cy], axis=1)
        errs.append(np.linalg.norm(uv - lms[frame["img_id"]][list(STABLE_IDS)], axis=1))
    assert np.sqrt(np.mean(np.square(errs))) < 1.5


def test_bad_inputs_raise_clear_errors(tmp_path):
    lms, *_ = synthetic_track(4, focal=1250.0, dist_dm=8.0, yaw=0.1, noise_px=0.5)
    ori = make_folder(tmp_path, lms)
    (ori / "2.lms").unlink()
    with pytest.raises(FileNotFoundError, match="2.lms"):
        tracking.track_folder(ori, tmp_path / "t.pt", focal=1000.0)
    np.savetxt(ori / "2.lms", np.zeros((5, 2)))
    with pytest.raises(ValueError, match="68"):
        tracking.track_folder(ori, tmp_path / "t.pt", focal=1000.0)
    np.savetxt(ori / "2.lms", lms[2])
    with pytest.raises(ValueError, match="focal"):
        tracking.track_folder(ori, tmp_path / "t.pt", focal=-5.0)
    tracking.track_folder(ori, tmp_path / "t.pt", focal=1000.0)
    cv2.imwrite(str(ori / "4.jpg"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="4 poses but .* 5 frames"):
        write_transforms(tmp_path / "t.pt", ori, tmp_path)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        write_transforms(tmp_path / "missing.pt", ori, tmp_path)


@pytest.fixture(scope="module")
def may_clip(tmp_path_factory):
    """First 40 frames of May_5s.mp4 with mediapipe landmarks."""
    video = shared_file("May_5s.mp4")
    import imageio.v3 as iio

    from data_utils.landmarks import detect_folder

    ori = tmp_path_factory.mktemp("may") / "ori_imgs"
    ori.mkdir()
    for k, frame in enumerate(iio.imiter(video)):
        if k == 40:
            break
        cv2.imwrite(str(ori / f"{k}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    detect_folder(ori)
    return ori


@pytest.mark.shared
def test_real_clip_reprojection_error(may_clip):
    info = tracking.track_folder(may_clip, may_clip.parent / "track_params.pt")
    assert info["rmse_px"] < 3.0, info
    assert info["n_repaired"] == 0
    assert 0.4 < info["cam_distance_m"] < 1.5
    out = write_transforms(may_clip.parent / "track_params.pt", may_clip, may_clip.parent)
    assert out["n_train"] + out["n_val"] == 40
