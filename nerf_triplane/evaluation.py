"""Evaluation report of a test render: image metrics, lip sync, nearest-frame floor, frame strip.

    evaluate_workspace("workspace/trial_may")        # latest render in workspace/trial_may/results

Inputs, for render ``<name>`` in ``W/results``:
- predicted frames: ``<name>_frames/{k:04d}.png`` (lossless, written by ``Trainer.test``) with
  ``<name>_frames/index.json`` = ``{"frames": [{"k", "img_id", "aud_id"}], "data", "split",
  "aud", "torso"}``; without that folder the frames are decoded from ``<name>.mp4`` and
  mapped onto the held-out frames of ``--data`` (their counts must agree);
- GT: ``<data>/gt_imgs/<img_id>.jpg`` when the render has GT (no new audio).

Outputs: ``W/results/metrics.json`` (merged: the trainer's keys stay, ``sync``, ``sync_gt``,
``baseline`` (the landmark-outline floor), ``baseline_head`` (the like-for-like floor, which
also copies hair, forehead and ears: :mod:`nerf_triplane.baseline`), ``evaluation``,
``articulation`` (new audio: the mouth's spread against the training video's), ``jitter``
(head pose jitter of the tracked poses, the GT frames and the render,
:mod:`nerf_triplane.jitter`) are added; a render other than the one the trainer scored goes
under ``renders.<name>``), ``W/results/report.md`` (``<name>_report.md`` for a new-audio
render) and ``W/results/<name>_strip.png``.

PSNR per frame is capped at 100 dB so identical frames give a finite number (JSON has no inf).
The sync score is that of :mod:`nerf_triplane.sync`, for the prediction and for the GT frames
against the same driving audio; for new audio (no GT) only the prediction's. ``corr_pred`` of
each correlates the opening with the one a per-subject regressor predicts from the audio
(:class:`nerf_triplane.sync.OpeningRegressor`, fitted on the training frames).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np

from data_utils.images import read_rgb

from .metrics import MOUTH, PSNR_CAP, load_lpips, lpips_distance, mouth_lmd, psnr, ssim
from .sync import (MIN_OVERLAP, OpeningRegressor, audio_envelope, lagged_correlations, mouth_opening,
                   sync_score)

STRIP_FRAMES = 6
TILE = 192  # pixels per strip tile side
SUFFIXES = ("_depth", "_pred_gt", "_strip")  # mp4/png outputs that are not a render's colour video


# ---------------------------------------------------------------------------- inputs

def latest_render(results: Path) -> str:
    """Name of the most recently written render in ``results`` (frames folder or colour mp4)."""
    candidates = {}
    for d in results.glob("*_frames"):
        if (d / "index.json").is_file():
            candidates[d.name[: -len("_frames")]] = (d / "index.json").stat().st_mtime
    for mp4 in results.glob("*.mp4"):
        if not mp4.stem.endswith(SUFFIXES) and not mp4.name.startswith("."):
            candidates.setdefault(mp4.stem, mp4.stat().st_mtime)
    if not candidates:
        raise FileNotFoundError(f"no rendered video or frames in {results}: run main.py DATA --workspace "
                                f"{results.parent} --test first")
    return max(candidates, key=candidates.get)


def _decode_mp4(path: Path) -> list[np.ndarray]:
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    w, h = meta["size"]
    return [np.frombuffer(buf, np.uint8).reshape(h, w, 3).copy() for buf in reader]


def _split_frames(data: Path, split: str) -> list[dict]:
    from .baseline import split_frames

    return split_frames(data, split)


def load_render(results: Path, name: str, data: str | os.PathLike | None) -> dict:
    """Predicted frames and their bookkeeping.

    Returns:
        ``frames`` (list of uint8 [H, W, 3]), ``index`` (list of {k, img_id, aud_id}),
        ``data`` (Path or None), ``split``, ``aud`` (str), ``has_gt``, ``source``
        ("frames" | "mp4"), ``video`` (mp4 Path or None).
    """
    folder = results / f"{name}_frames"
    video = results / f"{name}.mp4"
    if (folder / "index.json").is_file():
        info = json.loads((folder / "index.json").read_text())
        index = info.get("frames") or []
        frames = [read_rgb(folder / f"{int(f['k']):04d}.png") for f in index]
        data_dir = Path(data) if data else (Path(info["data"]) if info.get("data") else None)
        split, aud, source = info.get("split", "test"), info.get("aud") or "", "frames"
    elif video.is_file():
        if not data:
            raise ValueError(f"{video} has no {folder.name}/index.json: pass --data DATA so its frames can be "
                             "matched to the held-out frames")
        frames = _decode_mp4(video)
        data_dir = Path(data)
        split, aud, source = "test", "", "mp4"
        held = _split_frames(data_dir, "test")
        if len(held) != len(frames):
            raise ValueError(f"{video} has {len(frames)} frames but {data_dir}/transforms_val.json lists "
                             f"{len(held)}: without {folder.name}/index.json only a --test render of that "
                             "folder can be evaluated")
        index = [dict(k=k, **f) for k, f in enumerate(held)]
    else:
        raise FileNotFoundError(f"render {name!r} not found in {results}: expected {folder.name}/index.json "
                                f"or {video.name}")
    if not frames:
        raise ValueError(f"render {name!r} in {results} has no frames")
    if data_dir is not None and not data_dir.is_dir():
        raise FileNotFoundError(f"data folder {data_dir} does not exist: pass --data DATA")
    return {"frames": frames, "index": index, "data": data_dir, "split": split, "aud": aud,
            "has_gt": not aud and data_dir is not None, "source": source,
            "video": video if video.is_file() else None}


def driving_audio(render: dict) -> tuple[np.ndarray | None, str]:
    """The audio that drove the render (16 kHz mono) and where it came from.

    GT renders: ``<data>/aud.wav``. New audio: the ``aud`` file if it is audio, else the
    track muxed into the mp4. (None, reason) when neither exists.
    """
    from data_utils.audio import load_audio

    if not render["aud"]:
        wav = render["data"] / "aud.wav" if render["data"] is not None else None
        if wav is not None and wav.is_file():
            return load_audio(wav), str(wav)
        return None, f"no {wav} to compare the lips with"
    aud = Path(render["aud"])
    if aud.suffix.lower() != ".npy" and aud.is_file():
        return load_audio(aud), str(aud)
    video = render["video"]
    if video is not None:
        from .video import probe_video

        if probe_video(video)["has_audio"]:
            return load_audio(video), f"{video} (muxed track)"
    return None, f"the driving audio of {render['aud']} is unknown (features only, no audio in the mp4)"


# ---------------------------------------------------------------------------- scoring

def _mel_windows(audio: np.ndarray) -> np.ndarray:
    from data_utils.audio_features import extract_features

    return extract_features(audio, engine="mel", fps=25)  # [n_frames, 16, 32]


def _rows(feats: np.ndarray, ids) -> np.ndarray:
    return feats[np.clip(np.asarray(ids, dtype=np.int64), 0, len(feats) - 1)]


def training_openings(data: Path) -> tuple[list[dict], np.ndarray]:
    """Training frames of a data folder and their mouth opening from ``ori_imgs/<img_id>.lms``  # [N]."""
    from .provider import read_lms

    frames = _split_frames(data, "train")
    lms = np.stack([read_lms(data / "ori_imgs" / f"{int(f['img_id'])}.lms") for f in frames])
    return frames, mouth_opening(lms)


