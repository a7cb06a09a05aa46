"""Evaluation report, sync score, nearest-frame floor and presets."""
import json
import shutil

import numpy as np
import pytest

from nerf_triplane import presets
from nerf_triplane.options import parse_args
from nerf_triplane.sync import audio_envelope, mouth_opening, sync_score


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    """A 66-frame 256² synthetic subject (60 train, 6 held-out) whose mouth follows its audio."""
    from data_utils.synthetic import make_synthetic_subject

    return make_synthetic_subject(tmp_path_factory.mktemp("eval") / "syn", n_frames=66, size=256, seed=3)


def _frames(data, split):
    name = "train" if split == "train" else "val"
    return json.loads((data / f"transforms_{name}.json").read_text())["frames"]


def _lms(data, ids):
    return np.stack([np.loadtxt(data / "ori_imgs" / f"{i}.lms") for i in ids])


# ---------------------------------------------------------------------------- sync


@pytest.mark.parametrize("shift", [-4, 0, 3])
def test_sync_recovers_shifted_audio(subject, shift):
    from data_utils.audio import load_audio

    ids = [f["img_id"] for f in _frames(subject, "train")]
    opening = mouth_opening(_lms(subject, ids))
    audio = load_audio(subject / "aud.wav")
    # Audio read `shift` frames later: the mouth then follows that envelope `shift` frames late.
    score = sync_score(opening, audio_envelope(audio, 16000, frame_ids=ids, offset_frames=shift))
    assert abs(score["best_lag"] - shift) <= 1
    assert score["best_corr"] > 0.5
    assert len(score["corr"]) == 21 and score["frames"] == len(ids)


def test_sync_edge_cases():
    lms = np.zeros((3, 68, 2))
    lms[:, 36:42] = [0.0, 0.0]
    lms[:, 42:48] = [10.0, 0.0]
    lms[:, 61:64, 1] = 0.0
    lms[:, 65:68, 1] = [[2.0], [4.0], [np.nan]]
    opening = mouth_opening(lms)
    assert opening[:2] == pytest.approx([0.2, 0.4]) and np.isnan(opening[2])
    with pytest.raises(ValueError, match=r"\[N, 68, 2\]"):
        mouth_opening(np.zeros((3, 20, 2)))
    # Too few frames for any lag: every value is None rather than a fake correlation.
    short = sync_score(np.arange(5.0), np.arange(5.0), max_lag=2)
    assert short["best_lag"] is None and short["corr_at_0"] is None
    # Silence then a constant tone starting at 0.1 s; frames at 0, 0.1, 0.2 s (10 fps).
    env = audio_envelope(np.r_[np.zeros(1600), np.ones(3200)], 16000, n_frames=3, fps=10)
    assert env == pytest.approx([-60.0, 10 * np.log10(0.5), 0.0])


# ---------------------------------------------------------------------------- baseline


def test_nearest_frame_baseline(subject, tmp_path):
    from nerf_triplane.baseline import nearest_frame_baseline, nearest_indices

    data = tmp_path / "syn"
    shutil.copytree(subject, data)
    pool = _lms(data, range(10))
    # Matching is in pixels: a frame finds itself, and a copy moved far right finds the pool
    # frame whose landmarks sit furthest right.
    assert nearest_indices(pool[4:5] + 0.1, pool)[0] == 4
    moved = pool[4:5] + np.array([1000.0, 0.0])
    assert nearest_indices(moved, pool)[0] == int(np.argmax(pool[:, :, 0].mean(axis=1)))
    result = nearest_frame_baseline(data, "test")
    assert result["n_frames"] == 6 and len(result["matches"]) == 6
    assert all(m[1] < 60 for m in result["matches"])
    assert 15 < result["psnr"] < 100 and result["full_frame_psnr"] <= result["psnr"]
    assert 0 < result["ssim"] < 1
    assert result["lmd"] is not None and 0 <= result["lmd"] < 10
    cache = data / "baseline_test.json"
    assert cache.is_file()
    # The cache answers a second call; a changed frame list invalidates it.
    cached = json.loads(cache.read_text())
    cached["result"]["psnr"] = -1.0
    cache.write_text(json.dumps(cached))
    assert nearest_frame_baseline(data, "test")["psnr"] == -1.0
    val = json.loads((data / "transforms_val.json").read_text())
    val["frames"] = val["frames"][:3]
    (data / "transforms_val.json").write_text(json.dumps(val))
    again = nearest_frame_baseline(data, "test", max_frames=2)
    assert again["n_frames"] == 2 and again["psnr"] > 15


