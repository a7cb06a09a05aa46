"""NeRFDataset and ray sampling, on a synthetic subject and on the real tracked Obama poses."""
import json
import shutil

import cv2
import numpy as np
import pytest
import torch

from data_utils.synthetic import make_synthetic_subject
from nerf_triplane.options import parse_args
from nerf_triplane.poses import ngp_matrix_to_nerf, nerf_matrix_to_ngp, smooth_path
from nerf_triplane.provider import NeRFDataset, audio_window, mirror_index, srgb_to_linear
from nerf_triplane.rays import get_bg_coords, get_rays, patch_pixels, rect_pixels
from tests.conftest import shared_file

N_FRAMES, SIZE = 44, 64
N_TRAIN = N_FRAMES * 10 // 11


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    return make_synthetic_subject(tmp_path_factory.mktemp("prov") / "subj", n_frames=N_FRAMES,
                                  size=SIZE, seed=2)


def _opt(path, *flags):
    return parse_args([str(path), "-O", "--num_rays", "256", *flags])


# ---------------------------------------------------------------------------- rays

def test_rays_follow_the_pinhole_model():
    from scipy.spatial.transform import Rotation

    pose = torch.eye(4)[None]
    pose[0, :3, :3] = torch.from_numpy(Rotation.from_euler("xyz", [0.3, -0.2, 0.1]).as_matrix()).float()
    pose[0, :3, 3] = torch.tensor([0.1, 3.0, -0.2])
    intr = (50.0, 60.0, 16.0, 12.0)
    rays = get_rays(pose, intr, 24, 32)
    assert rays["rays_o"].shape == rays["rays_d"].shape == (1, 24 * 32, 3)
    torch.testing.assert_close(rays["rays_d"].norm(dim=-1), torch.ones(1, 24 * 32))
    torch.testing.assert_close(rays["rays_o"][0, 5], pose[0, :3, 3])
    # Back in camera space the direction is ((col+0.5-cx)/fx, (row+0.5-cy)/fy, 1), normalised.
    k = 7 * 32 + 20  # row 7, col 20
    d_cam = pose[0, :3, :3].T @ rays["rays_d"][0, k]
    expected = torch.tensor([(20.5 - 16) / 50, (7.5 - 12) / 60, 1.0])
    torch.testing.assert_close(d_cam, expected / expected.norm())
    assert rays["i"][0, k] == 20.5 and rays["j"][0, k] == 7.5


def test_patch_and_rect_sampling_order():
    inds = patch_pixels(20, 30, 2 * 16, 4)
    assert inds.shape == (32,)
    first = inds[:16].reshape(4, 4)
    rows, cols = first // 30, first % 30
    assert torch.all(rows == rows[0, 0] + torch.arange(4)[:, None])  # row-major inside a patch
    assert torch.all(cols == cols[0, 0] + torch.arange(4)[None])
    assert rows.max() < 20 and cols.max() < 30
    np.testing.assert_array_equal(rect_pixels(20, 30, (2, 4, 5, 8)).numpy(),
                                  [65, 66, 67, 95, 96, 97])
    with pytest.raises(ValueError, match="outside"):
        rect_pixels(20, 30, (2, 25, 5, 8))
    with pytest.raises(ValueError, match="patch_size"):
        patch_pixels(20, 30, 64, 25)


def test_bg_coords_corners():
    c = get_bg_coords(3, 5)
    assert c.shape == (1, 15, 2)
    torch.testing.assert_close(c[0, 0], torch.tensor([-1.0, -1.0]))
    torch.testing.assert_close(c[0, 4], torch.tensor([-1.0, 1.0]))  # row 0, last column
    torch.testing.assert_close(c[0, 14], torch.tensor([1.0, 1.0]))


# ---------------------------------------------------------------------------- windows

