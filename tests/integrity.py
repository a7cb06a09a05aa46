"""Helpers of the robustness tests: folder fingerprints, CLI runs in a subprocess that can be
paused at a known point (``data_utils.pause``) and SIGKILLed there."""
from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from data_utils.pause import PAUSE_ENV
from tests.conftest import ROOT


def folder_digest(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``folder`` (names in ``skip`` left out);
    equal digests before and after a run mean the run changed nothing there."""
    folder = Path(folder)
    if not folder.exists():
        return {}
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name not in skip:
            out[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


# Run logs (messages, options of each start, step timings): a run may add its entries there.
LOGS = ("log_ngp.txt", "opt.txt", "process_log.json")


def changed_files(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Files of ``before`` (a :func:`folder_digest`) that ``after`` lacks or holds with other
    content, run logs (:data:`LOGS`) excepted."""
    return [name for name, digest in before.items()
            if Path(name).name not in LOGS and after.get(name) != digest]


def script_env(pause_at: str | None = None) -> dict:
    """Environment of a CLI subprocess: one thread, optionally paused at ``pause_at``."""
    env = {k: v for k, v in os.environ.items() if k != PAUSE_ENV}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    if pause_at:
        env[PAUSE_ENV] = pause_at
    return env


def run_script(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python ARGS`` from the repository root to completion."""
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=script_env(), capture_output=True,
                          text=True, timeout=timeout)


def kill_at(args: list[str], pause_at: str, timeout: float = 300) -> str:
    """Run ``python ARGS`` until it pauses at ``pause_at``, SIGKILL it there; returns its stderr.

    Raises AssertionError when the process ends (or times out) without reaching the point.
    """
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"kill_at_{os.getpid()}_{time.monotonic_ns()}.log"
    with open(log, "w+") as err:
        # Its own process group: the kill takes its worker processes too, as a dying job would,
        # instead of leaving them behind as orphans.
        proc = subprocess.Popen([sys.executable, *map(str, args)], cwd=ROOT, env=script_env(pause_at),
                                stdout=subprocess.DEVNULL, stderr=err, text=True, start_new_session=True)
        deadline = time.monotonic() + timeout
        try:
            while True:
                err.seek(0)
                text = err.read()
                if "[pause] " in text:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    return text
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"{args} never paused at {pause_at} (exit {proc.poll()}):\n{text[-3000:]}")
                time.sleep(0.05)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            log.unlink(missing_ok=True)
