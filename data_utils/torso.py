"""Ground-truth frames ``gt_imgs/<k>.jpg`` and torso layers ``torso_imgs/<k>.png`` (BGRA).

gt = the frame with its background pixels replaced by ``bc.jpg``. The torso layer starts from gt
with the head replaced by the background, then fills the strip the head may uncover when it
moves, following the reference:

  (a) per column, the top torso pixel whose upper neighbour is head is copied upward over
      ``TORSO_LEN`` rows (itself included), darkened by 0.98 per row;
  (b) the neck mask is grown 3 px up and down; per column whose top neck pixel sits under the
      head, that pixel is pushed down ``min(count - 1, 4)`` px (count = neck pixels in the
      column), copied upward over ``NECK_LEN`` rows darkened by 0.98 per row, and the copied
      pixels are replaced by their 5x5 Gaussian blur (hides vertical streaks).

alpha = 255 on neck ∪ torso ∪ inpainted pixels, 0 (with black RGB) elsewhere.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np

from data_utils.atomic import atomic_paths
from data_utils.images import mask_bbox, write_png
from data_utils.landmarks import list_frames
from data_utils.parsing import BACKGROUND, HEAD, NECK, TORSO, read_labels
from data_utils.workers import map_jobs

TORSO_LEN = 9
NECK_PUSH_DOWN = 4
NECK_LEN = 48 + NECK_PUSH_DOWN + 1
DARKEN = 0.98


def _copy_up(image: np.ndarray, source: np.ndarray, rows: np.ndarray, cols: np.ndarray, length: int) -> np.ndarray:
    """Paint ``source[rows, cols]`` into ``image`` upward over ``length`` rows, darkening 0.98 per row.

    Args:
        image: ``[H, W, 3]`` uint8, modified in place.
        source: ``[H, W, 3]`` uint8 image the colours are taken from.
        rows, cols: ``[m]`` int source pixels (one per column).
        length: rows written per source, the source row included.

    Returns:
        ``[H, W]`` bool mask of the written pixels.
    """
    written = np.zeros(image.shape[:2], dtype=bool)
    if len(rows) == 0:
        return written
    k = np.arange(length)[:, None]  # [L, 1]
    tgt_rows = rows[None, :] - k  # [L, m]
    tgt_cols = np.broadcast_to(cols[None, :], tgt_rows.shape)
    colours = source[rows, cols].astype(np.float32)[None] * (DARKEN ** k)[..., None]  # [L, m, 3]
    keep = tgt_rows >= 0  # the image top ends the strip
    image[tgt_rows[keep], tgt_cols[keep]] = colours[keep].astype(np.uint8)
    written[tgt_rows[keep], tgt_cols[keep]] = True
    return written


def _tops_under_head(mask: np.ndarray, head: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per column of ``mask`` ``[H, W]`` bool: its top pixel, kept where the pixel above is head.

    Returns:
        rows ``[m]``, cols ``[m]``, counts ``[m]`` (mask pixels in each kept column).
    """
    cols = np.nonzero(mask.any(axis=0))[0]
    rows = np.argmax(mask[:, cols], axis=0)
    keep = rows > 0
    keep[keep] = head[rows[keep] - 1, cols[keep]]
    counts = mask[:, cols[keep]].sum(axis=0)
    return rows[keep], cols[keep], counts


def _blur_where(image: np.ndarray, mask: np.ndarray, ksize: int = 5) -> None:
    """Replace ``image`` pixels under ``mask`` by their ``ksize``² Gaussian blur, in place.

    Equals ``np.copyto(image, cv2.GaussianBlur(image, (ksize, ksize), 0), where=mask[..., None])``
    but blurs only the mask's bounding box plus the kernel radius: the neck strip is a few
    percent of the frame. Inside the image the margin supplies the true neighbours; at the
    image edges OpenCV's default reflection is the same as for the whole image.

    Args:
        image: ``[H, W, C]`` uint8, modified in place.
        mask: ``[H, W]`` bool.
    """
    box = mask_bbox(mask)
    if box is None:
        return
    r = ksize // 2
    h, w = mask.shape
    r0, r1 = max(box[0] - r, 0), min(box[1] + r, h)
    c0, c1 = max(box[2] - r, 0), min(box[3] + r, w)
    blurred = cv2.GaussianBlur(image[r0:r1, c0:c1], (ksize, ksize), 0)
    cv2.copyTo(blurred, mask[r0:r1, c0:c1].view(np.uint8), image[r0:r1, c0:c1])