def test_audio_window_zero_pads_at_the_edges():
    feats = torch.arange(1, 11, dtype=torch.float32).view(10, 1, 1).expand(10, 2, 3)
    w = audio_window(feats, 2, 0)
    assert w.shape == (8, 2, 3)
    assert w[:, 0, 0].tolist() == [0, 0, 0, 0, 1, 2, 3, 4]
    assert audio_window(feats, 2, 9)[:, 0, 0].tolist() == [6, 7, 8, 9, 10, 0, 0, 0]
    assert audio_window(feats, 2, 5)[:, 0, 0].tolist() == [2, 3, 4, 5, 6, 7, 8, 9]
    assert audio_window(feats, 1, 3)[:, 0, 0].tolist() == [0, 0, 0, 0, 0, 1, 2, 3]
    assert audio_window(feats, 0, 3).shape == (1, 2, 3) and audio_window(feats, 0, 3)[0, 0, 0] == 4
    with pytest.raises(ValueError, match="att"):
        audio_window(feats, 3, 0)


def test_mirror_index_ping_pongs():
    assert [mirror_index(i, 3) for i in range(8)] == [0, 1, 2, 2, 1, 0, 0, 1]


# ---------------------------------------------------------------------------- synthetic folder

def test_train_batch_shapes_and_ranges(subject):
    ds = NeRFDataset(_opt(subject), type="train")
    assert (ds.H, ds.W, ds.num_frames, ds.audio_dim) == (SIZE, SIZE, N_TRAIN, 32)
    assert ds.poses.shape == (N_TRAIN, 4, 4) and ds.auds.shape == (N_TRAIN, 32, 16)
    assert ds.eye_area.shape == (N_TRAIN, 1) and 0 <= ds.eye_area.min() and ds.eye_area.max() <= 1
    torch.testing.assert_close(ds.intrinsics, torch.tensor([128.0, 128.0, 32.0, 32.0]))
    loader = ds.dataloader()
    assert loader._data is ds and loader.has_gt and len(loader) == N_TRAIN
    batch = next(iter(loader))
    f = batch["index"][0]
    assert batch["rays_o"].shape == batch["rays_d"].shape == (1, 256, 3)
    assert batch["images"].shape == batch["bg_color"].shape == batch["bg_torso_color"].shape == (1, 256, 3)
    assert batch["bg_coords"].shape == (1, 256, 2) and batch["bg_coords"].abs().max() <= 1
    assert batch["auds"].shape == (8, 32, 16) and batch["poses"].shape == (1, 4, 4)
    assert batch["eye"].shape == (1, 1) and abs(batch["eye"].item() - ds.eye_area[f].item()) <= 0.05
    for key in ("face_mask", "lhalf_mask", "eye_mask"):
        assert batch[key].shape == (1, 256) and batch[key].dtype == torch.bool
    assert batch["face_mask"].any() and not batch["face_mask"].all()
    assert torch.all(batch["lhalf_mask"] <= batch["face_mask"])
    assert 0 <= batch["images"].min() and batch["images"].max() <= 1
    for rects in ds.rects:
        for name, (xmin, xmax, ymin, ymax) in rects.items():
            assert 0 <= xmin <= xmax <= SIZE and 0 <= ymin <= ymax <= SIZE
            if name != "eye":  # closed eyes at 64 px can make the eye rect zero rows high
                assert xmin < xmax and ymin < ymax


def test_eval_batches_are_full_images_with_torso_background(subject):
    ds = NeRFDataset(_opt(subject), type="val")
    assert ds.num_frames == N_FRAMES - N_TRAIN and not ds.training
    batch = ds.collate([1])
    assert batch["rays_o"].shape == (1, SIZE * SIZE, 3) and "face_mask" not in batch
    gt = cv2.imread(str(subject / "gt_imgs" / f"{N_TRAIN + 1}.jpg"))[..., ::-1] / 255.0
    np.testing.assert_allclose(batch["images"][0].numpy(), gt.reshape(-1, 3), atol=1e-6)
    rgba = cv2.imread(str(subject / "torso_imgs" / f"{N_TRAIN + 1}.png"), cv2.IMREAD_UNCHANGED) / 255.0
    bc = cv2.imread(str(subject / "bc.jpg"))[..., ::-1] / 255.0
    alpha = rgba[..., 3:]
    expected = rgba[..., 2::-1] * alpha + bc * (1 - alpha)
    np.testing.assert_allclose(batch["bg_color"][0].numpy(), expected.reshape(-1, 3), atol=1e-5)
    torso = NeRFDataset(_opt(subject, "--torso"), type="val").collate([1])
    np.testing.assert_allclose(torso["bg_color"][0].numpy(), bc.reshape(-1, 3), atol=1e-6)
    np.testing.assert_allclose(torso["bg_torso_color"][0].numpy(), expected.reshape(-1, 3), atol=1e-5)