def predicted_sync(data: Path, training: tuple[list[dict], np.ndarray], audio: np.ndarray, aud_ids,
                   opening: np.ndarray, opening_gt: np.ndarray | None) -> dict:
    """Correlation of rendered (and GT) mouth openings with the opening that a regressor
    fitted on the subject's training frames predicts from the driving audio.

    Args:
        data: training folder (its ``aud.wav``).
        training: the training frames and their opening (:func:`training_openings` of ``data``).
        audio: driving audio, 16 kHz mono  # [n_samples]
        aud_ids: the audio frame of each rendered frame  # [N]
        opening, opening_gt: mouth opening of the render and of the GT frames  # [N]
    Returns:
        ``corr_pred`` (render vs prediction), ``corr_pred_gt`` (GT vs prediction, None without GT).
    """
    from data_utils.audio import load_audio

    frames, train_open = training
    train_feats = _mel_windows(load_audio(data / "aud.wav"))
    regressor = OpeningRegressor(_rows(train_feats, [int(f["aud_id"]) for f in frames]), train_open)
    predicted = regressor.predict(_rows(_mel_windows(audio), aud_ids))

    def corr(x):
        c = float(lagged_correlations(x, predicted, max_lag=0)[0])
        return c if np.isfinite(c) else None

    return {"corr_pred": corr(opening), "corr_pred_gt": None if opening_gt is None else corr(opening_gt)}


