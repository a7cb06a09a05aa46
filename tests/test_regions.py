"""Region PSNR above the brows (nerf_triplane/regions.py)."""
import math

import numpy as np
import pytest

from nerf_triplane.regions import above_brows_rect, pooled_psnr, region_sq_error


def _face(brow_y: float, jaw_x0: float, jaw_x1: float) -> np.ndarray:
    lms = np.full((68, 2), 60.0)
    lms[0:17, 0] = np.linspace(jaw_x0, jaw_x1, 17)
    lms[17:27, 1] = brow_y + np.arange(10) % 3  # the highest brow point sits at brow_y
    return lms


def test_rect_spans_rows_above_the_brows_and_the_widened_face():
    assert above_brows_rect(_face(40.2, 30, 70), 100, 100) == (0, 40, 20, 80)
    assert above_brows_rect(_face(30, 5, 95), 100, 100) == (0, 30, 0, 100)  # clipped to the image
    assert above_brows_rect(_face(-3, 30, 70), 100, 100)[1] == 0  # brows above the frame: empty
    with pytest.raises(ValueError, match=r"\[68, 2\]"):
        above_brows_rect(np.zeros((5, 2)), 100, 100)


def test_error_counts_only_inside_the_region():
    gt = np.zeros((100, 100, 3))
    pred = gt.copy()
    pred[50:, :] = 1.0  # below the brows: outside the region
    rect = above_brows_rect(_face(40, 30, 70), 100, 100)
    assert region_sq_error(pred, gt, rect) == (0.0, 40 * 60 * 3)
    assert pooled_psnr(*region_sq_error(pred, gt, rect)) == math.inf
    pred[:10, 20:80] = 0.1  # inside: a quarter of the region's rows off by 0.1
    sq, n = region_sq_error(pred, gt, rect)
    assert pooled_psnr(sq, n) == pytest.approx(-10 * math.log10(0.01 / 4))
