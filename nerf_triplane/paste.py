"""Put rendered crops back into the source video's full frames (``main.py --test --full_frame``).

    paste_render("W", "ngp_ep0003", data="data/obama")   # -> W/results/ngp_ep0003_full.mp4

The training folder's ``crop.json`` (``data_utils/crop.py``) says where the ``size``² crop came
from. Each rendered frame is scaled back to the crop box and blended into the source frame
with a feathered border (alpha rises from 0 at the crop edge to 1 over ``FEATHER`` of the
side, on the sides that lie inside the frame); outside the box the source frame is kept
untouched. The output runs at the source frame rate: output frame j shows render
``k = floor(j * 25 / fps)`` over the source frame at the matching time of the render's pose
track (``img_id``, ping-ponged like the poses when the audio outlasts the video). The seam is
measured as the PSNR, against the source frame, of the band where 0 < alpha < 1.

Outputs in ``W/results``: ``<name>_full.mp4`` (source size and fps, audio muxed),
``<name>_full.png`` (the middle frame, lossless) and ``<name>_full.json`` (the figures).
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from data_utils.images import read_rgb

from .video import VideoWriter

CROP_NAME = "crop.json"  # same name as data_utils.crop.CROP_NAME; nerf_triplane stays free of data_utils
FEATHER = 0.06  # blend band, fraction of the crop side
PSNR_CAP = 100.0


def load_crop(data: str | os.PathLike) -> tuple[dict, Path]:
    """``crop.json`` of a training folder and the source video it names.

    Raises:
        FileNotFoundError: no ``crop.json`` (the folder's frames are the video's own, nothing to
            paste into) or the source video is gone.
    """
    data = Path(data)
    path = data / CROP_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"--full_frame needs {path}: data_utils/process.py writes it when it crops a video that is not "
            "already square at --size; this folder's frames are the video's own, so the render is the full frame")
    crop = json.loads(path.read_text())
    video = data / crop["video"]
    if not video.is_file():
        raise FileNotFoundError(f"--full_frame needs the source video {video} named in {path}: put it back there")
    return crop, video


def blend_weights(box: list[int], width: int, height: int, feather: float = FEATHER) -> tuple[np.ndarray, tuple]:
    """Alpha of the render over the in-frame part of the crop box.

    Args:
        box: ``[x0, y0, side]`` in source pixels (may reach past the frame).
        width, height: source frame size (px).
    Returns:
        alpha in [0, 1], float32  # [h_in, w_in]
        (ys, xs) slices of the source frame the alpha covers.
    """
    x0, y0, side = box
    band = max(2.0, feather * side)
    xa, xb, ya, yb = max(0, x0), min(width, x0 + side), max(0, y0), min(height, y0 + side)
    xs, ys = np.arange(xa, xb) + 0.5, np.arange(ya, yb) + 0.5
    # Distance to the crop sides that lie inside the frame; a side on or past the frame edge
    # borders nothing, so the render reaches the edge there.
    inf = np.full_like(xs, np.inf)
    dx = np.minimum(xs - x0 if x0 > 0 else inf, (x0 + side - xs) if x0 + side < width else inf)
    inf = np.full_like(ys, np.inf)
    dy = np.minimum(ys - y0 if y0 > 0 else inf, (y0 + side - ys) if y0 + side < height else inf)
    t = np.clip(np.minimum(dy[:, None], dx[None, :]) / band, 0.0, 1.0)
    alpha = t * t * (3.0 - 2.0 * t)  # smoothstep: no visible kink where the band ends
    return alpha.astype(np.float32), (slice(ya, yb), slice(xa, xb))


def composite(frame: np.ndarray, render: np.ndarray, box: list[int], alpha: np.ndarray, region: tuple) -> np.ndarray:
    """The source ``frame`` with ``render`` scaled to ``box`` and blended in.

    Args:
        frame: source frame, uint8  # [H, W, 3]
        render: rendered crop, uint8  # [S, S, 3]
        box, alpha, region: as from :func:`blend_weights` for this frame size.
    Returns:
        uint8  # [H, W, 3]; equal to ``frame`` outside ``region``.
    """
    x0, y0, side = box
    interp = cv2.INTER_CUBIC if side > render.shape[0] else cv2.INTER_AREA
    big = cv2.resize(render, (side, side), interpolation=interp)
    ys, xs = region
    part = big[ys.start - y0: ys.stop - y0, xs.start - x0: xs.stop - x0].astype(np.float32)
    out = frame.copy()
    under = frame[ys, xs].astype(np.float32)
    a = alpha[..., None]
    out[ys, xs] = np.clip(np.rint(a * part + (1.0 - a) * under), 0, 255).astype(np.uint8)
    return out


def source_schedule(img_ids: list[int], fps: float, n_source: int) -> list[tuple[int, int]]:
    """Which render and which source frame each output frame shows.

    Args:
        img_ids: the 25 fps training-video frame of each rendered frame  # [N]
        fps: source frame rate; n_source: frames in the source video.
    Returns:
        ``[(k, source_index)]`` for the ``round(N * fps / 25)`` output frames.
    """
    n = len(img_ids)
    out = []
    for j in range(max(1, int(round(n * fps / 25)))):
        t = j / fps
        k = min(n - 1, int(math.floor(t * 25 + 1e-6)))
        # Between two renders the source moves on the way the pose track does (backwards on a
        # ping-pong's return leg).
        step = img_ids[k + 1] - img_ids[k] if k + 1 < n else (img_ids[k] - img_ids[k - 1] if n > 1 else 1)
        when = img_ids[k] / 25 + (1 if step >= 0 else -1) * (t - k / 25)
        out.append((k, int(np.clip(round(when * fps), 0, n_source - 1))))
    return out


def _write_png(path: Path, rgb: np.ndarray, level: int = 3) -> None:
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, level])
    if not ok:
        raise ValueError(f"could not encode {path}")
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_bytes(png.tobytes())
    os.replace(tmp, path)


def _cache_source(video: Path, wanted: set[int], folder: Path) -> int:
    """Decode ``video`` once, keeping the ``wanted`` frames as ``<i>.png`` in ``folder`` (the last
    frame also stands for wanted indices past the end); returns the frame count."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(video))
    w, h = next(reader)["size"]
    count, buf = 0, None
    for i, buf in enumerate(reader):
        if i in wanted:
            # Fast compression: these are scratch files, read once or twice.
            _write_png(folder / f"{i}.png", np.frombuffer(buf, np.uint8).reshape(h, w, 3), level=1)
        count = i + 1
    if count == 0:
        raise ValueError(f"cannot decode any frame of {video}")
    if max(wanted) >= count and not (folder / f"{count - 1}.png").is_file():
        _write_png(folder / f"{count - 1}.png", np.frombuffer(buf, np.uint8).reshape(h, w, 3), level=1)
    return count


