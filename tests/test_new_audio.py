"""Driving a trained model with new audio: --test --test_train --aud WAV|NPY, the pose/eye/torso
track ping-ponging over the training frames, --smooth_path/--smooth_eye/--fix_eye, muxed sound."""
import json
import shutil

import numpy as np
import pytest

import main as cli
from nerf_triplane.options import parse_args
from nerf_triplane.poses import nerf_matrix_to_ngp, smooth_path
from nerf_triplane.provider import NeRFDataset, mirror_index
from nerf_triplane.video import probe_video
from tests.conftest import TRAIN_FRAMES, error_line, shared_file, tiny_args

pytestmark = pytest.mark.usefixtures("one_thread")
SECONDS = 1.6  # 40 frames at 25 fps: longer than the 30 training frames, so the track turns back


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    from data_utils.audio import write_wav
    from data_utils.synthetic import make_speech_like_audio

    return write_wav(tmp_path_factory.mktemp("speech") / "other.wav", make_speech_like_audio(SECONDS, seed=5))


@pytest.mark.slow
def test_wav_drives_the_model_into_a_video_with_sound(subject, trained_head, speech):
    results = trained_head / "results"
    test_report = (results / "report.md").read_text() if (results / "report.md").is_file() else "test split\n"
    (results / "report.md").write_text(test_report)
    assert cli.main(tiny_args(subject, trained_head, "--test", "--test_train", "--aud", speech)) == 0
    # The new-audio render keeps its own report; the test split's is left as it was.
    assert "other_strip.png" in (results / "other_report.md").read_text()
    assert (results / "report.md").read_text() == test_report
    n = round(SECONDS * 25)
    info = probe_video(results / "other.mp4")
    assert abs(info["frames"] - n) <= 1 and info["has_audio"] and info["fps"] == 25
    assert np.load(results / "other_feats.npy").shape == (n, 16, 32)  # same extractor as training
    index = json.loads((results / "other_frames" / "index.json").read_text())
    assert (index["split"], index["aud"], index["torso"]) == ("train", str(speech.resolve()), False)
    # Frames 0..29 of the training video, then back 29, 28, ...
    assert [f["img_id"] for f in index["frames"]] == [mirror_index(k, TRAIN_FRAMES) for k in range(n)]
    assert [f["aud_id"] for f in index["frames"]] == list(range(n))
    assert len(list((results / "other_frames").glob("*.png"))) == n


@pytest.mark.slow
def test_feature_npy_with_smoothing_flags(subject, trained_head, speech, tmp_path):
    from data_utils.audio import load_audio
    from data_utils.audio_features import extract_features

    feats = tmp_path / "clip_feats.npy"
    np.save(feats, extract_features(load_audio(speech), engine="mel", fps=25)[:25])  # 1 s of it
    shutil.copy(speech, tmp_path / "clip.wav")  # found next to the features and muxed
    args = tiny_args(subject, trained_head, "--test", "--test_train", "--aud", feats, "--smooth_path",
                     "--smooth_path_window", 5, "--smooth_eye", "--fix_eye", 0.3)
    assert cli.main(args) == 0
    info = probe_video(trained_head / "results" / "clip.mp4")
    # The 1.6 s wav is cut at the last of the 25 feature frames.
    assert info["frames"] == 25 and info["has_audio"]


def test_companion_audio_lookup(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"")
    (tmp_path / "b.mp3").write_bytes(b"")
    assert cli.companion_audio(tmp_path / "a.npy") == tmp_path / "a.wav"
    assert cli.companion_audio(tmp_path / "a_eo.npy") == tmp_path / "a.wav"
    assert cli.companion_audio(tmp_path / "b_hu.npy") == tmp_path / "b.mp3"
    assert cli.companion_audio(tmp_path / "c.npy") is None


@pytest.mark.slow
def test_feature_dim_mismatch_with_checkpoint(subject, trained_head, tmp_path, capsys):
    feats = tmp_path / "other_dim.npy"
    np.save(feats, np.zeros((8, 16, 29), np.float32))
    assert cli.main(tiny_args(subject, trained_head, "--test", "--test_train", "--aud", feats)) == 2
    line = error_line(capsys)
    assert "dim 32" in line and "--asr_model" in line


def _jerk(poses: np.ndarray) -> float:
    """RMS third difference of the camera positions."""
    return float(np.sqrt((np.diff(poses[:, :3, 3], 3, axis=0) ** 2).mean()))


def test_dataset_smooth_path_on_real_poses(subject, tmp_path):
    """--smooth_path through NeRFDataset, on the tracked Obama cameras put into a copy of the subject."""
    real = json.loads(shared_file("obama_transforms_val.json").read_text())["frames"]
    folder = tmp_path / "subject"
    shutil.copytree(subject, folder)
    path = folder / "transforms_train.json"
    transform = json.loads(path.read_text())
    for frame, tracked in zip(transform["frames"], real):
        frame["transform_matrix"] = tracked["transform_matrix"]
    path.write_text(json.dumps(transform))
    raw = NeRFDataset(parse_args(tiny_args(folder, tmp_path / "ws")), type="train").poses.numpy()
    opt = parse_args(tiny_args(folder, tmp_path / "ws", "--smooth_path"))
    smooth = NeRFDataset(opt, type="train").poses.numpy()
    expected = smooth_path(nerf_matrix_to_ngp(np.array([f["transform_matrix"] for f in transform["frames"]],
                                                       dtype=np.float32), opt.scale, opt.offset), 7)
    np.testing.assert_allclose(smooth, expected, atol=1e-6)
    assert _jerk(smooth) < 0.5 * _jerk(raw)
