"""Upper-face expression values (data_utils/expressions.py) and the --exp_upper input path."""
import csv

import cv2
import numpy as np
import pytest
import torch

from data_utils.expressions import (CSV_NAME, NAMES, expression_values, fit_geometry, read_expressions,
                                    standardize, write_expressions_csv)
from data_utils.face_template import face68_template
from data_utils.synthetic import make_synthetic_subject
from data_utils.tracking import project, to_camera
from nerf_triplane.network import NeRFNetwork
from nerf_triplane.options import parse_args
from nerf_triplane.provider import NeRFDataset

SIZE, FOCAL = 512, 1200.0


def _track(shape: np.ndarray, euler: np.ndarray) -> dict:
    """A ``track_params.pt``-like dict: the head 5 dm in front of the camera, facing it."""
    n = len(euler)
    trans = np.tile([0.0, 0.0, -5.0], (n, 1))
    return dict(euler=torch.tensor(euler, dtype=torch.float32), trans=torch.tensor(trans, dtype=torch.float32),
                focal=torch.tensor([FOCAL]), shape=torch.tensor(shape, dtype=torch.float32),
                image_size=(SIZE, SIZE))


def _observe(track: dict, faces: np.ndarray) -> np.ndarray:
    """Project per-frame 3D faces ``[N, 68, 3]`` with the track's poses -> ``[N, 68, 2]`` pixels."""
    cams = torch.stack([to_camera(torch.tensor(f, dtype=torch.float64), track["euler"][i:i + 1].double(),
                                  track["trans"][i:i + 1].double())[0] for i, f in enumerate(faces)])
    return project(cams, FOCAL, SIZE / 2, SIZE / 2).numpy()


POSES = np.radians([[0, 0, 0], [12, 0, 0], [0, 25, 0], [0, 0, 15], [-10, -20, 8]])


def _moved(shape: np.ndarray, brow_r: float = 0.0, squint_l: float = 0.0, pinch: float = 0.0) -> np.ndarray:
    """The neutral face with the right brow raised, the left eye's lids closed together by
    ``squint_l`` (each lid half of it) and the inner brow ends moved together, all in dm."""
    face = shape.copy()
    face[17:22, 1] += brow_r
    face[[43, 44], 1] -= squint_l / 2
    face[[46, 47], 1] += squint_l / 2
    face[21, 0] += pinch / 2
    face[22, 0] -= pinch / 2
    return face


def test_values_are_the_face_plane_movement_whatever_the_pose():
    shape = face68_template()
    iod = np.linalg.norm(shape[[42, 45], :2].mean(0) - shape[[36, 39], :2].mean(0))
    track = _track(shape, POSES)
    geom = fit_geometry(track)
    n = len(POSES)
    neutral = expression_values(_observe(track, np.stack([shape] * n)), *geom)
    np.testing.assert_allclose(neutral[:, :3], 0, atol=1e-9)  # the fit itself: no movement
    eye_open = (shape[[37, 38], 1] - shape[[41, 40], 1]).mean() / iod
    eye_open_l = (shape[[43, 44], 1] - shape[[47, 46], 1]).mean() / iod
    np.testing.assert_allclose(neutral[:, 3:], np.tile([eye_open, eye_open_l], (n, 1)), rtol=1e-9)
    assert 0.05 < min(eye_open, eye_open_l) and max(eye_open, eye_open_l) < 0.3  # ~ a tenth of the IOD

    moved = expression_values(_observe(track, np.stack([_moved(shape, 0.04, 0.03, 0.02)] * n)), *geom)
    # Movements in the face's plane come back whatever the head's roll, yaw and pitch (the
    # first-order Jacobian is exact up to perspective over a few millimetres).
    np.testing.assert_allclose(moved[:, 0], 0.04 / iod, rtol=0.03)
    np.testing.assert_allclose(moved[:, 1], 0, atol=0.002)
    np.testing.assert_allclose(moved[:, 2], 0.02 / iod, rtol=0.03)
    np.testing.assert_allclose(moved[:, 3], eye_open, rtol=1e-3)
    np.testing.assert_allclose(moved[:, 4], eye_open_l - 0.03 / iod, rtol=0.03)
    # Plain 2D ratios would not: the same raise measured in pixels over the pixel
    # inter-ocular distance shrinks with the pitch.
    px = _observe(track, np.stack([_moved(shape, 0.04)] * n)) - _observe(track, np.stack([shape] * n))
    assert abs(np.linalg.norm(px[1, 17]) / np.linalg.norm(px[0, 17]) - 1) > 0.01


def _write_folder(root, lms: np.ndarray, track: dict) -> None:
    (root / "ori_imgs").mkdir(parents=True)
    blank = np.zeros((SIZE, SIZE, 3), np.uint8)
    for k, pts in enumerate(lms):
        cv2.imwrite(str(root / "ori_imgs" / f"{k}.jpg"), blank)
        np.savetxt(root / "ori_imgs" / f"{k}.lms", pts, "%f")
    torch.save(track, root / "track_params.pt")


