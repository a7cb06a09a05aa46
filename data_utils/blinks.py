"""Blink intensity ``au.csv`` (OpenFace-style ``AU45_r``) from the 68 landmarks.

Without OpenFace, AU45_r comes from the eye aspect ratio (EAR, mean of both eyes). The open-eye
EAR of the subject is the 90th percentile over the video (blinks are short), the closure is
``c = 1 - EAR / EAR_open`` and

    AU45_r = clip(5 * (c - 0.1), 0, 5)

so the ordinary frame-to-frame jitter of an open eye (c <= 0.1) reads 0, a half-closed eye
(c = 0.5) reads 2 (where the trainer's ``clip(AU45_r, 0, 2) / 2`` saturates) and a closed eye
(c ~ 0.7 with mesh landmarks) reads ~3, the range OpenFace reports for blinks.

Rows are frames 0..N-1 in order (the trainer indexes rows by frame number); the ``frame`` column
is 1-based like OpenFace's; ``face_id``, ``confidence`` and ``success`` are the constants 0, 1, 1
(kept for OpenFace tooling; no engine here reports a per-frame confidence).
"""
from __future__ import annotations

import csv
import io
import os
import time
import warnings
from pathlib import Path

import numpy as np

from data_utils.atomic import write_text
from data_utils.landmarks import list_frames
from data_utils.parsing import read_lms

OPEN_PERCENTILE = 90.0
JITTER = 0.1
SCALE = 5.0
AU_MAX = 5.0
COLUMNS = ("frame", "face_id", "timestamp", "confidence", "success", "AU45_r")


def _eye_ratio(eye: np.ndarray) -> float:
    """EAR of one eye ``[6, 2]`` in iBUG order (corner, 2 upper, corner, 2 lower)."""
    vertical = np.linalg.norm(eye[1] - eye[5]) + np.linalg.norm(eye[2] - eye[4])
    horizontal = 2.0 * np.linalg.norm(eye[0] - eye[3])
    return float(vertical / max(horizontal, 1e-6))


def eye_aspect_ratio(lms68: np.ndarray) -> float:
    """Mean eye aspect ratio of both eyes of iBUG landmarks ``[68, 2]`` (≈0.25–0.35 open, →0 closed)."""
    lms68 = np.asarray(lms68, dtype=np.float64)
    if lms68.shape != (68, 2):
        raise ValueError(f"eye_aspect_ratio needs [68, 2] landmarks, got {lms68.shape}")
    return 0.5 * (_eye_ratio(lms68[36:42]) + _eye_ratio(lms68[42:48]))


def au45_from_ear(ear: np.ndarray) -> tuple[np.ndarray, float]:
    """Map per-frame EAR ``[N]`` to AU45_r ``[N]`` (see module docstring); also returns EAR_open."""
    ear = np.asarray(ear, dtype=np.float64)
    ear_open = float(np.percentile(ear, OPEN_PERCENTILE))
    if ear_open <= 0:
        raise ValueError("eye aspect ratio is zero in most frames; the landmarks are degenerate, re-run process.py --task 4")
    closure = 1.0 - ear / ear_open
    return np.clip(SCALE * (closure - JITTER), 0.0, AU_MAX), ear_open


def read_openface_au45(path: str | os.PathLike) -> np.ndarray:
    """AU45_r column ``[N]`` of an OpenFace csv (header with or without leading spaces)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"OpenFace csv {path} does not exist; pass the FeatureExtraction output or omit it")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header = [c.strip() for c in rows[0]] if rows else []
    if "AU45_r" not in header:
        raise ValueError(f"{path} has no AU45_r column; run OpenFace FeatureExtraction with -aus")
    col = header.index("AU45_r")
    return np.array([float(r[col]) for r in rows[1:] if r], dtype=np.float64)


def write_au_csv(
    ori_dir: str | os.PathLike,
    out_csv: str | os.PathLike,
    openface_csv: str | os.PathLike | None = None,
    fps: float = 25.0,
) -> dict:
    """Write ``au.csv`` for the frames of ``ori_dir`` (from ``<k>.lms``, or copied from OpenFace).

    Returns:
        dict(n_frames, source ('landmarks'|'openface'), ear_open (None for OpenFace),
        blink_frames (frames with AU45_r >= 1), seconds).
    """
    t0 = time.perf_counter()
    frames = list_frames(ori_dir)
    numbers = [int(p.stem) for p in frames]
    if numbers != list(range(len(frames))):
        raise ValueError(f"{ori_dir}: frames must be numbered 0..N-1 without gaps (au.csv rows are indexed by frame)")
    ear_open = None
    if openface_csv is not None:
        au45 = read_openface_au45(openface_csv)
        source = "openface"
        if len(au45) != len(frames):
            warnings.warn(f"{openface_csv} has {len(au45)} rows for {len(frames)} frames", stacklevel=2)
    else:
        ear = np.array([eye_aspect_ratio(read_lms(p.with_suffix(".lms"))) for p in frames])
        au45, ear_open = au45_from_ear(ear)
        source = "landmarks"
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for i, value in enumerate(au45):
        writer.writerow([i + 1, 0, f"{i / fps:.3f}", "1.00", 1, f"{value:.2f}"])
    write_text(out_csv, buf.getvalue())
    return dict(
        n_frames=len(au45),
        source=source,
        ear_open=None if ear_open is None else round(ear_open, 4),
        blink_frames=int((au45 >= 1.0).sum()),
        seconds=round(time.perf_counter() - t0, 3),
    )
