"""MP4 writing with imageio-ffmpeg's bundled ffmpeg, optional audio muxing, and probing.

No system ffmpeg is needed: every call goes through the binary that ships inside the
``imageio-ffmpeg`` wheel. Videos are H.264 (yuv420p) so any player opens them.
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Iterable

import imageio_ffmpeg
import numpy as np


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary bundled with imageio-ffmpeg."""
    return imageio_ffmpeg.get_ffmpeg_exe()


def _as_rgb24(frame: np.ndarray) -> np.ndarray:
    """One frame as contiguous uint8 [H, W, 3] (grayscale [H, W] is replicated)."""
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        raise ValueError(f"video frames must be uint8, got {frame.dtype}")
    if frame.ndim == 2:
        frame = np.repeat(frame[..., None], 3, axis=2)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"video frames must be [H, W, 3] or [H, W], got {frame.shape}")
    return np.ascontiguousarray(frame)


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float = 25,
                audio_path: str | os.PathLike | None = None, quality: float = 8) -> Path:
    """Encode ``frames`` (uint8 [H, W, 3] or [H, W]) into an mp4, atomically.

    With ``audio_path`` (any file ffmpeg reads: wav, mp3, mp4, ...) its first audio
    stream is muxed in as AAC and cut to the video length, so the frame count is
    exactly the number of frames given. H and W must be even (yuv420p).
    Returns the written path.
    """
    path = Path(path)
    if audio_path is not None and not Path(audio_path).is_file():
        raise FileNotFoundError(f"audio file to mux not found: {audio_path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    writer = None
    count = 0
    try:
        for frame in frames:
            frame = _as_rgb24(frame)
            if writer is None:
                h, w = frame.shape[:2]
                if h % 2 or w % 2:
                    raise ValueError(f"video size must be even for yuv420p, got {w}x{h} for {path}")
                writer = imageio_ffmpeg.write_frames(
                    str(tmp), (w, h), fps=fps, quality=quality, codec="libx264",
                    macro_block_size=1, ffmpeg_log_level="error",
                    audio_path=None if audio_path is None else str(audio_path),
                    audio_codec=None if audio_path is None else "aac",
                    # -shortest stops at the last video frame when the audio is longer.
                    output_params=["-shortest"] if audio_path is not None else None)
                writer.send(None)
            elif frame.shape[:2] != (h, w):
                raise ValueError(f"all frames of {path} must be {w}x{h}, got {frame.shape[1]}x{frame.shape[0]}")
            writer.send(frame)
            count += 1
        if writer is None:
            raise ValueError(f"no frames to write into {path}")
        writer.close()
        writer = None
        os.replace(tmp, path)
    finally:
        if writer is not None:
            writer.close()
        if tmp.exists():
            tmp.unlink()
    return path


def probe_video(path: str | os.PathLike) -> dict:
    """Stream facts of a video file: ``{"frames", "width", "height", "fps", "has_audio"}``.

    The frame count is exact (the stream is decoded), fps is the container's nominal rate.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    frames, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
    # `ffmpeg -i` with no output exits non-zero by design; its stderr lists the streams.
    info = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)],
                          capture_output=True, text=True).stderr
    video = re.search(r"Stream #\S+.*Video:.*?(\d{2,5})x(\d{2,5}).*?([\d.]+) fps", info)
    if video is None:
        raise ValueError(f"{path} has no video stream")
    return {
        "frames": int(frames),
        "width": int(video.group(1)),
        "height": int(video.group(2)),
        "fps": float(video.group(3)),
        "has_audio": re.search(r"Stream #\S+.*Audio:", info) is not None,
    }
