"""What drives the mouth in the live viewer: the training audio, an uploaded file, or a stream.

A source holds per-video-frame features (25 fps, the model's layout ``[N, A, T]``) and, when the
page can play it, the sound as a 16 kHz wav.
"""
from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import numpy as np
import torch
from scipy.io import wavfile

from data_utils.audio import SAMPLE_RATE

MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_UPLOAD_SECONDS = 600
CHUNK = SAMPLE_RATE // 50  # 20 ms
RECENT = 16  # stream frames kept for rendering: the audio window reads at most 8 around the shown one


def wav_bytes(audio: np.ndarray) -> bytes:
    """16-bit PCM wav of 16 kHz mono samples in [-1, 1]  # [n_samples]."""
    buf = io.BytesIO()
    wavfile.write(buf, SAMPLE_RATE, np.round(np.clip(audio, -1, 1) * 32767).astype(np.int16))
    return buf.getvalue()


class Source:
    """Fixed features with their sound.

    Args:
        name: id used by the page.
        label: what the page shows.
        features: per-frame features  # [N, A, T] on the model's device
        wav: the sound as wav bytes, or None (the page then plays nothing).
    """

    live = False

    def __init__(self, name: str, label: str, features: torch.Tensor, wav: bytes | None):
        self.name, self.label, self.wav = name, label, wav
        self._features = features

    def at(self, t: float) -> tuple[torch.Tensor, int]:
        """Features ``[N, A, T]`` and the audio frame in them shown at ``t`` seconds of playback."""
        return self._features, max(0, min(int(round(t * 25)), self._features.shape[0] - 1))

    def describe(self) -> dict:
        return {"name": self.name, "label": self.label, "frames": int(self._features.shape[0]),
                "audio": self.wav is not None, "live": self.live}


def decode_upload(data: bytes, filename: str) -> np.ndarray:
    """An uploaded audio file's samples  # [n_samples] (16 kHz mono); ValueError with the fix."""
    import tempfile

    from data_utils.audio import load_audio

    if not data:
        raise ValueError(f"{filename}: the file is empty; choose a wav or mp3 with speech")
    suffix = Path(filename).suffix.lower() or ".bin"
    with tempfile.TemporaryDirectory(prefix="ernerf_upload_") as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(data)
        try:
            audio = load_audio(path)
        except ValueError as err:
            raise ValueError(f"{filename} is not audio ffmpeg can decode: upload a wav or mp3") from err
    if audio.size < SAMPLE_RATE // 10:
        raise ValueError(f"{filename} holds no sound (under 0.1 s of audio); upload a longer wav or mp3")
    if audio.size > MAX_UPLOAD_SECONDS * SAMPLE_RATE:
        raise ValueError(f"{filename} lasts {audio.size / SAMPLE_RATE:.0f} s: the viewer takes up to "
                         f"{MAX_UPLOAD_SECONDS} s (cut it, or render it offline with --test --aud)")
    return audio


class StreamSource:
    """Features computed live (``--asr``) from ``--asr_wav`` read in real time or the microphone.

    Args:
        streamer: a ``data_utils.stream_features.StreamingFeatures``.
        to_model: maps ``[k, 16|2, A]`` frames to the model's ``[k, A, T]`` tensor.
        wav: file to stream in real time, or None for the default microphone (``sounddevice``).
        play: play the sound on this machine as it is read (``--asr_play``).
        att_lookahead: frames after the shown one the model's audio window reads (3 for ``--att 2``).
        keep_all: keep every frame for ``all_frames`` (``--asr_save_feats``); otherwise only the
            last ``RECENT`` frames are kept, so an endless microphone stream holds bounded memory.
    """

    name, label, wav, live = "stream", "live stream (--asr)", None, True

    def __init__(self, streamer, to_model, wav: str | None, play: bool, att_lookahead: int, keep_all: bool):
        self.streamer, self.to_model, self.path, self.play = streamer, to_model, wav, play
        self.att_lookahead, self.keep_all = att_lookahead, keep_all
        self.frames: list[np.ndarray] = []
        self.count = 0  # frames streamed so far (the list may hold only the recent ones)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.error: str | None = None
        self.done = False
        self._thread = threading.Thread(target=self._run, name="asr", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _add(self, frames: np.ndarray) -> None:
        if len(frames):
            with self._lock:
                self.frames.extend(frames)
                self.count += len(frames)
                if not self.keep_all:
                    del self.frames[:-RECENT]

    def _run(self) -> None:
        try:
            if self.path:
                self._from_file()
            else:
                self._from_microphone()
            self._add(self.streamer.finish())
        except Exception as err:  # reported on the page and the console; the viewer keeps running
            self.error = f"--asr stream stopped: {err}"
            print(f"error: {self.error}", flush=True)
        self.done = True

    def _from_file(self) -> None:
        from data_utils.audio import load_audio

        audio = load_audio(self.path)
        out = None
        if self.play:
            import sounddevice

            out = sounddevice.OutputStream(samplerate=SAMPLE_RATE, channels=1, dtype="float32")
            out.start()
        start = time.perf_counter()
        try:
            for i in range(0, len(audio), CHUNK):
                if self._stop.is_set():
                    return
                chunk = audio[i:i + CHUNK]
                if out is not None:
                    out.write(chunk[:, None])
                self._add(self.streamer.push(chunk))
                # Real time: chunk i is not read before its moment.
                wait = start + (i + CHUNK) / SAMPLE_RATE - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
        finally:
            if out is not None:
                out.stop()
                out.close()

    def _from_microphone(self) -> None:
        import queue

        import sounddevice

        chunks: queue.Queue = queue.Queue()
        with sounddevice.InputStream(samplerate=SAMPLE_RATE, channels=1, dtype="float32", blocksize=CHUNK,
                                     callback=lambda data, *_: chunks.put(data[:, 0].copy())):
            out = sounddevice.OutputStream(samplerate=SAMPLE_RATE, channels=1, dtype="float32") if self.play else None
            if out is not None:
                out.start()
            try:
                while not self._stop.is_set():
                    try:
                        chunk = chunks.get(timeout=0.2)
                    except queue.Empty:
                        continue
                    if out is not None:
                        out.write(chunk[:, None])
                    self._add(self.streamer.push(chunk))
            finally:
                if out is not None:
                    out.stop()
                    out.close()

    def at(self, t: float) -> tuple[torch.Tensor | None, int]:
        """The recent features ``[n, A, T]`` and, in them, the newest frame whose audio window is
        complete (``t`` is ignored: the stream is live); ``(None, 0)`` before the first frame."""
        with self._lock:
            recent = self.frames[-RECENT:]
        if not recent:
            return None, 0
        return self.to_model(np.stack(recent)), max(0, len(recent) - 1 - (0 if self.done else self.att_lookahead))

    def describe(self) -> dict:
        return {"name": self.name, "label": self.label, "frames": self.count, "audio": False, "live": True,
                "latency_ms": round(self.streamer.latency_s * 1000 + self.att_lookahead * 40),
                "error": self.error, "done": self.done}

    def all_frames(self) -> np.ndarray | None:
        """Every frame streamed so far  # [N, 16|2, A], or None."""
        with self._lock:
            return np.stack(self.frames) if self.frames else None
