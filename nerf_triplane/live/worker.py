"""The model behind the live viewer: loads a workspace's newest checkpoint and renders one frame
for a camera, an audio-feature window, an eye value and the layer toggles.

Every render goes through one worker thread (``LiveModel.submit``), so several browser tabs
never run the model at the same time.
"""
from __future__ import annotations

import math
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..provider import NeRFDataset, audio_window, features_to_tensor, linear_to_srgb
from ..rays import get_bg_coords, get_rays

# On the CPU the longer side of the render is capped so a frame takes well under a second on a
# laptop-class core; the page says so and the browser scales the image up.
CPU_MAX_SIDE = 128
JPEG_QUALITY = 85
VIDEO_FPS = 25


@dataclass
class View:
    """What one frame shows.

    ``frame``: pose-track index; ``yaw``/``pitch``: orbit around the head centre (degrees);
    ``zoom``: focal-length factor; ``eye``: blink amount in [0, 1] (None: the track's);
    ``camera``: 'track' (the tracked camera, the data's focal length) or 'orbit' (``--radius``
    from the head centre, ``--fovy``); layer toggles ``head``, ``torso``, ``background``, ``depth``.
    """

    frame: int = 0
    yaw: float = 0.0
    pitch: float = 0.0
    zoom: float = 1.0
    eye: float | None = None
    camera: str = "track"
    head: bool = True
    torso: bool = True
    background: bool = True
    depth: bool = False

    @classmethod
    def from_dict(cls, d: dict) -> "View":
        """A view from the page's JSON (unknown keys ignored, values clamped to sane ranges)."""
        v = cls()
        v.frame = int(d.get("frame", 0))
        v.yaw = float(d.get("yaw", 0.0))
        v.pitch = max(-80.0, min(80.0, float(d.get("pitch", 0.0))))
        v.zoom = max(0.2, min(5.0, float(d.get("zoom", 1.0))))
        eye = d.get("eye")
        v.eye = None if eye is None else max(0.0, min(1.0, float(eye)))
        v.camera = "orbit" if d.get("camera") == "orbit" else "track"
        for key in ("head", "torso", "background", "depth"):
            setattr(v, key, bool(d.get(key, getattr(v, key))))
        return v


