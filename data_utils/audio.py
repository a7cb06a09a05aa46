"""Audio I/O at the pipeline's rate (16 kHz mono float32 in [-1, 1]).

Decoding of anything that is not a plain PCM wav goes through imageio-ffmpeg's bundled ffmpeg,
so no system ffmpeg is needed.
"""
from __future__ import annotations

import os
import subprocess
from math import gcd
from pathlib import Path

import numpy as np
from scipy.io import wavfile

from .atomic import atomic_path

SAMPLE_RATE = 16000


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary bundled with imageio-ffmpeg."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _run_ffmpeg(args: list[str], what: str) -> bytes:
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", *args],
                          capture_output=True)
    if proc.returncode != 0:
        last = proc.stderr.decode(errors="replace").strip().splitlines()
        raise ValueError(f"ffmpeg failed to {what}: {last[-1] if last else 'no message'}")
    return proc.stdout


def extract_wav(video: str | os.PathLike, out_wav: str | os.PathLike, sr: int = SAMPLE_RATE) -> Path:
    """Decode the audio track of ``video`` to a mono 16-bit PCM wav at ``sr`` Hz (atomic write).

    Raises:
        FileNotFoundError: ``video`` does not exist.
        ValueError: ``video`` has no audio stream or cannot be decoded.
    """
    video, out_wav = Path(video), Path(out_wav)
    if not video.is_file():
        raise FileNotFoundError(f"video not found: {video}")
    with atomic_path(out_wav) as tmp:
        _run_ffmpeg(["-i", str(video), "-vn", "-map", "0:a:0", "-ac", "1", "-ar", str(sr),
                     "-acodec", "pcm_s16le", "-y", str(tmp)], f"extract the audio of {video}")
    return out_wav


def _to_float(data: np.ndarray) -> np.ndarray:
    if data.dtype == np.uint8:
        return (data.astype(np.float32) - 128.0) / 128.0
    if np.issubdtype(data.dtype, np.integer):
        return data.astype(np.float32) / float(-np.iinfo(data.dtype).min)
    return data.astype(np.float32)


def _resample(audio: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    if sr_in == sr_out:
        return audio
    from scipy.signal import resample_poly  # slow to import; only needed for other rates

    g = gcd(sr_in, sr_out)
    return resample_poly(audio, sr_out // g, sr_in // g).astype(np.float32)


def load_audio(path: str | os.PathLike, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Load any audio (wav, mp3, or the audio track of a video) as mono float32 at ``sr`` Hz.

    Wav files are read with scipy (channels averaged, resampled with a polyphase filter when the
    rate differs); every other format, or a wav scipy cannot parse, is decoded by ffmpeg.

    Returns:
        audio samples in [-1, 1]  # [n_samples]
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: {path}")
    if path.suffix.lower() == ".wav":
        try:
            sr_in, data = wavfile.read(path)
        except ValueError:
            data = None
        if data is not None:
            audio = _to_float(data)
            if audio.ndim == 2:
                audio = audio.mean(axis=1)
            return np.ascontiguousarray(_resample(audio, sr_in, sr), dtype=np.float32)
    raw = _run_ffmpeg(["-i", str(path), "-vn", "-ac", "1", "-ar", str(sr), "-f", "f32le", "-"],
                      f"decode audio from {path}")
    return np.frombuffer(raw, dtype=np.float32).copy()


def write_wav(path: str | os.PathLike, audio: np.ndarray, sr: int = SAMPLE_RATE) -> Path:
    """Write mono float audio in [-1, 1] (clipped) as a 16-bit PCM wav, atomically.

    Args:
        audio: samples  # [n_samples]
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"write_wav expects mono audio of shape [n_samples], got {audio.shape}")
    pcm = np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)
    path = Path(path)
    with atomic_path(path) as tmp:
        wavfile.write(tmp, sr, pcm)
    return path