def make_gt_and_torso(frame: np.ndarray, labels: np.ndarray, bg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Build one frame's GT image and torso layer.

    Args:
        frame: ``[H, W, 3]`` uint8 BGR frame.
        labels: ``[H, W]`` uint8 parsing labels.
        bg: ``[H, W, 3]`` uint8 BGR background.

    Returns:
        gt ``[H, W, 3]`` uint8 BGR, torso ``[H, W, 4]`` uint8 BGRA.
    """
    head = labels == HEAD
    neck = labels == NECK
    torso_part = labels == TORSO
    background = labels == BACKGROUND

    # cv2.copyTo with a 0/1 uint8 mask: the same as np.where on the bool masks, several times faster.
    gt = frame.copy()
    cv2.copyTo(bg, background.view(np.uint8), gt)
    torso = gt.copy()
    cv2.copyTo(bg, head.view(np.uint8), torso)

    rows, cols, _ = _tops_under_head(torso_part, head)
    torso_fill = _copy_up(torso, gt, rows, cols, TORSO_LEN)

    neck = cv2.dilate(neck.view(np.uint8), np.ones((3, 1), np.uint8), iterations=3) > 0
    rows, cols, counts = _tops_under_head(neck, head)
    rows = rows + np.minimum(counts - 1, NECK_PUSH_DOWN)
    neck_fill = _copy_up(torso, gt, rows, cols, NECK_LEN)
    _blur_where(torso, neck_fill)

    alpha = (neck | torso_part | neck_fill | torso_fill).view(np.uint8) * np.uint8(255)
    torso = cv2.bitwise_and(torso, torso, mask=alpha)
    return gt, cv2.merge([torso, alpha])


_BG_CACHE: dict[str, np.ndarray] = {}


def _load_bg(bc_path: str, shape: tuple[int, int]) -> np.ndarray:
    # Each worker reads bc.jpg once.
    if bc_path not in _BG_CACHE:
        bg = cv2.imread(bc_path, cv2.IMREAD_COLOR)
        if bg is None:
            raise FileNotFoundError(f"background {bc_path} is missing or unreadable; run the background step (process.py --task 6)")
        _BG_CACHE[bc_path] = bg
    bg = _BG_CACHE[bc_path]
    if bg.shape[:2] != shape:
        raise ValueError(f"background {bc_path} is {bg.shape[:2]}, frames are {shape}; re-run the background step")
    return bg


def _process_one(args: tuple[str, str, str, str, str]) -> None:
    """Worker: read one frame and its parsing map, write its GT JPEG and torso PNG to the given
    (temporary) paths."""
    frame_path, parsing_path, bc_path, gt_path, torso_path = args
    frame = cv2.imread(frame_path, cv2.IMREAD_COLOR)
    if frame is None:
        raise ValueError(f"cannot read frame {frame_path}; re-extract frames (process.py --task 3 --force)")
    bg = _load_bg(bc_path, frame.shape[:2])
    labels = read_labels(parsing_path)
    if labels.shape != frame.shape[:2]:
        raise ValueError(f"parsing map {parsing_path} is {labels.shape}, frame is {frame.shape[:2]}; re-run parsing")
    gt, torso = make_gt_and_torso(frame, labels, bg)
    if not cv2.imwrite(gt_path, gt, [cv2.IMWRITE_JPEG_QUALITY, 95]):
        raise OSError(f"cannot write {gt_path}")
    write_png(torso_path, torso)


def extract_torso_and_gt(
    ori_dir: str | os.PathLike,
    parsing_dir: str | os.PathLike,
    bc_path: str | os.PathLike,
    torso_dir: str | os.PathLike,
    gt_dir: str | os.PathLike,
    workers: int = 2,
) -> dict:
    """Write ``gt_dir/<k>.jpg`` and ``torso_dir/<k>.png`` for every ``ori_dir/<k>.jpg``.

    All files are written under temporary names and made durable and renamed together at the
    end (:func:`data_utils.atomic.atomic_paths`).

    Args:
        workers: processes to spread the frames over (1 = in this process).

    Returns:
        dict(n_frames, seconds, ms_per_frame).
    """
    frames = list_frames(ori_dir)
    if not Path(bc_path).is_file():
        raise FileNotFoundError(f"background {bc_path} is missing; run the background step (process.py --task 6)")
    parsing_dir, torso_dir, gt_dir = Path(parsing_dir), Path(torso_dir), Path(gt_dir)
    parsings = [parsing_dir / f"{p.stem}.png" for p in frames]
    for parsing in parsings:
        if not parsing.is_file():
            raise FileNotFoundError(f"parsing map {parsing} is missing; run the parsing step (process.py --task 5)")
    n = len(frames)
    t0 = time.perf_counter()
    finals = [gt_dir / f"{p.stem}.jpg" for p in frames] + [torso_dir / f"{p.stem}.png" for p in frames]
    with atomic_paths(finals) as tmps:
        jobs = [(str(p), str(parsing), str(bc_path), str(gt), str(rgba))
                for p, parsing, gt, rgba in zip(frames, parsings, tmps[:n], tmps[n:])]
        map_jobs(_process_one, jobs, workers, "torso+gt")
    seconds = time.perf_counter() - t0
    return dict(n_frames=n, seconds=round(seconds, 3), ms_per_frame=round(1000 * seconds / n, 2))