def test_csv_round_trip_and_standardisation(tmp_path):
    shape = face68_template()
    n = 40
    rng = np.random.default_rng(0)
    euler = rng.normal(0, 0.15, (n, 3))
    raises = np.where(np.arange(n) % 10 == 0, 0.05, 0.0)  # every tenth frame raises the right brow
    track = _track(shape, euler)
    lms = _observe(track, np.stack([_moved(shape, r) for r in raises]))
    _write_folder(tmp_path, lms, track)
    stats = write_expressions_csv(tmp_path)
    assert stats["n_frames"] == n and stats["columns"] == list(NAMES)
    with open(tmp_path / CSV_NAME) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["frame", *NAMES] and rows[1][0] == "1" and len(rows) == n + 1
    values = read_expressions(tmp_path)
    assert values.shape == (n, 5) and values.dtype == np.float32
    z = standardize(values)
    assert (np.abs(z) <= 3).all() and np.allclose(np.median(z, 0), 0, atol=1e-6)
    raised = raises > 0
    assert z[raised, 0].min() > z[~raised, 0].max()  # the raised frames stand out on brow_raise_r
    np.testing.assert_allclose(values[raised, 0], 0.05 / np.linalg.norm(
        shape[[42, 45], :2].mean(0) - shape[[36, 39], :2].mean(0)), rtol=0.05)


def test_missing_inputs_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="track_params.pt"):
        write_expressions_csv(tmp_path)
    with pytest.raises(FileNotFoundError, match="--exp_upper"):
        read_expressions(tmp_path)
    (tmp_path / CSV_NAME).write_text("frame,brow_raise_r\n1,0.1\n")
    with pytest.raises(ValueError, match="lacks columns"):
        read_expressions(tmp_path)


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    root = make_synthetic_subject(tmp_path_factory.mktemp("expr") / "subj", n_frames=22, size=32, seed=3)
    values = np.random.default_rng(1).normal(0, 1, (22, 5))
    lines = [",".join(("frame", *NAMES))] + [",".join([str(i + 1), *map(str, v)]) for i, v in enumerate(values)]
    (root / CSV_NAME).write_text("\n".join(lines) + "\n")
    return root, values


def test_dataset_serves_the_blink_then_the_upper_face(subject):
    root, values = subject
    opt = parse_args([str(root), "-O", "--exp_upper", "--num_rays", "64"])
    test = NeRFDataset(opt, type="test")
    base = NeRFDataset(parse_args([str(root), "-O", "--num_rays", "64"]), type="test")
    assert test.eye_area.shape == (test.num_frames, 6) and base.eye_area.shape == (base.num_frames, 1)
    torch.testing.assert_close(test.eye_area[:, :1], base.eye_area)  # the blink is unchanged
    want = standardize(values.astype(np.float32))[test.img_ids]
    np.testing.assert_allclose(test.eye_area[:, 1:].numpy(), want, rtol=1e-6)
    batch = test.collate([0])
    assert batch["eye"].shape == (1, 6)
    torch.testing.assert_close(batch["eye"], test.eye_area[:1])  # held-out frames: their own values

    fixed = NeRFDataset(parse_args([str(root), "-O", "--exp_upper", "--fix_eye", "0.5"]), type="test").collate([0])
    assert fixed["eye"][0, 0] == 0.5 and torch.equal(fixed["eye"][:, 1:], batch["eye"][:, 1:])

    train = NeRFDataset(opt, type="train")
    jittered = train.collate([0])["eye"]
    assert jittered.shape == (1, 6) and not torch.equal(jittered, train.eye_area[:1])
    assert (jittered - train.eye_area[:1]).abs().max() <= 0.1 + 1e-6


def test_network_attends_to_each_upper_face_value():
    with pytest.raises(ValueError, match="--exp_upper"):
        NeRFNetwork(parse_args(["unused", "--exp_upper", "--grid_size", "16"]), audio_dim=32)
    torch.manual_seed(0)
    model = NeRFNetwork(parse_args(["unused", "--exp_eye", "--exp_upper", "--grid_size", "16", "--ind_dim", "0"]),
                        audio_dim=32)
    assert model.eye_dim == 6 and model.eye_att_net.net[-1].out_features == 6
    x = (torch.rand(128, 3) * 2 - 1) * 0.5
    d = torch.nn.functional.normalize(torch.randn(128, 3), dim=-1)
    enc_a = torch.randn(1, 32)
    eye = torch.tensor([[0.2, 0.0, 0.0, 0.0, 0.0, 0.0]])
    sigma0, _, _, amb_eye, _ = model(x, d, enc_a, None, eye)
    assert amb_eye.shape == (128, 1) and ((amb_eye > 0) & (amb_eye < 1)).all()
    raised = eye.clone()
    raised[0, 1] = 1.5  # brow_raise_r alone
    sigma1, _, _, _, _ = model(x, d, enc_a, None, raised)
    assert not torch.allclose(sigma0, sigma1)
    sigma1.sum().backward()
    assert model.eye_att_net.net[-1].weight.grad[1].abs().sum() > 0