def test_splits_and_frame_selection(subject):
    assert NeRFDataset(_opt(subject), type="test").num_frames == N_FRAMES - N_TRAIN
    assert NeRFDataset(_opt(subject, "--part"), type="train").img_ids == list(range(0, N_TRAIN, 10))
    ds = NeRFDataset(_opt(subject, "--data_range", "5", "15"), type="train")
    assert ds.img_ids == list(range(5, 15))
    # Audio follows aud_id, so the window of a sliced split starts at its own first frame.
    full = np.load(subject / "aud.npy")
    np.testing.assert_allclose(ds.auds[0].numpy(), full[5].T)
    with pytest.raises(ValueError, match="data_range"):
        NeRFDataset(_opt(subject, "--data_range", "50", "60"), type="train")
    with pytest.raises(ValueError, match="type"):
        NeRFDataset(_opt(subject), type="trainval")


@pytest.mark.parametrize("extra", [(), ("--torso",)])
def test_preload_levels_serve_the_same_floats(subject, extra):
    datasets = [NeRFDataset(_opt(subject, "--preload", str(p), *extra), type="train") for p in (0, 1, 2)]
    assert datasets[0].images is None
    assert datasets[1].images.dtype == torch.uint8 and datasets[1].torso_rgba.shape[-1] == 4
    batches = []
    for ds in datasets:
        torch.manual_seed(3)
        batches.append(ds.collate([2]))
    for b in batches[1:]:
        for key in ("images", "bg_color", "bg_torso_color"):
            assert b[key].dtype == torch.float32
            torch.testing.assert_close(b[key], batches[0][key], atol=0, rtol=0)
    # Whole frames, as the live viewer and audio_influence.py take them, agree as well.
    for a, b in zip(datasets[0].frame_images(1), datasets[1].frame_images(1)):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_preload_that_does_not_fit_reads_from_disk(subject, monkeypatch, capsys):
    import nerf_triplane.provider as provider

    monkeypatch.setattr(provider, "available_memory", lambda: 1000)
    ds = NeRFDataset(_opt(subject, "--preload", "1"), type="train")
    assert ds.images is None and ds.preload == 0
    assert "reading them from disk" in capsys.readouterr().out
    assert ds.collate([0])["images"].shape[-1] == 3


def test_patches_and_lips_batches(subject):
    opt = _opt(subject, "--patch_size", "8")
    batch = NeRFDataset(opt, type="train").collate([3])
    assert batch["rays_o"].shape == (1, 256, 3) and "rect" not in batch
    # Patch-major: the first 8 rays are one row of the first patch.
    coords = batch["bg_coords"][0, :8]
    assert torch.unique(coords[:, 0]).numel() == 1 and torch.all(coords[1:, 1] > coords[:-1, 1])

    opt = _opt(subject, "--finetune_lips", "--patch_size", "8")
    ds = NeRFDataset(opt, type="train")
    lips = ds.collate([3])
    xmin, xmax, ymin, ymax = lips["rect"]
    assert lips["rays_o"].shape[1] == (xmax - xmin) * (ymax - ymin)
    lms = np.loadtxt(subject / "ori_imgs" / "3.lms")
    assert xmin <= lms[48:60, 1].mean() < xmax and ymin <= lms[48:60, 0].mean() < ymax
    opt.finetune_lips = False  # the trainer toggles this every step
    assert "rect" not in ds.collate([3]) and ds.collate([3])["rays_o"].shape[1] == 256


