"""Face parsing: per-frame head / neck / torso / background maps as ``parsing/<k>.png``.

The PNGs use the reference's colour code, as stored by cv2 (channel order B, G, R):
background (255, 255, 255), head (255, 0, 0), neck (0, 255, 0), torso (0, 0, 255).

Engines:
  * ``mediapipe`` (offline default): MediaPipe selfie segmentation gives the person; the 68
    landmarks of the frame (``<k>.lms``, written by the landmark step) give the face. Head = the
    face polygon (jaw + brows) plus person pixels inside a head ellipse that lie above a cut line
    (the jaw, but never higher than the mouth, so hair beside the cheeks stays head). Neck =
    skin-coloured person pixels right below the cut line, within a band under the jaw, connected
    to it column by column, down to roughly the shoulder line. Torso = all other person pixels.
  * ``bisenet``: the reference's 19-class BiSeNet (``data_utils/bisenet.py``); needs the
    weights ``79999_iter.pth``, never downloaded.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from data_utils.atomic import atomic_path, atomic_paths
from data_utils.images import mask_bbox, write_png
from data_utils.landmarks import list_frames, read_rgb
from data_utils.workers import map_jobs

BACKGROUND, HEAD, NECK, TORSO = 0, 1, 2, 3
# Row = label above; values as cv2 stores them (B, G, R).
COLORS_BGR = np.array([(255, 255, 255), (255, 0, 0), (0, 255, 0), (0, 0, 255)], dtype=np.uint8)
ENGINES = ("mediapipe", "bisenet")

# Geometry of the offline engine, in units of the ear-to-ear jaw width (iBUG points 0 and 16).
_HEAD_HALF_WIDTH = 0.85  # hair may stick out well past the ears
_HEAD_HALF_HEIGHT = 1.1  # from the brows up, enough for voluminous hair
_NECK_DEPTH = 0.7  # neck ends this far below the chin (shoulder line)
_SKIN_SIGMAS = 3.0  # neck pixels: Lab chroma within this many robust sigmas of the face skin
_SKIN_MIN_TOL = 6.0  # ... but never tighter than this many Lab units


_LUT_BGR = np.full((256, 1, 3), 255, dtype=np.uint8)
_LUT_BGR[: len(COLORS_BGR), 0] = COLORS_BGR


def labels_to_bgr(labels: np.ndarray) -> np.ndarray:
    """``[H, W]`` uint8 labels (0..3) -> ``[H, W, 3]`` uint8 parsing image in cv2 (BGR) order."""
    return cv2.LUT(cv2.merge([labels, labels, labels]), _LUT_BGR)


def bgr_to_labels(bgr: np.ndarray) -> np.ndarray:
    """Parsing image ``[H, W, 3]`` (as read by cv2) -> ``[H, W]`` uint8 labels.

    Exact colour matches only, like the reference; any other colour counts as background.
    """
    labels = np.zeros(bgr.shape[:2], dtype=np.uint8)
    for label in (HEAD, NECK, TORSO):
        colour = COLORS_BGR[label]
        labels[cv2.inRange(bgr, colour, colour) > 0] = label
    return labels


def read_labels(path: str | os.PathLike) -> np.ndarray:
    """Read ``parsing/<k>.png`` as ``[H, W]`` uint8 labels; ValueError if unreadable."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot read parsing map {path}; re-run the parsing step (process.py --task 5 --force)")
    return bgr_to_labels(bgr)


def write_labels(path: str | os.PathLike, labels: np.ndarray) -> None:
    """Write ``[H, W]`` labels as the colour-coded PNG, atomically."""
    with atomic_path(path) as tmp:
        write_png(tmp, labels_to_bgr(labels))


