"""Does a trained head use its audio? Render the lips of training frames with their own audio
window and with another frame's, and compare both with the GT lips. Prints JSON on stdout.

    python scripts/audio_influence.py DATA --workspace W [main.py flags of the run] [--frames 30]

A model that learnt lip motion from audio renders the GT lips better with the frame's own audio
(``ratio`` = MSE with other audio / MSE with own audio clearly above 1) and its lips change
with the audio (``change``: mean absolute difference of the two renders, in [0, 1] colour
units; 1/255 = 0.0039). Costs about a second per frame on 2 CPU cores.
"""
from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


@torch.no_grad()
def audio_influence(opt, n_frames: int = 30, shift: int | None = None, device: str = "cpu") -> dict:
    """Lips-rect MSE of training frames rendered with their own vs a shifted frame's audio.

    Args:
        opt: ``main.py`` options (data path, ``--workspace`` with checkpoints, model flags).
        n_frames: training frames scored, evenly spread.
        shift: the other audio is frame ``(k + shift) % N``; default N // 4.
    Returns:
        ``frames``, ``shift``, ``mse_own``, ``mse_other`` (mean over frames), ``ratio``
        (other / own), ``change`` (mean |render own - render other|), ``checkpoint``.
    """
    from nerf_triplane.network import NeRFNetwork
    from nerf_triplane.provider import NeRFDataset
    from nerf_triplane.rays import get_rays
    from nerf_triplane.trainer import Trainer

    ds = NeRFDataset(opt, device=device, type="train")
    model = NeRFNetwork(opt, audio_dim=ds.audio_dim).to(device)
    trainer = Trainer(opt, model, opt.workspace, device, train=False)
    ckpt = trainer.load_checkpoint(opt.ckpt)
    if ckpt is None:
        raise FileNotFoundError(f"no checkpoint in {Path(opt.workspace) / 'checkpoints'}: train the head first")
    trainer._set_train_data(ds)
    model.eval()
    n = ds.num_frames
    shift = n // 4 if shift is None else int(shift)
    frames = np.linspace(0, n - 1, min(n_frames, n)).round().astype(int)
    own, other, change = [], [], []
    for k in frames:
        rays = get_rays(ds.poses[k:k + 1], ds.intrinsics, ds.H, ds.W, rect=ds.rects[k]["lips"])
        image, bg_torso = ds.frame_images(int(k))
        inds = rays["inds"][0]
        gt = image.reshape(-1, 3)[inds]
        bg = bg_torso.reshape(-1, 3)[inds][None]
        frame = {"eye": None if ds.eye_area is None else ds.eye_area[k:k + 1], "index": [int(k)]}
        renders = []
        for a in (int(k), int((k + shift) % n)):
            out = model.render(rays["rays_o"], rays["rays_d"], ds.get_audio_window(a), None, ds.poses[k:k + 1],
                               bg_color=bg, **trainer._render_args(frame, perturb=False))
            renders.append(out["image"][0])
        own.append(((renders[0] - gt) ** 2).mean().item())
        other.append(((renders[1] - gt) ** 2).mean().item())
        change.append((renders[0] - renders[1]).abs().mean().item())
    mse_own, mse_other = float(np.mean(own)), float(np.mean(other))
    return {"frames": len(frames), "shift": shift, "mse_own": mse_own, "mse_other": mse_other,
            "ratio": mse_other / mse_own if mse_own > 0 else None, "change": float(np.mean(change)),
            "checkpoint": str(ckpt)}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    n_frames = 30
    if "--frames" in argv:
        i = argv.index("--frames")
        try:
            n_frames = int(argv[i + 1])
        except (IndexError, ValueError):
            print("error: --frames takes a positive integer", file=sys.stderr)
            return 2
        del argv[i:i + 2]
    from nerf_triplane.options import parse_args
    from nerf_triplane.presets import apply_preset

    try:
        opt = parse_args(argv)
        if opt.preset:
            apply_preset(opt, argv)
        # Progress lines of the loaders go to stderr: stdout carries the JSON only.
        with contextlib.redirect_stdout(sys.stderr):
            result = audio_influence(opt, n_frames)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