def test_face_and_lips_ray_shares(subject):
    from nerf_triplane.rays import rect_mask

    ds = NeRFDataset(_opt(subject, "--face_rays", "0.5", "--lips_rays", "0.25"), type="train")
    batch = ds.collate([5])
    assert batch["rays_o"].shape == (1, 256, 3)
    face = batch["face_mask"][0]
    assert face[:128].all()
    rows_cols = ((batch["bg_coords"][0] + 1) / 2 * (SIZE - 1)).round()  # back from [-1, 1]
    i, j = rows_cols[:, 1] + 0.5, rows_cols[:, 0] + 0.5
    assert rect_mask(i[None], j[None], ds.rects[5]["lips"])[0, 128:192].all()
    # The uniform rest lands mostly outside the face, as without the options.
    assert not face[192:].all()
    for flags in (["--face_rays", "1.5"], ["--face_rays", "0.7", "--lips_rays", "0.5"]):
        with pytest.raises(ValueError, match="rays"):
            _opt(subject, *flags)


def test_eye_options(subject):
    plain = NeRFDataset(_opt(subject), type="train").eye_area[:, 0].numpy()
    smooth = NeRFDataset(_opt(subject, "--smooth_eye"), type="train").eye_area[:, 0].numpy()
    np.testing.assert_allclose(smooth[5], plain[4:7].mean(), rtol=1e-6)
    np.testing.assert_allclose(smooth[0], plain[:2].mean(), rtol=1e-6)
    fixed = NeRFDataset(_opt(subject, "--fix_eye", "0.3"), type="test").collate([0])
    assert fixed["eye"].item() == pytest.approx(0.3)
    assert NeRFDataset(parse_args([str(subject)]), type="train").collate([0])["eye"] is None


def test_background_and_color_space(subject):
    white = NeRFDataset(_opt(subject, "--bg_img", "white", "--torso"), type="val").collate([0])
    assert torch.all(white["bg_color"] == 1)
    srgb = NeRFDataset(_opt(subject), type="val").collate([0])
    lin = NeRFDataset(_opt(subject, "--color_space", "linear"), type="val").collate([0])
    torch.testing.assert_close(lin["images"], srgb_to_linear(srgb["images"]))
    assert lin["images"].mean() < srgb["images"].mean()


def test_novel_audio_ping_pongs(subject, tmp_path):
    n_val = N_FRAMES - N_TRAIN
    feats = np.random.default_rng(0).normal(size=(3 * n_val, 16, 32)).astype(np.float32)
    np.save(tmp_path / "novel.npy", feats)
    ds = NeRFDataset(_opt(subject, "--aud", str(tmp_path / "novel.npy")), type="test")
    loader = ds.dataloader()
    assert not loader.has_gt and len(loader) == 3 * n_val
    batches = list(loader)
    assert [b["index"][0] for b in batches] == [mirror_index(i, n_val) for i in range(3 * n_val)]
    assert all("images" not in b for b in batches)
    torch.testing.assert_close(batches[n_val]["poses"], ds.poses[n_val - 1:n_val])
    torch.testing.assert_close(batches[n_val]["auds"][4], torch.from_numpy(feats[n_val].T))
    direct = NeRFDataset(_opt(subject), type="test", aud_features=feats)
    assert not direct.has_gt and direct.auds.shape == (3 * n_val, 32, 16)
    with pytest.raises(ValueError, match="features .npy"):
        NeRFDataset(_opt(subject, "--aud", str(subject / "aud.wav")), type="test")


# ---------------------------------------------------------------------------- errors

