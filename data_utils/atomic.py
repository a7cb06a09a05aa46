"""Atomic, durable file and folder writes: a killed run or a full disk never leaves a
half-written output behind, and never damages the previous one.

Every writer produces its result under a temporary name in the destination folder (same
filesystem, so the final ``os.replace`` is atomic). On success the temporary file (or every
file of a temporary folder, or batch of per-frame files) is flushed to the disk (``fsync``; one
``os.sync()`` for a folder or batch), renamed into place, and the destination folder is
``fsync``-ed, so after a power cut the name points at complete data. A full disk, a quota or a
read-only place raises :class:`WriteError` (one line naming the file and the fix) and leaves
the old output as it was.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

from data_utils.pause import pause_point

# Names given by _temp_sibling and atomic_dir (temporary and swapped-out outputs).
_TEMP = re.compile(r"^\..+\.(tmp|old)-[0-9a-f]{8}(\.[^.]+)?$")
# errno values that mean "this place cannot take the data", as opposed to a bug.
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


class WriteError(OSError):
    """An output could not be written (disk full, quota, read-only, no permission)."""

    def __str__(self) -> str:  # the message alone, without OSError's "[Errno N]" prefix
        return self.strerror


def storage_error(err: OSError, target: Path, kept: str = " (the previous version of the file is kept)") -> OSError:
    """``err`` turned into a :class:`WriteError` naming ``target`` and the fix, when it is a
    storage problem (full disk, read-only, no permission); other errors are returned as they are."""
    if isinstance(err, WriteError) or err.errno not in _STORAGE_ERRNOS:
        return err
    if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        fix = "free disk space (or use another folder)"
    else:
        fix = "make the folder writable (or use another one)"
    return WriteError(err.errno, f"cannot write {target}: {err.strerror}; {fix} and rerun{kept}")


def check_writable(folder: str | os.PathLike) -> None:
    """Create ``folder`` if missing and a file in it, or raise :class:`WriteError` naming it:
    a run checks its output folder before any work, not after hours of it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as err:
        raise storage_error(err, folder, kept="") from err


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's or a folder's data and metadata to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(tmp: Path, final: Path) -> None:
    """Make the complete temporary file ``tmp`` durable and rename it to ``final``."""
    pause_point(f"write:{final.parent.name}/{final.name}")
    fsync_path(tmp)
    os.replace(tmp, final)
    fsync_path(final.parent)


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete what killed writers left in ``folder`` and its direct subfolders (hidden
    ``.NAME.tmp-XXXXXXXX*`` files and folders); returns them. Call it only while no other
    process writes there."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    places = [folder, *(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))]
    stale = [p for place in places for p in place.iterdir() if _TEMP.match(p.name)]
    for path in stale:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return stale


def _temp_sibling(final: Path) -> Path:
    # Keep the suffix so tools that pick the format from the name (cv2, ffmpeg, np.save) still work.
    return final.with_name(f".{final.stem}.tmp-{uuid.uuid4().hex[:8]}{final.suffix}")


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; make it ``final`` if the block succeeds.

    On an exception the temporary file is removed and ``final`` is left untouched. Usage:
    ``with atomic_path(out / "aud.wav") as tmp: write_wav(tmp, audio)``.
    """
    final = Path(final)
    tmp = _temp_sibling(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"writer produced no file for {final} (expected {tmp})")
        commit(tmp, final)
    except OSError as err:
        raise storage_error(err, final) from err
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_paths(finals: list[str | os.PathLike]) -> Iterator[list[Path]]:
    """Like :func:`atomic_path` for many files at once: yield one temporary path per ``finals``
    entry (same order); if the block succeeds and wrote every one, make them all durable with a
    single ``os.sync()``, then rename each into place and ``fsync`` each destination folder once.

    For steps writing a file per frame: an ``fsync`` per file (plus one of its folder) costs about
    2 ms each, which for 1260 frames is seconds, while one flush of the whole batch costs a
    fraction of that (``os.sync()`` also waits for other programs' pending writes). No final
    name ever points at unsynced data; a killed block leaves only temporaries
    (:func:`remove_stale_temps` deletes them) and the old files untouched. The temporary names
    are fixed before the block runs, so worker processes can write them.
    """
    finals = [Path(f) for f in finals]
    tmps = [_temp_sibling(f) for f in finals]
    target = finals[0].parent if finals else Path(".")
    try:
        folders = sorted({f.parent for f in finals})
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
        yield tmps
        missing = [f for f, t in zip(finals, tmps) if not t.exists()]
        if missing:
            raise FileNotFoundError(
                f"writer produced no file for {len(missing)} of {len(finals)} outputs, e.g. {missing[0]}")
        for final in finals:
            pause_point(f"write:{final.parent.name}/{final.name}")
        os.sync()  # one flush for the whole batch (Linux: returns once the data is on the disk)
        for tmp, final in zip(tmps, finals):
            target = final
            os.replace(tmp, final)
        for folder in folders:
            fsync_path(folder)
    except OSError as err:
        raise storage_error(err, target) from err
    finally:
        for tmp in tmps:
            if tmp.exists():
                tmp.unlink()


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``final``; it replaces ``final`` on success.

    An existing ``final`` folder is swapped out (renamed aside, then deleted) only after the block
    succeeded and every file of the new folder is on the disk (one ``os.sync()``), so readers see
    either the old or the new complete folder.
    """
    final = Path(final)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
        yield tmp
        pause_point(f"write:{final.parent.name}/{final.name}")
        os.sync()  # every file and folder inside at once (a folder of frames: ~2 ms per file as fsyncs)
        old = None
        if final.exists():
            old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(final, old)
        try:
            os.replace(tmp, final)
        except OSError:
            if old is not None:
                os.replace(old, final)
            raise
        fsync_path(final.parent)
        if old is not None:
            shutil.rmtree(old)
    except OSError as err:
        raise storage_error(err, final) from err
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
