"""The data pipeline CLI: bad input handling, step skipping/forcing, logs, and an end-to-end run."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data_utils import process
from tests.conftest import ROOT
from tests.test_data_audio import make_clip, may_clip  # noqa: F401  (session fixture)


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = process.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def subject(may_clip, tmp_path) -> Path:  # noqa: F811
    """A fresh data/<ID>/<ID>.mp4 folder holding the 1.2 s May clip."""
    video = tmp_path / "may" / "may.mp4"
    video.parent.mkdir()
    shutil.copy(may_clip, video)
    return video


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    """Exit 2 and one error line (warnings, e.g. of a short test clip, aside)."""
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("process.py: warning: ")]
    assert len(lines) == 1 and lines[0].startswith("process.py: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_missing_video(capsys, tmp_path):
    code, _, err = run_cli(capsys, tmp_path / "data" / "nobody" / "nobody.mp4")
    assert_one_line_error(code, err, "video not found", "nobody.mp4")


def test_not_a_video_and_truncated_file(capsys, tmp_path, may_clip):  # noqa: F811
    text = tmp_path / "a" / "a.mp4"
    text.parent.mkdir()
    text.write_text("hello")
    code, _, err = run_cli(capsys, text)
    assert_one_line_error(code, err, "a.mp4")
    cut = tmp_path / "b" / "b.mp4"
    cut.parent.mkdir()
    cut.write_bytes(may_clip.read_bytes()[:20_000])
    code, _, err = run_cli(capsys, cut, "--task", "3")
    assert_one_line_error(code, err, "b.mp4")
    assert not (cut.parent / "ori_imgs").exists()


def test_no_audio_stream_only_fails_the_audio_steps(capsys, tmp_path, may_clip):  # noqa: F811
    video = make_clip(may_clip, tmp_path / "mute" / "mute.mp4", 0.4, audio=False)
    code, _, err = run_cli(capsys, video, "--task", "1")
    assert_one_line_error(code, err, "no audio stream")
    code, out, _ = run_cli(capsys, video, "--task", "3")
    assert code == 0 and "[3/10] frames: done" in out
    assert len(list((video.parent / "ori_imgs").glob("*.jpg"))) == 10


def test_bad_options(capsys, subject):
    assert_one_line_error(*run_cli(capsys, subject, "--task", "12")[::2], "--task")
    assert_one_line_error(*run_cli(capsys, subject, "--asr_model", "not a model!")[::2], "--asr_model", "neither mel")


def test_missing_weights_is_a_clean_error(capsys, subject, tmp_path):
    code, _, err = run_cli(capsys, subject, "--task", "2", "--asr_model", "deepspeech",
                           "--asr_weights", tmp_path / "ds.pb")
    assert_one_line_error(code, err, "step 'features' needs")  # aud.wav comes first
    run_cli(capsys, subject, "--task", "1")
    code, _, err = run_cli(capsys, subject, "--task", "2", "--asr_model", "deepspeech",
                           "--asr_weights", tmp_path / "ds.pb")
    assert_one_line_error(code, err, "DeepSpeech 0.1.0 graph not found", "ds.pb")


def test_another_subject_is_refused(capsys, subject, tmp_path):
    assert run_cli(capsys, subject, "--task", "1")[0] == 0
    marker = json.loads((subject.parent / "subject.json").read_text())
    assert marker["video"] == "may.mp4" and marker["size"] == subject.stat().st_size
    other = subject.parent / "other.mp4"
    make_clip(subject, other, 0.4)
    code, _, err = run_cli(capsys, other, "--task", "1", "--force")
    assert_one_line_error(code, err, "another subject", "'may.mp4'")


def test_task_skip_and_force(capsys, subject):
    code, out, _ = run_cli(capsys, subject, "--task", "1")
    assert code == 0 and "[1/10] audio: done" in out
    wav = subject.parent / "aud.wav"
    first = wav.stat().st_mtime_ns
    code, out, _ = run_cli(capsys, subject, "--task", "1")
    assert code == 0 and "outputs exist, skipped" in out and wav.stat().st_mtime_ns == first
    code, out, _ = run_cli(capsys, subject, "--task", "2")
    assert code == 0 and np.load(subject.parent / "aud.npy").shape == (30, 16, 32)
    code, out, _ = run_cli(capsys, subject, "--task", "1", "--force")
    assert code == 0 and "[1/10] audio: done" in out and wav.stat().st_mtime_ns != first
    log = json.loads((subject.parent / "process_log.json").read_text())
    assert log["video"] == "may.mp4" and log["meta"]["fps"] == 25
    assert set(log["steps"]) == {"audio", "features"}
    assert log["steps"]["features"]["result"]["shape"] == [30, 16, 32]
    assert all(s["seconds"] >= 0 and s["cpu_seconds"] >= 0 for s in log["steps"].values())
    hidden = [p.name for p in subject.parent.iterdir() if p.name.startswith(".")]
    assert hidden == []


def test_script_entry_point(subject):
    proc = subprocess.run([sys.executable, str(ROOT / "data_utils" / "process.py"), str(subject),
                           "--task", "1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (subject.parent / "aud.wav").is_file()
    proc = subprocess.run([sys.executable, str(ROOT / "data_utils" / "process.py"), str(subject) + ".missing"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0


@pytest.mark.slow
def test_end_to_end_folder_loads_in_the_provider(capsys, subject):
    for module in ("landmarks", "parsing", "background", "torso", "blinks", "tracking", "transforms", "expressions"):
        pytest.importorskip(f"data_utils.{module}", reason=f"data_utils/{module}.py not written yet")
    provider = pytest.importorskip("nerf_triplane.provider", reason="nerf_triplane/provider.py not written yet")
    from nerf_triplane.options import parse_args

    code, out, err = run_cli(capsys, subject)
    assert code == 0, err
    root = subject.parent
    n = len(list((root / "ori_imgs").glob("*.jpg")))
    assert n == 30
    for folder, suffix in (("ori_imgs", ".lms"), ("parsing", ".png"), ("torso_imgs", ".png"), ("gt_imgs", ".jpg")):
        assert len(list((root / folder).glob(f"*{suffix}"))) == n, folder
    for name in ("aud.wav", "aud.npy", "bc.jpg", "au.csv", "track_params.pt", "expressions.csv",
                 "transforms_train.json", "transforms_val.json", "process_log.json"):
        assert (root / name).is_file(), name
    log = json.loads((root / "process_log.json").read_text())
    assert len(log["steps"]) == 10

    opt = parse_args([str(root), "--exp_eye", "--exp_upper"])
    train = provider.NeRFDataset(opt, device="cpu", type="train")
    assert train.num_frames == 27 and (train.H, train.W) == (512, 512)
    assert train.auds.shape[1:] == (32, 16)
    batch = next(iter(train.dataloader()))
    assert batch["rays_o"].shape[-1] == 3 and batch["images"].shape[-1] == 3
    assert batch["eye"].shape == (1, 6)  # the blink and the five upper-face values

    code, out, _ = run_cli(capsys, subject)
    assert code == 0 and out.count("outputs exist, skipped") == 10

    # Scripts that print JSON on stdout (bench_process.py) route every progress line elsewhere.
    lines = []
    process.run_pipeline(process.get_parser().parse_args([str(subject), "--task", "9", "--force"]), echo=lines.append)
    assert capsys.readouterr().out == ""
    assert any(line.startswith("tracked 30 frames") for line in lines), lines
