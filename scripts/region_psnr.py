"""Held-out PSNR of whole frames and of the head above the brows, for one or more workspaces.

    python scripts/region_psnr.py W/fold0 [W2/fold0 ...] [--name heldout]

Each argument is a crossval fold folder (``data/`` and ``ws/``, see scripts/crossval.py) whose
``ws/results/<name>_frames`` holds a ``--test`` render. Per frame: PSNR of the whole frame and
of the rectangle above the brows (``nerf_triplane.regions``, from the GT frame's landmarks),
averaged over the frames as ``nerf_triplane.evaluation`` averages PSNR. Prints JSON.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def fold_region_psnr(fold: Path, name: str = "heldout") -> dict:
    """``dict(fold, frames, psnr, psnr_above_brows)`` of one fold folder (dB, frame means)."""
    import cv2
    import numpy as np

    from nerf_triplane.evaluation import load_render
    from nerf_triplane.provider import read_lms
    from nerf_triplane.regions import above_brows_rect, pooled_psnr, region_sq_error

    data = fold / "data"
    render = load_render(fold / "ws" / "results", name, data)
    whole, above = [], []
    for pred_u8, f in zip(render["frames"], render["index"]):
        img_id = int(f["img_id"])
        gt = cv2.cvtColor(cv2.imread(str(data / "gt_imgs" / f"{img_id}.jpg")), cv2.COLOR_BGR2RGB)
        if gt.shape != pred_u8.shape:
            raise ValueError(f"{fold}: render {pred_u8.shape} and GT {gt.shape} differ in size")
        pred, gt = pred_u8 / 255.0, gt / 255.0
        H, W = gt.shape[:2]
        whole.append(pooled_psnr(*region_sq_error(pred, gt, (0, H, 0, W))))
        rect = above_brows_rect(read_lms(data / "ori_imgs" / f"{img_id}.lms"), H, W)
        if rect[1] > 0:
            above.append(pooled_psnr(*region_sq_error(pred, gt, rect)))
    return {"fold": str(fold), "frames": len(whole), "psnr": float(np.mean(whole)),
            "psnr_above_brows": float(np.mean(above)) if above else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folds", type=Path, nargs="+", help="crossval fold folders (data/ and ws/)")
    parser.add_argument("--name", default="heldout", help="render name under ws/results")
    args = parser.parse_args(argv)
    from nerf_triplane.json_output import print_result

    return print_result(lambda: [fold_region_psnr(f, args.name) for f in args.folds])


if __name__ == "__main__":
    sys.exit(main())
