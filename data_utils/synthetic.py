"""A synthetic talking subject: a complete ER-NeRF training folder made without any real video.

``python data_utils/synthetic.py OUT_DIR [--frames N] [--size S] [--seed K]`` writes the same
files ``data_utils/process.py`` produces (see :func:`make_synthetic_subject`).

The subject is an analytic 3-D head (ellipsoid skull with a dropping jaw, nose bump, eyes that
close with the blink track, eyebrows, hair, lips whose opening follows the audio) ray-cast per
pixel through exactly the rays ``nerf_triplane.provider`` builds, over a static textured
background and a 2-D neck/shoulders layer that follows the head. The audio is speech-like
(voiced syllables through vowel formants, consonant bursts, pauses); the mouth opening of frame
``i`` is the smoothed loudness of the audio around ``i / fps``, so the audio features determine
the mouth.

Geometry (NeRF frame = head frame, metres-like units): head centre ``HEAD_CENTER``, face towards
+z, up +y, subject's right towards -x (image left). The camera sits ``CAMERA_DISTANCE`` in front
(as the tracked Obama poses: 0.76) with small smooth rotations/translations; with ``--scale 4``
every head point lies inside the renderer's box (-1, -0.5, -1)..(1, 0.5, 1).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: make the repository root importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2
import numpy as np
import torch

from data_utils.atomic import atomic_dir
from data_utils.audio import SAMPLE_RATE, write_wav
from nerf_triplane.poses import nerf_matrix_to_ngp, tracked_to_c2w
from nerf_triplane.rays import all_pixels, rays_from_pixels

FPS = 25
POSE_SCALE = 4.0  # --scale default: the synthetic head is sized for it
CAMERA_DISTANCE = 0.76
# Rest head position in the camera (tracker convention, c2w units): slightly above the centre.
REST_TRANSLATION = np.array([0.0, 0.04, -CAMERA_DISTANCE])
FOCAL_PER_PIXEL = 2.0  # focal length / image size
HEAD_CENTER = np.array([0.0, 0.0, -0.02])
HEAD_AXES = np.array([0.075, 0.1, 0.095])  # semi-axes x, y (upper half), z
JAW_DROP = 0.08  # lower-half y semi-axis grows by this fraction at full mouth opening
NOSE_CENTER = np.array([0.0, -0.006, 0.062])
NOSE_AXES = np.array([0.011, 0.028, 0.024])
LIGHT = np.array([0.35, 0.45, 1.0]) / np.linalg.norm([0.35, 0.45, 1.0])

# Face-surface coordinates (u, v) = (x / ax, y / ay) of the features on the front of the head.
EYE_U, EYE_V, EYE_HALF_W, EYE_HALF_H = 0.38, 0.2, 0.17, 0.075
MOUTH_V, MOUTH_HALF_W, LIP_WIDTH, MOUTH_MAX_OPEN = -0.5, 0.3, 0.06, 0.13
INNER_HALF_W = 0.26

SKIN = np.array([0.86, 0.66, 0.53])
HAIR = np.array([0.18, 0.12, 0.08])
LIPS = np.array([0.72, 0.33, 0.33])
MOUTH_INSIDE = np.array([0.22, 0.05, 0.06])
TEETH = np.array([0.92, 0.9, 0.85])
SCLERA = np.array([0.95, 0.94, 0.92])
IRIS = np.array([0.25, 0.17, 0.1])
BROW = np.array([0.2, 0.13, 0.09])
SHIRT = np.array([0.16, 0.24, 0.42])

# Parsing colours as the reference's face-parsing step stores them with cv2 (B, G, R order).
PARSING_BGR = {"background": (255, 255, 255), "head": (255, 0, 0), "neck": (0, 255, 0),
               "torso": (0, 0, 255)}
BG, HEAD, NECK, TORSO = 0, 1, 2, 3

VOWEL_FORMANTS = np.array([  # F1, F2, F3 in Hz: a, e, i, o, u
    [730, 1090, 2440], [530, 1840, 2480], [270, 2290, 3010], [570, 840, 2410], [300, 870, 2240]])


# ---------------------------------------------------------------------------- audio

def make_speech_like_audio(seconds: float, seed: int = 0, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Speech-like mono audio: voiced syllables, consonant bursts and pauses.

    Each syllable (0.12-0.32 s) is a harmonic source (f0 100-180 Hz with slow drift and
    declination) shaped by one vowel's three formants and a smooth loudness arch, sometimes
    preceded by a 20-50 ms noise burst; gaps are short (20-80 ms) or pauses (0.25-0.6 s).

    Returns:
        samples in [-0.8, 0.8], float32  # [round(seconds * sr)]
    """
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    audio = np.zeros(n, dtype=np.float64)
    t0 = rng.uniform(0.15, 0.35)
    f0_base = rng.uniform(100, 150)
    while True:
        dur = rng.uniform(0.12, 0.32)
        start = int(t0 * sr)
        if start + int(dur * sr) >= n:
            break
        audio[start:start + int(dur * sr)] += _syllable(dur, f0_base, rng, sr)
        gap = rng.uniform(0.25, 0.6) if rng.random() < 0.2 else rng.uniform(0.02, 0.08)
        t0 += dur + gap
    audio += rng.normal(0, 1e-4, n)
    peak = np.abs(audio).max()
    return (audio / peak * 0.8).astype(np.float32) if peak > 0 else audio.astype(np.float32)


