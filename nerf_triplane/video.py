"""MP4 writing with imageio-ffmpeg's bundled ffmpeg, optional audio muxing, and probing.

No system ffmpeg is needed: every call goes through the binary that ships inside the
``imageio-ffmpeg`` wheel. Videos are H.264 (yuv420p) so any player opens them.
"""
from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Iterable

import imageio_ffmpeg
import numpy as np

from data_utils.atomic import WriteError, commit, storage_error
from data_utils.frames import probe_video as probe_header

# Free bytes under which a failed encode is blamed on a full disk.
LOW_SPACE = 1 << 20


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


class VideoWriter:
    """Streaming H.264 mp4 writer that appears at ``path`` only when closed successfully.

    Use as a context manager: frames (uint8 [H, W, 3] or [H, W]) are encoded as they
    come, so long videos need no memory. With ``audio_path`` (any file ffmpeg reads:
    wav, mp3, mp4, ...) its first audio stream is muxed in as AAC, cut or padded with silence
    to the video length, so the frame count is exactly the number of frames given. H and W must be
    even (yuv420p). On an exception nothing is left behind.
    """

    def __init__(self, path: str | os.PathLike, fps: float = 25,
                 audio_path: str | os.PathLike | None = None, quality: float = 8):
        self.path = Path(path)
        if audio_path is not None and not Path(audio_path).is_file():
            raise FileNotFoundError(f"audio file to mux not found: {audio_path}")
        self.fps, self.quality = fps, quality
        self.audio_path = None if audio_path is None else str(audio_path)
        self.tmp = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix}")
        self.size: tuple[int, int] | None = None  # (H, W)
        self.count = 0
        self._writer = None

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def append(self, frame: np.ndarray) -> None:
        frame = _as_rgb24(frame)
        if self._writer is None:
            h, w = frame.shape[:2]
            if h % 2 or w % 2:
                raise ValueError(f"video size must be even for yuv420p, got {w}x{h} for {self.path}")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.size = (h, w)
            self._writer = imageio_ffmpeg.write_frames(
                str(self.tmp), (w, h), fps=self.fps, quality=self.quality, codec="libx264",
                macro_block_size=1, ffmpeg_log_level="error", audio_path=self.audio_path,
                audio_codec=None if self.audio_path is None else "aac",
                # apad + -shortest: the video decides the length, whether the audio is longer or
                # shorter (a short track would otherwise cut the last frames off).
                output_params=["-af", "apad", "-shortest"] if self.audio_path is not None else None)
            self._writer.send(None)
        elif frame.shape[:2] != self.size:
            h, w = self.size
            raise ValueError(f"all frames of {self.path} must be {w}x{h}, got {frame.shape[1]}x{frame.shape[0]}")
        self._writer.send(frame)
        self.count += 1

    def close(self) -> Path:
        """Finish encoding, sync the file and move it into place; returns its path."""
        if self._writer is None:
            raise ValueError(f"no frames to write into {self.path}")
        self._writer.close()
        self._writer = None
        self._check_complete()
        commit(self.tmp, self.path)
        return self.path

    def _check_complete(self) -> None:
        """Raise (and delete the temporary file) unless ffmpeg finished a readable video of all
        frames: imageio-ffmpeg does not report ffmpeg's exit status, and a full disk leaves
        an mp4 without its index (unreadable) or cut short."""
        try:
            frames = probe_header(self.tmp)["n_frames"]
            # With audio, -shortest may end the video early on purpose; readable is enough then.
            complete = self.audio_path is not None or frames >= self.count - 1
        except (ValueError, FileNotFoundError):
            complete = False
        if complete:
            return
        self.tmp.unlink(missing_ok=True)
        if shutil.disk_usage(self.path.parent).free < LOW_SPACE:
            raise storage_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), self.path)
        raise WriteError(errno.EIO, f"cannot write {self.path}: ffmpeg did not finish it (its message is above)")

    def abort(self) -> None:
        """Stop encoding and delete the partial file."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self.tmp.unlink(missing_ok=True)


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float = 25,
                audio_path: str | os.PathLike | None = None, quality: float = 8) -> Path:
    """Encode ``frames`` into an mp4 atomically (see :class:`VideoWriter`); returns the path."""
    with VideoWriter(path, fps, audio_path, quality) as writer:
        for frame in frames:
            writer.append(frame)
    return writer.path


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