class _NoFace:
    """A detector that finds nothing (the floors' LMD is then None)."""

    def detect(self, rgb):
        return None


def _hair_pair(folder):
    """A one-frame training split and a one-frame held-out split of 96² images with the same
    landmarks and face; only the held-out frame has dark hair above the face, labelled head in
    its parsing map. Returns the folder and the hair mask  # [96, 96] bool."""
    import cv2

    from data_utils.parsing import BACKGROUND, HEAD, write_labels

    size = 96
    ang = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    lms = np.stack([48 + 16 * np.cos(ang), 56 + 20 * np.sin(ang)], -1)  # face ellipse, rows 36..76
    face = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(face, cv2.convexHull(np.round(lms).astype(np.int32)), 1)
    hair = np.zeros((size, size), bool)
    hair[8:30, 24:72] = True
    hair &= face == 0
    rng = np.random.default_rng(0)
    for sub in ("gt_imgs", "ori_imgs", "parsing"):
        (folder / sub).mkdir(parents=True)
    for img_id, has_hair in ((0, False), (1, True)):
        img = np.full((size, size, 3), 200, np.uint8)  # light wall
        img[face > 0] = (180, 140, 120)
        # Slightly different skin noise so that no composite equals its GT exactly.
        img[face > 0] += rng.integers(0, 6, (int(face.sum()), 3), dtype=np.uint8)
        labels = np.where(face > 0, HEAD, BACKGROUND).astype(np.uint8)
        if has_hair:
            img[hair] = (30, 20, 10)
            labels[hair] = HEAD
        cv2.imwrite(str(folder / "gt_imgs" / f"{img_id}.jpg"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 100])
        np.savetxt(folder / "ori_imgs" / f"{img_id}.lms", lms)
        write_labels(folder / "parsing" / f"{img_id}.png", labels)
    for split, img_id in (("train", 0), ("val", 1)):
        (folder / f"transforms_{split}.json").write_text(json.dumps({"frames": [{"img_id": img_id, "aud_id": img_id}]}))
    return folder, hair


def test_like_for_like_floor_copies_the_hair(tmp_path):
    """The outline floor keeps the held-out frame's own hair; the like-for-like floor pastes the
    head label of both frames' parsing maps, so hair that the training frame lacks is replaced
    (as a head model would have to render it) and that floor scores lower."""
    import cv2

    from nerf_triplane.baseline import head_mask, nearest_frame_baseline
    from nerf_triplane.metrics import psnr

    data, hair = _hair_pair(tmp_path / "pair")
    outline = nearest_frame_baseline(data, "test", detector=_NoFace())
    head = nearest_frame_baseline(data, "test", detector=_NoFace(), region="head")
    assert outline["region"] == "outline" and head["region"] == "head"
    assert outline["matches"] == head["matches"] == [[1, 0]]
    assert outline["lmd"] is None and outline["lmd_frames"] == 0
    # Wall vs dark hair over ~1/5 of the image: the like-for-like floor is far lower.
    assert outline["psnr"] > 35 and head["psnr"] < outline["psnr"] - 10
    # The head floor's composite is the training frame over the union of both head labels:
    # recomputed here from the images, it gives the same PSNR.
    gt = cv2.cvtColor(cv2.imread(str(data / "gt_imgs" / "1.jpg")), cv2.COLOR_BGR2RGB)
    src = cv2.cvtColor(cv2.imread(str(data / "gt_imgs" / "0.jpg")), cv2.COLOR_BGR2RGB)
    parsings = tuple(cv2.imread(str(data / "parsing" / f"{i}.png")) for i in (0, 1))
    mask = head_mask(np.loadtxt(data / "ori_imgs" / "0.lms"), gt.shape[:2], parsings)
    assert mask[hair].all()
    assert not head_mask(np.loadtxt(data / "ori_imgs" / "0.lms"), gt.shape[:2], parsings[:1])[hair].all()
    assert head["psnr"] == pytest.approx(psnr(np.where(mask[..., None], src, gt) / 255.0, gt / 255.0))
    # Each region has its own cache file.
    assert (data / "baseline_test.json").is_file() and (data / "baseline_test_head.json").is_file()
    assert nearest_frame_baseline(data, "test", detector=_NoFace(), region="head")["psnr"] == head["psnr"]
    with pytest.raises(ValueError, match="region"):
        nearest_frame_baseline(data, "test", region="hair")


