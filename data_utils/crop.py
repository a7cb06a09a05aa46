"""One fixed square crop around the head for a whole clip of any size, aspect and frame rate.

The training folder is always ``size``² (512 by default), framed as ER-NeRF's clips are: head
in the upper middle, shoulders at the bottom edge. A video that is not already ``size``²
is scanned (landmarks on a downscaled copy, a few frames per second), one crop box is chosen
for the whole clip, and the frames step cuts and resizes every frame with it through ffmpeg.
``crop.json`` in the training folder records the source size, frame rate, box and scale, so
that ``nerf_triplane/paste.py`` can put renders back into the full frame.

Coordinates are source pixels, x = column, y = row; the box is ``[x0, y0, side]`` and may
reach past the frame, where the frame's edge pixels are repeated (``padding``).
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np

from .audio import ffmpeg_exe

CROP_NAME = "crop.json"
SCAN_FPS = 5  # sampled frames per second: head motion is slow next to this
SCAN_LONG_SIDE = 640  # the scan's downscaled copy; mediapipe's detector sees 128² anyway
# Framing measured on the reference-style clips: crop side / jaw width is 2.41 on french.mp4 and
# 2.10 on May_5s.mp4; the eye line sits at 0.41 / 0.43 of the side from the top.
SIDE_PER_JAW = 2.3
EYES_AT = 0.42
MIN_FACE_PX = 64  # jaw width in source pixels below which the model has too little to learn from
MIN_DETECTED = 0.5  # share of sampled frames that must show a face
MAX_EDGE_CUT = 0.5  # share of sampled frames whose face may touch the frame edge
MAX_OUTSIDE = 0.1  # share of sampled frames whose head may leave the crop


class CropError(ValueError):
    """The video cannot be framed into one fixed crop; the message names the frames and the fix."""


def needs_crop(width: int, height: int, size: int) -> bool:
    """Whether a ``width`` × ``height`` video must be cropped/resized to become ``size``²."""
    return (width, height) != (size, size)


def scan_landmarks(video: str | os.PathLike, width: int, height: int, fps: float = SCAN_FPS,
                   long_side: int = SCAN_LONG_SIDE) -> tuple[np.ndarray, np.ndarray]:
    """68 landmarks on a downscaled copy of ``video`` sampled at ``fps``, in source pixels.

    Returns:
        times in seconds  # [N]
        landmarks, NaN where no face was found  # [N, 68, 2]
    """
    from .landmarks import LandmarkDetector

    scale = min(1.0, long_side / max(width, height))
    w, h = max(2, int(round(width * scale / 2)) * 2), max(2, int(round(height * scale / 2)) * 2)
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-i", str(video),
           "-vf", f"fps={fps}:start_time=0,scale={w}:{h}:flags=area", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    found = []
    with LandmarkDetector("mediapipe", video=True) as det, \
            subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        while True:
            buf = proc.stdout.read(w * h * 3)
            if len(buf) < w * h * 3:
                break
            lms = det.detect(np.frombuffer(buf, np.uint8).reshape(h, w, 3))
            found.append(np.full((68, 2), np.nan) if lms is None else lms * [width / w, height / h])
        err = proc.stderr.read().decode(errors="replace").strip().splitlines()
        if proc.wait() != 0 or not found:
            raise CropError(f"cannot decode {video} to find the head: {err[-1] if err else 'no frames'}")
    return np.arange(len(found)) / fps, np.stack(found)


def _frames_text(times: np.ndarray, bad: np.ndarray, n_frames: int) -> str:
    """The 25 fps frames and seconds that the flagged samples stand for, as ranges.

    Args:
        times: sample times (s)  # [N]; bad: flagged samples  # [N] bool
        n_frames: frames of the clip at 25 fps.
    """
    step = times[1] - times[0] if len(times) > 1 else 1.0 / SCAN_FPS
    runs, start = [], None
    for i, flag in enumerate([*bad, False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            t0, t1 = times[start], times[i - 1] + step  # a sample stands for the time until the next
            runs.append((int(round(t0 * 25)), min(n_frames, int(round(t1 * 25))) - 1, t0, t1))
            start = None
    return "frames " + ", ".join(f"{a}-{b} ({t0:.1f}-{t1:.1f} s)" for a, b, t0, t1 in runs) + f" of {n_frames}"


def _even(v: float) -> int:
    # yuv420p video: ffmpeg's pad/crop move by whole chroma samples, so keep offsets even.
    return int(np.floor(v / 2.0)) * 2


def plan_crop(times: np.ndarray, lms: np.ndarray, width: int, height: int, size: int, name: str = "the video",
              fps: float = 25.0, duration: float | None = None) -> dict:
    """Choose the clip's square crop from sampled landmarks.

    Args:
        times: sample times in seconds  # [N]
        lms: landmarks in source pixels, NaN rows = no face  # [N, 68, 2]
        width, height: source frame size (px); size: training frame side (px).
        name: the video's name for messages; fps, duration: recorded in the result.
    Returns:
        the ``crop.json`` content: ``source`` {width, height, fps, duration}, ``box`` [x0, y0, side]
        (source px, even), ``size``, ``scale`` (size / side), ``padding`` {left, right, top,
        bottom} (source px repeated from the edge), ``scan`` statistics.
    Raises:
        CropError: no face in most samples, a face under ``MIN_FACE_PX``, a face cut by the frame
            edge in most samples, or a head that leaves the crop in more than ``MAX_OUTSIDE`` of them.
    """
    n = len(times)
    n_frames = int(round((duration if duration is not None else times[-1] + 1 / SCAN_FPS) * 25))
    ok = np.isfinite(lms).all(axis=(1, 2))
    if ok.sum() < max(1, MIN_DETECTED * n):
        raise CropError(f"{name}: no face found in {n - ok.sum()} of {n} sampled frames "
                        f"({_frames_text(times, ~ok, n_frames)}): film one face, at least {MIN_FACE_PX} px wide "
                        "and facing the camera, or cut the video to the part that shows it")
    pts = lms[ok]
    jaw = np.linalg.norm(pts[:, 16] - pts[:, 0], axis=1)
    jaw_px = float(np.median(jaw))
    if jaw_px < MIN_FACE_PX:
        raise CropError(f"{name}: the face is only {jaw_px:.0f} px wide in the {width}x{height} source "
                        f"(at least {MIN_FACE_PX} px needed): film closer or use a higher-resolution video")
    lo, hi = pts.min(axis=1), pts.max(axis=1)  # [M, 2] face box per sample
    margin = 0.02 * jaw_px
    cut = (lo[:, 0] < margin) | (lo[:, 1] < margin) | (hi[:, 0] > width - margin) | (hi[:, 1] > height - margin)
    if cut.mean() > MAX_EDGE_CUT:
        idx = np.flatnonzero(ok)[cut]
        mask = np.zeros(n, bool)
        mask[idx] = True
        raise CropError(f"{name}: the face is cut by the frame edge in {cut.sum()} of {ok.sum()} sampled frames "
                        f"({_frames_text(times, mask, n_frames)}): use a video where the whole face stays in view")

    side = _even(SIDE_PER_JAW * jaw_px)
    eyes = pts[:, 36:48].mean(axis=1)  # [M, 2]
    ex, ey = np.median(eyes, axis=0)
    x0, y0 = ex - side / 2, ey - EYES_AT * side
    # Inside the frame where it fits (the head then sits off-centre); repeated edges where not.
    x0 = float(np.clip(x0, 0, width - side)) if side <= width else x0
    y0 = float(np.clip(y0, 0, height - side)) if side <= height else y0
    x0, y0 = _even(x0), _even(y0)
    padding = {"left": max(0, -x0), "top": max(0, -y0),
               "right": max(0, x0 + side - width), "bottom": max(0, y0 + side - height)}

    # The head: landmarks plus room for hair above the brows and a little around the jaw.
    head_lo = np.stack([lo[:, 0] - 0.1 * jaw, pts[:, 17:27, 1].min(axis=1) - 0.5 * jaw], axis=1)
    head_hi = np.stack([hi[:, 0] + 0.1 * jaw, hi[:, 1] + 0.05 * jaw], axis=1)
    outside = ((head_lo[:, 0] < x0) | (head_lo[:, 1] < y0)
               | (head_hi[:, 0] > x0 + side) | (head_hi[:, 1] > y0 + side))
    mask = np.zeros(n, bool)
    mask[np.flatnonzero(ok)[outside]] = True
    if outside.mean() > MAX_OUTSIDE:
        raise CropError(f"{name}: no fixed crop holds the head: it leaves the {side}x{side} box at "
                        f"({x0}, {y0}) in {outside.sum()} of {ok.sum()} sampled frames "
                        f"({_frames_text(times, mask, n_frames)}): cut the video to a part where the "
                        "person stays in place")
    return {
        "video": name,
        "source": {"width": int(width), "height": int(height), "fps": float(fps),
                   "duration": None if duration is None else float(duration)},
        "box": [int(x0), int(y0), int(side)],
        "size": int(size),
        "scale": size / side,
        "padding": {k: int(v) for k, v in padding.items()},
        "scan": {"fps": SCAN_FPS, "samples": int(n), "with_face": int(ok.sum()), "jaw_px": round(jaw_px, 1),
                 "head_outside": int(outside.sum()),
                 "head_outside_frames": _frames_text(times, mask, n_frames) if outside.any() else ""},
    }


def ffmpeg_filter(plan: dict) -> str:
    """ffmpeg ``-vf`` chain (after the fps filter) that pads, crops and resizes like ``plan``."""
    x0, y0, side = plan["box"]
    size, pad = plan["size"], plan["padding"]
    chain = []
    if any(pad.values()):
        l, r, t, b = pad["left"], pad["right"], pad["top"], pad["bottom"]
        chain += [f"pad={plan['source']['width'] + l + r}:{plan['source']['height'] + t + b}:{l}:{t}",
                  f"fillborders=left={l}:right={r}:top={t}:bottom={b}:mode=smear"]
    chain.append(f"crop={side}:{side}:{x0 + pad['left']}:{y0 + pad['top']}")
    # Area averaging when shrinking (no aliasing of hair and teeth), bicubic when enlarging.
    chain.append(f"scale={size}:{size}:flags={'area' if side >= size else 'bicubic'}")
    return ",".join(chain)


def crop_for_video(video: str | os.PathLike, meta: dict, size: int, log=print) -> dict:
    """Scan ``video`` (``meta`` from ``frames.probe_video``) and plan its crop; see :func:`plan_crop`."""
    video = Path(video)
    times, lms = scan_landmarks(video, meta["width"], meta["height"])
    plan = plan_crop(times, lms, meta["width"], meta["height"], size, name=video.name, fps=meta["fps"],
                     duration=meta["duration"])
    x0, y0, side = plan["box"]
    log(f"crop: {meta['width']}x{meta['height']} @ {meta['fps']:g} fps -> box {side}x{side} at ({x0}, {y0}), "
        f"resized to {size}x{size} (face {plan['scan']['jaw_px']:.0f} px wide)")
    pad = {k: v for k, v in plan["padding"].items() if v}
    if pad:
        log(f"crop: the box reaches past the frame ({', '.join(f'{k} {v} px' for k, v in pad.items())}): "
            "those pixels repeat the frame's edge")
    if plan["scan"]["head_outside"]:
        log(f"crop: the head leaves the box in {plan['scan']['head_outside_frames']}")
    return plan
