"""Audio-lip sync score that needs no downloaded model.

The mouth opening per frame (inner-lip gap from 68 iBUG landmarks, divided by the distance
between the eye centres so it is independent of the face size) is correlated with the audio
energy envelope sampled at the same frames. Speech energy rises while the mouth opens, so a
well-synced video correlates best at lag 0; a video whose mouth lags the audio by k frames
correlates best at lag +k.

    opening = mouth_opening(lms)                         # [N]
    envelope = audio_envelope(audio, 16000, frame_ids=aud_ids)   # [N]
    sync_score(opening, envelope)    # {"corr_at_0", "best_lag", "best_corr", ...}

Missing landmarks are NaN rows in ``lms``; those frames are left out of the correlation.
"""
from __future__ import annotations

import numpy as np

FPS = 25
WINDOW_S = 0.04  # one 25 fps frame of audio around each frame time
# Inner-lip pairs (upper, lower): 61-67, 62-66, 63-65 of the iBUG-68 layout.
INNER_LIP_PAIRS = ((61, 67), (62, 66), (63, 65))
FLOOR_DB = 60.0  # energies more than this below the loudest frame count as silence
MIN_OVERLAP = 8  # fewest valid frame pairs for a correlation at one lag


def mouth_opening(lms: np.ndarray) -> np.ndarray:
    """Inner-lip opening per frame, in units of the interocular distance.

    Args:
        lms: iBUG-68 landmarks in pixels (x = column, y = row); a frame without a detection
            may be all NaN  # [N, 68, 2]
    Returns:
        mean gap of the pairs 61-67, 62-66, 63-65 divided by the distance between the mean
        of points 36-41 and of 42-47; NaN where the landmarks are missing  # [N]
    """
    lms = np.asarray(lms, dtype=np.float64)
    if lms.ndim != 3 or lms.shape[1:] != (68, 2):
        raise ValueError(f"mouth_opening needs landmarks [N, 68, 2], got {lms.shape}")
    upper = lms[:, [a for a, _ in INNER_LIP_PAIRS]]  # [N, 3, 2]
    lower = lms[:, [b for _, b in INNER_LIP_PAIRS]]
    gap = np.linalg.norm(upper - lower, axis=-1).mean(axis=1)  # [N]
    eyes = np.linalg.norm(lms[:, 36:42].mean(axis=1) - lms[:, 42:48].mean(axis=1), axis=-1)  # [N]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(eyes > 0, gap / eyes, np.nan)


def audio_envelope(audio: np.ndarray, sr: int, n_frames: int | None = None, fps: float = FPS,
                   frame_ids=None, offset_frames: float = 0.0) -> np.ndarray:
    """Log energy of the audio in a 40 ms window centred on each video frame.

    Args:
        audio: mono samples (stereo [n, 2] is averaged)  # [n_samples]
        sr: sample rate in Hz.
        n_frames: frames 0..n_frames-1 (used when ``frame_ids`` is None).
        fps: video frame rate.
        frame_ids: audio frame index of each video frame (``aud_id`` of transforms_*.json)  # [N]
        offset_frames: shift added to every frame time, in frames (positive = later audio).
    Returns:
        energy in dB relative to the loudest frame, floored at -60 dB; windows outside the
        audio count as silence  # [N]
    """
    audio = np.asarray(audio, dtype=np.float64)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    if audio.ndim != 1 or audio.size == 0:
        raise ValueError(f"audio must be non-empty mono [n] or stereo [n, 2], got shape {audio.shape}")
    if frame_ids is None:
        if n_frames is None:
            raise ValueError("audio_envelope needs n_frames or frame_ids")
        frame_ids = np.arange(n_frames)
    frames = np.asarray(frame_ids, dtype=np.float64) + offset_frames  # [N]
    half = max(1, int(round(WINDOW_S * sr / 2)))
    centres = np.round(frames * sr / fps).astype(np.int64)
    # Cumulative energy with `half` zeros either side makes every window a difference of two sums.
    csum = np.concatenate([[0.0], np.cumsum(np.pad(audio, (half, half)) ** 2)])
    lo = np.clip(centres, 0, audio.size + 2 * half)  # padded index of the window start
    hi = np.clip(centres + 2 * half, 0, audio.size + 2 * half)
    energy = (csum[hi] - csum[lo]) / (2 * half)  # [N] mean square
    db = 10 * np.log10(np.maximum(energy, 1e-20))
    return np.maximum(db - db.max(), -FLOOR_DB)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else float("nan")