# ---------------------------------------------------------------------------- evaluate_workspace


def _workspace_with_gt_frames(ws, data, split):
    """A workspace whose render is exactly the GT frames of ``split`` (lossless frames folder)."""
    import cv2

    frames = _frames(data, split)
    folder = ws / "results" / "ngp_ep0001_frames"
    folder.mkdir(parents=True)
    index = []
    for k, f in enumerate(frames[:24]):  # SSIM costs ~0.5 s per 256² frame
        shutil.copy(data / "gt_imgs" / f"{f['img_id']}.jpg", folder / "tmp.jpg")
        cv2.imwrite(str(folder / f"{k:04d}.png"), cv2.imread(str(folder / "tmp.jpg")))
        index.append({"k": k, "img_id": f["img_id"], "aud_id": f["aud_id"]})
    (folder / "tmp.jpg").unlink()
    (folder / "index.json").write_text(json.dumps(
        {"frames": index, "data": str(data), "split": split, "aud": "", "torso": False}))
    (ws / "results" / "metrics.json").write_text(json.dumps({"name": "ngp_ep0001", "psnr": 99.0}))


def test_pose_jitter_scores_shaking_not_steady_motion():
    from nerf_triplane.jitter import pose_jitter

    n = 12
    steady = np.zeros((n, 3))
    steady[:, 1] = np.radians(0.5) * np.arange(n)  # turning at 0.5 deg per frame
    steady[:, 0] = np.radians(0.2) * np.arange(n)
    walk = np.stack([0.01 * np.arange(n), np.zeros(n), -5 + 0.02 * np.arange(n)], 1)  # dm, steady
    still = pose_jitter(steady, walk)
    # Two Euler angles at constant rates are not quite a constant angular velocity: ~0.002 deg.
    assert still["rot_deg"] == pytest.approx(0, abs=0.01) and still["trans_mm"] == pytest.approx(0, abs=1e-9)
    shake = np.zeros((n, 3))
    shake[1::2, 1] = np.radians(1.0)  # yaw 0, 1, 0, 1 ... degrees: the turn rate flips by 2 deg
    zigzag = walk.copy()
    zigzag[1::2, 0] += 0.01  # 1 mm sideways every other frame: |0 - 2·1 + 0| = 2 mm
    shaky = pose_jitter(shake, zigzag)
    assert shaky["rot_deg"] == pytest.approx(2.0) and shaky["trans_mm"] == pytest.approx(2.0)
    assert shaky["triples"] == n - 2
    shake[5] = np.nan  # an unknown frame drops the three second differences it is part of
    assert pose_jitter(shake, zigzag)["triples"] == n - 5


def test_motion_lag_finds_a_late_track():
    from nerf_triplane.jitter import motion_lag

    rng = np.random.default_rng(1)
    head = np.cumsum(rng.normal(0, 0.01, (80, 3)), axis=0)  # a wandering head, radians
    measured = head + rng.normal(0, 0.001, head.shape)
    late = np.roll(head, 2, axis=0)  # the track shows frame t - 2 at frame t
    assert motion_lag(late, measured)["best_lag"] == 2
    assert motion_lag(head, measured)["best_lag"] == 0 and motion_lag(head, measured)["best_corr"] > 0.9


def test_mouth_corr_follows_the_lips():
    from nerf_triplane.evaluation import image_metrics

    rng = np.random.default_rng(0)
    gts = [np.zeros((16, 16, 3), np.uint8)] * 12
    lms_gt = np.tile(rng.uniform(100, 200, (1, 68, 2)), (12, 1, 1))
    lms_gt[:, 66, 1] += np.arange(12) % 4  # the lower lip moves: the opening varies
    still = np.tile(lms_gt[:1], (12, 1, 1))
    moving = lms_gt.copy()
    moving[:, 66, 1] += 0.5 * (np.arange(12) % 4)
    assert image_metrics(gts, gts, still, lms_gt)["mouth_corr"] is None  # a still mouth
    assert image_metrics(gts, gts, moving, lms_gt)["mouth_corr"] > 0.999
    backwards = lms_gt[::-1].copy()
    assert image_metrics(gts, gts, backwards, lms_gt)["mouth_corr"] < 0.5


