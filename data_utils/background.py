"""Static background ``bc.jpg`` from the frames and their parsing maps.

As the reference: every ``step``-th frame votes; a pixel takes its colour from the sampled frame
where it lies farthest from any person pixel, provided that distance exceeds ``min_dist`` pixels
(so the person's soft edges never leak in). Pixels that are never that far from the person
(mostly behind them) copy the colour of the nearest such pixel.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np
from sklearn.neighbors import NearestNeighbors

from data_utils.atomic import atomic_path
from data_utils.landmarks import list_frames
from data_utils.parsing import BACKGROUND, read_labels


def distance_to_person(labels: np.ndarray) -> np.ndarray:
    """Euclidean distance (pixels) from each pixel to the nearest non-background pixel.

    Args:
        labels: ``[H, W]`` uint8 parsing labels.

    Returns:
        ``[H, W]`` float32; 0 on the person; +inf everywhere when there is no person at all.
    """
    background = (labels == BACKGROUND).astype(np.uint8)
    if background.all():
        return np.full(labels.shape, np.inf, dtype=np.float32)
    return cv2.distanceTransform(background, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def fill_from_nearest(image: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Copy into every invalid pixel the colour of its nearest valid pixel.

    Args:
        image: ``[H, W, 3]`` uint8.
        valid: ``[H, W]`` bool, at least one True.

    Returns:
        ``[H, W, 3]`` uint8 (a new array).
    """
    out = image.copy()
    holes = np.argwhere(~valid)  # [M, 2] (row, col)
    if len(holes) == 0:
        return out
    known = np.argwhere(valid)  # [K, 2]
    nn = NearestNeighbors(n_neighbors=1, algorithm="kd_tree").fit(known)
    idx = nn.kneighbors(holes, return_distance=False)[:, 0]
    src = known[idx]
    out[holes[:, 0], holes[:, 1]] = image[src[:, 0], src[:, 1]]
    return out


def extract_background(
    ori_dir: str | os.PathLike,
    parsing_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    step: int = 20,
    min_dist: float = 5.0,
) -> dict:
    """Estimate the static background and write it as ``out_path`` (``bc.jpg``), atomically.

    Args:
        ori_dir: frame folder with ``<k>.jpg``.
        parsing_dir: folder with ``<k>.png`` parsing maps of the same frames.
        out_path: output image path.
        step: use every ``step``-th frame.
        min_dist: a pixel counts as clean background in a frame only farther than this from the person.

    Returns:
        dict(n_used, clean_fraction (share of pixels seen clean in some frame), seconds).
    """
    t0 = time.perf_counter()
    frames = list_frames(ori_dir)[::step]
    parsing_dir = Path(parsing_dir)
    best_dist = best_img = None
    for path in frames:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"cannot read frame {path}; re-extract frames (process.py --task 3 --force)")
        dist = distance_to_person(read_labels(parsing_dir / f"{path.stem}.png"))
        if dist.shape != img.shape[:2]:
            raise ValueError(f"parsing map for {path.name} is {dist.shape}, frame is {img.shape[:2]}; re-run parsing")
        if best_dist is None:
            best_dist, best_img = dist, img.copy()
            continue
        better = dist > best_dist
        best_dist = np.where(better, dist, best_dist)
        best_img[better] = img[better]
    clean = best_dist > min_dist
    if not clean.any():
        raise ValueError(
            f"{parsing_dir}: no pixel is ever more than {min_dist} px from the person; "
            "the background cannot be estimated (is the parsing all person?)"
        )
    bc = fill_from_nearest(best_img, clean)
    with atomic_path(out_path) as tmp:
        cv2.imwrite(str(tmp), bc)
    return dict(n_used=len(frames), clean_fraction=round(float(clean.mean()), 4), seconds=round(time.perf_counter() - t0, 3))