def _syllable(dur: float, f0_base: float, rng: np.random.Generator, sr: int) -> np.ndarray:
    m = int(dur * sr)
    t = np.arange(m) / sr
    f0 = f0_base * rng.uniform(0.85, 1.2) * (1 - 0.12 * t / dur) * (1 + 0.02 * np.sin(2 * np.pi * 5 * t))
    phase = 2 * np.pi * np.cumsum(f0) / sr  # [m]
    formants = VOWEL_FORMANTS[rng.integers(len(VOWEL_FORMANTS))] * rng.uniform(0.92, 1.08)
    bandwidths = np.array([80.0, 110.0, 160.0])
    k = np.arange(1, int(4000 / f0.mean()) + 1)  # harmonics below 4 kHz
    freqs = k * f0.mean()
    gain = sum(1.0 / (1 + ((freqs - F) / B) ** 2) for F, B in zip(formants, bandwidths))
    gain = gain / np.sqrt(k)
    voiced = (gain[:, None] * np.sin(k[:, None] * phase[None])).sum(0)
    voiced /= np.abs(voiced).max() + 1e-9
    env = np.sin(np.pi * t / dur) ** 0.8 * rng.uniform(0.5, 1.0)
    out = voiced * env
    if rng.random() < 0.6:
        burst = min(m, int(rng.uniform(0.02, 0.05) * sr))
        noise = np.diff(rng.normal(0, 1, burst + 1))  # first difference: a hiss, not a rumble
        out[:burst] += 0.25 * noise * np.hanning(burst)
    return out


