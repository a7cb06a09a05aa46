"""Where a render's error lies: squared error against GT by face region. Prints JSON on stdout.

    python scripts/error_budget.py W [--data DATA] [--name NAME]

Scores the lossless frames of a render that has GT (``W/results/<name>_frames``, written by
``main.py --test`` and by ``scripts/crossval.py``; default: the latest render) against
``<data>/gt_imgs/<img_id>.jpg``. Every pixel goes to the first region of this list that holds
it; the regions come from the GT frame's tracked landmarks (``ori_imgs/<img_id>.lms``) and
parsing map (``parsing/<img_id>.png``), sizes in units of ``d``, the distance between the eye
centres:

* ``mouth``: hull of the lip landmarks 48-67, dilated by 0.15 d;
* ``eyes``: hulls of the eye landmarks 36-41 and 42-47, each dilated by 0.2 d (lids, lashes);
* ``brows_forehead``: a band from 0.1 d under the brow landmarks 17-26 to 0.7 d above them
  (the hairline of french.mp4), "above" meaning across the eye line, within the head label;
* ``hair``: the rest of the parsing head label outside the jaw-to-brow landmark hull: hair
  and ears;
* ``face_rest``: the rest of the jaw-to-brow hull (cheeks, nose, chin);
* ``outside_head``: everything else (neck, torso, background).

For each region: ``pixels`` (its share of the pixels), ``error`` (its share of the squared
error), ``mse`` (mean squared error over its pixels, colours in [0, 1]) and ``psnr_if_perfect``
(mean per-frame PSNR, dB, with that region's error removed: what a perfect region would be
worth). Top level: ``psnr`` (mean per-frame PSNR, as ``metrics.json``), ``mse``, ``frames``.
PSNR per frame is capped at 100 dB, as in the evaluation. Bad input ends with one ``error:``
line and exit code 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REGIONS = ("mouth", "eyes", "brows_forehead", "hair", "face_rest", "outside_head")
MOUTH_DILATE, EYE_DILATE = 0.15, 0.2  # in eye distances
BROW_BELOW, FOREHEAD_ABOVE = 0.1, 0.7  # band around the brows, in eye distances (french: hairline ~0.7 d up)


def _hull(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(points).astype(np.int32)), 1)
    return mask


def _dilate(mask: np.ndarray, radius: float) -> np.ndarray:
    r = max(1, int(round(radius)))
    return cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))


def region_labels(lms: np.ndarray, head: np.ndarray) -> np.ndarray:
    """Region index (into ``REGIONS``) of every pixel of one frame.

    Args:
        lms: the frame's 68 landmarks, pixels  # [68, 2]
        head: the head label of its parsing map  # [H, W] bool
    Returns:
        region indices  # [H, W] uint8
    """
    shape = head.shape
    left, right = lms[36:42].mean(axis=0), lms[42:48].mean(axis=0)
    d = float(np.linalg.norm(right - left))
    if not d > 0:
        raise ValueError("the eye landmarks coincide: cannot size the regions")
    across = (right - left) / d
    up = np.array([across[1], -across[0]])  # the eye line turned a quarter towards the top of the image
    brows = lms[17:27]
    band = np.concatenate([brows - BROW_BELOW * d * up, (brows + FOREHEAD_ABOVE * d * up)[::-1]])
    forehead = np.zeros(shape, np.uint8)
    cv2.fillPoly(forehead, [np.round(band).astype(np.int32)], 1)
    masks = {
        "mouth": _dilate(_hull(lms[48:68], shape), MOUTH_DILATE * d),
        "eyes": _dilate(_hull(lms[36:42], shape), EYE_DILATE * d) | _dilate(_hull(lms[42:48], shape), EYE_DILATE * d),
        "brows_forehead": forehead & head,
    }
    outline = _hull(lms, shape).astype(bool)
    masks["hair"] = head & ~outline
    masks["face_rest"] = outline
    labels = np.full(shape, REGIONS.index("outside_head"), np.uint8)
    # Paint from the last region to the first so that the first region holding a pixel wins.
    for name in reversed(REGIONS[:-1]):
        labels[masks[name].astype(bool)] = REGIONS.index(name)
    return labels


def error_budget(workspace, data=None, name: str | None = None) -> dict:
    """Squared error of a render against its GT frames, split by region (module docstring).

    Args:
        workspace: folder holding ``results/``.
        data: training folder (default: the one recorded by the render).
        name: render name (default: the latest).
    Returns:
        ``name``, ``data``, ``split``, ``frames``, ``psnr`` (dB), ``mse``, ``regions``:
        {region: {``pixels``, ``error``, ``mse``, ``psnr_if_perfect``}}.
    """
    from data_utils.images import read_rgb
    from data_utils.parsing import HEAD, read_labels
    from nerf_triplane.evaluation import latest_render, load_render
    from nerf_triplane.metrics import capped_psnr
    from nerf_triplane.provider import read_lms

    results = Path(workspace) / "results"
    if not results.is_dir():
        raise FileNotFoundError(f"{results} does not exist: run main.py DATA --workspace {workspace} --test first")
    name = name or latest_render(results)
    render = load_render(results, name, data)
    if not render["has_gt"]:
        raise ValueError(f"render {name!r} has no GT frames (new audio): nothing to compare with")
    root = Path(render["data"])
    n_regions = len(REGIONS)
    sq_sum = np.zeros(n_regions)  # squared error summed over pixels and channels, all frames
    px_sum = np.zeros(n_regions)
    frame_psnr, frame_psnr_without = [], []
    for pred, f in zip(render["frames"], render["index"]):
        img_id = int(f["img_id"])
        gt = read_rgb(root / "gt_imgs" / f"{img_id}.jpg")
        if gt.shape != pred.shape:
            raise ValueError(f"render frame {f['k']} is {pred.shape[:2]} but gt_imgs/{img_id}.jpg is "
                             f"{gt.shape[:2]}: the regions are drawn on the GT frame")
        labels = region_labels(read_lms(root / "ori_imgs" / f"{img_id}.lms"),
                               read_labels(root / "parsing" / f"{img_id}.png") == HEAD)
        err = ((pred.astype(np.float64) - gt) / 255.0) ** 2  # [H, W, 3]
        per_region = np.bincount(labels.ravel(), weights=err.sum(axis=2).ravel(), minlength=n_regions)
        sq_sum += per_region
        px_sum += np.bincount(labels.ravel(), minlength=n_regions)
        total = err.size
        frame_psnr.append(capped_psnr(per_region.sum() / total))
        frame_psnr_without.append([capped_psnr((per_region.sum() - e) / total) for e in per_region])
    all_sq, all_px = sq_sum.sum(), px_sum.sum()
    without = np.mean(frame_psnr_without, axis=0)
    regions = {r: {"pixels": float(px_sum[i] / all_px),
                   "error": float(sq_sum[i] / all_sq) if all_sq > 0 else 0.0,
                   "mse": float(sq_sum[i] / (3 * px_sum[i])) if px_sum[i] else None,
                   "psnr_if_perfect": float(without[i])}
               for i, r in enumerate(REGIONS)}
    return {"name": name, "data": str(root), "split": render["split"], "frames": len(render["frames"]),
            "psnr": float(np.mean(frame_psnr)), "mse": float(all_sq / (3 * all_px)), "regions": regions}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspace", help="workspace folder holding results/")
    parser.add_argument("--data", default=None, help="training folder (default: the one recorded by the render)")
    parser.add_argument("--name", default=None, help="render name, e.g. heldout (default: the latest)")
    args = parser.parse_args(argv)
    from nerf_triplane.json_output import print_result

    return print_result(lambda: error_budget(args.workspace, args.data, args.name))


if __name__ == "__main__":
    sys.exit(main())