def _detect_all(detector, frames: list[np.ndarray]) -> np.ndarray:
    """Landmarks of each frame, NaN where no face was found  # [N, 68, 2]."""
    out = np.full((len(frames), 68, 2), np.nan)
    for i, frame in enumerate(frames):
        lms = detector.detect(frame)
        if lms is not None:
            out[i] = lms
    return out


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def image_metrics(preds: list[np.ndarray], gts: list[np.ndarray], lms_pred: np.ndarray, lms_gt: np.ndarray,
                  lpips_net=None) -> dict:
    """PSNR (capped at 100 dB), SSIM, LPIPS (None without a network), mouth LMD, and
    ``mouth_corr``: Pearson correlation of the inner-lip opening of prediction and GT over the
    frames (1 = the lips open and close with the GT's; None with fewer than 8 frames or a
    constant side). LMD alone cannot tell a mouth that moves from one held half-open.

    Args:
        preds, gts: uint8 frames  # N x [H, W, 3]
        lms_pred, lms_gt: landmarks, NaN rows = not detected  # [N, 68, 2]
    """
    scores = {"psnr": [], "ssim": [], "lpips": [], "lmd": []}
    for i, (p, g) in enumerate(zip(preds, gts)):
        pf, gf = p / 255.0, g / 255.0
        scores["psnr"].append(min(psnr(pf, gf), PSNR_CAP))
        scores["ssim"].append(ssim(pf, gf))
        if lpips_net is not None:
            scores["lpips"].append(lpips_distance(lpips_net, pf, gf))
        if np.isfinite(lms_pred[i]).all() and np.isfinite(lms_gt[i]).all():
            scores["lmd"].append(mouth_lmd(lms_pred[i], lms_gt[i]))
    open_pred, open_gt = mouth_opening(lms_pred), mouth_opening(lms_gt)
    corr = float(lagged_correlations(open_pred, open_gt, max_lag=0)[0])
    return {"psnr": _mean(scores["psnr"]), "ssim": _mean(scores["ssim"]), "lpips": _mean(scores["lpips"]),
            "lmd": _mean(scores["lmd"]), "lmd_frames": len(scores["lmd"]),
            "lmd_skipped": len(preds) - len(scores["lmd"]),
            "mouth_corr": corr if np.isfinite(corr) else None, **articulation(open_pred, open_gt)}


def articulation(opening: np.ndarray, reference: np.ndarray) -> dict:
    """How widely a mouth opens and closes, against a reference sequence.

    A mouth that follows the audio but never opens far correlates and still mumbles; these
    figures catch it.

    Args:
        opening: mouth opening per frame (``sync.mouth_opening``), NaN = unknown  # [N]
        reference: the same for the GT frames, or the training video for a new-audio render  # [M]
    Returns:
        ``opening_std_ratio`` (std of ``opening`` / std of ``reference``), ``opening_p90`` and
        ``opening_p90_gt`` (90th percentiles, interocular units); None where fewer than 8
        frames are known or the reference is constant.
    """
    a, b = (np.asarray(x, dtype=np.float64) for x in (opening, reference))
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if min(a.size, b.size) < MIN_OVERLAP:
        return {"opening_std_ratio": None, "opening_p90": None, "opening_p90_gt": None}
    ratio = float(a.std() / b.std()) if b.std() > 0 else None
    return {"opening_std_ratio": ratio, "opening_p90": float(np.percentile(a, 90)),
            "opening_p90_gt": float(np.percentile(b, 90))}