def lagged_correlations(opening: np.ndarray, envelope: np.ndarray, max_lag: int = 10) -> np.ndarray:
    """Pearson correlation of ``opening[t]`` with ``envelope[t - lag]`` for lag = -L..L.

    Args:
        opening: mouth opening per frame, NaN = unknown  # [N]
        envelope: audio energy per frame  # [N]
        max_lag: L, in frames.
    Returns:
        correlation per lag (NaN where fewer than 8 valid pairs overlap or a side is
        constant)  # [2L + 1]
    """
    opening = np.asarray(opening, dtype=np.float64)
    envelope = np.asarray(envelope, dtype=np.float64)
    if opening.shape != envelope.shape or opening.ndim != 1:
        raise ValueError(f"opening and envelope must be [N] of the same length, got {opening.shape} "
                         f"and {envelope.shape}")
    if max_lag < 0:
        raise ValueError(f"max_lag must be >= 0, got {max_lag}")
    n = opening.size
    out = np.full(2 * max_lag + 1, np.nan)
    for i, lag in enumerate(range(-max_lag, max_lag + 1)):
        t = np.arange(max(0, lag), min(n, n + lag))  # mouth frames whose audio frame t - lag exists
        a, b = opening[t], envelope[t - lag]
        ok = np.isfinite(a) & np.isfinite(b)
        if ok.sum() >= MIN_OVERLAP:
            out[i] = _pearson(a[ok], b[ok])
    return out


def sync_score(opening: np.ndarray, envelope: np.ndarray, max_lag: int = 10) -> dict:
    """Audio-lip sync summary of one sequence.

    Args:
        opening: mouth opening per frame (:func:`mouth_opening`)  # [N]
        envelope: audio energy per frame (:func:`audio_envelope`)  # [N]
        max_lag: lags -max_lag..max_lag frames are searched.
    Returns:
        ``corr_at_0`` (correlation without shift), ``best_lag`` (frames, positive = the mouth
        lags the audio), ``best_corr``, ``corr`` (list over the lags), ``max_lag`` and
        ``frames`` (frames with landmarks). Values are None when no lag had enough frames.
    """
    corr = lagged_correlations(opening, envelope, max_lag)
    valid = np.isfinite(corr)
    best = int(np.nanargmax(corr)) if valid.any() else None
    return {
        "corr_at_0": None if not valid[max_lag] else round(float(corr[max_lag]), 4),
        "best_lag": None if best is None else best - max_lag,
        "best_corr": None if best is None else round(float(corr[best]), 4),
        "corr": [None if not np.isfinite(c) else round(float(c), 4) for c in corr],
        "max_lag": int(max_lag),
        "frames": int(np.isfinite(np.asarray(opening, dtype=np.float64)).sum()),
    }


# ---------------------------------------------------------------------------- per-subject predictor

CENTRE_STEPS = slice(6, 10)  # 80 ms of 50 Hz feature steps around each frame's own time
RIDGE = 100.0


class OpeningRegressor:
    """Ridge regression from a frame's audio features to its mouth opening, fitted on one
    subject's training frames.

    The energy envelope is a weak proxy of the mouth (quiet consonants close it, loud vowels
    of any shape open it): on 115-frame windows of a real video's own GT it scores anything
    from -0.26 to 0.63. The opening this regressor predicts from the audio correlates with the
    GT opening of held-out windows at 0.44-0.71 (french.mp4, 5 windows), so a render's lips are
    scored against it instead (``corr_pred``), and against it the GT video's own windows set the
    scale (``scripts/crossval.py`` reports both).

    Args:
        windows: per-frame feature windows (``aud.npy`` layout, 16 steps)  # [N, 16, A]
        opening: mouth opening of those frames (:func:`mouth_opening`), NaN = unknown  # [N]
        ridge: L2 penalty on the standardised inputs.
    """

    def __init__(self, windows: np.ndarray, opening: np.ndarray, ridge: float = RIDGE):
        x = self._inputs(windows)
        y = np.asarray(opening, dtype=np.float64)
        ok = np.isfinite(y) & np.isfinite(x).all(axis=1)
        if ok.sum() < MIN_OVERLAP:
            raise ValueError(f"the opening regressor needs at least {MIN_OVERLAP} frames with landmarks, "
                             f"got {int(ok.sum())}")
        x, y = x[ok], y[ok]
        self.mean, self.std = x.mean(axis=0), x.std(axis=0) + 1e-6
        z = (x - self.mean) / self.std
        self.bias = y.mean()
        self.weights = np.linalg.solve(z.T @ z + ridge * np.eye(z.shape[1]), z.T @ (y - self.bias))

    @staticmethod
    def _inputs(windows: np.ndarray) -> np.ndarray:
        windows = np.asarray(windows, dtype=np.float64)
        if windows.ndim != 3 or windows.shape[1] < CENTRE_STEPS.stop:
            raise ValueError(f"feature windows must be [N, 16, A], got {windows.shape}")
        return windows[:, CENTRE_STEPS].reshape(len(windows), -1)

    def predict(self, windows: np.ndarray) -> np.ndarray:
        """Predicted opening of each window  # [M]."""
        return (self._inputs(windows) - self.mean) / self.std @ self.weights + self.bias
