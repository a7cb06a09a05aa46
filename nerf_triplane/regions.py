"""PSNR of a face region: the part of the head above the brows.

The region of a frame is the rectangle of rows ``[0, brow_top)`` (``brow_top``: the highest of
the brow landmarks 17-26) and of the face's columns (jaw points 0-16, widened by a quarter of
the face width on each side so the hair silhouette beside the temples counts): forehead,
hairline, hair and the background just around them. Areas outside the head are copied from GT
in the head renders, so they add little error and the region's PSNR is dominated by the head.
"""
from __future__ import annotations

import math

import numpy as np

BROWS = slice(17, 27)
JAW = slice(0, 17)
WIDEN = 0.25  # share of the face width added on each side


def above_brows_rect(lms: np.ndarray, H: int, W: int) -> tuple[int, int, int, int]:
    """(row0, row1, col0, col1) of the above-brows region of landmarks ``[68, 2]`` (x = column,
    y = row, pixels) in an ``H x W`` image; empty (row1 == 0) when the brows touch the top."""
    lms = np.asarray(lms, dtype=np.float64)
    if lms.shape != (68, 2):
        raise ValueError(f"above_brows_rect needs [68, 2] landmarks, got {lms.shape}")
    top = int(np.clip(np.floor(lms[BROWS, 1].min()), 0, H))
    x0, x1 = lms[JAW, 0].min(), lms[JAW, 0].max()
    pad = WIDEN * (x1 - x0)
    c0, c1 = int(np.clip(np.floor(x0 - pad), 0, W)), int(np.clip(np.ceil(x1 + pad), 0, W))
    return 0, top, c0, c1


def region_sq_error(pred: np.ndarray, gt: np.ndarray, rect: tuple[int, int, int, int]) -> tuple[float, int]:
    """Sum of squared errors and number of values inside ``rect`` of two images ``[H, W, 3]`` in
    [0, 1] (sums, so a whole clip's PSNR pools its frames)."""
    r0, r1, c0, c1 = rect
    if pred.shape != gt.shape:
        raise ValueError(f"region_sq_error: shapes differ, {pred.shape} vs {gt.shape}")
    d = np.asarray(pred, np.float64)[r0:r1, c0:c1] - np.asarray(gt, np.float64)[r0:r1, c0:c1]
    return float((d ** 2).sum()), int(d.size)


def pooled_psnr(sq_error: float, count: int) -> float:
    """PSNR in dB of a pooled squared-error sum over ``count`` values in [0, 1] (inf when 0)."""
    if count <= 0:
        raise ValueError("pooled_psnr needs at least one value")
    mse = sq_error / count
    return math.inf if mse == 0 else -10.0 * math.log10(mse)
