"""The synthetic subject: complete folder, audio-driven mouth, landmarks, camera consistency."""
import csv
import json

import cv2
import numpy as np
import pytest
import torch

from data_utils.audio import load_audio
from data_utils.synthetic import (PARSING_BGR, intersect_head, make_speech_like_audio,
                                  make_synthetic_subject, mouth_opening)
from nerf_triplane.options import parse_args
from nerf_triplane.provider import NeRFDataset

N_FRAMES, SIZE = 55, 96


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    return make_synthetic_subject(tmp_path_factory.mktemp("syn") / "subj", n_frames=N_FRAMES,
                                  size=SIZE, seed=1)


def _frame_rms(audio: np.ndarray, n: int) -> np.ndarray:
    # Loudness over +-30 ms around each frame time, computed independently of the generator.
    hop, half = 16000 // 25, 480
    return np.array([np.sqrt(np.mean(audio[max(0, i * hop - half):i * hop + half] ** 2)) for i in range(n)])


def test_folder_is_complete(subject):
    n_train = N_FRAMES * 10 // 11
    for sub, ext in (("ori_imgs", "jpg"), ("ori_imgs", "lms"), ("parsing", "png"),
                     ("gt_imgs", "jpg"), ("torso_imgs", "png")):
        assert sorted(int(p.stem) for p in (subject / sub).glob(f"*.{ext}")) == list(range(N_FRAMES))
    for name in ("bc.jpg", "aud.wav", "aud.npy", "au.csv", "track_params.pt", "subj.mp4"):
        assert (subject / name).is_file(), name
    assert cv2.imread(str(subject / "bc.jpg")).shape == (SIZE, SIZE, 3)
    assert cv2.imread(str(subject / "torso_imgs" / "0.png"), cv2.IMREAD_UNCHANGED).shape == (SIZE, SIZE, 4)
    assert np.load(subject / "aud.npy").shape == (N_FRAMES, 16, 32)
    assert len(load_audio(subject / "aud.wav")) == N_FRAMES * 16000 // 25

    train = json.loads((subject / "transforms_train.json").read_text())
    val = json.loads((subject / "transforms_val.json").read_text())
    assert [f["img_id"] for f in train["frames"]] == list(range(n_train))
    assert [f["img_id"] for f in val["frames"]] == list(range(n_train, N_FRAMES))
    assert all(f["aud_id"] == f["img_id"] for f in train["frames"] + val["frames"])
    assert train["cx"] == train["cy"] == SIZE / 2 and train["focal_len"] > 0

    with open(subject / "au.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert " AU45_r" in rows[0] and len(rows) == N_FRAMES + 1
    au = np.array([float(r[rows[0].index(" AU45_r")]) for r in rows[1:]])
    assert au.min() >= 0 and 1.8 < au.max() < 3.0  # at least one full blink

    track = torch.load(subject / "track_params.pt")
    assert track["euler"].shape == track["trans"].shape == (N_FRAMES, 3)
    assert float(track["euler"].abs().max()) <= np.deg2rad(10) + 1e-6


def test_parsing_uses_reference_colours_and_torso_alpha(subject):
    allowed = {tuple(c) for c in PARSING_BGR.values()}
    for k in (0, N_FRAMES - 1):
        parsing = cv2.imread(str(subject / "parsing" / f"{k}.png"))
        colours = {tuple(c) for c in np.unique(parsing.reshape(-1, 3), axis=0)}
        assert colours == allowed
        torso = cv2.imread(str(subject / "torso_imgs" / f"{k}.png"), cv2.IMREAD_UNCHANGED)
        body = np.all(parsing == PARSING_BGR["neck"], -1) | np.all(parsing == PARSING_BGR["torso"], -1)
        background = np.all(parsing == PARSING_BGR["background"], -1)
        assert np.all(torso[..., 3][body] == 255) and np.all(torso[..., 3][background] == 0)
        # gt_imgs: background pixels are exactly the static bc.jpg (up to JPEG error).
        gt = cv2.imread(str(subject / "gt_imgs" / f"{k}.jpg")).astype(int)
        bc = cv2.imread(str(subject / "bc.jpg")).astype(int)
        assert np.abs(gt - bc)[background].mean() < 3


def test_mouth_follows_the_audio(subject):
    rms = _frame_rms(load_audio(subject / "aud.wav"), N_FRAMES)
    dark_or_teeth, gap = [], []
    for k in range(N_FRAMES):
        img = cv2.imread(str(subject / "gt_imgs" / f"{k}.jpg"))[..., ::-1] / 255.0
        lms = np.loadtxt(subject / "ori_imgs" / f"{k}.lms")
        c0, c1 = int(lms[48:60, 0].min()), int(lms[48:60, 0].max()) + 1
        r0, r1 = int(lms[48:60, 1].min()) - 2, int(lms[48:60, 1].max()) + 3
        lum = img[r0:r1, c0:c1].mean(-1)
        dark_or_teeth.append(((lum < 0.2) | (lum > 0.7)).sum())
        gap.append(lms[66, 1] - lms[62, 1])
    assert np.corrcoef(rms, dark_or_teeth)[0, 1] > 0.9  # what the pixels show
    assert np.corrcoef(rms, gap)[0, 1] > 0.9  # what the landmarks say
    assert min(gap) < 0.2 and max(gap) > 1.0  # closed in pauses, open on syllables


def test_eyes_close_with_au45(subject):
    with open(subject / "au.csv", newline="") as f:
        rows = list(csv.reader(f))
    au = np.array([float(r[5]) for r in rows[1:]])
    lms = np.stack([np.loadtxt(subject / "ori_imgs" / f"{k}.lms") for k in range(N_FRAMES)])
    opening = (lms[:, [40, 41, 46, 47], 1].mean(1) - lms[:, [37, 38, 43, 44], 1].mean(1))
    assert np.corrcoef(au, opening)[0, 1] < -0.9
    assert opening[au.argmax()] < 0.15 * opening.max()


def test_landmarks_lie_on_the_head(subject):
    for k in range(0, N_FRAMES, 6):
        lms = np.loadtxt(subject / "ori_imgs" / f"{k}.lms")
        assert lms.shape == (68, 2)
        head = np.all(cv2.imread(str(subject / "parsing" / f"{k}.png")) == PARSING_BGR["head"], -1)
        cols, rows = np.round(lms).astype(int).T
        assert np.all(head[rows, cols]), f"frame {k}: landmarks outside the head"
        # iBUG layout: jaw left to right, eyes above nose above mouth above chin.
        assert lms[0, 0] < lms[8, 0] < lms[16, 0]
        assert lms[36:48, 1].mean() < lms[30, 1] < lms[48:68, 1].mean() < lms[8, 1]
        assert lms[36:42, 0].mean() < lms[42:48, 0].mean()


def test_provider_rays_see_the_rendered_head(subject):
    """Rays the provider builds for head pixels hit the analytic head inside the box."""
    opt = parse_args([str(subject), "-O"])
    ds = NeRFDataset(opt, type="test")
    openings = mouth_opening(load_audio(subject / "aud.wav"), N_FRAMES)
    n_train = N_FRAMES * 10 // 11
    for pos in (0, ds.num_frames - 1):
        batch = ds.collate([pos])
        o_ngp, d_ngp = batch["rays_o"][0].double().numpy(), batch["rays_d"][0].double().numpy()
        o, d = o_ngp[:, [2, 0, 1]] / opt.scale, d_ngp[:, [2, 0, 1]]
        t, _ = intersect_head(o, d, float(openings[n_train + pos]))
        hit = np.isfinite(t)
        parsing = cv2.imread(str(subject / "parsing" / f"{n_train + pos}.png"))
        head = np.all(parsing == PARSING_BGR["head"], -1).reshape(-1)
        assert np.mean(hit == head) > 0.995
        points = o_ngp[hit] + t[hit, None] * opt.scale * d_ngp[hit]
        assert np.all(np.abs(points) < np.array([1.0, 0.5, 1.0]))


def test_speech_like_audio_is_deterministic_with_pauses():
    a = make_speech_like_audio(4.0, seed=3)
    assert a.dtype == np.float32 and a.shape == (64000,)
    assert np.array_equal(a, make_speech_like_audio(4.0, seed=3))
    assert not np.allclose(a, make_speech_like_audio(4.0, seed=4))
    assert np.isclose(np.abs(a).max(), 0.8, atol=1e-3)
    rms = _frame_rms(a, 100)
    silent = np.mean(rms < 0.01)
    assert 0.1 < silent < 0.7  # pauses between syllables
    spectrum = np.abs(np.fft.rfft(a)) ** 2
    freqs = np.fft.rfftfreq(len(a), 1 / 16000)
    assert spectrum[freqs < 4000].sum() > 0.9 * spectrum.sum()  # voiced, speech band


def test_generation_is_deterministic(tmp_path):
    a = make_synthetic_subject(tmp_path / "a", n_frames=12, size=32, seed=5)
    b = make_synthetic_subject(tmp_path / "b", n_frames=12, size=32, seed=5)
    c = make_synthetic_subject(tmp_path / "c", n_frames=12, size=32, seed=6)
    for name in ("aud.npy", "ori_imgs/7.lms", "gt_imgs/7.jpg", "transforms_train.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "gt_imgs/7.jpg").read_bytes() != (c / "gt_imgs/7.jpg").read_bytes()


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="n_frames"):
        make_synthetic_subject(tmp_path / "x", n_frames=5)
    with pytest.raises(ValueError, match="size"):
        make_synthetic_subject(tmp_path / "x", n_frames=20, size=33)
    assert not (tmp_path / "x").exists()
