"""scripts/run_subject.sh end to end on a 2-second cut of the real May_5s video (tiny preset)."""
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import shared_file

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.shared
def test_run_subject_tiny(tmp_path):
    import imageio_ffmpeg

    from data_utils.audio import load_audio, write_wav

    src = shared_file("May_5s.mp4")
    video = tmp_path / "may2.mp4"
    # 2 s at 128² keeps the three renders of the pipeline within the test budget.
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(src), "-t", "2",
                    "-vf", "scale=128:128", str(video)], check=True)
    speech = tmp_path / "speech.wav"
    write_wav(speech, load_audio(shared_file("Obama_5s.wav"))[:6400])  # 0.4 s = 10 frames
    work = tmp_path / "work"
    # SIZE=128: the 128² clip is the training size, so step 3 keeps it as it is (no head crop).
    env = dict(os.environ, PRESET="tiny", WORK=str(work), OMP_NUM_THREADS="1", SIZE="128")
    cmd = ["bash", str(ROOT / "scripts" / "run_subject.sh"), str(video), str(speech)]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "3/6 lips: skipped" in run.stdout or "3/6 lips finetune" in run.stdout

    torso = work / "trial_may2_torso" / "results"
    metrics = json.loads((torso / "metrics.json").read_text())
    assert np.isfinite(metrics["psnr"]) and metrics["baseline"]["n_frames"] == metrics["frames"]
    assert "sync" in metrics and (torso / "report.md").is_file()
    assert (torso / "speech.mp4").is_file()
    head = json.loads((work / "trial_may2" / "results" / "metrics.json").read_text())
    assert np.isfinite(head["psnr"])
    for stage in ("head", "test_head", "torso", "test"):
        folder = work / ("trial_may2" if stage in ("head", "test_head") else "trial_may2_torso")
        assert (folder / f"stage_{stage}.done").is_file()
    times = [line.split("\t") for line in (work / "stage_times.tsv").read_text().splitlines()]
    assert [t[1] for t in times] == ["process", "head", "torso", "test_head", "test", "new_audio"]
    assert all(t[0] == "may2" and int(t[2]) >= 0 for t in times)

    # Rerun: every stage is skipped.
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("skipped") >= 6
