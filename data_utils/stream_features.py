"""Audio features computed incrementally from 20 ms chunks (``main.py --asr``).

Audio arrives in chunks of any size (the microphone and ``--asr_wav`` deliver 320 samples =
20 ms); the 50 Hz feature sequence of ``data_utils.audio_features`` is computed block by block, as
the reference's ``--asr`` does: a block covers ``m`` steps and the engine sees ``l`` steps of
audio before it and ``r`` steps after it (``-l/-m/-r``, in 20 ms steps). A block is computed once
its right context has arrived, so its last step is ready ``r`` steps late and its first ``m + r``
steps late; each video frame's window (16 steps ``[c - 8, c + 8)``, or 2 steps ``[c, c + 2)`` for
hidden states) then waits for its last step. ``latency_steps`` is the worst case.

What equals the offline features (``extract_features`` of the whole recording):

* ``mel``: each step depends on 25 ms of audio around it only, so with ``l, r >= 1`` the streamed
  log-mel steps are exactly the offline ones. The offline features are standardised with the
  mean and std of the whole recording; given those (``stats=mel_stats(audio)``, what
  ``--asr_wav`` does: the file is known) the stream equals the offline features. Without them
  (the microphone) each block is standardised with the running mean and std of everything heard
  so far, which approaches the offline values as the recording grows but is not equal to them.
* HuBERT / wav2vec2: the wave is standardised the same two ways; the transformer then sees the
  ``l + m + r`` steps of its window, where the offline extraction sees up to 20 s at a time, so
  the two differ by the context the attention gets. With one block spanning the whole recording
  (``m`` >= its steps) the stream equals the offline features.
* ``deepspeech`` is not streamed (its graph is a manual download; ``--asr`` refuses it).
"""
from __future__ import annotations

import numpy as np

from data_utils.asr_models import load_speech_model, resolve
from data_utils.audio_features import (FEATURE_RATE, HOP, MEL_NFFT, MEL_WIN, SAMPLE_RATE, conv_geometry,
                                       default_n_frames, log_mel, mel_filterbank)

WINDOW_STEPS, WINDOW_OFFSET = 16, 8  # windowed engines: steps [c - 8, c + 8) per video frame
HIDDEN_STEPS = 2  # hidden-state engines: steps [c, c + 2)