def _gt_frames(data: Path, index: list[dict], shape: tuple[int, int]) -> list[np.ndarray]:
    out = []
    for f in index:
        img = read_rgb(data / "gt_imgs" / f"{int(f['img_id'])}.jpg")
        if img.shape[:2] != shape:
            img = cv2.resize(img, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
        out.append(img)
    return out


# ---------------------------------------------------------------------------- outputs

def _tile(img: np.ndarray, size: int) -> np.ndarray:
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)


def _lip_crop(img: np.ndarray, lms: np.ndarray, size: int) -> np.ndarray:
    """Square crop around points 48-67 (1.6x their extent), enlarged to ``size``; grey if unknown."""
    if not np.isfinite(lms).all():
        return np.full((size, size, 3), 128, np.uint8)
    mouth = lms[MOUTH]
    cx, cy = mouth.mean(axis=0)
    half = max(8.0, 0.8 * float((mouth.max(axis=0) - mouth.min(axis=0)).max()))
    h, w = img.shape[:2]
    x0, x1 = int(max(0, cx - half)), int(min(w, cx + half))
    y0, y1 = int(max(0, cy - half)), int(min(h, cy + half))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return np.full((size, size, 3), 128, np.uint8)
    return cv2.resize(img[y0:y1, x0:x1], (size, size), interpolation=cv2.INTER_CUBIC)


def frame_strip(preds: list[np.ndarray], gts: list[np.ndarray] | None, lms_ref: np.ndarray,
                n: int = STRIP_FRAMES, tile: int = TILE) -> np.ndarray:
    """GT | prediction for ``n`` frames spread over the sequence, lips zoomed underneath.

    The lip crop of both images uses the same window (from ``lms_ref``, the GT landmarks when
    there is GT) so the two can be compared pixel for pixel.

    Returns:
        uint8 image  # [2 * tile, n * (2 or 1) * tile, 3]
    """
    picks = np.unique(np.linspace(0, len(preds) - 1, min(n, len(preds))).round().astype(int))
    columns = []
    for i in picks:
        images = [gts[i], preds[i]] if gts is not None else [preds[i]]
        for img in images:
            columns.append(np.concatenate([_tile(img, tile), _lip_crop(img, lms_ref[i], tile)], axis=0))
    return np.concatenate(columns, axis=1)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _fmt(v, spec: str = ".3f") -> str:
    if v is None:
        return "n/a"
    return format(v, spec) if isinstance(v, float) else str(v)


def report_name(name: str, render: dict) -> str:
    """``report.md`` for a render scored against GT frames (the test split's evaluation);
    ``<name>_report.md`` for one driven by new audio, so the two never overwrite each other."""
    return f"{name}_report.md" if render["aud"] else "report.md"