def test_bad_folders_fail_clearly(subject, tmp_path):
    with pytest.raises(FileNotFoundError, match="transforms_train.json"):
        NeRFDataset(_opt(tmp_path), type="train")

    broken = tmp_path / "broken"
    shutil.copytree(subject, broken)
    np.save(broken / "aud.npy", np.load(subject / "aud.npy")[:N_TRAIN - 6])
    with pytest.raises(ValueError, match=r"\(6 too few\)"):
        NeRFDataset(_opt(broken), type="train")
    np.save(broken / "aud.npy", np.load(subject / "aud.npy")[:N_TRAIN - 1])
    assert NeRFDataset(_opt(broken), type="train").auds.shape[0] == N_TRAIN  # last frame clamped
    np.save(broken / "aud.npy", np.zeros((N_FRAMES, 16), dtype=np.float32))
    with pytest.raises(ValueError, match="--emb"):
        NeRFDataset(_opt(broken), type="train")
    (broken / "aud.npy").unlink()
    with pytest.raises(FileNotFoundError, match="aud.npy"):
        NeRFDataset(_opt(broken), type="train")

    shutil.copy(subject / "aud.npy", broken / "aud.npy")
    (broken / "gt_imgs" / "7.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"gt_imgs/7.jpg"):
        NeRFDataset(_opt(broken), type="train")
    NeRFDataset(_opt(broken), type="val")  # val frames are intact
    (broken / "au.csv").unlink()
    with pytest.raises(FileNotFoundError, match="au.csv"):
        NeRFDataset(_opt(broken), type="val")


# ---------------------------------------------------------------------------- real poses

@pytest.fixture(scope="module")
def obama_folder(tmp_path_factory):
    """The real tracked poses (12 frames) with tiny placeholder images and landmarks."""
    transform = json.loads(shared_file("obama_transforms_val.json").read_text())
    root = tmp_path_factory.mktemp("obama")
    frames = transform["frames"][::60][:12]
    split = dict(transform, frames=frames)
    (root / "transforms_train.json").write_text(json.dumps(split))
    (root / "transforms_val.json").write_text(json.dumps(dict(split, frames=frames[:3])))
    for sub in ("gt_imgs", "torso_imgs", "ori_imgs"):
        (root / sub).mkdir()
    rng = np.random.default_rng(0)
    lms = np.stack([np.linspace(150, 300, 68), np.linspace(120, 380, 68)], 1)
    for f in frames:
        i = f["img_id"]
        cv2.imwrite(str(root / "gt_imgs" / f"{i}.jpg"), rng.integers(0, 255, (450, 450, 3), dtype=np.uint8))
        cv2.imwrite(str(root / "torso_imgs" / f"{i}.png"), np.zeros((450, 450, 4), np.uint8))
        np.savetxt(root / "ori_imgs" / f"{i}.lms", lms + rng.normal(0, 2, lms.shape), "%f")
    cv2.imwrite(str(root / "bc.jpg"), np.full((450, 450, 3), 200, np.uint8))
    au = "\n".join(["frame, AU45_r"] + [f"{k}, {0.1 * (k % 30)}" for k in range(8000)])
    (root / "au.csv").write_text(au + "\n")
    np.save(root / "aud_ds.npy", rng.normal(size=(8000, 16, 29)).astype(np.float32))
    return root, frames


def test_real_poses_load_and_convert(obama_folder):
    root, frames = obama_folder
    opt = parse_args([str(root), "-O", "--asr_model", "deepspeech", "--num_rays", "64"])
    ds = NeRFDataset(opt, type="train")
    assert (ds.H, ds.W) == (450, 450) and ds.audio_dim == 29
    torch.testing.assert_close(ds.intrinsics, torch.tensor([1100.0, 1100.0, 225.0, 225.0]))
    raw = np.array([f["transform_matrix"] for f in frames])
    np.testing.assert_allclose(ds.poses.numpy(), nerf_matrix_to_ngp(raw, 4.0), atol=1e-6)
    np.testing.assert_allclose(ngp_matrix_to_nerf(ds.poses.numpy(), 4.0), raw, atol=1e-6)
    # Audio and eye rows are picked by aud_id / img_id (7272 and up), not by position.
    feats = np.load(root / "aud_ds.npy")
    np.testing.assert_allclose(ds.auds[1].numpy(), feats[frames[1]["aud_id"]].T)
    assert ds.eye_area[1].item() == pytest.approx(min(0.1 * (frames[1]["img_id"] % 30), 2) / 2)
    batch = ds.collate([0])
    assert batch["rays_o"].shape == (1, 64, 3)

    smooth = NeRFDataset(parse_args([str(root), "-O", "--asr_model", "deepspeech", "--smooth_path"]),
                         type="train")
    np.testing.assert_allclose(smooth.poses.numpy(), smooth_path(ds.poses.numpy(), 7), atol=1e-6)
    assert not np.allclose(smooth.poses.numpy(), ds.poses.numpy(), atol=1e-3)

    half = NeRFDataset(opt, type="val", downscale=2)
    assert (half.H, half.W) == (225, 225) and half.collate([0])["images"].shape == (1, 225 * 225, 3)
    torch.testing.assert_close(half.intrinsics, torch.tensor([550.0, 550.0, 112.5, 112.5]))