def orbit_matrix(yaw_deg: float, pitch_deg: float) -> torch.Tensor:
    """Rotation in camera axes (ngp: +y down, +z forward): yaw about y, then pitch about x  # [3, 3]."""
    a, b = math.radians(yaw_deg), math.radians(pitch_deg)
    ry = torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    rx = torch.tensor([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    return ry @ rx


def view_pose(track_pose: torch.Tensor, view: View, radius: float) -> torch.Tensor:
    """The camera of ``view``: the tracked camera turned about the head centre (the origin).

    Args:
        track_pose: ngp c2w of the pose-track frame  # [4, 4]
        radius: camera distance from the head centre in ``orbit`` mode (``--radius``).
    Returns:
        ngp c2w  # [1, 4, 4]
    """
    rot, pos = track_pose[:3, :3], track_pose[:3, 3]
    # A turn expressed in the camera's own axes, applied to the whole rig around the origin.
    world = rot @ orbit_matrix(view.yaw, view.pitch).to(rot) @ rot.T
    out = track_pose.clone()
    out[:3, :3] = world @ rot
    if view.camera == "orbit":
        pos = pos / pos.norm().clamp(min=1e-6) * radius
    out[:3, 3] = world @ pos
    return out[None]


class LiveModel:
    """A trained workspace ready to render live.

    Args:
        opt: ``main.py`` options (``--gui`` run): ``path``, ``workspace``, ``ckpt``, ``W``/``H``
            (full render size), ``radius``, ``fovy``, ``torso``, ``asr_model``...
        device: torch device.
        max_side: longest side of the render on the CPU (``None``: ``CPU_MAX_SIDE``); on a GPU
            frames are rendered at ``W`` x ``H``.

    Attributes:
        frames: length of the pose track (training frames).
        size: ``(H, W)`` of the rendered frames; ``full_size``: ``(--H, --W)``.
        train_features: per-frame training audio features  # [N, A, T]
        audio_dim: A (what uploaded or streamed features must have).
    """

    def __init__(self, opt, device: torch.device, max_side: int | None = None):
        from ..trained_model import load_trained

        self.opt, self.device = opt, device
        dataset = NeRFDataset(opt, device=device, type="train")
        dataset.training = False
        model, self.trainer, self.checkpoint = load_trained(opt, dataset, device, purpose="--gui")
        self.model, self.dataset = model, dataset
        self.frames = dataset.num_frames
        self.train_features = dataset.auds
        self.audio_dim = dataset.audio_dim
        self.full_size = (int(opt.H), int(opt.W))
        side = max(self.full_size)
        cap = CPU_MAX_SIDE if max_side is None else max_side
        scale = 1.0 if device.type == "cuda" or side <= cap else cap / side
        self.size = (max(8, round(opt.H * scale)), max(8, round(opt.W * scale)))
        self.reduced = self.size != self.full_size
        H, W = self.size
        self.bg_coords = get_bg_coords(H, W, device)
        self.bg_img = self._fit(dataset.bg_img)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="render")
        self.render_seconds = 0.0  # last render's duration

    # ---------------------------------------------------------------------------- geometry

    def _fit(self, img: torch.Tensor) -> torch.Tensor:
        """A data-frame image resized (aspect kept, centred, edge-padded) to the render size  # [H, W, 3]."""
        H, W = self.size
        h0, w0 = img.shape[:2]
        s = min(H / h0, W / w0)
        h, w = max(1, round(h0 * s)), max(1, round(w0 * s))
        small = F.interpolate(img.permute(2, 0, 1)[None].float(), size=(h, w), mode="area")[0]
        top, left = (H - h) // 2, (W - w) // 2
        padded = F.pad(small[None], (left, W - w - left, top, H - h - top), mode="replicate")[0]
        return padded.permute(1, 2, 0).to(self.device)

    def intrinsics(self, view: View) -> torch.Tensor:
        """(fx, fy, cx, cy) of the render  # [4]: the data's camera fitted to the frame (track), or
        ``--fovy`` (orbit); times the zoom."""
        H, W = self.size
        if view.camera == "orbit":
            f = H / (2 * math.tan(math.radians(self.opt.fovy) / 2))
            fx = fy = f
            cx, cy = W / 2, H / 2
        else:
            fx0, fy0, cx0, cy0 = self.dataset.intrinsics.tolist()
            h0, w0 = self.dataset.H, self.dataset.W
            s = min(H / h0, W / w0)
            fx, fy = fx0 * s, fy0 * s
            cx, cy = cx0 * s + (W - w0 * s) / 2, cy0 * s + (H - h0 * s) / 2
        return torch.tensor([fx * view.zoom, fy * view.zoom, cx, cy], dtype=torch.float32)

    def lips_rect(self, f: int) -> list[int]:
        """The lips rectangle of pose-track frame ``f`` in render pixels at the home view:
        ``[row0, row1, col0, col1]``."""
        H, W = self.size
        h0, w0 = self.dataset.H, self.dataset.W
        s = min(H / h0, W / w0)
        top, left = (H - round(h0 * s)) // 2, (W - round(w0 * s)) // 2
        x0, x1, y0, y1 = self.dataset.rects[f % self.frames]["lips"]
        return [int(top + x0 * s), int(math.ceil(top + x1 * s)), int(left + y0 * s), int(math.ceil(left + y1 * s))]

    # ---------------------------------------------------------------------------- features

    def features(self, feats: np.ndarray) -> torch.Tensor:
        """Per-frame features ``[N, 16|2, A]`` (``extract_features`` layout) to the model's
        ``[N, A, T]`` on the device; ValueError when A is not the model's."""
        if feats.ndim != 3 or feats.shape[2] != self.audio_dim:
            raise ValueError(f"features of shape {tuple(feats.shape)} do not fit this model, which takes "
                             f"{self.audio_dim} values per step (its --asr_model is {self.opt.asr_model})")
        return features_to_tensor(feats, self.opt.emb, "features").to(self.device)

    # ---------------------------------------------------------------------------- rendering

    def submit(self, view: View, features: torch.Tensor, k: int) -> Future:
        """Queue a render on the worker thread; the future gives ``render``'s result."""
        return self._executor.submit(self.render, view, features, k)

    @torch.no_grad()
    def render(self, view: View, features: torch.Tensor, k: int) -> tuple[bytes, dict]:
        """Render one frame.

        Args:
            view: camera, eye and layers.
            features: per-frame features of the audio that drives the mouth  # [N, A, T]
            k: the audio frame (25 fps) whose window drives the mouth.
        Returns:
            ``(jpeg bytes, info)`` with ``info`` = ``{"frame", "k", "render_ms", "size"}``.
        """
        start = time.perf_counter()
        f = view.frame % self.frames
        H, W = self.size
        pose = view_pose(self.dataset.poses[f].float().cpu(), view, self.opt.radius).to(self.device)
        rays = get_rays(pose, self.intrinsics(view), H, W)
        _, bg_torso = self.dataset.frame_images(f)
        bg = self.bg_img if view.background else torch.ones_like(self.bg_img)
        if not self.opt.torso and view.torso:
            # A head-only model is trained over the GT torso: show that frame's torso.
            bg = self._fit(bg_torso) if view.background else bg
        eye = None
        if self.dataset.eye_area is not None:
            eye = self.dataset.eye_area[f:f + 1] if view.eye is None else torch.tensor([[view.eye]], device=self.device)
        auds = audio_window(features, self.opt.att, k)
        fp16 = bool(self.opt.fp16) and self.device.type == "cuda"
        with torch.autocast("cuda", dtype=torch.float16) if fp16 else nullcontext():
            out = self.model.render(rays["rays_o"], rays["rays_d"], auds, self.bg_coords, pose,
                                    eye=eye, index=[f], dt_gamma=self.opt.dt_gamma,
                                    bg_color=bg.reshape(1, -1, 3), perturb=False, max_steps=self.opt.max_steps,
                                    T_thresh=1e-4)
        head_w = out["weights_sum"].float().reshape(H, W, 1)
        rgb = out["image"].float().reshape(H, W, 3)
        if self.opt.torso:
            behind = out["torso_color"].float().reshape(H, W, 3) if view.torso else bg
            head_rgb = rgb - (1 - head_w) * out["torso_color"].float().reshape(H, W, 3)
        else:
            behind = bg
            head_rgb = rgb - (1 - head_w) * bg
        rgb = (head_rgb + (1 - head_w) * behind) if view.head else behind
        rgb = rgb.clamp(0, 1)
        if self.opt.color_space == "linear":
            rgb = linear_to_srgb(rgb)
        if view.depth:
            rgb = out["depth"].float().reshape(H, W, 1).expand(H, W, 3)
        u8 = (rgb.cpu().numpy() * 255 + 0.5).astype(np.uint8)
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(u8, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        self.render_seconds = time.perf_counter() - start
        return jpeg.tobytes(), {"frame": f, "k": k, "render_ms": round(self.render_seconds * 1000, 1),
                                "size": [H, W]}

    def close(self) -> None:
        """Stop the worker thread after the render in progress."""
        self._executor.shutdown(wait=True, cancel_futures=True)