def report_markdown(name: str, result: dict) -> str:
    """The human summary written to ``report.md``."""
    m, base, head = result.get("metrics") or {}, result.get("baseline") or {}, result.get("baseline_head") or {}
    sync, sync_gt = result.get("sync") or {}, result.get("sync_gt") or {}
    lines = [f"# Evaluation of `{name}`", "",
             f"{result['frames']} frames ({result['source']}), split `{result['split']}`, "
             f"data `{result['data']}`, audio: {result['audio']}.", ""]
    if m:
        lines += ["| metric | model | floor: landmark outline | floor: head (like for like) |",
                  "|---|---|---|---|",
                  f"| PSNR (dB) | {_fmt(m.get('psnr'), '.2f')} | {_fmt(base.get('psnr'), '.2f')} | "
                  f"{_fmt(head.get('psnr'), '.2f')} |",
                  f"| SSIM | {_fmt(m.get('ssim'), '.4f')} | {_fmt(base.get('ssim'), '.4f')} | "
                  f"{_fmt(head.get('ssim'), '.4f')} |",
                  f"| LPIPS (alex) | {_fmt(m.get('lpips'), '.4f')} | n/a | n/a |",
                  f"| LMD (px) | {_fmt(m.get('lmd'))} | {_fmt(base.get('lmd'))} | {_fmt(head.get('lmd'))} |",
                  f"| lip opening vs GT (corr) | {_fmt(m.get('mouth_corr'))} | n/a | n/a |",
                  f"| lip opening spread / GT's (std ratio) | {_fmt(m.get('opening_std_ratio'))} | n/a | n/a |", ""]
        if base:
            lines += [f"Floors ({base['n_frames']} frames): the training frame with the nearest landmarks "
                      "(the held-out frame's GT landmarks, which a renderer does not have) pasted into the "
                      "GT frame over its jaw-to-brow landmark outline, or over the head label (face, hair, "
                      "ears) of the parsing masks of both frames, everything a head model renders; whole-frame "
                      f"copy {_fmt(base.get('full_frame_psnr'), '.2f')} dB.", ""]
    spread = result.get("articulation") or {}
    if spread:
        lines += [f"Lip opening spread / the training video's (std ratio): {_fmt(spread.get('opening_std_ratio'))}; "
                  f"90th percentile {_fmt(spread.get('opening_p90'))} vs {_fmt(spread.get('opening_p90_gt'))}.", ""]
    jitter = result.get("jitter")
    if jitter:
        lines += ["| head pose jitter (mean 2nd difference per frame) | rotation (deg) | translation (mm) |",
                  "|---|---|---|"]
        for key, label in (("tracked", "tracked poses under the render"), ("gt_landmarks", "GT video, by landmarks"),
                           ("render_landmarks", "render, by landmarks")):
            if jitter.get(key):
                lines.append(f"| {label} | {_fmt(jitter[key]['rot_deg'])} | {_fmt(jitter[key]['trans_mm'], '.2f')} |")
        lag = jitter.get("tracked_lag") or {}
        lines += ["", "Poses by landmarks are fitted frame by frame (no smoothing) with the subject's face "
                  "shape; tracked poses are the smoothed track the render was drawn from."
                  + (f" The tracked rotation speed follows the GT frames' best at lag {lag['best_lag']} frames "
                     f"(correlation {_fmt(lag.get('best_corr'))}, {_fmt(lag.get('corr_at_0'))} at lag 0)."
                     if lag.get("best_lag") is not None else ""), ""]
    lines += ["| lip sync | model | GT video |", "|---|---|---|"]
    for key, label in (("corr_at_0", "correlation at lag 0"), ("best_lag", "best lag (frames)"),
                       ("best_corr", "best correlation"), ("corr_pred", "vs opening predicted from audio")):
        lines.append(f"| {label} | {_fmt(sync.get(key))} | {_fmt(sync_gt.get(key)) if sync_gt else 'n/a'} |")
    lines += ["", "Sync: correlation of the inner-lip opening with the audio energy; a positive lag means "
              "the mouth moves after the sound. The last row correlates it with the opening that a "
              "regressor fitted on the training frames predicts from the audio.", "",
              f"![GT | prediction, lips zoomed]({name}_strip.png)", ""]
    return "\n".join(lines)


def _merge_metrics(path: Path, name: str, result: dict) -> dict:
    """Merge ``result`` into metrics.json: top level for the render the trainer scored (or a
    fresh file), else under ``renders.<name>``. The trainer's keys are kept."""
    current = json.loads(path.read_text()) if path.is_file() else {}
    additions = {"sync": result["sync"], "sync_gt": result["sync_gt"], "baseline": result["baseline"],
                 "baseline_head": result.get("baseline_head"),
                 "articulation": result.get("articulation"), "jitter": result.get("jitter"),
                 "evaluation": {k: result[k] for k in ("name", "frames", "source", "split", "data", "audio")}}
    if result["metrics"]:
        additions["evaluation"]["metrics"] = result["metrics"]
    if current.get("name", name) == name:
        for key, value in (result["metrics"] or {}).items():
            current.setdefault(key, value)
        current.setdefault("name", name)
        current.update(additions)
    else:
        current.setdefault("renders", {})[name] = additions
    _atomic_write_bytes(path, (json.dumps(current, indent=2) + "\n").encode())
    return current


# ---------------------------------------------------------------------------- entry point

