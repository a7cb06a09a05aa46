"""How well a subject's audio predicts its mouth on held-out windows, without any NeRF. Prints JSON.

    python scripts/mouth_predictor.py DATA [--folds 5] [--only 0 2] [--seeds 2] [--preset cpu]
                                      [--steps 2000] [--features FEATS.npy] [main.py flags]

The held-out lips of a ``--mouth_sup`` head can follow the audio only as far as its audio path
predicts the mouth (README, issue 12). This measures that bound in seconds per fold: for each
of the ``--folds`` windows of ``N // 11`` frames (the windows of ``scripts/crossval.py``), a
fresh AudioNet + AudioAttNet of the preset's network is fitted to the mouth-shape coefficients
of the other frames (``MouthSupervision.pretrain``: 600 steps of 32 frames, then the rest of
``--steps`` on 8, the schedule a head run gives it) and predicts the window. Per fold and seed:
``c0_corr`` (first mouth component, predicted vs measured), ``c0_std_ratio`` (its spread, < 1:
shrunk toward the mean) and ``opening_corr`` (the inner-lip opening of the predicted shapes vs
the landmarks'), then their means over the seeds. ``--features`` scores another per-frame
feature file of the same frames (``aud.npy`` layout ``[frames, 16, A]``) in place of the
folder's own. Other flags are ``main.py``'s and override the preset's network and mouth options
(e.g. ``--mouth_spread 1``: the fit adds the concordance term a head run with it would).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PRETRAIN_STEPS, PRETRAIN_BATCH, STEP_BATCH = 600, 32, 8


def _corr(a, b) -> float:
    import numpy as np

    return float(np.corrcoef(a, b)[0, 1])


def fold_prediction(opt, frames: list[dict], features, landmarks, held: range, seeds: int, steps: int) -> dict:
    """Fit the audio path on the frames outside ``held`` and score its prediction of ``held``.

    Args:
        opt: ``main.py`` options (the network's audio path: ``att``, ``emb``, ``mouth_k``).
        frames: all frames of both transforms files, in ``img_id`` order.
        features: per-frame features, indexed by ``aud_id``  # [F, A, T] tensor
        landmarks: landmarks of ``frames``  # [N, 68, 2]
        held: positions of ``frames`` held out.
    """
    import numpy as np
    import torch

    from nerf_triplane.mouth import AudioPredictor, MouthSupervision, shape_opening
    from nerf_triplane.network import NeRFNetwork
    from nerf_triplane.provider import audio_window
    from nerf_triplane.sync import mouth_opening

    aud_ids = np.array([int(f["aud_id"]) for f in frames])
    train = np.array([i for i in range(len(frames)) if i not in held])
    test = np.array(list(held))
    train_auds, test_auds = features[aud_ids[train]], features[aud_ids[test]]
    sup = MouthSupervision(landmarks[train], lambda k: audio_window(train_auds, opt.att, k), opt.mouth_k,
                           spread=opt.mouth_spread)
    measured = sup.basis.project(landmarks[test])
    ok = np.isfinite(measured).all(axis=1)
    if ok.sum() < 8:
        raise ValueError(f"only {int(ok.sum())} held-out frames of window {held.start}-{held.stop - 1} have landmarks")
    opening = mouth_opening(landmarks[test][ok])
    windows = torch.stack([audio_window(test_auds, opt.att, k) for k in range(len(test))])
    per_seed = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        predictor = AudioPredictor(NeRFNetwork(opt, audio_dim=features.shape[1]))
        sup.pretrain(predictor, min(steps, PRETRAIN_STEPS), batch=PRETRAIN_BATCH)
        if steps > PRETRAIN_STEPS:
            sup.pretrain(predictor, steps - PRETRAIN_STEPS, batch=STEP_BATCH)
        with torch.no_grad():
            codes = predictor.encode_audio(windows)[:, :sup.k].double().numpy()[ok]
        per_seed.append({"c0_corr": _corr(codes[:, 0], measured[ok, 0]),
                         "c0_std_ratio": float(codes[:, 0].std() / measured[ok, 0].std()),
                         "opening_corr": _corr(shape_opening(sup.basis.shapes(codes)), opening)})
    means = {k: float(np.mean([s[k] for s in per_seed])) for k in per_seed[0]}
    return {"frames": int(ok.sum()), **means, "seeds": per_seed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="processed training folder")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--only", type=int, nargs="*", default=None, help="folds to score (default all)")
    parser.add_argument("--seeds", type=int, default=2, help="fits per fold (seeds 0, 1, ...)")
    parser.add_argument("--steps", type=int, default=2000, help="fitting steps per seed")
    parser.add_argument("--preset", default="cpu", help="preset whose network and mouth options are used")
    parser.add_argument("--features", type=Path, default=None,
                        help="per-frame features .npy to score instead of the folder's own")
    args, main_flags = parser.parse_known_args(argv)

    from nerf_triplane.json_output import print_result

    def compute() -> dict:
        import numpy as np
        import torch

        from crossval import fold_windows, merged_frames
        from nerf_triplane.options import parse_args
        from nerf_triplane.presets import apply_preset
        from nerf_triplane.provider import dataset_feature_path, features_to_tensor, read_lms

        if args.seeds < 1 or args.steps < 1:
            raise ValueError(f"--seeds and --steps must be positive, got {args.seeds} and {args.steps}")
        data = args.data
        if not (data / "transforms_train.json").is_file():
            raise FileNotFoundError(f"{data}/transforms_train.json not found: give a processed training folder")
        opt_argv = [str(data), "--preset", args.preset, *main_flags]
        opt = parse_args(opt_argv)
        apply_preset(opt, opt_argv)
        frames, _ = merged_frames(data)
        source = args.features or dataset_feature_path(data, opt.asr_model)
        if not Path(source).is_file():
            raise FileNotFoundError(f"{source} not found: give --features or run data_utils/process.py")
        features = features_to_tensor(np.load(source), opt.emb, str(source))
        needed = 1 + max(int(f["aud_id"]) for f in frames)
        if needed > len(features):
            raise ValueError(f"{source} has {len(features)} frames of features; the folder's frames need {needed}")
        landmarks = np.stack([read_lms(data / "ori_imgs" / f"{f['img_id']}.lms") for f in frames])
        windows = fold_windows(len(frames), args.folds)
        rows = []
        for fold in (range(args.folds) if args.only is None else args.only):
            if not 0 <= fold < args.folds:
                raise ValueError(f"--only {fold} is not a fold of --folds {args.folds}")
            with torch.random.fork_rng(devices=[]):
                row = fold_prediction(opt, frames, features, landmarks, windows[fold], args.seeds, args.steps)
            rows.append({"fold": fold, "window": [windows[fold].start, windows[fold].stop - 1], **row})
        return {"data": str(data), "features": str(source), "folds": args.folds, "steps": args.steps,
                "main_flags": main_flags, "rows": rows}

    return print_result(compute)


if __name__ == "__main__":
    sys.exit(main())