def mel_stats(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and std of the whole recording's log-mel, as ``mel_features`` standardises.

    Args:
        audio: 16 kHz mono samples  # [n_samples]
    Returns:
        ``(mean, std)``  # [32] each, float32
    """
    lm = log_mel(np.asarray(audio, dtype=np.float32))
    return lm.mean(axis=0), lm.std(axis=0)


def wave_stats(audio: np.ndarray) -> tuple[float, float]:
    """Mean and variance of the whole recording, as the speech models' extractor standardises."""
    audio = np.asarray(audio, dtype=np.float32)
    return float(audio.mean()), float(audio.var())


class _Running:
    """Running per-column mean and variance (Chan's parallel update, float64)."""

    def __init__(self, dim: int):
        self.n, self.mean, self.m2 = 0, np.zeros(dim), np.zeros(dim)

    def add(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)
        if not len(rows):
            return
        n_b, mean_b = len(rows), rows.mean(axis=0)
        m2_b = ((rows - mean_b) ** 2).sum(axis=0)
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * n_b / n
        self.m2 = self.m2 + m2_b + delta ** 2 * self.n * n_b / n
        self.n = n

    @property
    def var(self) -> np.ndarray:
        return self.m2 / max(self.n, 1)


class StreamingFeatures:
    """Per-video-frame features of an audio stream, as ``extract_features`` lays them out.

    Args:
        asr_model: ``--asr_model`` value (mel, or a HuBERT / wav2vec2-style model id or folder).
        l, m, r: left context, block and right context, in 20 ms steps (reference: 10, 50, 10).
        fps: video frame rate.
        stats: the whole recording's statistics (``mel_stats`` for mel, ``wave_stats`` for speech
            models), or None to standardise with running statistics.
        weights, model, extractor: as ``extract_features`` (a built model skips loading).

    ``push(samples)`` returns the frames completed by those samples and ``finish()`` the rest,
    each ``[k, 16, D]`` (``[k, 2, D]`` for hidden states) float32; all of them concatenated equal
    ``extract_features`` of the same audio under the conditions of the module docstring.
    """

    def __init__(self, asr_model: str = "mel", l: int = 10, m: int = 50, r: int = 10, fps: float = 25,
                 stats=None, weights=None, model=None, extractor=None):
        spec = resolve(asr_model)
        if spec.engine == "deepspeech":
            raise ValueError("--asr streams mel and HuBERT/wav2vec2 features; DeepSpeech 0.1.0 is offline only "
                             "(use --aud FILE with it)")
        if l < 1 or m < 1 or r < 1:
            raise ValueError(f"-l {l} -m {m} -r {r}: each context must be at least one 20 ms step")
        self.engine, self.l, self.m, self.r, self.fps = spec.engine, l, m, r, fps
        self.stats = stats
        if self.engine == "mel":
            self.kernel, self.win, self.offset = 0, WINDOW_STEPS, WINDOW_OFFSET
            self._filters = mel_filterbank()
            self._window = np.zeros(MEL_NFFT, dtype=np.float32)
            left = (MEL_NFFT - MEL_WIN) // 2
            self._window[left:left + MEL_WIN] = np.hanning(MEL_WIN + 1)[:-1]
            self._running = _Running(self._filters.shape[0])
            self.dim = self._filters.shape[0]
        else:
            if model is None:
                model, extractor = load_speech_model(asr_model, weights)
            self.model = model.eval()
            self.kernel, hop = conv_geometry(model.config)
            if hop != HOP:
                raise ValueError(f"the audio model's feature encoder steps every {hop} samples; streaming needs "
                                 f"{HOP} (50 Hz at 16 kHz)")
            self.ctc = type(model).__name__.endswith("ForCTC")
            self.normalise = extractor is None or bool(getattr(extractor, "do_normalize", True))
            self.win, self.offset = (WINDOW_STEPS, WINDOW_OFFSET) if self.ctc else (HIDDEN_STEPS, 0)
            self.dim = int(model.config.vocab_size if self.ctc else model.config.hidden_size)
            self._running = _Running(1)
        self._audio = np.zeros(0, dtype=np.float32)  # samples from _audio_start on
        self._audio_start = 0
        self.n_samples = 0
        self._steps: list[np.ndarray] = []  # computed 50 Hz rows from _steps_start on
        self._steps_start = 0
        self.n_steps = 0  # steps computed so far
        self.n_frames = 0  # video frames returned so far
        self.finished = False

    # ---------------------------------------------------------------------------- timing

    @property
    def latency_steps(self) -> int:
        """Worst-case 20 ms steps between a sample arriving and its frame's features being ready:
        the block (``m``), its right context (``r``) and the frame window's look-ahead."""
        return self.m + self.r + (self.win - self.offset - 1)

    @property
    def latency_s(self) -> float:
        return self.latency_steps / FEATURE_RATE

    # ---------------------------------------------------------------------------- input

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Append 16 kHz mono samples in [-1, 1]  # [k]; returns the frames now complete."""
        if self.finished:
            raise RuntimeError("push() after finish()")
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        self._audio = np.concatenate([self._audio, samples])
        self.n_samples += len(samples)
        if self.stats is None and self.engine != "mel":
            self._running.add(samples[:, None])
        while self.n_samples >= self._block_end_sample(self.n_steps):
            self._compute(self.n_steps, self.n_steps + self.m, final=False)
        return self._frames(final=False)

    def finish(self) -> np.ndarray:
        """End of the stream: the remaining frames (edges zero-padded as offline)."""
        if not self.finished:
            self.finished = True
            total = self._total_steps()
            while self.n_steps < total:
                self._compute(self.n_steps, min(self.n_steps + self.m, total), final=True)
        return self._frames(final=True)

    # ---------------------------------------------------------------------------- steps

    def _total_steps(self) -> int:
        # As offline: log_mel has 1 + n // 320 steps, the conv encoder (n - kernel) // 320 + 1.
        if self.engine == "mel":
            return 1 + self.n_samples // HOP
        return max(0, (self.n_samples - self.kernel) // HOP + 1)

    def _block_end_sample(self, first: int) -> int:
        last = first + self.m + self.r - 1  # last step of the right context
        return (last + 1) * HOP if self.engine == "mel" else last * HOP + self.kernel

    def _samples(self, lo: int, hi: int) -> np.ndarray:
        """Samples ``[lo, hi)`` of the stream, zero outside what has arrived."""
        out = np.zeros(hi - lo, dtype=np.float32)
        a, b = max(lo, self._audio_start), min(hi, self.n_samples)
        if b > a:
            out[a - lo:b - lo] = self._audio[a - self._audio_start:b - self._audio_start]
        return out

    def _compute(self, first: int, stop: int, final: bool) -> None:
        if self.engine == "mel":
            rows = self._mel_rows(first, stop)
        else:
            rows = self._speech_rows(first, stop, final)
        self._steps.extend(rows)
        self.n_steps = stop
        # Keep what the next block's left context and the pending frames' windows still need.
        keep_sample = (max(0, self.n_steps - self.l) * HOP) - MEL_NFFT
        if keep_sample > self._audio_start:
            self._audio = self._audio[keep_sample - self._audio_start:]
            self._audio_start = keep_sample

    def _mel_rows(self, first: int, stop: int) -> list[np.ndarray]:
        half = MEL_NFFT // 2
        # Step j is centred on sample 320 j, as log_mel (which zero-pads half a window each side).
        seg = self._samples(first * HOP - half, (stop - 1) * HOP + half)
        frames = np.lib.stride_tricks.sliding_window_view(seg, MEL_NFFT)[::HOP][:stop - first]
        power = np.abs(np.fft.rfft(frames * self._window, axis=1)) ** 2
        lm = np.log(power @ self._filters.T + 1e-6).astype(np.float32)  # [k, 32]
        if self.stats is not None:
            mean, std = self.stats
        else:
            self._running.add(lm)
            mean, std = self._running.mean, np.sqrt(self._running.var)
        return list(((lm - mean) / np.maximum(std, 1e-5)).astype(np.float32))

    def _speech_rows(self, first: int, stop: int, final: bool) -> list[np.ndarray]:
        import torch

        lo_step = max(0, first - self.l)
        hi_step = stop + (0 if final else self.r)  # the right context, when it exists
        hi_step = min(hi_step, self._total_steps()) if final else hi_step
        wave = self._samples(lo_step * HOP, (hi_step - 1) * HOP + self.kernel)
        if self.normalise:
            if self.stats is not None:
                mean, var = self.stats
            else:
                mean, var = float(self._running.mean[0]), float(self._running.var[0])
            wave = (wave - mean) / np.sqrt(var + 1e-7)
        device = next(self.model.parameters()).device
        with torch.no_grad():
            out = self.model(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))[None].to(device))
        rows = (out.logits if self.ctc else out.last_hidden_state)[0].float().cpu().numpy()
        return list(rows[first - lo_step:stop - lo_step])

    # ---------------------------------------------------------------------------- frames

    def _frames(self, final: bool) -> np.ndarray:
        """Frames whose window is complete (all remaining ones when ``final``)."""
        if final:
            last = default_n_frames(self.n_samples, SAMPLE_RATE, self.fps)
        else:
            # Frame i needs step round(i * 50 / fps) - offset + win - 1 computed.
            last = self.n_frames
            while self._centre(last) - self.offset + self.win <= self.n_steps:
                last += 1
        out = []
        dim = self.dim
        for i in range(self.n_frames, last):
            lo = self._centre(i) - self.offset
            window = np.zeros((self.win, dim), dtype=np.float32)
            for k in range(self.win):
                j = lo + k
                if 0 <= j < self.n_steps and j >= self._steps_start:
                    window[k] = self._steps[j - self._steps_start]
            out.append(window)
        self.n_frames = max(self.n_frames, last)
        # Steps before the next frame's window are never read again.
        drop = min(max(0, self._centre(self.n_frames) - self.offset), self.n_steps) - self._steps_start
        if drop > 0:
            del self._steps[:drop]
            self._steps_start += drop
        return np.stack(out) if out else np.zeros((0, self.win, dim), dtype=np.float32)

    def _centre(self, i: int) -> int:
        return int(np.round(i * (FEATURE_RATE / self.fps)))
