"""Checks of the input video of ``data_utils/process.py``: fatal problems stop before any
work with one message naming the video and the fix; problems a run survives become warnings.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import cv2
import numpy as np

from data_utils.audio import ffmpeg_exe

MIN_SECONDS = 1.0  # shorter videos train a poor model (warning)
MIN_AUDIO_COVER = 0.9  # the audio must span this fraction of the video (error)
GRAY_TOLERANCE = 3  # max |R-G|, |G-B| (0-255) of a frame counted as colourless
_RATE = re.compile(r"([\d.]+) fps")
_TBR = re.compile(r"([\d.]+)k? tbr")


def check_frame_size(meta: dict, video: Path) -> None:
    """Refuse odd frame sizes: the rendered videos are H.264 yuv420p, which needs even ones.

    Args:
        meta: ``data_utils.frames.probe_video`` of ``video`` (``width``, ``height`` in pixels).
    """
    w, h = meta["width"], meta["height"]
    if w % 2 or h % 2:
        raise ValueError(f"{video} is {w}x{h}: an odd width or height cannot be rendered back to H.264 video; "
                         f"crop it to an even size first (ffmpeg -i {video.name} -vf crop={w - w % 2}:{h - h % 2} "
                         f"cropped.mp4)")


def video_warnings(meta: dict, video: Path) -> list[str]:
    """Problems of the video header a run survives, as one-line messages.

    Args:
        meta: ``probe_video`` of ``video`` (``duration`` in seconds, ``fps``).
    """
    out = []
    if meta["duration"] < MIN_SECONDS:
        out.append(f"{video} is only {meta['duration']:.2f} s long: a model trained on under {MIN_SECONDS:.0f} s "
                   f"of video is poor (use a few minutes of one person talking)")
    return out


def variable_rate_warning(video: Path) -> str | None:
    """A warning when the video's average frame rate differs from its nominal one (ffmpeg's
    ``fps`` vs ``tbr`` in the header: a variable-frame-rate file, e.g. a phone recording)."""
    info = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(video)],
                          capture_output=True).stderr.decode(errors="replace")
    line = next((ln for ln in info.splitlines() if ": Video: " in ln), "")
    avg, nominal = _RATE.search(line), _TBR.search(line)
    if avg is None or nominal is None:
        return None
    avg, nominal = float(avg.group(1)), float(nominal.group(1))
    if abs(avg - nominal) <= 0.01 * nominal:
        return None
    return (f"{video} has a variable frame rate ({avg:g} fps on average, {nominal:g} nominal): frames are "
            f"resampled to a constant 25 fps by their timestamps")


def check_audio_covers(audio_seconds: float, meta: dict, video: Path) -> None:
    """Refuse audio much shorter than the video: frames past its end would get no features.

    Args:
        audio_seconds: length of the extracted ``aud.wav`` in seconds.
        meta: ``probe_video`` of ``video`` (``duration`` in seconds).
    """
    if audio_seconds < MIN_AUDIO_COVER * meta["duration"]:
        raise ValueError(f"{video}: its audio lasts {audio_seconds:.2f} s but the video {meta['duration']:.2f} s, "
                         f"so frames past the audio would have no features; cut the video to the audio "
                         f"(ffmpeg -i {video.name} -t {audio_seconds:.2f} cut.mp4)")


def grayscale_warning(frames: list[Path]) -> str | None:
    """A warning when the sampled frames (``.jpg`` paths) carry no colour, else None."""
    if not frames:
        return None
    for path in frames[:: max(1, len(frames) // 5)]:
        img = cv2.imread(str(path)).astype(np.int16)
        if np.abs(img[..., 0] - img[..., 1]).max() > GRAY_TOLERANCE or \
                np.abs(img[..., 1] - img[..., 2]).max() > GRAY_TOLERANCE:
            return None
    return f"{frames[0].parent}: the frames are grayscale; the model will render grayscale too"


SILENCE_RMS = 1e-3  # RMS (full scale 1) under which a recording counts as silent


def check_audio_file(path: Path, flag: str = "--aud") -> None:
    """Refuse an empty audio file before decoding it (ffmpeg's own message names no fix)."""
    if path.stat().st_size == 0:
        raise ValueError(f"{flag} {path} is empty (0 bytes): give a speech recording (.wav, .mp3, ...) "
                         f"or a features .npy")


def silence_warning(audio: np.ndarray, path: Path) -> str | None:
    """A warning when ``audio`` (samples in [-1, 1]) is silent, else None."""
    if audio.size == 0 or float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) < SILENCE_RMS:
        return f"{path} is silent: the rendered mouth will stay closed"
    return None