def test_evaluate_identical_frames(subject, tmp_path):
    from nerf_triplane.evaluation import evaluate_workspace

    ws = tmp_path / "ws"
    _workspace_with_gt_frames(ws, subject, "train")
    result = evaluate_workspace(ws)
    m = result["metrics"]
    assert result["name"] == "ngp_ep0001" and result["frames"] == 24 and result["source"] == "frames"
    assert m["psnr"] == 100.0 and m["ssim"] == pytest.approx(1.0)
    assert m["lmd"] == 0.0 and m["lmd_frames"] == 24
    assert m["mouth_corr"] == pytest.approx(1.0)
    assert result["sync"] == result["sync_gt"]
    assert result["sync"]["best_lag"] == 0 and result["sync"]["best_corr"] > 0.5
    # The synthetic mouth follows its audio, so the opening predicted from the audio matches it.
    assert result["sync"]["corr_pred"] > 0.5
    assert m["opening_std_ratio"] == pytest.approx(1.0) and m["opening_p90"] == m["opening_p90_gt"]
    assert result["baseline"] is None  # the floor is for held-out frames only
    jitter = result["jitter"]  # the same frames shake alike, measured on either side
    assert jitter["gt_landmarks"] == jitter["render_landmarks"] and jitter["render_landmarks"]["triples"] == 22
    assert jitter["tracked"]["triples"] == 22 and jitter["tracked"]["rot_deg"] >= 0
    assert set(jitter["tracked_lag"]) == {"best_lag", "best_corr", "corr_at_0"}

    merged = json.loads((ws / "results" / "metrics.json").read_text())
    assert merged["psnr"] == 99.0  # the trainer's value is kept
    assert merged["ssim"] == pytest.approx(1.0) and merged["sync"]["best_lag"] == 0
    report = (ws / "results" / "report.md").read_text()
    assert "ngp_ep0001_strip.png" in report and "| PSNR (dB) | 100.00 |" in report
    assert "| render, by landmarks |" in report and merged["jitter"] == jitter
    import cv2

    strip = cv2.imread(str(ws / "results" / "ngp_ep0001_strip.png"))
    assert strip.shape == (2 * 192, 12 * 192, 3)


def test_evaluate_cli_mp4_fallback_and_errors(subject, tmp_path, capsys):
    import sys
    from pathlib import Path

    from nerf_triplane.video import write_video

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    import evaluate

    ws = tmp_path / "ws"
    assert evaluate.main([str(ws)]) == 2
    assert "--test first" in capsys.readouterr().err
    (ws / "results").mkdir(parents=True)
    assert evaluate.main([str(ws)]) == 2
    assert "no rendered video" in capsys.readouterr().err

    import cv2

    held = _frames(subject, "test")
    imgs = [cv2.cvtColor(cv2.imread(str(subject / "gt_imgs" / f"{f['img_id']}.jpg")), cv2.COLOR_BGR2RGB)
            for f in held]
    write_video(ws / "results" / "ngp_ep0002.mp4", imgs, quality=10)
    write_video(ws / "results" / "ngp_ep0002_depth.mp4", imgs)
    assert evaluate.main([str(ws)]) == 2
    assert "--data" in capsys.readouterr().err
    assert evaluate.main([str(ws), "--data", str(subject), "--no-baseline"]) == 0
    out = json.loads(capsys.readouterr().out)  # the JSON alone: an LPIPS notice goes to stderr
    assert out["name"] == "ngp_ep0002" and out["frames"] == 6
    assert out["metrics"]["psnr"] > 30 and out["baseline"] is None
    assert out["sync"]["best_lag"] is None  # 6 frames are too few to correlate
    assert json.loads((ws / "results" / "metrics.json").read_text())["name"] == "ngp_ep0002"


def test_print_result_keeps_stdout_for_the_json(capsys):
    from nerf_triplane.json_output import print_result

    def noisy():
        print('Downloading: "https://example.invalid/w.pth" to /tmp/w.pth')  # as torch hub does
        return {"psnr": 30.0}

    assert print_result(noisy) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"psnr": 30.0}
    assert "Downloading" in captured.err

    def bad():
        raise FileNotFoundError("gt_imgs/3.jpg is missing: re-run process.py")

    assert print_result(bad) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == "error: gt_imgs/3.jpg is missing: re-run process.py\n"


