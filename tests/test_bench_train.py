"""The benchmark scripts print their JSON alone on stdout, even when the trainer or loaders log."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_stdout_is_exactly_the_json(tmp_path):
    # The cpu preset logs (the bfloat16 notice, the mouth pretraining): those lines used to
    # land on stdout before the JSON.
    result = subprocess.run(
        [sys.executable, "scripts/bench_train.py", "--preset", "cpu", "--size", "48", "--data", str(tmp_path / "subject"),
         "--steps", "1", "--frames", "1", "--backends", "cpp", "--json", str(tmp_path / "bench.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["results"]["cpp"]["train_it_s"] > 0
    assert "[INFO]" in result.stderr
    assert json.loads((tmp_path / "bench.json").read_text()) == report


def test_bench_live_stdout_is_one_json_line(subject, trained_head):
    # -O on the CPU logs the fp16 notice while the options are parsed: that line goes to stderr.
    result = subprocess.run(
        [sys.executable, "scripts/bench_live.py", str(subject), "--workspace", str(trained_head), "-O",
         "--device", "cpu", "--frames", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(result.stdout.splitlines()) == 1
    report = json.loads(result.stdout)
    assert report["frames"] == 2 and report["fps"] > 0
    assert "[INFO]" in result.stderr
