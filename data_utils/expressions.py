"""Upper-face expression values ``expressions.csv`` from the 68 landmarks and the tracked head.

    python -m data_utils.expressions DATA      # writes DATA/expressions.csv from ori_imgs/*.lms

ER-NeRF's only non-audio face input is the blink (``au.csv``). The brows and eyes move too;
these five values describe them, computed geometrically from what the pipeline already has
(``ori_imgs/<k>.lms`` and the rigid head fit ``track_params.pt``, process.py steps 4 and 9):

    brow_raise_r, brow_raise_l  brow points (17-21 / 22-26) above the eye corners (36, 39 / 42, 45)
    brow_furrow                 inner brow ends (21, 22) drawn together
    eye_open_r, eye_open_l      upper lids (37, 38 / 43, 44) above the lower lids (41, 40 / 47, 46)

Head pose: each frame's rigid fit places the subject's neutral 3D face (``shape`` [68, 3],
model frame x to the image right, y up, decimetres). At each landmark the fit gives the image
vectors of the model's up (y) and right (x) axes, a 2x2 Jacobian ``J`` (pixels per decimetre);
the observed landmark's offset from the fitted point, ``J⁻¹ (lms − fit)``, is its movement in the
face's own plane, in decimetres, whatever the head's roll, yaw, pitch and distance. Measures are
differences of these movements (brow minus eye corners, upper minus lower lid: a tracking error
common to both cancels) plus the neutral face's own distances for the eye openness, all divided
by the neutral inter-ocular distance (between the eye centres), so they are unitless:

    brow_raise  = mean_brow(dy) − mean_corners(dy)                (+ = raised)
    brow_furrow = −(dx_22 − dx_21)                                (+ = brows drawn together)
    eye_open    = mean over lid pairs of (y_upper − y_lower)      (neutral shape + movement; 0 = shut)

Rows are frames 0..N-1 (as ``au.csv``); ``frame`` is 1-based. The trainer standardises each
column over the whole video (``standardize``), so only differences between frames matter.
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make `data_utils` importable as a package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from data_utils.atomic import write_text  # noqa: E402

CSV_NAME = "expressions.csv"
NAMES = ("brow_raise_r", "brow_raise_l", "brow_furrow", "eye_open_r", "eye_open_l")
BROW_R, BROW_L = tuple(range(17, 22)), tuple(range(22, 27))
CORNERS_R, CORNERS_L = (36, 39), (42, 45)
LIDS_R = ((37, 41), (38, 40))  # (upper, lower) pairs of the subject's right eye
LIDS_L = ((43, 47), (44, 46))
INNER_BROWS = (21, 22)  # subject's right, left inner brow end
# Standardised values beyond this many robust spreads are tracking failures, not expressions.
CLIP = 3.0


def face_plane_offsets(lms: np.ndarray, fitted: np.ndarray, jac: np.ndarray) -> np.ndarray:
    """Landmark movement in the face plane: ``J⁻¹ (lms − fitted)``.

    Args:
        lms: observed landmarks ``[N, P, 2]`` pixels.
        fitted: the rigid fit's projection of the neutral face ``[N, P, 2]`` pixels.
        jac: image vectors of the model's x and y axes at each point, ``[N, P, 2, 2]``
            (last axis: [x-axis, y-axis] columns), pixels per decimetre.
    Returns:
        ``[N, P, 2]`` (dx, dy) in decimetres along the face's right and up axes.
    """
    return np.linalg.solve(jac, (lms - fitted)[..., None])[..., 0]


def expression_values(lms: np.ndarray, shape: np.ndarray, fitted: np.ndarray, jac: np.ndarray) -> np.ndarray:
    """The five upper-face values of every frame (module docstring), unitless.

    Args:
        lms: ``[N, 68, 2]`` observed landmarks (pixels).
        shape: ``[68, 3]`` neutral face of the rigid fit (model frame, decimetres).
        fitted: ``[N, 68, 2]`` its projection per frame (pixels).
        jac: ``[N, 68, 2, 2]`` pixels per decimetre of the model's x and y axes at each point.
    Returns:
        ``[N, 5]`` float64 in ``NAMES`` order.
    """
    d = face_plane_offsets(lms, fitted, jac)  # [N, 68, 2]
    dx, dy = d[..., 0], d[..., 1]
    iod = float(np.linalg.norm(shape[list(CORNERS_L), :2].mean(0) - shape[list(CORNERS_R), :2].mean(0)))
    if iod <= 0:
        raise ValueError("the tracked face has zero inter-ocular distance; re-run process.py --task 9 --force")

    def brow(brow_ids, corner_ids):
        return dy[:, list(brow_ids)].mean(1) - dy[:, list(corner_ids)].mean(1)

    def eye(pairs):
        up, low = [p[0] for p in pairs], [p[1] for p in pairs]
        neutral = float((shape[up, 1] - shape[low, 1]).mean())
        return neutral + (dy[:, up] - dy[:, low]).mean(1)

    r, l = INNER_BROWS
    values = np.stack([brow(BROW_R, CORNERS_R), brow(BROW_L, CORNERS_L), -(dx[:, l] - dx[:, r]),
                       eye(LIDS_R), eye(LIDS_L)], axis=1)
    return values / iod


def fit_geometry(track: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Neutral shape, its per-frame projection and axis Jacobians from ``track_params.pt``.

    Args:
        track: the loaded ``track_params.pt`` dict (euler, trans [N, 3], focal [1], shape
            [68, 3], image_size (H, W)).
    Returns:
        shape ``[68, 3]``, fitted ``[N, 68, 2]`` pixels, jac ``[N, 68, 2, 2]`` pixels per dm.
    """
    import torch

    from data_utils.tracking import project, to_camera

    shape = track["shape"].double()
    euler, trans = track["euler"].double(), track["trans"].double()
    focal = float(track["focal"].reshape(-1)[0])
    h, w = track["image_size"]

    def proj(s):
        return project(to_camera(s, euler, trans), focal, w / 2.0, h / 2.0)  # [N, 68, 2]

    fitted = proj(shape)
    # Central differences over a millimetre: the projection is smooth at that scale.
    step = 0.01
    cols = []
    for axis in (0, 1):
        e = torch.zeros(3, dtype=torch.float64)
        e[axis] = step
        cols.append((proj(shape + e) - proj(shape - e)) / (2 * step))
    jac = torch.stack(cols, dim=-1)  # [N, 68, 2(image), 2(model x, y)]
    return shape.numpy(), fitted.numpy(), jac.numpy()


