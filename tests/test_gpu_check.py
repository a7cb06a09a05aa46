"""scripts/gpu_check.sh, the one check run when a GPU machine is lent: its syntax and lint, the
early exit without CUDA, and a ``--dry-run`` of every phase in its tiny CPU mode (60-70 s on
the busy 2-core machine with the kernel cache warm, so it is marked slow)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
PHASES = {"build", "data", "pytest", "bench_kernels", "bench_train", "train", "train_test"}


def run_script(tmp_path, *args, timeout=60, **env):
    """Run gpu_check.sh with this interpreter as PYTHON and a scratch folder under ``tmp_path``."""
    full_env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_WORK": str(tmp_path / "work"), **env}
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


def test_bash_syntax():
    result = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_shellcheck_clean():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    result = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("args, words", [((), ("no CUDA device", "--dry-run")),
                                         (("--bogus",), ("unknown argument '--bogus'", "usage"))])
def test_refusals_are_one_line_and_exit_2(tmp_path, args, words):
    # Hiding the GPUs makes a GPU machine take the no-CUDA path too.
    result = run_script(tmp_path, *args, CUDA_VISIBLE_DEVICES="")
    lines = (result.stdout + result.stderr).splitlines()
    assert result.returncode == 2
    assert len(lines) == 1 and all(w in lines[0] for w in words), lines
    assert not (tmp_path / "work").exists()


def test_refuses_a_work_folder_it_did_not_make(tmp_path):
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "keep.txt").write_text("user data")
    result = run_script(tmp_path, "--dry-run")
    assert result.returncode == 2 and "GPU_CHECK_WORK" in result.stderr
    assert (tmp_path / "work" / "keep.txt").exists()


@pytest.mark.slow
def test_dry_run_reports_every_phase(tmp_path):
    out = tmp_path / "out"
    # Generous limit: a cold kernel cache compiles the C++ backends first (minutes on 2 cores).
    result = run_script(tmp_path, "--dry-run", timeout=900, OUT=str(out))
    report = json.loads(result.stdout)  # stdout is exactly the JSON object
    failing = {k: p for k, p in report["phases"].items() if not p["ok"]}
    assert result.returncode == 0, (failing, result.stderr[-2000:])
    assert report["mode"] == "dry-run" and report["final"] and report["ok"]
    assert json.loads((out / "gpu_check.json").read_text()) == report
    assert (out / "gpu_check_logs" / "train.log").is_file()

    phases = report["phases"]
    assert set(phases) == PHASES
    for name, entry in phases.items():
        assert isinstance(entry["rc"], int) and entry["seconds"] > 0 and entry["limit_s"] > 0, (name, entry)
    assert phases["build"]["build_seconds"].keys() == {"gridencoder", "shencoder", "raymarching"}
    assert phases["pytest"]["passed"] > 0 and phases["pytest"]["failed"] == phases["pytest"]["errors"] == 0
    assert phases["bench_kernels"]["figures"]["shencoder"]["cpp_over_torch_speedup"] > 0
    assert phases["bench_train"]["figures"]["results"]["cpp"]["train_it_s"] > 0
    # The training is ended by its time limit (SIGTERM -> checkpoint) and still yields figures.
    train = phases["train"]
    assert train["stopped_by_time_limit"] and train["steps"] > 0 and train["it_s"] > 0
    assert phases["train_test"]["psnr"] > 15
    assert report["summary"]["heldout_psnr"] == phases["train_test"]["psnr"]
    assert report["summary"]["shencoder_cpp_over_torch_speedup"] > 0
