"""Cross-validate a head on disjoint held-out windows of one subject. Prints JSON on stdout.

    python scripts/crossval.py DATA --root W [--folds 5] [--only 0 2 4] [main.py flags ...]

Fold ``k`` holds out the ``k``-th of ``--folds`` windows of ``N // 11`` frames (the size of the
reference's held-out tail), spread evenly over the clip; the other frames train. Each fold gets
``W/fold<k>/data`` (the subject's files linked, ``transforms_{train,val}.json`` re-split) and
``W/fold<k>/ws``, a workspace trained with the given ``main.py`` flags (no validation passes),
then its held-out render (``results/heldout*``) is scored by ``nerf_triplane.evaluation``
(PSNR, LMD, mouth opening vs GT, audio-lip sync, the nearest-frame floors: ``floor_*`` pastes
the landmark outline, ``floor_head_*`` the whole head, like for like) into
``W/fold<k>/row.json``. A rerun resumes unfinished folds and reuses finished ones; the table
covers every finished fold under ``W``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

HELD_OUT_SHARE = 11  # one held-out window has N // 11 frames, as the reference's tail


def fold_windows(n: int, folds: int) -> list[range]:
    """``folds`` disjoint windows of ``n // 11`` positions, evenly spread over ``range(n)``."""
    import numpy as np

    size = n // HELD_OUT_SHARE
    if folds < 1 or size < 1 or folds * size > n:
        raise ValueError(f"cannot hold out {folds} windows of {size} frames from {n} frames")
    starts = np.linspace(0, n - size, folds).round().astype(int)
    return [range(int(s), int(s) + size) for s in starts]


def merged_frames(data: Path) -> tuple[list[dict], dict]:
    """The frames of both transforms files of ``data`` in ``img_id`` order, which the fold
    windows index, and the files' other keys (camera intrinsics)."""
    frames, header = [], {}
    for split in ("train", "val"):
        with open(data / f"transforms_{split}.json") as f:
            d = json.load(f)
        header = {k: v for k, v in d.items() if k != "frames"}
        frames += d["frames"]
    frames.sort(key=lambda fr: int(fr["img_id"]))
    return frames, header


def make_fold(data: Path, out: Path, fold: int, folds: int) -> Path:
    """Write ``out`` as a training folder whose held-out split is window ``fold``.

    Every entry of ``data`` is linked except the transforms and cached floor files; the
    frames of both transforms files are merged in ``img_id`` order and re-split.
    """
    from data_utils.atomic import atomic_path

    frames, header = merged_frames(data)
    held = set(fold_windows(len(frames), folds)[fold])
    out.mkdir(parents=True, exist_ok=True)
    for entry in data.iterdir():
        if entry.name.startswith(("transforms_", "baseline_")) or (out / entry.name).exists():
            continue
        (out / entry.name).symlink_to(entry.resolve())
    for split, keep in (("train", lambda i: i not in held), ("val", lambda i: i in held)):
        with atomic_path(out / f"transforms_{split}.json") as tmp:
            Path(tmp).write_text(json.dumps({**header, "frames": [fr for i, fr in enumerate(frames) if keep(i)]}))
    return out


def train_and_score(fold_data: Path, workspace: Path, flags: list[str]) -> dict:
    """Train (or resume) a head on ``fold_data``, render the held-out window, score it."""
    import torch

    from nerf_triplane.evaluation import evaluate_workspace
    from nerf_triplane.network import NeRFNetwork
    from nerf_triplane.options import parse_args
    from nerf_triplane.presets import apply_preset
    from nerf_triplane.provider import NeRFDataset
    from nerf_triplane.trainer import Trainer

    argv = [str(fold_data), "--workspace", str(workspace), *flags]
    opt = parse_args(argv)
    if opt.preset:
        apply_preset(opt, argv)
    torch.manual_seed(opt.seed)
    train_set = NeRFDataset(opt, type="train")
    model = NeRFNetwork(opt, audio_dim=train_set.audio_dim)
    trainer = Trainer(opt, model, workspace, "cpu", train=True)
    trainer.load_checkpoint(opt.ckpt)
    if not trainer.train(train_set.dataloader(), None):
        raise KeyboardInterrupt
    trainer.test(NeRFDataset(opt, type="test").dataloader(), name="heldout")
    return evaluate_workspace(workspace, data=fold_data, name="heldout")


def fold_row(fold: int, report: dict) -> dict:
    """The figures of one fold's evaluation report (``evaluate_workspace`` result)."""
    m, floor, head = report["metrics"], report.get("baseline") or {}, report.get("baseline_head") or {}
    sync, sync_gt = report.get("sync") or {}, report.get("sync_gt") or {}
    return {"fold": fold, "frames": report["frames"], "psnr": m["psnr"], "lmd": m["lmd"],
            "floor_psnr": floor.get("psnr"), "floor_lmd": floor.get("lmd"),
            "floor_head_psnr": head.get("psnr"), "floor_head_lmd": head.get("lmd"), "mouth_corr": m.get("mouth_corr"),
            "opening_std_ratio": m.get("opening_std_ratio"), "opening_p90": m.get("opening_p90"),
            "opening_p90_gt": m.get("opening_p90_gt"), "sync": sync.get("corr_at_0"),
            "sync_gt": sync_gt.get("corr_at_0"), "sync_pred": sync.get("corr_pred"),
            "sync_pred_gt": sync_gt.get("corr_pred")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="processed training folder")
    parser.add_argument("--root", type=Path, required=True, help="folder for the folds' data and workspaces")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--only", type=int, nargs="*", default=None, help="folds to run (default all)")
    args, flags = parser.parse_known_args(argv)
    from data_utils.atomic import atomic_path
    from nerf_triplane.json_output import print_result

    def compute() -> dict:
        for fold in (range(args.folds) if args.only is None else args.only):
            if not 0 <= fold < args.folds:
                raise ValueError(f"--only {fold} is not a fold of --folds {args.folds}")
            row_path = args.root / f"fold{fold}" / "row.json"
            if row_path.is_file():
                continue
            fold_data = make_fold(args.data.resolve(), args.root / f"fold{fold}" / "data", fold, args.folds)
            report = train_and_score(fold_data, args.root / f"fold{fold}" / "ws", flags)
            with atomic_path(row_path) as tmp:
                Path(tmp).write_text(json.dumps(fold_row(fold, report), indent=2))
        rows = [json.loads((args.root / f"fold{k}" / "row.json").read_text()) for k in range(args.folds)
                if (args.root / f"fold{k}" / "row.json").is_file()]
        return {"data": str(args.data), "folds": args.folds, "flags": flags, "rows": rows}

    return print_result(compute)


if __name__ == "__main__":
    sys.exit(main())