def _gt_audio_segment(data: Path, start_frame: int, n_frames: int, out: Path) -> Path | None:
    """The training audio under the rendered frames (from 25 fps frame ``start_frame``), as a wav."""
    from scipy.io import wavfile

    wav = data / "aud.wav"
    if not wav.is_file():
        return None
    sr, samples = wavfile.read(wav)
    a, b = int(start_frame * sr / 25), int((start_frame + n_frames) * sr / 25)
    wavfile.write(out, sr, samples[a:b])
    return out


def paste_render(workspace: str | os.PathLike, name: str, data: str | os.PathLike,
                 audio_path: str | os.PathLike | None = None, log=print) -> dict:
    """Write ``<name>_full.mp4``, ``<name>_full.png`` and ``<name>_full.json`` for render ``name``.

    Args:
        workspace: folder whose ``results/<name>_frames/`` holds the render (``Trainer.test``).
        name: render name; data: its training folder (holding ``crop.json`` and the source video).
        audio_path: audio to mux (new speech); None uses the training audio under the rendered
            frames (``aud.wav``, from the first frame's ``aud_id``).
    Returns:
        the ``_full.json`` content: ``video``, ``still``, ``width``, ``height``, ``fps``, ``frames``,
        ``audio``, ``box``, ``feather_px``, ``seam_psnr`` (dB, mean over frames), ``seam_pixels``.
    """
    results = Path(workspace) / "results"
    crop, video = load_crop(data)
    folder = results / f"{name}_frames"
    index_path = folder / "index.json"
    if not index_path.is_file():
        raise FileNotFoundError(f"render {name!r} has no {index_path}: render it with main.py --test first")
    index = json.loads(index_path.read_text())["frames"]
    src = crop["source"]
    width, height, fps = src["width"], src["height"], src["fps"]
    box = crop["box"]
    alpha, region = blend_weights(box, width, height)
    band = (alpha > 0) & (alpha < 1)
    estimate = max(1, int(round((src["duration"] or 0) * fps)))
    schedule = source_schedule([int(f["img_id"]) for f in index], fps, estimate + 2 * int(fps))
    psnrs = []
    out_video = results / f"{name}_full.mp4"
    with tempfile.TemporaryDirectory(dir=results, prefix=f".{name}_full_") as tmp:
        tmp = Path(tmp)
        count = _cache_source(video, {s for _, s in schedule}, tmp)
        audio_text = None if audio_path is None else str(audio_path)
        if audio_path is None:
            audio_path = _gt_audio_segment(Path(data), int(index[0]["aud_id"]), len(index), tmp / "aud.wav")
            if audio_path is not None:
                audio_text = f"{Path(data) / 'aud.wav'} from frame {int(index[0]['aud_id'])}"
        still_at = len(schedule) // 2
        rendered_k, rendered = -1, None
        with VideoWriter(out_video, fps, audio_path) as writer:
            for j, (k, s) in enumerate(schedule):
                source = read_rgb(tmp / f"{min(s, count - 1)}.png")
                if k != rendered_k:
                    rendered_k, rendered = k, read_rgb(folder / f"{int(index[k]['k']):04d}.png")
                frame = composite(source, rendered, box, alpha, region)
                diff = frame[region][band].astype(np.float64) - source[region][band]
                mse = float(np.mean(diff ** 2)) if diff.size else 0.0
                psnrs.append(PSNR_CAP if mse == 0 else min(PSNR_CAP, 10 * math.log10(255.0 ** 2 / mse)))
                writer.append(frame)
                if j == still_at:
                    _write_png(results / f"{name}_full.png", frame)
    report = {"video": str(out_video), "still": str(results / f"{name}_full.png"), "width": width, "height": height,
              "fps": fps, "frames": len(schedule), "audio": audio_text,
              "box": box, "feather_px": round(max(2.0, FEATHER * box[2]), 1),
              "seam_psnr": float(np.mean(psnrs)), "seam_pixels": int(band.sum())}
    tmp_json = results / f".{name}_full.json.partial"
    tmp_json.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp_json, results / f"{name}_full.json")
    log(f"[INFO] full frame: {out_video} ({width}x{height} @ {fps:g} fps, {len(schedule)} frames); "
        f"seam band PSNR {report['seam_psnr']:.2f} dB over {report['seam_pixels']} px")
    return report
