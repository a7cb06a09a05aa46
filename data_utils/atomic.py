"""Atomic file and folder writes: a killed run never leaves a half-written output behind.

Every writer produces its result under a temporary name in the destination folder (same
filesystem, so the final ``os.replace`` is atomic) and renames it only after success.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator


def _temp_sibling(final: Path) -> Path:
    # Keep the suffix so tools that pick the format from the name (cv2, ffmpeg, np.save) still work.
    return final.with_name(f".{final.stem}.tmp-{uuid.uuid4().hex[:8]}{final.suffix}")


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; rename it to ``final`` if the block succeeds.

    On an exception the temporary file is removed and ``final`` is left untouched. Usage:
    ``with atomic_path(out / "aud.wav") as tmp: write_wav(tmp, audio)``.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(final)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"writer produced no file for {final} (expected {tmp})")
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``final``; it replaces ``final`` on success.

    An existing ``final`` folder is swapped out (renamed aside, then deleted) only after the block
    succeeded, so readers see either the old or the new complete folder.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        yield tmp
        old = None
        if final.exists():
            old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(obj, indent=2) + "\n")


def save_npy(path: str | os.PathLike, array) -> None:
    """``np.save`` to ``path`` atomically (``path`` should end in ``.npy``)."""
    import numpy as np

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array)
