"""How well a torso workspace renders the body, without the head. Prints JSON on stdout.

    python scripts/torso_psnr.py DATA --workspace W [main.py flags of the run] [--split val|train] [--every K]

Renders every ``K``-th frame of the split (``val``: the held-out frames of
``transforms_val.json``; ``train``: the training frames) with ``model.render_torso``: the torso
over the background image, the head not marched, so a 512² frame takes about 0.4 s on 2 cores
against several seconds for a head + torso render. Each is scored against what the torso
trains on: the GT torso (``torso_imgs/<id>.png``) over the background (``bc.jpg``).

Figures (mean squared error pooled over the frames, colours in [0, 1], as dB): ``psnr`` (mean
per-frame PSNR of the whole frame), and by the GT frame's parsing labels (``parsing/<id>.png``)
``body_psnr`` (neck and torso pixels), ``neck_psnr``, ``torso_psnr``, ``background_psnr``,
``head_psnr`` (where the head will cover the torso render), with each label's share of the
pixels in ``shares``. The workspace's model flags (``model_flags.json``) are used; flags given
here must agree with them. Bad input ends with one ``error:`` line and exit code 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

LABELS = {"background": 0, "head": 1, "neck": 2, "torso": 3}  # data_utils.parsing's label values


@torch.no_grad()
def torso_psnr(opt, split: str = "val", every: int = 2, device: str = "cpu") -> dict:
    """Torso-only renders of a split scored against GT torso over the background.

    Args:
        opt: ``main.py`` options of a torso workspace (``--torso``, data path, ``--workspace``).
        split: ``val`` (held-out frames) or ``train``.
        every: score frames 0, every, 2 * every, ... of the split.
    Returns:
        ``frames``, ``split``, ``checkpoint``, ``psnr``, ``body_psnr``, ``neck_psnr``,
        ``torso_psnr``, ``background_psnr``, ``head_psnr`` (dB), ``shares`` (label -> share of
        the pixels).
    """
    from data_utils.parsing import read_labels
    from nerf_triplane.metrics import capped_psnr
    from nerf_triplane.provider import NeRFDataset
    from nerf_triplane.trained_model import load_trained

    if split not in ("val", "train"):
        raise ValueError(f"--split must be val or train, got {split!r}")
    if every < 1:
        raise ValueError(f"--every takes a positive integer, got {every}")
    ds = NeRFDataset(opt, device=device, type="test" if split == "val" else "train")
    ds.training, ds.num_rays = False, -1
    # A workspace without a torso branch is refused here, with the fix.
    model, trainer, ckpt = load_trained(opt, ds, device, purpose="torso_psnr.py")

    sums = {name: 0.0 for name in LABELS}
    counts = {name: 0 for name in LABELS}
    frame_psnrs = []
    for k in range(0, ds.num_frames, every):
        batch = ds.collate([k])
        out = model.render_torso(batch["rays_o"], batch["rays_d"], batch["auds"], batch["bg_coords"], batch["poses"],
                                 bg_color=batch["bg_color"], **trainer.render_args(batch, perturb=False))
        err = ((out["torso_color"] - batch["bg_torso_color"]) ** 2).mean(-1).reshape(ds.H, ds.W).cpu().numpy()
        frame_psnrs.append(capped_psnr(float(err.mean())))
        labels = read_labels(Path(opt.path) / "parsing" / f"{ds.img_ids[k]}.png")
        if labels.shape != err.shape:
            raise ValueError(f"parsing/{ds.img_ids[k]}.png is {labels.shape[1]}x{labels.shape[0]}, the frames "
                             f"{ds.W}x{ds.H}: score a run trained at the data's own size")
        for name, value in LABELS.items():
            mask = labels == value
            sums[name] += float(err[mask].sum())
            counts[name] += int(mask.sum())
    total = sum(counts.values())
    result = {"frames": len(frame_psnrs), "split": split, "checkpoint": str(ckpt),
              "psnr": float(np.mean(frame_psnrs))}
    body = counts["neck"] + counts["torso"]
    result["body_psnr"] = capped_psnr((sums["neck"] + sums["torso"]) / body) if body else None
    for name in LABELS:
        result[f"{name}_psnr"] = capped_psnr(sums[name] / counts[name]) if counts[name] else None
    result["shares"] = {name: counts[name] / total for name in LABELS}
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    own = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    own.add_argument("--split", choices=("val", "train"), default="val")
    own.add_argument("--every", type=int, default=2)
    try:
        args, rest = own.parse_known_args(argv)
    except argparse.ArgumentError:
        print("error: --split takes val or train and --every a positive integer", file=sys.stderr)
        return 2
    from nerf_triplane.options import parse_args
    from nerf_triplane.presets import apply_preset, explicit_dests
    from nerf_triplane.json_output import print_result
    from nerf_triplane.workspace_flags import apply_stored_flags

    def compute() -> dict:
        opt = parse_args(rest + ["--torso", "--test"])
        if opt.preset:
            apply_preset(opt, rest)
        apply_stored_flags(opt, explicit_dests(rest))
        return torso_psnr(opt, split=args.split, every=args.every)

    return print_result(compute)


if __name__ == "__main__":
    sys.exit(main())
