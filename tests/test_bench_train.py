"""scripts/bench_train.py prints its JSON alone on stdout, even when the trainer logs."""
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