# ---------------------------------------------------------------------------- presets


def test_presets_explicit_flags_win(tmp_path):
    opt = parse_args([str(tmp_path), "--preset", "cpu", "--num_rays", "512"])
    presets.apply_preset(opt)
    assert opt.num_rays == 512 and opt.grid_size == 64 and opt.iters == presets.PRESETS["cpu"]["iters"]["head"]
    assert opt.O and opt.cuda_ray and opt.exp_eye  # -O implications re-applied

    # With argv, a flag given at its parser default still wins.
    argv = [str(tmp_path), "--preset", "cpu", "--grid_size", "128", "--torso"]
    opt = parse_args(argv)
    presets.apply_preset(opt, argv)
    assert opt.grid_size == 128 and opt.iters == presets.PRESETS["cpu"]["iters"]["torso"]

    opt = parse_args([str(tmp_path), "--preset", "paper", "--finetune_lips"])
    presets.apply_preset(opt)
    assert opt.patch_size == 32 and opt.iters == 125000 and opt.num_rays == 65536


def test_presets_torso_flags_reach_only_the_torso_stage(tmp_path):
    head = parse_args([str(tmp_path), "--preset", "cpu"])
    presets.apply_preset(head)
    assert head.lr_net == 0.001 and head.torso_pose_norm == 0  # the reference's values
    argv = [str(tmp_path), "--preset", "cpu", "--torso", "--lr_net", "0.002"]
    torso = parse_args(argv)
    presets.apply_preset(torso, argv)
    assert torso.torso_pose_norm == 1.0 and torso.ind_dim_torso == 0 and torso.lr_net == 0.002
    assert "--torso_pose_norm" not in presets.stage_flags("cpu", "head")


def test_presets_errors_and_cli(capsys):
    opt = parse_args(["x", "--preset", "nope"])
    with pytest.raises(ValueError, match="paper, cpu, tiny"):
        presets.apply_preset(opt)
    with pytest.raises(ValueError, match="stage"):
        presets.stage_flags("tiny", "warmup")
    assert presets.main(["tiny", "--stage", "torso"]) == 0
    out = capsys.readouterr().out.split()
    assert "--torso" in out and out[out.index("--iters") + 1] == str(presets.PRESETS["tiny"]["iters"]["torso"])
    assert presets.main(["nope"]) == 2


def test_opening_regressor_predicts_held_out_frames():
    from nerf_triplane.sync import OpeningRegressor

    rng = np.random.default_rng(0)
    windows = rng.standard_normal((300, 16, 8))
    opening = 0.05 + 0.02 * windows[:, 7, 2] - 0.01 * windows[:, 8, 5] + 0.002 * rng.standard_normal(300)
    opening[:5] = np.nan  # frames without landmarks are left out of the fit
    reg = OpeningRegressor(windows[:200], opening[:200])
    pred = reg.predict(windows[200:])
    assert pred.shape == (100,)
    assert np.corrcoef(pred, opening[200:])[0, 1] > 0.95
    # Steps outside the 80 ms around the frame do not enter the prediction.
    far = windows[200:].copy()
    far[:, :6] = 0
    np.testing.assert_allclose(reg.predict(far), pred)
    with pytest.raises(ValueError, match="at least 8 frames"):
        OpeningRegressor(windows[:7], opening[5:12])
    with pytest.raises(ValueError, match=r"\[N, 16, A\]"):
        OpeningRegressor(windows[:, :4], opening)


def test_articulation_spread():
    from nerf_triplane.evaluation import articulation

    ref = np.linspace(0, 0.1, 50)
    half = ref / 2
    out = articulation(half, ref)
    assert out["opening_std_ratio"] == pytest.approx(0.5)
    assert out["opening_p90"] == pytest.approx(out["opening_p90_gt"] / 2)
    with_gaps = np.where(np.arange(50) % 2 == 0, np.nan, half)
    assert articulation(with_gaps, ref)["opening_std_ratio"] == pytest.approx(0.5, rel=0.05)
    assert articulation(half[:7], ref)["opening_std_ratio"] is None
    assert articulation(half, np.zeros(50))["opening_std_ratio"] is None