def _skin_range(rgb: np.ndarray, face: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lab bounds (lower, upper) ``[3]`` uint8 of the face skin; L is left free (necks are shaded).

    Args:
        rgb: frame ``[H, W, 3]`` uint8.
        face: ``[H, W]`` bool face polygon.
    """
    r0, r1, c0, c1 = mask_bbox(face) or (0, 0, 0, 0)
    rows, cols = np.nonzero(face[r0:r1, c0:c1])  # the face's box only: same pixels, same order
    rows, cols = rows + r0, cols + c0
    step = max(1, len(rows) // 4000)  # a few thousand samples give a stable median
    lab = cv2.cvtColor(rgb[rows[::step], cols[::step]][None], cv2.COLOR_RGB2LAB)[0].astype(np.float32)
    ab = lab[:, 1:]
    med = np.median(ab, axis=0)
    tol = np.maximum(_SKIN_SIGMAS * 1.4826 * np.median(np.abs(ab - med), axis=0), _SKIN_MIN_TOL)
    lower = np.concatenate([[0], np.clip(med - tol, 0, 255)]).astype(np.uint8)
    upper = np.concatenate([[255], np.clip(med + tol, 0, 255)]).astype(np.uint8)
    return lower, upper


def labels_from_person_and_landmarks(rgb: np.ndarray, person: np.ndarray, lms: np.ndarray) -> np.ndarray:
    """Split a person mask into head / neck / torso with the 68 landmarks.

    Args:
        rgb: frame ``[H, W, 3]`` uint8 (for the skin colour of the neck).
        person: ``[H, W]`` bool person mask.
        lms: ``[68, 2]`` iBUG landmarks in pixels (x = column, y = row).

    Returns:
        ``[H, W]`` uint8 labels (BACKGROUND, HEAD, NECK, TORSO).
    """
    h, w = person.shape
    rows = np.arange(h)[:, None]  # [H, 1]
    face = np.zeros((h, w), dtype=np.uint8)
    cv2.fillPoly(face, [np.concatenate([lms[0:17], lms[26:16:-1]]).round().astype(np.int32)], 1)
    face = face.astype(bool)

    jaw_width = max(float(np.linalg.norm(lms[16] - lms[0])), 1.0)
    centre_x = float(lms[27:31, 0].mean())
    brow_y = float(lms[17:27, 1].mean())
    mouth_y = float(lms[[48, 54], 1].mean())
    chin_x, chin_y = lms[8]

    # Per column, the lowest face row (jaw), or -1 where the face does not reach.
    lower = np.where(face.any(axis=0), h - 1 - np.argmax(face[::-1], axis=0), -1)
    above_cut = rows <= np.maximum(lower, mouth_y)[None, :]  # [H, W]

    ellipse = np.zeros((h, w), dtype=np.uint8)
    axes = (round(_HEAD_HALF_WIDTH * jaw_width), round(_HEAD_HALF_HEIGHT * jaw_width))
    cv2.ellipse(ellipse, (round(centre_x), round(brow_y)), axes, 0, 0, 360, 1, -1)
    head = face | (person & (ellipse > 0) & above_cut)

    band_half = 0.5 * abs(float(lms[13, 0] - lms[3, 0]))
    c0, c1 = max(int(chin_x - band_half), 0), min(int(chin_x + band_half) + 1, w)
    r1 = min(max(int(chin_y + _NECK_DEPTH * jaw_width), 0), h)
    neck = np.zeros((h, w), dtype=bool)
    if c1 > c0 and r1 > 0:
        # Everything below happens inside the neck band above the shoulder line only, and from
        # 4 rows above the band's first row under the cut line: higher rows are never neck, and
        # the 5x5 closing (a dilation then an erosion) reaches 4 rows up, so the rows that can
        # be neck come out as if the band started at the image top.
        below = ~above_cut[:r1, c0:c1]
        r0 = max(int(np.argmax(below.any(axis=1))) - 4, 0)
        below = below[r0:]
        lab = cv2.cvtColor(rgb[r0:r1, c0:c1], cv2.COLOR_RGB2LAB)
        skin = cv2.inRange(lab, *_skin_range(rgb, face)) > 0
        cand = person[r0:r1, c0:c1] & ~head[r0:r1, c0:c1] & skin
        cand = cv2.morphologyEx(cand.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8)) > 0
        # The neck hangs from the cut line: keep each column's unbroken run of candidates below it.
        blocked = below & ~cand
        first_block = np.where(blocked.any(axis=0), np.argmax(blocked, axis=0), r1 - r0)
        neck[r0:r1, c0:c1] = cand & below & (rows[: r1 - r0] < first_block[None, :])

    labels = np.zeros((h, w), dtype=np.uint8)
    labels[person] = TORSO
    labels[neck] = NECK
    labels[head] = HEAD
    return labels


def read_lms(path: str | os.PathLike) -> np.ndarray:
    """Read a ``<k>.lms`` file as ``[68, 2]`` float; FileNotFoundError/ValueError with the fix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"landmark file {path} is missing; run the landmark step first (process.py --task 4)")
    lms = np.loadtxt(path, dtype=np.float64, ndmin=2)
    if lms.shape != (68, 2):
        raise ValueError(f"landmark file {path} holds shape {lms.shape}, expected (68, 2); re-run process.py --task 4 --force")
    return lms


