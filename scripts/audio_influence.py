"""Does a trained head use its audio? Render the lips of frames with their own audio window and
with another frame's, and compare both with the GT. Prints JSON on stdout.

    python scripts/audio_influence.py DATA --workspace W [main.py flags of the run]
        [--split val|train] [--frames N] [--measured]

``--split val`` (default) scores the held-out frames (all of ``transforms_val.json``), where
only audio can tell the model what the mouth does; ``train`` scores training frames.

Each frame's lips square is rendered twice: with the frame's own audio window and with the
window of the frame ``shift`` positions later in the split. Figures:

* ``lips_psnr_own`` / ``lips_psnr_other`` (dB, lips square vs GT) and ``psnr_gain`` = own -
  other: how much closer to GT the lips are with their own audio (0 for a model that ignores
  audio); ``ratio`` = MSE other / MSE own; ``change``: mean |render own - render other| in
  [0, 1] colour units (1/255 = 0.0039);
* ``opening_corr_own`` / ``opening_corr_other``: each render is pasted into its GT frame and
  the inner-lip opening measured (mediapipe landmarks, ``nerf_triplane.sync.mouth_opening``);
  correlation over the frames with the GT frames' opening. ``opening_gain`` = own - other.
* with ``--measured``, a third render per frame whose audio code carries the frame's *measured*
  mouth shape in its first ``--mouth_k`` channels (``nerf_triplane.mouth``, the PCA fitted on
  the training frames): ``lips_psnr_measured``, ``opening_corr_measured`` and
  ``opening_std_ratio_measured`` / ``opening_std_ratio_own`` (spread of the pasted openings /
  GT's). The lips a perfect audio-to-mouth prediction would give: the renderer's ceiling.
  ``opening_corr_code``: the inner-lip gap of the mouth shape that the audio code's mouth
  channels describe, correlated with the GT landmarks' gap (the prediction alone, no render).

Costs about a second per frame on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


@torch.no_grad()
def audio_influence(opt, n_frames: int | None = None, shift: int | None = None, split: str = "val",
                    device: str = "cpu", detector=None, measured: bool = False) -> dict:
    """Lips of frames rendered with their own vs a shifted frame's audio, scored against GT.

    Args:
        opt: ``main.py`` options (data path, ``--workspace`` with checkpoints, model flags).
        n_frames: frames scored, evenly spread over the split (None = all).
        shift: the other audio is position ``(k + shift) % N`` of the split; default N // 4.
        split: ``val`` (held-out frames) or ``train``.
        detector: landmark detector (``detect(rgb u8) -> [68, 2] | None``); default mediapipe.
        measured: also render with the measured mouth shape (see the module docstring).
    Returns:
        ``frames``, ``split``, ``shift``, ``mse_own``, ``mse_other``, ``ratio``, ``change``,
        ``lips_psnr_own``, ``lips_psnr_other``, ``psnr_gain``, ``opening_corr_own``,
        ``opening_corr_other``, ``opening_gain`` (None with fewer than 8 detected frames),
        ``checkpoint``; with ``measured`` also ``lips_psnr_measured``, ``opening_corr_measured``,
        ``opening_std_ratio_own``, ``opening_std_ratio_measured``, ``opening_corr_code``.
    """
    from nerf_triplane.provider import NeRFDataset
    from nerf_triplane.mouth import MouthBasis, aligned_mouth, shape_opening
    from nerf_triplane.rays import get_rays
    from nerf_triplane.evaluation import articulation
    from nerf_triplane.metrics import capped_psnr
    from nerf_triplane.sync import lagged_correlations, mouth_opening
    from nerf_triplane.trained_model import load_trained

    if split not in ("val", "train"):
        raise ValueError(f"--split must be val or train, got {split!r}")
    ds = NeRFDataset(opt, device=device, type="test" if split == "val" else "train")
    model, trainer, ckpt = load_trained(opt, ds, device, purpose="audio_influence.py")
    if detector is None:
        from data_utils.landmarks import LandmarkDetector

        detector = LandmarkDetector("mediapipe")
    coefficients, basis = None, None
    if measured:
        train_lms = ds.landmarks if split == "train" else NeRFDataset(opt, device=device, type="train").landmarks
        basis = MouthBasis(train_lms, opt.mouth_k)
        coefficients = basis.project(ds.landmarks)  # [N, K], NaN without landmarks
    n = ds.num_frames
    shift = n // 4 if shift is None else int(shift)
    count = n if n_frames is None else min(int(n_frames), n)
    frames = np.linspace(0, n - 1, count).round().astype(int)
    own, other, change, with_measured = [], [], [], []
    openings = {"gt": [], "own": [], "other": [], **({"measured": []} if measured else {})}
    for k in frames:
        xmin, xmax, ymin, ymax = ds.rects[k]["lips"]
        rays = get_rays(ds.poses[k:k + 1], ds.intrinsics, ds.H, ds.W, rect=ds.rects[k]["lips"])
        image, bg_torso = ds.frame_images(int(k))
        inds = rays["inds"][0]
        gt = image.reshape(-1, 3)[inds]
        bg = bg_torso.reshape(-1, 3)[inds][None]
        frame = {"eye": None if ds.eye_area is None else ds.eye_area[k:k + 1], "index": [int(k)]}
        renders = []
        codes = [(int(k), None), (int((k + shift) % n), None)]
        if measured:
            mouth = coefficients[k] if np.isfinite(coefficients[k]).all() else None
            codes.append((int(k), None if mouth is None else torch.from_numpy(mouth).float()[None].to(device)))
        for a, mouth in codes:
            out = model.render(rays["rays_o"], rays["rays_d"], ds.get_audio_window(a), None, ds.poses[k:k + 1],
                               bg_color=bg, mouth=mouth, **trainer.render_args(frame, perturb=False))
            renders.append(out["image"][0].clamp(0, 1))
        own.append(((renders[0] - gt) ** 2).mean().item())
        other.append(((renders[1] - gt) ** 2).mean().item())
        change.append((renders[0] - renders[1]).abs().mean().item())
        if measured:
            with_measured.append(((renders[2] - gt) ** 2).mean().item())
        gt_u8 = (image.clamp(0, 1) * 255).round().byte().cpu().numpy()
        for key, render in zip(openings, [None, *renders]):
            pasted = gt_u8.copy()
            if render is not None:
                lips = (render.reshape(xmax - xmin, ymax - ymin, 3) * 255).round().byte().cpu().numpy()
                pasted[xmin:xmax, ymin:ymax] = lips
            lms = detector.detect(pasted)
            openings[key].append(np.full((68, 2), np.nan) if lms is None else lms)
    opening = {key: mouth_opening(np.stack(v)) for key, v in openings.items()}

    def corr(key: str) -> float | None:
        c = float(lagged_correlations(opening[key], opening["gt"], max_lag=0)[0])
        return c if np.isfinite(c) else None

    mse_own, mse_other = float(np.mean(own)), float(np.mean(other))
    c_own, c_other = corr("own"), corr("other")
    extra = {}
    if measured:
        spread = {key: articulation(opening[key], opening["gt"])["opening_std_ratio"] for key in ("own", "measured")}
        codes = torch.cat([model.encode_audio(ds.get_audio_window(int(k))) for k in frames])[:, :opt.mouth_k]
        implied = shape_opening(basis.shapes(codes.float().cpu().numpy()))
        real = shape_opening(aligned_mouth(ds.landmarks[frames]))
        known = np.isfinite(real)
        c_code = float(np.corrcoef(implied[known], real[known])[0, 1]) if known.sum() >= 8 else float("nan")
        extra = {"opening_corr_code": c_code if np.isfinite(c_code) else None,
                 "lips_psnr_measured": capped_psnr(float(np.mean(with_measured))), "opening_corr_measured": corr("measured"),
                 "opening_std_ratio_own": spread["own"], "opening_std_ratio_measured": spread["measured"]}
    return {**extra, "frames": len(frames), "split": split, "shift": shift, "mse_own": mse_own, "mse_other": mse_other,
            "ratio": mse_other / mse_own if mse_own > 0 else None, "change": float(np.mean(change)),
            "lips_psnr_own": capped_psnr(mse_own), "lips_psnr_other": capped_psnr(mse_other),
            "psnr_gain": capped_psnr(mse_own) - capped_psnr(mse_other),
            "opening_corr_own": c_own, "opening_corr_other": c_other,
            "opening_gain": None if c_own is None or c_other is None else c_own - c_other,
            "checkpoint": str(ckpt)}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    own = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    own.add_argument("--frames", type=int, default=None)
    own.add_argument("--split", choices=("val", "train"), default="val")
    own.add_argument("--measured", action="store_true")
    try:
        args, rest = own.parse_known_args(argv)
        if args.frames is not None and args.frames < 1:
            raise argparse.ArgumentError(None, "")
    except argparse.ArgumentError:
        print("error: --frames takes a positive integer and --split val or train", file=sys.stderr)
        return 2
    from nerf_triplane.json_output import print_result
    from nerf_triplane.options import parse_args
    from nerf_triplane.presets import apply_preset

    def compute() -> dict:
        opt = parse_args(rest)
        if opt.preset:
            apply_preset(opt, rest)
        return audio_influence(opt, args.frames, split=args.split, measured=args.measured)

    return print_result(compute)


if __name__ == "__main__":
    sys.exit(main())
