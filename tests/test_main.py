"""main.py end to end on a tiny synthetic subject: train, --test, new audio, and bad input."""
import json
import shutil

import numpy as np
import pytest

import main as cli
from nerf_triplane.video import probe_video
# one_thread is an autouse fixture: importing it applies it to this module too.
from tests.test_trainer import SUBJECT_FRAMES, one_thread, tiny_args, tiny_subject  # noqa: F401


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    return tiny_subject(tmp_path_factory)


@pytest.fixture(scope="module")
def trained(subject, tmp_path_factory):
    """A workspace after a 30-step run (one epoch) through main()."""
    ws = tmp_path_factory.mktemp("main_ws")
    assert cli.main(tiny_args(subject, ws, "--iters", 30)) == 0
    return ws


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.slow
def test_train_then_test_writes_videos_and_metrics(subject, trained):
    results = trained / "results"
    # Training ends by rendering the test split, as the reference does.
    assert (results / "ngp_ep0001.mp4").is_file()
    (results / "metrics.json").unlink()
    assert cli.main(tiny_args(subject, trained, "--test")) == 0
    metrics = json.loads((results / "metrics.json").read_text())
    n_test = SUBJECT_FRAMES - SUBJECT_FRAMES * 10 // 11
    assert metrics["frames"] == n_test
    assert 10 < metrics["psnr"] < 60 and 0 < metrics["ssim"] <= 1
    assert metrics["lmd_frames"] + metrics["lmd_skipped"] == n_test
    assert metrics["checkpoint"].endswith("ngp_ep0001.pth")
    for suffix, width in (("", 64), ("_depth", 64), ("_pred_gt", 128)):
        info = probe_video(results / f"ngp_ep0001{suffix}.mp4")
        assert (info["frames"], info["width"], info["height"]) == (n_test, width, 64)


@pytest.mark.slow
def test_new_audio_renders_video_with_sound(subject, trained, tmp_path):
    from data_utils.audio import write_wav
    from data_utils.synthetic import make_speech_like_audio

    wav = write_wav(tmp_path / "other.wav", make_speech_like_audio(1.2, seed=5))
    assert cli.main(tiny_args(subject, trained, "--test", "--test_train", "--aud", wav)) == 0
    info = probe_video(trained / "results" / "other.mp4")
    assert info["frames"] == 30 and info["has_audio"]  # 1.2 s at 25 fps
    assert np.load(trained / "results" / "other_feats.npy").shape == (30, 16, 32)


def test_missing_folder_and_unbuilt_flags(tmp_path, capsys):
    assert cli.main([str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in _error(capsys)
    assert cli.main([str(tmp_path), "--gui"]) == 2
    assert "--gui" in _error(capsys)
    assert cli.main([str(tmp_path), "--aud", "x.wav"]) == 2
    assert "--test" in _error(capsys)


def test_small_lpips_patches_are_rejected(subject, tmp_path, capsys):
    assert cli.main(tiny_args(subject, tmp_path / "ws", "--iters", 1, "--patch_size", 16)) == 2
    assert "at least 32x32" in _error(capsys)


def test_missing_transforms(subject, tmp_path, capsys):
    folder = tmp_path / "broken"
    shutil.copytree(subject, folder)
    (folder / "transforms_train.json").unlink()
    assert cli.main(tiny_args(folder, tmp_path / "ws", "--iters", 1)) == 2
    assert "transforms_train.json" in _error(capsys)


def test_features_shorter_than_frames(subject, tmp_path, capsys):
    folder = tmp_path / "short"
    shutil.copytree(subject, folder)
    np.save(folder / "aud.npy", np.load(folder / "aud.npy")[:10])
    assert cli.main(tiny_args(folder, tmp_path / "ws", "--iters", 1)) == 2
    assert "aud.npy" in _error(capsys)


@pytest.mark.slow
def test_feature_dim_mismatch_with_checkpoint(subject, trained, tmp_path, capsys):
    feats = tmp_path / "other_dim.npy"
    np.save(feats, np.zeros((8, 16, 29), np.float32))
    assert cli.main(tiny_args(subject, trained, "--test", "--aud", feats)) == 2
    assert "dim 32" in _error(capsys)


def test_test_without_checkpoint(subject, tmp_path, capsys):
    assert cli.main(tiny_args(subject, tmp_path / "empty", "--test")) == 2
    assert "no checkpoint" in _error(capsys)