class MediapipeParser:
    """Offline parser: selfie segmentation + the frame's 68 landmarks (see module docstring)."""

    def __init__(self):
        import mediapipe as mp

        from data_utils.quiet import quiet_native_logs

        with quiet_native_logs():
            self._seg = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)
            # The graph's threads open its model (and log about it) after the constructor
            # returns; one blank frame waits for them inside the filtered window.
            self._seg.process(np.zeros((64, 64, 3), np.uint8))

    def person_mask(self, rgb: np.ndarray) -> np.ndarray:
        """``[H, W]`` bool person mask of an RGB uint8 frame ``[H, W, 3]``."""
        return self._seg.process(rgb).segmentation_mask > 0.5

    def parse(self, rgb: np.ndarray, lms: np.ndarray) -> np.ndarray:
        """RGB uint8 ``[H, W, 3]`` + landmarks ``[68, 2]`` -> ``[H, W]`` uint8 labels."""
        return labels_from_person_and_landmarks(rgb, self.person_mask(rgb), lms)

    def close(self) -> None:
        self._seg.close()


_WORKER_PARSER: MediapipeParser | None = None


def _start_parser() -> None:
    """Per process: build the segmentation graph its frames share."""
    global _WORKER_PARSER
    _WORKER_PARSER = MediapipeParser()


def _close_parser() -> None:
    global _WORKER_PARSER
    if _WORKER_PARSER is not None:
        _WORKER_PARSER.close()
        _WORKER_PARSER = None


def _parse_one(job: tuple[str, np.ndarray, str]) -> None:
    """Worker: frame path, its ``[68, 2]`` landmarks, output (temporary) path -> the parsing PNG."""
    frame_path, lms, out_path = job
    write_png(out_path, labels_to_bgr(_WORKER_PARSER.parse(read_rgb(frame_path), lms)))


def parse_folder(
    ori_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    engine: str = "mediapipe",
    bisenet_weights: str | os.PathLike | None = None,
    model=None,
    workers: int = 2,
) -> dict:
    """Write ``out_dir/<k>.png`` for every ``ori_dir/<k>.jpg``.

    All maps are written under temporary names and made durable and renamed together at the
    end (:func:`data_utils.atomic.atomic_paths`).

    Args:
        ori_dir: frame folder (``ori_imgs``); the mediapipe engine also reads its ``<k>.lms``.
        out_dir: output folder (``parsing``), created if needed.
        engine: ``"mediapipe"`` or ``"bisenet"``.
        bisenet_weights: path of ``79999_iter.pth`` (default ``data_utils/face_parsing/79999_iter.pth``).
        model: bisenet only: an already built ``BiSeNet`` to use instead of loading weights.
        workers: mediapipe only: processes to spread the frames over, each with its own graph
            (1 = in this process). Frames are segmented independently, so the maps do not
            depend on it. BiSeNet runs in this process (torch already uses every core).

    Returns:
        dict(n_frames, seconds, ms_per_frame, engine).
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown parsing engine {engine!r}; use one of {ENGINES}")
    frames = list_frames(ori_dir)
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    if engine == "mediapipe":
        lms_all = [read_lms(p.with_suffix(".lms")) for p in frames]  # fail before any work
    else:
        from data_utils.bisenet import BisenetParser  # torch: only for this engine

        parser = BisenetParser(weights=bisenet_weights, model=model)
    with atomic_paths([out_dir / f"{p.stem}.png" for p in frames]) as tmps:
        if engine == "mediapipe":
            jobs = [(str(p), lms, str(tmp)) for p, lms, tmp in zip(frames, lms_all, tmps)]
            try:
                map_jobs(_parse_one, jobs, workers, "parsing", initializer=_start_parser, start="spawn")
            finally:
                _close_parser()  # the graph built here when workers <= 1
        else:
            for path, tmp in zip(tqdm(frames, desc="parsing", unit="frame"), tmps):
                write_png(tmp, labels_to_bgr(parser.parse(read_rgb(path))))
    seconds = time.perf_counter() - t0
    return dict(n_frames=len(frames), seconds=round(seconds, 3), ms_per_frame=round(1000 * seconds / len(frames), 2), engine=engine)