def evaluate_workspace(workspace, data=None, name: str | None = None, baseline: bool = True,
                       detector=None, lpips_weights: str | None = None) -> dict:
    """Evaluate the latest (or named) render of ``workspace`` and write the report files.

    Args:
        workspace: folder holding ``results/``.
        data: training folder (default: the ``data`` recorded in the render's index.json).
        name: render name (``ngp_ep0003``, ``aud``...); default the most recent one.
        baseline: also score the nearest-training-frame floors (cached in the data folder).
        detector: landmark detector (``detect(rgb u8) -> [68, 2] | None``); default mediapipe.
        lpips_weights: AlexNet weights for LPIPS (default: torch hub cache; None result without).
    Returns:
        ``name``, ``frames``, ``source``, ``split``, ``data``, ``audio``, ``metrics`` (psnr, ssim,
        lpips, lmd... or None without GT), ``sync``, ``sync_gt`` (None without GT),
        ``baseline`` (landmark-outline floor) and ``baseline_head`` (like-for-like floor; both
        None if skipped or without GT), ``jitter`` (head pose jitter, see
        :mod:`nerf_triplane.jitter`; None without the folder's ``track_params.pt``), ``paths``
        (metrics, report, strip).
    """
    workspace = Path(workspace)
    results = workspace / "results"
    if not results.is_dir():
        raise FileNotFoundError(f"{results} does not exist: run main.py DATA --workspace {workspace} --test first")
    name = name or latest_render(results)
    render = load_render(results, name, data)
    preds = render["frames"]
    if detector is None:
        from data_utils.landmarks import LandmarkDetector

        detector = LandmarkDetector("mediapipe")
    lms_pred = _detect_all(detector, preds)

    gts, lms_gt, metrics, sync_gt = None, None, None, None
    floors = {"outline": None, "head": None}
    if render["has_gt"]:
        gts = _gt_frames(render["data"], render["index"], preds[0].shape[:2])
        lms_gt = _detect_all(detector, gts)
        metrics = image_metrics(preds, gts, lms_pred, lms_gt, load_lpips(lpips_weights))
        if baseline and render["split"] in ("test", "val"):
            from .baseline import nearest_frame_baseline

            for region in floors:
                floor = nearest_frame_baseline(render["data"], render["split"], detector=detector, region=region)
                floors[region] = {k: v for k, v in floor.items() if k != "matches"}

    audio, audio_from = driving_audio(render)
    sync = None
    open_pred = mouth_opening(lms_pred)
    open_gt = None if lms_gt is None else mouth_opening(lms_gt)
    aud_ids = [int(f["aud_id"]) for f in render["index"]]
    training = training_openings(Path(render["data"])) if render["data"] is not None else None
    if audio is not None:
        envelope = audio_envelope(audio, 16000, frame_ids=aud_ids)
        sync = sync_score(open_pred, envelope)
        if open_gt is not None:
            sync_gt = sync_score(open_gt, envelope)
        if training is not None and (Path(render["data"]) / "aud.wav").is_file():
            predicted = predicted_sync(Path(render["data"]), training, audio, aud_ids, open_pred, open_gt)
            sync["corr_pred"] = predicted["corr_pred"]
            if sync_gt is not None:
                sync_gt["corr_pred"] = predicted["corr_pred_gt"]
    # Without GT, the spread of the mouth is judged against the training video's.
    spread = articulation(open_pred, training[1]) if metrics is None and training is not None else None
    jitter = None
    if render["data"] is not None:
        from .jitter import jitter_table

        jitter = jitter_table(render["data"], [int(f["img_id"]) for f in render["index"]], lms_pred, lms_gt,
                              preds[0].shape[:2])

    result = {"name": name, "frames": len(preds), "source": render["source"], "split": render["split"],
              "data": None if render["data"] is None else str(render["data"]), "audio": audio_from,
              "metrics": metrics, "sync": sync, "sync_gt": sync_gt, "baseline": floors["outline"],
              "baseline_head": floors["head"],
              "articulation": spread, "jitter": jitter}
    strip_path = results / f"{name}_strip.png"
    strip = frame_strip(preds, gts, lms_gt if lms_gt is not None else lms_pred)
    ok, png = cv2.imencode(".png", cv2.cvtColor(strip, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"could not encode {strip_path}")
    _atomic_write_bytes(strip_path, png.tobytes())
    report_path = results / report_name(name, render)
    _atomic_write_bytes(report_path, report_markdown(name, result).encode())
    metrics_path = results / "metrics.json"
    _merge_metrics(metrics_path, name, result)
    result["paths"] = {"metrics": str(metrics_path), "report": str(report_path), "strip": str(strip_path)}
    return result
