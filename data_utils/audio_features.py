"""Per-video-frame audio features, laid out like the reference's DeepSpeech features.

Every engine produces a feature sequence at 50 Hz (one step per 20 ms) and then cuts, for
video frame ``i`` (at ``fps`` frames/s), the steps around time ``i / fps``:

* windowed engines (``mel``, ``deepspeech``, wav2vec2 CTC logits): 16 steps ``[c - 8, c + 8)``
  with ``c = round(i * 50 / fps)`` (``c = 2 i`` at 25 fps) -> ``[n_frames, 16, dim]``; steps
  outside the recording are zeros, as in the reference (zero-pad 8, windows of 16, stride 2);
* hidden states (HuBERT, and speech models without a CTC head): the 2 steps ``[c, c + 2)`` ->
  ``[n_frames, 2, hidden_size]``, as the reference's reshape (1024 for hubert-large).

``mel`` is the offline default and needs no weights: 32 log-mel bands (80-7600 Hz) from a
25 ms Hann window every 20 ms (n_fft 512), each band normalised over the whole utterance to mean 0
and std 1. The normalisation removes the recording's loudness and channel colour, so features of
a new recording at another level are comparable to the training ones, and the zero padding at
the edges equals the utterance mean (a neutral value).

The other engines run real models: any HuBERT / wav2vec2-style model transformers loads (by Hub
id or folder, ``data_utils/asr_models.py``) and DeepSpeech 0.1.0 from its manually downloaded
graph; missing weights end with a one-line error. Tests inject small random models (``model=``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from data_utils.asr_models import load_speech_model, resolve

SAMPLE_RATE = 16000
FEATURE_RATE = 50  # steps per second of every engine's sequence
HOP = SAMPLE_RATE // FEATURE_RATE  # 320 samples = 20 ms

MEL_BANDS = 32
MEL_FMIN, MEL_FMAX = 80.0, 7600.0
MEL_NFFT, MEL_WIN = 512, 400

DEEPSPEECH_PB = Path.home() / ".tensorflow" / "models" / "deepspeech-0_1_0-b90017e8.pb"
DEEPSPEECH_URL = "https://github.com/mozilla/DeepSpeech/releases/tag/v0.1.0"


# ---------------------------------------------------------------------------- names

def engine_for(asr_model: str) -> str:
    """Engine of an ``--asr_model`` value: 'mel', 'deepspeech' or 'speech' (HuBERT/wav2vec2-style).

    ValueError for a value that names no model (see ``data_utils.asr_models.resolve``).
    """
    return resolve(asr_model).engine


def feature_file_for(asr_model: str) -> str:
    """File name (inside the data folder) the features of ``asr_model`` are stored under:
    the reference's ``aud.npy`` / ``aud_ds.npy`` / ``aud_eo.npy`` / ``aud_hu.npy`` for its names,
    ``aud_<model>.npy`` for any other model."""
    return resolve(asr_model).feature_file


# ---------------------------------------------------------------------------- windowing

def default_n_frames(n_samples: int, sr: int = SAMPLE_RATE, fps: float = 25) -> int:
    """Number of video frames covering ``n_samples`` of audio: ``round(duration * fps)``."""
    return int(round(n_samples / sr * fps))


def frame_windows(seq: np.ndarray, n_frames: int, fps: float = 25, win: int = 16,
                  offset: int = 8) -> np.ndarray:
    """Cut a 50 Hz sequence into one window per video frame, zero outside the sequence.

    Args:
        seq: features at 50 Hz  # [T, D]
        n_frames: number of video frames to produce
        fps: video frame rate; frame ``i`` starts its window at ``round(i * 50 / fps) - offset``
        win: steps per window (16 for windowed engines, 2 for HuBERT)
        offset: steps of the window before the frame's own step (8, or 0 for HuBERT)

    Returns:
        windows  # [n_frames, win, D] float32
    """
    seq = np.asarray(seq, dtype=np.float32)
    T, D = seq.shape
    starts = np.round(np.arange(n_frames) * (FEATURE_RATE / fps)).astype(np.int64) - offset
    idx = starts[:, None] + np.arange(win)[None, :]  # [n_frames, win]
    valid = (idx >= 0) & (idx < T)
    out = np.zeros((n_frames, win, D), dtype=np.float32)
    out[valid] = seq[idx[valid]]
    return out


# ---------------------------------------------------------------------------- mel

def _hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(sr: int = SAMPLE_RATE, n_fft: int = MEL_NFFT, n_mels: int = MEL_BANDS,
                   fmin: float = MEL_FMIN, fmax: float = MEL_FMAX) -> np.ndarray:
    """Triangular filters equally spaced on the HTK mel scale, each with unit area.

    Triangles are evaluated at the exact bin frequencies (not snapped to bins), so no filter is
    empty even when bands are narrower than a bin.

    Returns:
        weights  # [n_mels, n_fft // 2 + 1] float32
    """
    if not 0 <= fmin < fmax <= sr / 2:
        raise ValueError(f"mel range must satisfy 0 <= fmin < fmax <= sr/2, got {fmin}, {fmax}, sr={sr}")
    freqs = np.linspace(0.0, sr / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None] - lo) / (mid - lo)
    down = (hi - freqs[None]) / (hi - mid)
    tri = np.maximum(0.0, np.minimum(up, down))
    return (tri * (2.0 / (hi - lo))).astype(np.float32)


def log_mel(audio: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Log-mel spectrogram at 50 Hz, step ``j`` centred on sample ``j * 320`` (zero-padded ends).

    Args:
        audio: mono samples in [-1, 1]  # [n_samples]

    Returns:
        log(mel power + 1e-6), not normalised  # [1 + n_samples // 320, 32] float32
    """
    if sr != SAMPLE_RATE:
        raise ValueError(f"log_mel expects {SAMPLE_RATE} Hz audio, got {sr} Hz (use load_audio to resample)")
    audio = np.asarray(audio, dtype=np.float32)
    padded = np.pad(audio, (MEL_NFFT // 2, MEL_NFFT // 2))
    n_steps = 1 + len(audio) // HOP
    frames = np.lib.stride_tricks.sliding_window_view(padded, MEL_NFFT)[::HOP][:n_steps]
    window = np.zeros(MEL_NFFT, dtype=np.float32)
    left = (MEL_NFFT - MEL_WIN) // 2
    window[left:left + MEL_WIN] = np.hanning(MEL_WIN + 1)[:-1]  # periodic Hann, centred in n_fft
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2  # [T, n_fft//2+1]
    mel = power @ mel_filterbank(sr).T  # [T, 32]
    return np.log(mel + 1e-6).astype(np.float32)


def mel_features(audio: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Per-band standardised log-mel sequence at 50 Hz  # [T, 32] float32."""
    lm = log_mel(audio, sr)
    std = lm.std(axis=0, keepdims=True)
    return ((lm - lm.mean(axis=0, keepdims=True)) / np.maximum(std, 1e-5)).astype(np.float32)


# ---------------------------------------------------------------------------- transformers engines

def _normalise_wave(audio: np.ndarray) -> np.ndarray:
    # What Wav2Vec2FeatureExtractor does with do_normalize=True, for models that ship no extractor.
    audio = np.asarray(audio, dtype=np.float32)
    return (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)


def conv_geometry(config) -> tuple[int, int]:
    """Receptive field and hop, in samples, of a wav2vec2-style convolutional feature encoder."""
    field, hop = 1, 1
    for kernel, stride in zip(config.conv_kernel, config.conv_stride):
        field += (kernel - 1) * hop
        hop *= stride
    return field, hop


def _conv_frames(model, wave: np.ndarray, output: str, chunk_steps: int = 1000) -> np.ndarray:
    """Run a wav2vec2-style model over ``wave`` in chunks, returning one row per 20 ms step.

    The feature CNN acts as one conv of kernel ``F`` (400 samples for these models) and stride
    320, so a chunk of ``320 * (C - 1) + F`` samples starting at ``320 * C * k`` yields exactly
    steps ``[C k, C (k + 1))``; chunking bounds the transformer's quadratic memory on long audio.

    Returns:
        ``(n_samples - F) // 320 + 1`` rows  # [T, D] float32
    """
    import torch

    kernel, hop = conv_geometry(model.config)
    if hop != HOP:
        raise ValueError(f"the audio model's feature encoder steps every {hop} samples; ER-NeRF's features "
                         f"need {HOP} (50 Hz at 16 kHz), as HuBERT and wav2vec2 have")
    n_steps = (len(wave) - kernel) // HOP + 1
    if n_steps <= 0:
        raise ValueError(f"audio too short for the model: {len(wave)} samples, need >= {kernel}")
    rows = []
    device = next(model.parameters()).device
    with torch.no_grad():
        for first in range(0, n_steps, chunk_steps):
            count = min(chunk_steps, n_steps - first)
            piece = wave[first * HOP: first * HOP + HOP * (count - 1) + kernel]
            x = torch.from_numpy(np.ascontiguousarray(piece, dtype=np.float32))[None].to(device)
            out = getattr(model(x), output)[0]  # [count, D]
            rows.append(out[:count].float().cpu().numpy())
    return np.concatenate(rows, axis=0)


def speech_features(audio: np.ndarray, asr_model: str, weights=None, model=None,
                    extractor=None) -> tuple[np.ndarray, bool]:
    """A HuBERT / wav2vec2-style model's output at 50 Hz.

    Args:
        audio: 16 kHz mono samples in [-1, 1]  # [n_samples]
        asr_model: Hub id or folder (loaded with ``asr_models.load_speech_model`` unless ``model``)
        model, extractor: an already-built model (and its feature extractor, or None)

    Returns:
        ``(sequence, ctc)``: CTC logits ``[T, vocab_size]`` for a ``*ForCTC`` model (ctc True),
        else the last hidden state ``[T, hidden_size]`` (HuBERT, as the reference).
    """
    if model is None:
        model, extractor = load_speech_model(asr_model, weights)
    if extractor is not None:
        wave = extractor(audio, sampling_rate=SAMPLE_RATE, return_tensors="np")["input_values"][0]
    else:
        wave = _normalise_wave(audio)
    ctc = type(model).__name__.endswith("ForCTC")
    return _conv_frames(model, wave, "logits" if ctc else "last_hidden_state"), ctc


# ---------------------------------------------------------------------------- deepspeech

def mfcc(signal: np.ndarray, sr: int = SAMPLE_RATE, num_cep: int = 26, n_filt: int = 26,
         n_fft: int = 512, win_s: float = 0.025, step_s: float = 0.01, preemph: float = 0.97,
         lifter: int = 22) -> np.ndarray:
    """MFCCs as DeepSpeech 0.1.0 was trained on (python_speech_features' recipe).

    Pre-emphasis, rectangular 25 ms frames every 10 ms (last frame zero-padded), power spectrum,
    26 HTK-mel filters over 0..sr/2, log, orthonormal DCT-II, sinusoidal lifter, and coefficient 0
    replaced by the log frame energy.

    Args:
        signal: samples (any scale; DeepSpeech expects int16 scale)  # [n_samples]

    Returns:
        coefficients  # [n_frames, num_cep] float64
    """
    from scipy.fft import dct

    x = np.asarray(signal, dtype=np.float64)
    x = np.append(x[0], x[1:] - preemph * x[:-1])
    flen, fstep = int(round(win_s * sr)), int(round(step_s * sr))
    n_frames = 1 if len(x) <= flen else 1 + int(np.ceil((len(x) - flen) / fstep))
    x = np.pad(x, (0, (n_frames - 1) * fstep + flen - len(x)))
    frames = np.lib.stride_tricks.sliding_window_view(x, flen)[::fstep][:n_frames]
    power = np.abs(np.fft.rfft(frames, n_fft)) ** 2 / n_fft
    energy = np.where(power.sum(1) == 0, np.finfo(float).eps, power.sum(1))
    hz = _mel_to_hz(np.linspace(_hz_to_mel(0), _hz_to_mel(sr / 2), n_filt + 2))
    bins = np.floor((n_fft + 1) * hz / sr).astype(int)
    fb = np.zeros((n_filt, n_fft // 2 + 1))
    for j in range(n_filt):
        a, b, c = bins[j], bins[j + 1], bins[j + 2]
        fb[j, a:b] = (np.arange(a, b) - a) / max(b - a, 1)
        fb[j, b:c] = (c - np.arange(b, c)) / max(c - b, 1)
    feat = power @ fb.T
    feat = np.log(np.where(feat == 0, np.finfo(float).eps, feat))
    cep = dct(feat, type=2, axis=1, norm="ortho")[:, :num_cep]
    cep *= 1 + (lifter / 2.0) * np.sin(np.pi * np.arange(num_cep) / lifter)
    cep[:, 0] = np.log(energy)
    return cep


def deepspeech_input(audio: np.ndarray, num_cep: int = 26, context: int = 9) -> np.ndarray:
    """DeepSpeech 0.1.0 input: every 2nd MFCC frame with 9 frames of context each side, standardised.

    Args:
        audio: 16 kHz samples in [-1, 1]  # [n_samples]

    Returns:
        network input  # [T, (2 * context + 1) * num_cep] float32, T at 50 Hz
    """
    pcm = np.clip(np.asarray(audio, dtype=np.float64) * 32767.0, -32768, 32767).astype(np.int16)
    feats = mfcc(pcm, num_cep=num_cep)[::2]  # the BiRNN runs at stride 2 -> 50 Hz
    padded = np.pad(feats, ((context, context), (0, 0)))
    win = np.lib.stride_tricks.sliding_window_view(padded, 2 * context + 1, axis=0)  # [T, C, W]
    inputs = win.transpose(0, 2, 1).reshape(len(feats), -1)
    return ((inputs - inputs.mean()) / inputs.std()).astype(np.float32)


def _load_deepspeech(weights) -> Callable[[np.ndarray], np.ndarray]:
    pb = Path(weights) if weights else DEEPSPEECH_PB
    if not pb.is_file():
        # As in the reference, this graph is a manual download (it is not on any model hub).
        raise FileNotFoundError(f"DeepSpeech 0.1.0 graph not found at {pb}: download "
                                f"deepspeech-0_1_0-b90017e8.pb (DeepSpeech v0.1.0 release, {DEEPSPEECH_URL}) "
                                f"to {DEEPSPEECH_PB} or pass --asr_weights <file.pb>")
    try:
        import tensorflow.compat.v1 as tf
    except ImportError as err:
        raise ImportError("the deepspeech engine needs TensorFlow (pip install tensorflow) to run "
                          f"{pb}; use --asr_model mel for the offline engine") from err
    tf.disable_v2_behavior()
    graph_def = tf.GraphDef()
    graph_def.ParseFromString(pb.read_bytes())
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(graph_def, name="ds")
    sess = tf.Session(graph=graph)
    logits = graph.get_tensor_by_name("ds/logits:0")
    node = graph.get_tensor_by_name("ds/input_node:0")
    lengths = graph.get_tensor_by_name("ds/input_lengths:0")

    def run(x: np.ndarray) -> np.ndarray:
        return sess.run(logits, feed_dict={node: x[None], lengths: [x.shape[0]]})[:, 0]

    return run


def deepspeech_features(audio: np.ndarray, weights=None, model=None) -> np.ndarray:
    """DeepSpeech 0.1.0 character logits at 50 Hz  # [round(duration * 50), 29].

    ``model`` maps the network input ``[T, 494]`` to logits ``[T, 29]`` (defaults to the frozen
    TensorFlow graph at ``weights``).
    """
    net = model if model is not None else _load_deepspeech(weights)
    logits = np.asarray(net(deepspeech_input(audio)), dtype=np.float64)  # [T, 29]
    # Re-time onto an exact 50 Hz grid of round(duration * 50) steps, as the reference does.
    n_out = int(round(len(audio) / SAMPLE_RATE * FEATURE_RATE))
    t_in = np.arange(len(logits)) / FEATURE_RATE
    t_out = np.arange(n_out) / FEATURE_RATE
    return np.stack([np.interp(t_out, t_in, logits[:, k]) for k in range(logits.shape[1])], 1)


# ---------------------------------------------------------------------------- entry point

def extract_features(audio: np.ndarray, sr: int = SAMPLE_RATE, engine: str = "mel",
                     n_frames: int | None = None, fps: float = 25, weights=None,
                     model=None, extractor=None) -> np.ndarray:
    """Audio features for each video frame.

    Args:
        audio: mono float32 samples in [-1, 1] at ``sr`` (16 kHz)  # [n_samples]
        engine: any ``--asr_model`` value: 'mel', 'deepspeech', a Hugging Face model id or a
            local folder of a HuBERT / wav2vec2-style model (aliases 'wav2vec', 'hubert')
        n_frames: frames to produce (default ``round(duration * fps)``); shorter audio is
            zero-padded, longer audio cropped
        fps: video frame rate
        weights: DeepSpeech's ``.pb``, or a local folder replacing the named model's download
        model: an already-built model to use instead of loading one (tests, reuse); for
            deepspeech a callable ``[T, 494] -> [T, 29]``
        extractor: the feature extractor going with ``model`` (None: normalise the wave)

    Returns:
        mel ``[n_frames, 16, 32]``, deepspeech ``[n_frames, 16, 29]``, CTC models (wav2vec2)
        ``[n_frames, 16, vocab_size]``, other models (HuBERT) ``[n_frames, 2, hidden_size]``; float32
    """
    kind = engine_for(engine)
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1 or audio.size == 0:
        raise ValueError(f"extract_features expects non-empty mono audio [n_samples], got {audio.shape}")
    if sr != SAMPLE_RATE:
        raise ValueError(f"extract_features expects {SAMPLE_RATE} Hz audio, got {sr} Hz (load it with load_audio)")
    if n_frames is None:
        n_frames = default_n_frames(len(audio), sr, fps)
    if n_frames <= 0:
        raise ValueError(f"n_frames must be positive, got {n_frames}")
    if kind == "mel":
        return frame_windows(mel_features(audio, sr), n_frames, fps)
    if kind == "deepspeech":
        return frame_windows(deepspeech_features(audio, weights, model), n_frames, fps)
    seq, ctc = speech_features(audio, engine, weights, model, extractor)
    if ctc:
        return frame_windows(seq, n_frames, fps)
    return frame_windows(seq, n_frames, fps, win=2, offset=0)