def write_expressions_csv(root: str | os.PathLike, out_csv: str | os.PathLike | None = None) -> dict:
    """Write ``<root>/expressions.csv`` from ``ori_imgs/<k>.lms`` and ``track_params.pt``.

    Returns:
        dict(n_frames, columns, median [5], spread [5] (robust, see ``standardize``), seconds).
    """
    import torch

    from data_utils.tracking import load_landmarks

    t0 = time.perf_counter()
    root = Path(root)
    track_pt = root / "track_params.pt"
    if not track_pt.is_file():
        raise FileNotFoundError(f"{track_pt} missing; run head tracking first (process.py --task 9)")
    lms, _ = load_landmarks(root / "ori_imgs")
    track = torch.load(track_pt, map_location="cpu", weights_only=False)
    if track["euler"].shape[0] != len(lms):
        raise ValueError(f"{track_pt} tracks {track['euler'].shape[0]} frames but ori_imgs has {len(lms)}; "
                         "re-run process.py --task 9 --force")
    shape, fitted, jac = fit_geometry(track)
    values = expression_values(np.asarray(lms, dtype=np.float64), shape, fitted, jac)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(("frame", *NAMES))
    for i, row in enumerate(values):
        writer.writerow([i + 1, *(f"{v:.5f}" for v in row)])
    write_text(out_csv if out_csv is not None else root / CSV_NAME, buf.getvalue())
    median, spread = robust_stats(values)
    return dict(n_frames=len(values), columns=list(NAMES), median=median.round(4).tolist(),
                spread=spread.round(4).tolist(), seconds=round(time.perf_counter() - t0, 3))


def read_expressions(root: str | os.PathLike) -> np.ndarray:
    """``[N, 5]`` float32 values of ``<root>/expressions.csv`` in ``NAMES`` order (rows = frames)."""
    path = Path(root) / CSV_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: --exp_upper needs it; write it with "
                                f"`python -m data_utils.expressions {Path(root)}` (or process.py --task 10)")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header = rows[0] if rows else []
    missing = [n for n in NAMES if n not in header]
    if missing:
        raise ValueError(f"{path} lacks columns {missing}; rewrite it with python -m data_utils.expressions")
    cols = [header.index(n) for n in NAMES]
    return np.array([[float(r[c]) for c in cols] for r in rows[1:] if r], dtype=np.float32)


def robust_stats(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column median and half the 5–95 % range of ``values`` ``[N, C]`` -> ``[C]``, ``[C]``."""
    median = np.median(values, axis=0)
    lo, hi = np.percentile(values, [5.0, 95.0], axis=0)
    return median, np.maximum((hi - lo) / 2, 1e-6)


def standardize(values: np.ndarray) -> np.ndarray:
    """Columns of ``values`` ``[N, C]`` centred on their median, divided by ``robust_stats``'s
    spread and clipped to ``±CLIP``: a neutral frame reads 0, a usual movement about ±1  # [N, C]."""
    median, spread = robust_stats(values)
    return np.clip((values - median) / spread, -CLIP, CLIP).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="processed folder (ori_imgs/*.lms, track_params.pt)")
    parser.add_argument("--out", type=Path, default=None, help="csv to write (default DATA/expressions.csv)")
    args = parser.parse_args(argv)
    try:
        stats = write_expressions_csv(args.data, args.out)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(stats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
