"""Reading frames and renders as RGB arrays, with one error line naming the file and the fix."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def read_rgb(path: Path, fix: str = "the file is missing or corrupt: re-run data_utils/process.py") -> np.ndarray:
    """An image file as RGB uint8 ``[H, W, 3]``.

    Raises:
        FileNotFoundError: the file cannot be read; the message names it and ``fix``.
    """
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"cannot read image {path}; {fix}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
