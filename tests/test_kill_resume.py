"""kill -9 at any point of a training run loses at most the work since the last save.

One workspace is SIGKILLed at six points in turn (between saves, inside a checkpoint write,
inside the EMA ``ngp.pth`` write, mid-epoch again, inside the last epoch's checkpoint, during
the test render); after each kill no partial file is visible as a checkpoint or a video, and
rerunning the same command resumes from the newest complete checkpoint. The last rerun ends
where an uninterrupted run of the same command ends: same step, same weights and losses.
"""
import json
import math
import re

import pytest

from nerf_triplane.checkpoint import read_checkpoint
from nerf_triplane.video import probe_video
from tests.integrity import kill_at, run_script

pytestmark = pytest.mark.slow

ITERS = 60  # 2 epochs of the 30-frame subject

# (pause point, checkpoint the next run must resume from: None = from scratch)
KILLS = [
    ("step:5", None),
    ("write:checkpoints/ngp_ep0001_step00000020.pth", "ngp_ep0001_step00000010.pth"),
    ("write:checkpoints/ngp.pth", "ngp_ep0001.pth"),
    ("step:45", "ngp_ep0002_step00000040.pth"),
    ("write:checkpoints/ngp_ep0002.pth", "ngp_ep0002_step00000050.pth"),
    ("write:results/ngp_ep0002_pred_gt.mp4", "ngp_ep0002.pth"),
]


def command(subject, ws) -> list[str]:
    return ["main.py", subject, "--workspace", ws, "--preset", "tiny", "--device", "cpu", "--iters", ITERS,
            "--save_interval", 10]


def train_losses(ws) -> dict[int, float]:
    """``train/loss`` by step from the tensorboard events (a restart's later events win)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(ws / "run" / "ngp"))
    events.Reload()
    return {e.step: e.value for e in events.Scalars("train/loss")}


def assert_nothing_partial_is_visible(ws) -> None:
    for path in (ws / "checkpoints").glob("ngp*.pth"):
        read_checkpoint(path)  # raises on a partial file
    for path in (ws / "results").glob("*.mp4") if (ws / "results").exists() else []:
        assert probe_video(path)["frames"] > 0, path


def loaded(ws) -> list[str]:
    """Checkpoint names the runs of ``ws`` loaded, in order."""
    return re.findall(r"\[INFO\] loaded \S*/(\S+\.pth)", (ws / "log_ngp.txt").read_text())


def test_kill_anywhere_then_rerun_resumes_to_the_same_result(subject, tmp_path):
    reference = tmp_path / "reference"
    done = run_script(command(subject, reference))
    assert done.returncode == 0, done.stderr[-2000:]

    ws = tmp_path / "killed"
    for point, resume_from in KILLS:
        assert f"[pause] {point}" in kill_at(command(subject, ws), point)
        assert_nothing_partial_is_visible(ws)
        newest = sorted(p.name for p in (ws / "checkpoints").glob("ngp_ep*.pth"))
        assert newest[-1:] == ([resume_from] if resume_from else []), (point, newest)
    done = run_script(command(subject, ws))
    assert done.returncode == 0, done.stderr[-2000:]
    assert loaded(ws) == [r for _, r in KILLS if r]
    for folder in ("checkpoints", "results"):  # what the killed writes left is gone
        assert not [p.name for p in (ws / folder).iterdir() if p.name.startswith(".")], folder

    final = read_checkpoint(ws / "checkpoints" / "ngp_ep0002.pth")
    expected = read_checkpoint(reference / "checkpoints" / "ngp_ep0002.pth")
    assert final["global_step"] == expected["global_step"] == ITERS
    worst = max((final["model"][k].float() - v.float()).abs().max().item() for k, v in expected["model"].items())
    assert worst <= 1e-6, worst  # measured: 0 (bit-identical) with the C++ backends on one thread
    mine, theirs = train_losses(ws), train_losses(reference)
    assert set(range(51, ITERS + 1)) <= set(mine)  # a killed run may not have flushed its events
    assert all(math.isclose(mine[s], theirs[s], rel_tol=1e-6) for s in mine)  # measured: equal
    metrics = [json.loads((w / "results" / "metrics.json").read_text()) for w in (ws, reference)]
    assert metrics[0]["psnr"] == pytest.approx(metrics[1]["psnr"], abs=1e-6)
    for name in ("ngp_ep0002.mp4", "ngp_ep0002_depth.mp4", "ngp_ep0002_pred_gt.mp4"):
        assert probe_video(ws / "results" / name)["frames"] == 3