def mouth_opening(audio: np.ndarray, n_frames: int, fps: float = FPS, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Mouth opening per video frame from the audio loudness around ``i / fps``.

    RMS over +-30 ms, normalised between the 10th and 97th percentile, clipped to [0, 1] and
    smoothed over 3 frames (weights 1/4, 1/2, 1/4).

    Returns:
        opening in [0, 1]  # [n_frames]
    """
    audio = np.asarray(audio, dtype=np.float64)
    half = int(0.03 * sr)
    padded = np.pad(audio, (half, half + int(sr / fps) + 1))
    centers = (np.arange(n_frames) * sr / fps).astype(np.int64) + half
    csum = np.concatenate([[0.0], np.cumsum(padded ** 2)])
    rms = np.sqrt((csum[centers + half] - csum[centers - half]) / (2 * half))
    lo, hi = np.percentile(rms, 10), np.percentile(rms, 97)
    opening = np.clip((rms - lo) / max(hi - lo, 1e-9), 0, 1)
    padded_open = np.pad(opening, 1, mode="edge")
    return 0.25 * padded_open[:-2] + 0.5 * padded_open[1:-1] + 0.25 * padded_open[2:]


# ---------------------------------------------------------------------------- motion and blinks

def _smooth_track(n: int, rng: np.random.Generator, std: float, max_abs: float) -> np.ndarray:
    """A smooth random 1-D signal: 4 sinusoids of 0.03-0.35 Hz, scaled to ``std``  # [n]."""
    t = np.arange(n) / FPS
    sig = sum(np.sin(2 * np.pi * rng.uniform(0.03, 0.35) * t + rng.uniform(0, 2 * np.pi))
              * rng.uniform(0.5, 1.0) for _ in range(4))
    sig = sig / (sig.std() + 1e-9) * std
    return np.clip(sig, -max_abs, max_abs)


def make_head_motion(n_frames: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Tracker-style head poses: Euler angles (std 3-4 deg, |.| <= 10 deg) and translation.

    Returns:
        euler radians  # [N, 3]; trans (10x the c2w units, like the tracker)  # [N, 3]
    """
    deg = np.pi / 180
    euler = np.stack([_smooth_track(n_frames, rng, s * deg, 10 * deg) for s in (3.5, 4.0, 2.5)], 1)
    trans = np.stack([_smooth_track(n_frames, rng, s, 3 * s) for s in (0.006, 0.006, 0.008)], 1)
    return euler, (trans + REST_TRANSLATION) * 10


def make_blinks(n_frames: int, rng: np.random.Generator) -> np.ndarray:
    """OpenFace-like AU45_r track: low noise plus 0.2-0.3 s blinks every 2-5 s  # [N], 0..~2.6."""
    au = np.abs(rng.normal(0, 0.08, n_frames))
    t = rng.uniform(0.5, 2.0)
    while t * FPS < n_frames:
        c, width, peak = t * FPS, rng.uniform(2.5, 3.5), rng.uniform(1.9, 2.6)
        frames = np.arange(n_frames)
        au += peak * np.exp(-0.5 * ((frames - c) / (width / 2.355)) ** 2)
        t += rng.uniform(2.0, 5.0)
    return au.astype(np.float32)


# ---------------------------------------------------------------------------- textures

class SmoothNoise:
    """Sum of random plane waves: smooth, deterministic noise in roughly [-1, 1].

    Args:
        dim: input dimension; freqs: (low, high) angular frequency per input unit.
    """

    def __init__(self, rng: np.random.Generator, dim: int, freqs: tuple[float, float], waves: int = 12):
        dirs = rng.normal(size=(waves, dim))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        self.w = dirs * rng.uniform(*freqs, size=(waves, 1))  # [K, dim]
        self.phase = rng.uniform(0, 2 * np.pi, waves)
        self.amp = rng.uniform(0.5, 1.0, waves)
        self.amp /= np.sqrt((self.amp ** 2).sum() / 2)

    def __call__(self, p: np.ndarray) -> np.ndarray:
        """p: points  # [..., dim] -> noise  # [...]"""
        return (np.sin(p @ self.w.T + self.phase) * self.amp).sum(-1)


def make_background(size: int, rng: np.random.Generator) -> np.ndarray:
    """Static wall-like background: warm gradient, soft blotches, a window frame  # [S, S, 3]."""
    rows, cols = np.mgrid[0:size, 0:size] / size
    pts = np.stack([rows, cols], -1)
    base = np.array([0.62, 0.6, 0.55]) + 0.12 * (cols[..., None] - 0.5) * np.array([1, 0.6, 0.2])
    blotch = SmoothNoise(rng, 2, (4, 14))(pts)[..., None] * np.array([0.05, 0.05, 0.04])
    img = base - 0.08 * rows[..., None] + blotch
    frame = (np.abs(cols - 0.82) < 0.12) & (rows > 0.08) & (rows < 0.55)
    inner = (np.abs(cols - 0.82) < 0.1) & (rows > 0.1) & (rows < 0.53)
    img[frame & ~inner] = [0.35, 0.27, 0.2]
    img[inner] = np.array([0.7, 0.8, 0.9]) + 0.05 * SmoothNoise(rng, 2, (8, 20))(pts[inner])[:, None]
    return np.clip(img, 0, 1)


# ---------------------------------------------------------------------------- head geometry

def _ellipsoid_hit(o: np.ndarray, d: np.ndarray, center: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """Nearest positive ray parameter where rays hit an ellipsoid, inf on a miss  # [N]."""
    os_, ds = (o - center) / axes, d / axes
    a = (ds * ds).sum(-1)
    b = 2 * (os_ * ds).sum(-1)
    c = (os_ * os_).sum(-1) - 1
    disc = b * b - 4 * a * c
    t = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
    return np.where((disc > 0) & (t > 0), t, np.inf)


def head_axes(opening: float) -> tuple[np.ndarray, np.ndarray]:
    """Semi-axes of the upper and lower head halves (the jaw drops as the mouth opens)."""
    lower = HEAD_AXES.copy()
    lower[1] *= 1 + JAW_DROP * opening
    return HEAD_AXES, lower


def intersect_head(o: np.ndarray, d: np.ndarray, opening: float) -> tuple[np.ndarray, np.ndarray]:
    """First hit of rays with the head (two half-ellipsoids + nose), in the head frame.

    Args:
        o, d: ray origins and unit directions  # [N, 3]
    Returns:
        t (inf on a miss)  # [N]; part: 0 skull, 1 nose  # [N]
    """
    upper, lower = head_axes(opening)
    t_up = _ellipsoid_hit(o, d, HEAD_CENTER, upper)
    t_lo = _ellipsoid_hit(o, d, HEAD_CENTER, lower)
    y_up = o[:, 1] + np.where(np.isfinite(t_up), t_up, 0) * d[:, 1]
    y_lo = o[:, 1] + np.where(np.isfinite(t_lo), t_lo, 0) * d[:, 1]
    t_up = np.where(y_up >= HEAD_CENTER[1], t_up, np.inf)
    t_lo = np.where(y_lo < HEAD_CENTER[1], t_lo, np.inf)
    t_skull = np.minimum(t_up, t_lo)
    t_nose = _ellipsoid_hit(o, d, NOSE_CENTER, NOSE_AXES)
    return np.minimum(t_skull, t_nose), (t_nose < t_skull).astype(np.int64)


def face_uv(p: np.ndarray, opening: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Face-surface coordinates of head-frame points: u, v (in semi-axes), w = depth  # [N] each."""
    upper, lower = head_axes(opening)
    q = p - HEAD_CENTER
    ay = np.where(q[:, 1] >= 0, upper[1], lower[1])
    return q[:, 0] / upper[0], q[:, 1] / ay, q[:, 2] / upper[2]


def surface_point(u: np.ndarray, v: np.ndarray, opening: float) -> np.ndarray:
    """Head-frame point on the front of the skull at face coordinates (u, v)  # [N, 3]."""
    upper, lower = head_axes(opening)
    ay = np.where(v >= 0, upper[1], lower[1])
    w = np.sqrt(np.clip(1 - u ** 2 - v ** 2, 0, 1))
    return HEAD_CENTER + np.stack([u * upper[0], v * ay, w * upper[2]], -1)


def mouth_half_height(du: np.ndarray, opening: float, half_w: float) -> np.ndarray:
    """Half height (in v) of a lens-shaped mouth contour at horizontal offset ``du``."""
    return MOUTH_MAX_OPEN * opening * np.clip(1 - (du / half_w) ** 2, 0, 1)


def lips_half_height(du: np.ndarray, opening: float) -> np.ndarray:
    """Half height (in v) of the outer lip contour: the opening plus the lip thickness."""
    thickness = LIP_WIDTH * np.sqrt(np.clip(1 - (du / MOUTH_HALF_W) ** 2, 0, 1))
    return mouth_half_height(du, opening, MOUTH_HALF_W) + thickness


def eye_half_height(du: np.ndarray, closure: float) -> np.ndarray:
    """Half height (in v) of the visible eye opening; ``closure`` 1 = shut."""
    return EYE_HALF_H * (1 - closure) * np.sqrt(np.clip(1 - (du / EYE_HALF_W) ** 2, 0, 1))


def shade_head(p: np.ndarray, part: np.ndarray, opening: float, closure: float,
               skin_noise: SmoothNoise, hair_noise: SmoothNoise) -> np.ndarray:
    """Albedo x Lambert shading of head surface points (light fixed to the head)  # [N, 3]."""
    upper, lower = head_axes(opening)
    q = p - HEAD_CENTER
    axes = np.where(q[:, 1:2] >= 0, upper, lower)
    normal = np.where(part[:, None] == 1, (p - NOSE_CENTER) / NOSE_AXES ** 2, q / axes ** 2)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    u, v, w = face_uv(p, opening)

    col = SKIN * (1 + 0.05 * skin_noise(p * 60)[:, None] + 0.02 * skin_noise(p * 400)[:, None])
    cheek = np.exp(-((np.abs(u) - 0.5) ** 2 + (v + 0.25) ** 2) / 0.03)
    col = col * (1 - 0.08 * cheek[:, None]) + 0.08 * cheek[:, None] * np.array([0.9, 0.45, 0.45])

    nostril = (part == 1) & (normal[:, 1] < -0.55) & (np.abs(np.abs(q[:, 0]) - 0.005) < 0.0035)
    col[nostril] = [0.35, 0.2, 0.16]

    for side in (-1.0, 1.0):
        du, dv = u - side * EYE_U, v - EYE_V
        brow_v = 0.17 + 0.035 * (1 - (du / 0.2) ** 2)
        brow = (np.abs(du) < 0.2) & (np.abs(dv - brow_v) < 0.035) & (w > 0) & (part == 0)
        col[brow] = BROW * (1 + 0.2 * hair_noise(p[brow] * 300)[:, None])
        socket = (np.abs(du) < EYE_HALF_W) & (np.abs(dv) < EYE_HALF_H * np.sqrt(
            np.clip(1 - (du / EYE_HALF_W) ** 2, 0, 1))) & (w > 0) & (part == 0)
        col[socket] *= 0.88  # eyelid skin
        open_ = socket & (np.abs(dv) < eye_half_height(du, closure))
        iris = open_ & (du ** 2 + (dv / 1.2) ** 2 < 0.065 ** 2)
        col[open_] = SCLERA
        col[iris] = IRIS
        col[iris & (du ** 2 + dv ** 2 < 0.025 ** 2)] = [0.05, 0.04, 0.04]

    du, dv = u, v - MOUTH_V
    front = (w > 0) & (part == 0)
    inner_h = mouth_half_height(du, opening, INNER_HALF_W)
    lips = front & (np.abs(du) < MOUTH_HALF_W) & (np.abs(dv) < lips_half_height(du, opening))
    inside = front & (np.abs(du) < INNER_HALF_W) & (np.abs(dv) < inner_h)
    col[lips] = LIPS * (1 + 0.04 * skin_noise(p[lips] * 200)[:, None])
    col[inside] = MOUTH_INSIDE
    teeth = inside & (dv > inner_h * 0.45) & (opening > 0.25)
    col[teeth] = TEETH

    hairline = 0.55 - 0.25 * u ** 2 + 0.03 * hair_noise(p * 40) - 0.9 * np.clip(-w + 0.35, 0, 1)
    hair = (v > hairline) & (part == 0)
    col[hair] = HAIR * (1 + 0.35 * hair_noise(p[hair] * np.array([250, 40, 250]))[:, None])

    shade = 0.42 + 0.58 * np.clip(normal @ LIGHT, 0, 1)
    return np.clip(col * shade[:, None], 0, 1)


# ---------------------------------------------------------------------------- landmarks

def head_landmarks_3d(opening: float, closure: float) -> np.ndarray:
    """The 68 iBUG landmarks on the head surface (head frame)  # [68, 3].

    Order: jaw 0-16 (image left to right), brows 17-26, nose bridge 27-30, nose base 31-35,
    eyes 36-47 (outer corner first, clockwise on screen), outer lips 48-59, inner lips 60-67.
    """
    uv = []
    phi = np.linspace(0, np.pi, 17)
    uv += list(zip(-0.86 * np.cos(phi), 0.18 - 1.06 * np.sin(phi)))
    brow_du = np.linspace(-0.18, 0.18, 5)
    for side in (-1, 1):
        uv += list(zip(side * EYE_U + brow_du, EYE_V + 0.17 + 0.035 * (1 - (brow_du / 0.2) ** 2)))
    uv += [(0.0, v) for v in (0.12, 0.02, -0.08, -0.18)]
    uv += [(x, -0.3) for x in (-0.16, -0.08, 0.0, 0.08, 0.16)]
    # Both eyes list their left corner, upper lid, right corner, lower lid (screen clockwise).
    eye_du = np.array([-1, -1 / 3, 1 / 3, 1, 1 / 3, -1 / 3]) * EYE_HALF_W
    eye_sign = np.array([0, 1, 1, 0, -1, -1])
    for side in (-1, 1):
        uv += list(zip(side * EYE_U + eye_du, EYE_V + eye_sign * eye_half_height(eye_du, closure)))
    # Lips: left corner, upper contour to the right corner, lower contour back (iBUG order).
    outer_du = np.array([-3, -2, -1, 0, 1, 2, 3, 2, 1, 0, -1, -2]) * MOUTH_HALF_W / 3
    outer_sign = np.array([0, 1, 1, 1, 1, 1, 0, -1, -1, -1, -1, -1])
    uv += list(zip(outer_du, MOUTH_V + outer_sign * lips_half_height(outer_du, opening)))
    inner_du = np.array([-2, -1, 0, 1, 2, 1, 0, -1]) * INNER_HALF_W / 2
    inner_sign = np.array([0, 1, 1, 1, 0, -1, -1, -1])
    uv += list(zip(inner_du, MOUTH_V + inner_sign * mouth_half_height(inner_du, opening, INNER_HALF_W)))
    uv = np.array(uv, dtype=np.float64)
    return surface_point(uv[:, 0], uv[:, 1], opening)


def project_points(points: np.ndarray, c2w_nerf: np.ndarray, focal: float, cx: float, cy: float) -> np.ndarray:
    """Project head-frame points into the image of a NeRF c2w camera.

    Returns:
        (x = column, y = row) with pixel k's centre at k (FAN convention)  # [N, 2]
    """
    rot, t = c2w_nerf[:3, :3], c2w_nerf[:3, 3]
    cam = (points - t) @ rot  # camera frame, looking down -z, +y up
    x = focal * cam[:, 0] / -cam[:, 2] + cx
    y = -focal * cam[:, 1] / -cam[:, 2] + cy
    return np.stack([x, y], -1) - 0.5


# ---------------------------------------------------------------------------- frames

@dataclass(frozen=True)
class Camera:
    """Pinhole intrinsics of the synthetic video (square pixels, centred principal point)."""

    size: int

    @property
    def focal(self) -> float:
        return FOCAL_PER_PIXEL * self.size

    @property
    def center(self) -> float:
        return self.size / 2


@dataclass
class Textures:
    """Per-subject random textures (fixed by the seed)."""

    skin: SmoothNoise
    hair: SmoothNoise
    shirt: np.ndarray  # cloth folds on a [2S, 2S] canvas, sliced where the torso is
    background: np.ndarray  # [S, S, 3]

    @classmethod
    def make(cls, rng: np.random.Generator, size: int) -> "Textures":
        canvas = np.stack(np.mgrid[0:2 * size, 0:2 * size], -1).astype(np.float64)
        shirt = SmoothNoise(rng, 2, (0.05, 0.4))(canvas)
        return cls(SmoothNoise(rng, 3, (0.6, 1.6)), SmoothNoise(rng, 3, (0.6, 1.6)), shirt,
                   make_background(size, rng))


def head_rays(c2w_nerf: np.ndarray, cam: Camera) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel rays in the head frame, built by the provider's own ray code.

    The NeRF pose goes through ``nerf_matrix_to_ngp`` (scale 4) and ``rays_from_pixels``, and
    the ngp rays are mapped back (ngp x, y, z = nerf y, z, x, times the scale), so the images
    agree with the rays the model is trained on to float precision.

    Returns:
        origins, unit directions, row-major pixels  # [S*S, 3] each
    """
    pose = torch.from_numpy(nerf_matrix_to_ngp(c2w_nerf, POSE_SCALE))[None]
    intr = (cam.focal, cam.focal, cam.center, cam.center)
    rays = rays_from_pixels(pose, intr, cam.size, all_pixels(cam.size, cam.size))
    o = rays["rays_o"][0].double().numpy()[:, [2, 0, 1]] / POSE_SCALE
    d = rays["rays_d"][0].double().numpy()[:, [2, 0, 1]]
    return o, d


def body_layer(head_px: np.ndarray, rest_px: np.ndarray, cam: Camera,
               tex: Textures) -> tuple[np.ndarray, np.ndarray]:
    """Neck and shoulders drawn in image space, following the head at 35 %.

    Args:
        head_px: projected head centre (x, y) this frame; rest_px: at the rest pose.
    Returns:
        RGB  # [S, S, 3]; labels (BG / NECK / TORSO)  # [S, S]
    """
    S = cam.size
    R = cam.focal * HEAD_AXES[1] / CAMERA_DISTANCE  # head half height in pixels
    rows, cols = np.mgrid[0:S, 0:S].astype(np.float64)
    follow = rest_px + 0.35 * (head_px - rest_px)
    shoulder = follow[1] + 1.2 * R
    labels = np.zeros((S, S), dtype=np.int64)
    rgb = np.zeros((S, S, 3))

    frac = np.clip((rows - head_px[1]) / max(shoulder + 0.8 * R - head_px[1], 1.0), 0, 1)
    neck_x = head_px[0] + (follow[0] - head_px[0]) * frac
    neck_hw = 0.55 * cam.focal * HEAD_AXES[0] / CAMERA_DISTANCE
    dxn = (cols - neck_x) / neck_hw
    neck = (np.abs(dxn) < 1) & (rows >= head_px[1]) & (rows < shoulder + 0.8 * R)
    labels[neck] = NECK
    chin_shadow = np.clip((rows - head_px[1] - R) / (0.4 * R), 0, 1)
    neck_shade = (0.6 + 0.3 * np.sqrt(np.clip(1 - dxn ** 2, 0, 1))) * (0.75 + 0.25 * chin_shadow)
    rgb[neck] = (SKIN * 0.95)[None] * neck_shade[neck][:, None]

    dx = cols - follow[0]
    torso = rows >= shoulder + 0.45 * R * (dx / (1.4 * R)) ** 2
    collar = np.abs(dx) < 0.5 * R - 0.7 * (rows - shoulder)  # V-neck showing the neck
    torso &= ~(collar & neck)
    labels[torso] = TORSO
    # The cloth pattern moves with the shoulders (integer shift of the fold canvas).
    r0 = int(np.clip(np.round(S / 2 - follow[1] + rest_px[1]), 0, S))
    c0 = int(np.clip(np.round(S / 2 - follow[0] + rest_px[0]), 0, S))
    fold = tex.shirt[r0:r0 + S, c0:c0 + S]
    shade = 0.75 + 0.25 * np.clip(1 - np.abs(dx) / (2.5 * R), 0, 1)
    rgb[torso] = SHIRT * (shade[torso] * (1 + 0.12 * fold[torso]))[:, None]
    return np.clip(rgb, 0, 1), labels


def render_frame(c2w_nerf: np.ndarray, cam: Camera, opening: float, closure: float,
                 rest_px: np.ndarray, tex: Textures) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one frame.

    Args:
        c2w_nerf: NeRF camera-to-world  # [4, 4]
        opening: mouth opening in [0, 1]; closure: eyelid closure in [0, 1] (1 = shut).
        rest_px: projected head centre at the rest pose (anchors the body layer)  # [2]
    Returns:
        image RGB in [0, 1]  # [S, S, 3]; labels BG/HEAD/NECK/TORSO  # [S, S];
        torso RGBA (neck + shoulders, also behind the head)  # [S, S, 4]
    """
    S = cam.size
    head_px = project_points(HEAD_CENTER[None], c2w_nerf, cam.focal, cam.center, cam.center)[0] + 0.5
    body_rgb, labels = body_layer(head_px, rest_px, cam, tex)
    alpha = (labels > 0).astype(np.float64)
    torso_rgba = np.concatenate([body_rgb * alpha[..., None], alpha[..., None]], -1)
    image = np.where(alpha[..., None] > 0, body_rgb, tex.background).reshape(-1, 3)

    o, d = head_rays(c2w_nerf, cam)
    t, part = intersect_head(o, d, opening)
    hit = np.isfinite(t)
    p = o[hit] + t[hit, None] * d[hit]
    image[hit] = shade_head(p, part[hit], opening, closure, tex.skin, tex.hair)
    labels = labels.reshape(-1)
    labels[hit] = HEAD
    return image.reshape(S, S, 3), labels.reshape(S, S), torso_rgba


# ---------------------------------------------------------------------------- folder writer

@contextlib.contextmanager
def _torch_threads(n: int):
    # The per-frame ray tensors are tiny: on a busy machine the thread pool's hand-offs cost
    # 20x the work itself, so rendering runs single-threaded and restores the setting after.
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _to_bgr8(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8), cv2.COLOR_RGB2BGR)


def _imwrite(path: Path, img: np.ndarray) -> None:
    if not cv2.imwrite(str(path), img):
        raise OSError(f"cv2 could not write {path}")


def _parsing_image(labels: np.ndarray) -> np.ndarray:
    out = np.empty((*labels.shape, 3), dtype=np.uint8)
    for label, name in ((BG, "background"), (HEAD, "head"), (NECK, "neck"), (TORSO, "torso")):
        out[labels == label] = PARSING_BGR[name]
    return out


def _write_au_csv(path: Path, au45: np.ndarray) -> None:
    # OpenFace layout: ", "-separated header, so pandas sees the column as ' AU45_r'.
    lines = ["frame, face_id, timestamp, confidence, success, AU45_r, AU45_c"]
    for k, v in enumerate(au45):
        lines.append(f"{k + 1}, 0, {k / FPS:.3f}, 0.98, 1, {v:.2f}, {int(v > 1.0)}.00")
    path.write_text("\n".join(lines) + "\n")


def _transforms(c2w: np.ndarray, ids: range, cam: Camera) -> dict:
    return {"focal_len": cam.focal, "cx": cam.center, "cy": cam.center,
            "frames": [{"img_id": i, "aud_id": i, "transform_matrix": c2w[i].astype(float).tolist()}
                       for i in ids]}


def make_synthetic_subject(out_dir, n_frames: int = 250, size: int = 128, seed: int = 0,
                           audio: np.ndarray | None = None) -> Path:
    """Write a complete training folder for a synthetic talking subject (atomically).

    Files: ``<name>.mp4`` (25 fps, with audio), ``aud.wav`` (16 kHz), ``aud.npy`` (mel
    features ``[N, 16, 32]``), ``ori_imgs/<k>.jpg`` + ``.lms``, ``parsing/<k>.png``,
    ``gt_imgs/<k>.jpg``, ``torso_imgs/<k>.png`` (RGBA), ``bc.jpg``, ``au.csv``,
    ``track_params.pt`` (euler, trans, focal), ``transforms_train.json`` /
    ``transforms_val.json`` (first 10/11 of the frames train, the rest val).

    Args:
        out_dir: folder to create (replaced if it exists).
        n_frames: video length at 25 fps.
        size: image side in pixels (even).
        seed: everything is a deterministic function of the seed (and ``audio``).
        audio: 16 kHz mono speech to lip-sync to (padded/cropped to the video); default
            :func:`make_speech_like_audio`.
    Returns:
        ``out_dir`` as a Path.
    """
    from data_utils.audio_features import extract_features

    if n_frames < 11:
        raise ValueError(f"n_frames must be >= 11 so both splits get frames, got {n_frames}")
    if size < 32 or size % 2:
        raise ValueError(f"size must be an even number >= 32, got {size}")
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    n_samples = int(round(n_frames / FPS * SAMPLE_RATE))
    if audio is None:
        audio = make_speech_like_audio(n_frames / FPS, seed=seed)
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"audio must be mono [n_samples], got shape {audio.shape}")
    audio = np.pad(audio, (0, max(0, n_samples - len(audio))))[:n_samples]

    cam = Camera(size)
    tex = Textures.make(rng, size)
    euler, trans = make_head_motion(n_frames, rng)
    au45 = make_blinks(n_frames, rng)
    opening = mouth_opening(audio, n_frames)
    closure = np.clip(au45, 0, 2) / 2
    c2w = tracked_to_c2w(euler, trans)
    rest = tracked_to_c2w(np.zeros((1, 3)), REST_TRANSLATION[None] * 10)[0]
    rest_px = project_points(HEAD_CENTER[None], rest, cam.focal, cam.center, cam.center)[0] + 0.5
    feats = extract_features(audio, SAMPLE_RATE, engine="mel", n_frames=n_frames, fps=FPS)
    n_train = n_frames * 10 // 11
    bc = _to_bgr8(tex.background)

    with atomic_dir(out_dir) as tmp, _torch_threads(1):
        for sub in ("ori_imgs", "parsing", "gt_imgs", "torso_imgs"):
            (tmp / sub).mkdir()
        write_wav(tmp / "aud.wav", audio)
        np.save(tmp / "aud.npy", feats)
        _imwrite(tmp / "bc.jpg", bc)
        frames_rgb = []
        for k in range(n_frames):
            image, labels, torso = render_frame(c2w[k], cam, float(opening[k]), float(closure[k]),
                                                rest_px, tex)
            ori = _to_bgr8(image)
            # The camera's background carries a little sensor noise; gt swaps in the clean bc.jpg.
            noise = rng.integers(-2, 3, ori.shape)
            ori = np.where(labels[..., None] == BG, np.clip(ori + noise, 0, 255), ori).astype(np.uint8)
            frames_rgb.append(cv2.cvtColor(ori, cv2.COLOR_BGR2RGB))
            _imwrite(tmp / "ori_imgs" / f"{k}.jpg", ori)
            _imwrite(tmp / "gt_imgs" / f"{k}.jpg", np.where(labels[..., None] == BG, bc, ori))
            _imwrite(tmp / "parsing" / f"{k}.png", _parsing_image(labels))
            rgba = np.round(np.clip(torso, 0, 1) * 255).astype(np.uint8)
            _imwrite(tmp / "torso_imgs" / f"{k}.png", cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
            lms = project_points(head_landmarks_3d(float(opening[k]), float(closure[k])),
                                 c2w[k], cam.focal, cam.center, cam.center)
            np.savetxt(tmp / "ori_imgs" / f"{k}.lms", lms, "%f")
        _write_au_csv(tmp / "au.csv", au45)
        torch.save({"euler": torch.from_numpy(euler).float(), "trans": torch.from_numpy(trans).float(),
                    "focal": torch.tensor([cam.focal])}, tmp / "track_params.pt")
        for name, ids in (("train", range(n_train)), ("val", range(n_train, n_frames))):
            (tmp / f"transforms_{name}.json").write_text(json.dumps(_transforms(c2w, ids, cam), indent=2))
        _write_video(tmp / f"{out_dir.name}.mp4", frames_rgb, tmp / "aud.wav")
    return out_dir


def _write_video(path: Path, frames: list[np.ndarray], wav: Path) -> None:
    import imageio_ffmpeg

    h, w = frames[0].shape[:2]
    writer = imageio_ffmpeg.write_frames(str(path), (w, h), fps=FPS, quality=9, macro_block_size=1,
                                         audio_path=str(wav), audio_codec="aac",
                                         ffmpeg_log_level="error")
    writer.send(None)
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description="Write a synthetic ER-NeRF training folder.")
    parser.add_argument("out_dir", type=str, help="folder to create (replaced if present)")
    parser.add_argument("--frames", type=int, default=250, help="number of frames at 25 fps")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (even)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = make_synthetic_subject(args.out_dir, n_frames=args.frames, size=args.size, seed=args.seed)
    print(f"wrote {out} ({args.frames} frames, {args.size}x{args.size})")
    return out


if __name__ == "__main__":
    main()
