"""Training-folder dataset: poses, audio windows, eye area, landmark rects, images and rays.

``NeRFDataset(opt, device, type)`` reads a folder in the reference layout (``transforms_*.json``,
``gt_imgs/``, ``torso_imgs/``, ``ori_imgs/*.lms``, ``bc.jpg``, ``au.csv``, audio features) and
serves one frame per batch through :meth:`NeRFDataset.dataloader`. Splits: ``train`` uses
``transforms_train.json``; ``val`` the first 100 frames of ``transforms_val.json``; ``test`` all of
it. Images live on disk (``--preload 0``), in RAM (``1``) or on ``device`` (``2``); preloaded frames
are kept as the 8-bit pixels of the files (7 bytes a pixel: RGB and the torso's RGBA) and
converted per batch, so every level serves exactly the same floats.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader

from data_utils.audio_features import feature_file_for
from data_utils.blinks import read_openface_au45

from .error_map import ErrorMap
from .poses import nerf_matrix_to_ngp, smooth_path
from .rays import (get_bg_coords, get_rays, random_pixels, rays_from_pixels, rect_mask,
                   rect_random_pixels)

SPLITS = ("train", "val", "test")
VAL_FRAMES = 100
PART2_FRAMES = 375
# Feature extractors and ffmpeg frame counts can disagree by a frame or two at the end of a
# clip; the reference clamps those to the last feature. A larger gap means mismatched files.
AUD_SHORTFALL_TOLERANCE = 2
EYE_JITTER = 0.05


# ---------------------------------------------------------------------------- colour helpers

def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] to linear RGB (same shape)."""
    return torch.where(x < 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    """Linear RGB in [0, 1] to sRGB (same shape)."""
    return torch.where(x < 0.0031308, 12.92 * x, 1.055 * x.clamp(min=0) ** 0.41666 - 0.055)


# ---------------------------------------------------------------------------- audio windows

def audio_window(features: torch.Tensor, att: int, index: int) -> torch.Tensor:
    """Audio features the model sees for frame position ``index`` of a split.

    ``att=0``: the frame itself; ``att=1``: the 8 frames before it; ``att=2``: frames
    ``index-4 .. index+3``. Positions outside ``[0, len)`` are zero frames.

    Args:
        features: per-frame features  # [N, A, T] (or [N, T] ids with --emb)
    Returns:
        window  # [1 or 8, A, T]
    """
    if att == 0:
        return features[index:index + 1]
    if att == 1:
        lo, hi = index - 8, index
    elif att == 2:
        lo, hi = index - 4, index + 4
    else:
        raise ValueError(f"--att must be 0, 1 or 2, got {att}")
    out = features.new_zeros((hi - lo, *features.shape[1:]))
    src_lo, src_hi = max(lo, 0), min(hi, features.shape[0])
    if src_hi > src_lo:
        out[src_lo - lo:src_hi - lo] = features[src_lo:src_hi]
    return out


def features_to_tensor(feats: np.ndarray, emb: bool, source: str) -> torch.Tensor:
    """Stored feature array to the model layout.

    Args:
        feats: ``[N, T, A]`` logits/features, or ``[N, T]`` class ids (only with ``--emb``).
        emb: ``--emb``: 3-D features are reduced to ids by argmax over A.
        source: file name for error messages.
    Returns:
        float ``[N, A, T]``, or int64 ``[N, T]`` ids with ``--emb``
    """
    feats = np.asarray(feats)
    if feats.ndim == 3:
        out = torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32)).permute(0, 2, 1)
        return out.argmax(1) if emb else out.contiguous()
    if feats.ndim == 2:
        if not emb:
            raise ValueError(f"{source} holds 2-D labels {feats.shape}; use --emb, or give "
                             "[N, 16, A] features")
        return torch.from_numpy(feats.astype(np.int64))
    raise ValueError(f"{source} must be [N, 16, A] features or [N, 16] labels, got {feats.shape}")


def dataset_feature_path(root: Path, asr_model: str) -> Path:
    """Feature file of ``asr_model`` inside ``root`` (``aud.npy`` also accepted for deepspeech)."""
    path = root / feature_file_for(asr_model)
    fallback = root / "aud.npy"
    # The reference's DeepSpeech extractor saves aud.npy although its loader wants aud_ds.npy.
    if not path.exists() and "deepspeech" in asr_model.lower() and fallback.exists():
        return fallback
    if not path.exists():
        raise FileNotFoundError(f"audio features {path} not found for --asr_model {asr_model}: "
                                "run data_utils/process.py on the folder or pass --aud FEATURES.npy")
    return path


# ---------------------------------------------------------------------------- folder readers

def load_transforms(root: Path, split: str) -> dict:
    """Parsed ``transforms_{train|val}.json`` (``test`` reads the val file)."""
    if split not in SPLITS:
        raise ValueError(f"dataset type must be one of {SPLITS}, got {split!r}")
    path = root / f"transforms_{'val' if split == 'test' else split}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {root} a processed training folder "
                                "(data_utils/process.py writes transforms_train/val.json)?")
    with open(path) as f:
        transform = json.load(f)
    if not transform.get("frames"):
        raise ValueError(f"{path} has no 'frames'")
    return transform


def image_size(transform: dict, source: str) -> tuple[int, int]:
    """(H, W): json ``h``/``w`` if present, else ``2*int(cy)``, ``2*int(cx)``."""
    if "h" in transform and "w" in transform:
        return int(transform["h"]), int(transform["w"])
    if "cx" in transform and "cy" in transform:
        return int(transform["cy"]) * 2, int(transform["cx"]) * 2
    raise ValueError(f"{source} gives neither h/w nor cx/cy: cannot tell the image size")


def intrinsics_from(transform: dict, H: int, W: int, source: str) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) in pixels of the full-size image."""
    if "focal_len" in transform:
        fx = fy = float(transform["focal_len"])
    elif "fl_x" in transform or "fl_y" in transform:
        fx = float(transform.get("fl_x", transform.get("fl_y")))
        fy = float(transform.get("fl_y", transform.get("fl_x")))
    elif "camera_angle_x" in transform or "camera_angle_y" in transform:
        fx = W / (2 * np.tan(transform["camera_angle_x"] / 2)) if "camera_angle_x" in transform else None
        fy = H / (2 * np.tan(transform["camera_angle_y"] / 2)) if "camera_angle_y" in transform else None
        fx, fy = (fx or fy), (fy or fx)
    else:
        raise ValueError(f"{source} has no focal length (focal_len, fl_x/fl_y or camera_angle_x/y)")
    return fx, fy, float(transform.get("cx", W / 2)), float(transform.get("cy", H / 2))


def read_au45(root: Path) -> np.ndarray:
    """Column ``AU45_r`` (blink intensity, 0..5) of ``au.csv``, one value per row  # [rows]."""
    path = root / "au.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: --exp_eye needs the OpenFace action units "
                                "(FeatureExtraction -f <video> output renamed to au.csv)")
    return read_openface_au45(path).astype(np.float32)


def eye_areas(au45: np.ndarray, img_ids: list[int], smooth: bool, source: str) -> np.ndarray:
    """Eye area per frame: ``clip(AU45_r[img_id], 0, 2) / 2``, optionally 3-frame mean  # [N]."""
    ids = np.asarray(img_ids)
    if ids.max() >= len(au45):
        raise ValueError(f"{source} has {len(au45)} rows but frame img_id {ids.max()} needs one "
                         "row per video frame")
    area = np.clip(au45[ids], 0, 2) / 2
    if smooth:
        # Centred 3-frame mean whose window is clipped at the sequence ends.
        n, kernel = len(area), np.ones(3)
        area = np.convolve(area, kernel)[1:n + 1] / np.convolve(np.ones(n), kernel)[1:n + 1]
    return area.astype(np.float32)


def upper_face(root: Path, img_ids: list[int]) -> np.ndarray:
    """Standardised upper-face values (``data_utils.expressions``) of frames ``img_ids``  # [N, 5].

    Standardised over every row of ``<root>/expressions.csv`` (the whole video), so train and
    held-out frames share one scale.
    """
    from data_utils.expressions import CSV_NAME, read_expressions, standardize

    values = read_expressions(root)
    ids = np.asarray(img_ids)
    if ids.max() >= len(values):
        raise ValueError(f"{root / CSV_NAME} has {len(values)} rows but frame img_id {ids.max()} needs one "
                         "row per video frame: rewrite it with python -m data_utils.expressions")
    return standardize(values)[ids]


def _bbox(pts: np.ndarray) -> list[int]:
    # x = rows (from the y coordinates), y = columns; truncation to int like the reference.
    return [int(pts[:, 1].min()), int(pts[:, 1].max()), int(pts[:, 0].min()), int(pts[:, 0].max())]


def landmark_rects(lms: np.ndarray, H: int, W: int) -> dict[str, list[int]]:
    """Rectangles (xmin, xmax, ymin, ymax) from 68 iBUG landmarks (x = column, y = row).

    ``face``: all points; ``lhalf``: rows from the nose base (31-35) down, face columns;
    ``eye``: points 36-47; ``lips``: the square around points 48-59, clipped to the image.
    """
    face = _bbox(lms)
    lhalf = [int(lms[31:36, 1].min()), face[1], face[2], face[3]]
    xmin, xmax, ymin, ymax = _bbox(lms[48:60])
    cx, cy = (xmin + xmax) // 2, (ymin + ymax) // 2
    half = max(xmax - xmin, ymax - ymin) // 2
    lips = [max(0, cx - half), min(H, cx + half), max(0, cy - half), min(W, cy + half)]
    return {"face": face, "lhalf": lhalf, "eye": _bbox(lms[36:48]), "lips": lips}


def read_lms(path: Path) -> np.ndarray:
    """68x2 landmark text file (x = column, y = row)  # [68, 2]."""
    lms = np.loadtxt(path, dtype=np.float64)
    if lms.shape != (68, 2):
        raise ValueError(f"{path} must hold 68 rows of 'x y', got shape {lms.shape}")
    return lms


def read_image_bytes(path: Path, H: int, W: int, channels: int) -> np.ndarray:
    """RGB(A) uint8 image, resized (INTER_AREA) to H x W if needed  # [H, W, C]."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise FileNotFoundError(f"cannot read image {path}")
    if img.ndim == 2 or img.shape[2] != channels:
        got = 1 if img.ndim == 2 else img.shape[2]
        raise ValueError(f"{path} has {got} channels, expected {channels}")
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB if channels == 3 else cv2.COLOR_BGRA2RGBA)
    if img.shape[:2] != (H, W):
        img = cv2.resize(img, (W, H), interpolation=cv2.INTER_AREA)
    return img


def read_image(path: Path, H: int, W: int, channels: int) -> np.ndarray:
    """RGB(A) float32 image in [0, 1], resized (INTER_AREA) to H x W if needed  # [H, W, C]."""
    return read_image_bytes(path, H, W, channels).astype(np.float32) / 255


def available_memory() -> int | None:
    """Bytes of memory the kernel says a new allocation can get (MemAvailable), None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            lines = f.readlines()
    except OSError:  # not Linux
        return None
    kib = [int(line.split()[1]) for line in lines if line.startswith("MemAvailable:")]
    return kib[0] * 1024 if kib else None


def load_background(bg_img: str, root: Path, H: int, W: int) -> np.ndarray:
    """Background: ``white``, ``black``, ``''`` (``<root>/bc.jpg``) or an image path  # [H, W, 3]."""
    if bg_img == "white":
        return np.ones((H, W, 3), dtype=np.float32)
    if bg_img == "black":
        return np.zeros((H, W, 3), dtype=np.float32)
    path = Path(bg_img) if bg_img else root / "bc.jpg"
    if not path.is_file():
        raise FileNotFoundError(f"background image {path} not found: pass --bg_img white|black|PATH")
    return read_image(path, H, W, 3)


def mirror_index(index: int, size: int) -> int:
    """Ping-pong an index over ``size`` frames: 0..n-1, n-1..0, 0..n-1, ..."""
    turn, res = divmod(index, size)
    return res if turn % 2 == 0 else size - res - 1


# ---------------------------------------------------------------------------- dataset

class NeRFDataset:
    """One split of a training folder, served as full-image or sampled-ray batches.

    Attributes:
        H, W: image size in pixels (after ``downscale``).
        intrinsics: (fx, fy, cx, cy), float32 tensor  # [4]
        poses: ngp c2w  # [N, 4, 4]
        auds: per-frame features  # [N_aud, A, T] (int64 [N_aud, T] with --emb)
        audio_dim: A.
        eye_area: blink amount per frame (clip(AU45_r, 0, 2) / 2, 1 = shut), un-jittered  # [N, 1],
            with --exp_upper followed by the five ``upper_face`` values  # [N, 6]; None without
            --exp_eye
        bg_img: background  # [H, W, 3]
        img_ids, aud_ids: ``img_id`` / ``aud_id`` of each frame of the split (json order).
        num_frames: N; has_gt: False when driven by novel audio; training: sample rays.
    """

    def __init__(self, opt, device="cpu", type: str = "train", downscale: int = 1,
                 aud_features: np.ndarray | None = None):
        self.opt = opt
        self.device = torch.device(device)
        self.type = type
        self.root = Path(opt.path)
        self.preload = int(opt.preload)
        self.training = type == "train"
        self.num_rays = opt.num_rays if self.training else -1
        if downscale < 1:
            raise ValueError(f"downscale must be >= 1, got {downscale}")

        transform = load_transforms(self.root, type)
        source = f"transforms_{'val' if type == 'test' else type}.json"
        H0, W0 = image_size(transform, source)
        self.H, self.W = H0 // downscale, W0 // downscale
        fx, fy, cx, cy = intrinsics_from(transform, H0, W0, source)
        self.intrinsics = torch.tensor([fx, fy, cx, cy], dtype=torch.float32) / downscale

        frames = self._select_frames(transform["frames"])
        self.img_ids = [int(f["img_id"]) for f in frames]
        self.aud_ids = [int(f.get("aud_id", f["img_id"])) for f in frames]
        self.num_frames = len(frames)
        self._check_files(self.img_ids)

        poses = np.stack([nerf_matrix_to_ngp(np.asarray(f["transform_matrix"], dtype=np.float32),
                                             opt.scale, opt.offset) for f in frames])
        if opt.smooth_path:
            poses = smooth_path(poses, opt.smooth_path_window)
        self.poses = torch.from_numpy(poses)

        self.has_gt = aud_features is None and not opt.aud
        self.auds, self.audio_dim = self._load_auds(frames, aud_features)

        self.eye_area = None
        if opt.exp_eye:
            area = eye_areas(read_au45(self.root), self.img_ids, opt.smooth_eye,
                             str(self.root / "au.csv"))
            self.eye_area = torch.from_numpy(area).view(-1, 1)
            if opt.exp_upper:
                upper = upper_face(self.root, self.img_ids)
                self.eye_area = torch.cat([self.eye_area, torch.from_numpy(upper)], dim=1)

        # [N, 68, 2] pixels of this (downscaled) split
        self.landmarks = np.stack([read_lms(self.root / "ori_imgs" / f"{i}.lms") for i in self.img_ids]) / downscale
        self.rects = [landmark_rects(lms, self.H, self.W) for lms in self.landmarks]

        # Batches of single rays (head or torso) sample by error (see ``_rays``).
        self.error_map = None
        if self.training and opt.error_map > 0 and opt.patch_size == 1 and not opt.finetune_lips:
            self.error_map = ErrorMap(self.num_frames, self.H, self.W, self.device)

        self.bg_img = self._color(torch.from_numpy(load_background(opt.bg_img, self.root, self.H, self.W)))
        self.bg_coords = get_bg_coords(self.H, self.W, self.device)  # [1, H*W, 2]
        self.images, self.torso_rgba = self._load_images()

        self.poses = self.poses.to(self.device)
        self.auds = self.auds.to(self.device)
        self.bg_img = self.bg_img.to(self.device)
        if self.eye_area is not None:
            self.eye_area = self.eye_area.to(self.device)

    # -- loading --------------------------------------------------------------------------

    def _select_frames(self, frames: list) -> list:
        start, end = self.opt.data_range
        frames = frames[start:(len(frames) if end == -1 else end)]
        if self.type == "train" and self.opt.part:
            frames = frames[::10]
        elif self.type == "train" and self.opt.part2:
            frames = frames[:PART2_FRAMES]
        elif self.type == "val":
            frames = frames[:VAL_FRAMES]
        if not frames:
            raise ValueError(f"--data_range {self.opt.data_range} leaves no {self.type} frames")
        return frames

    def _check_files(self, img_ids: list[int]) -> None:
        for sub, ext in (("gt_imgs", "jpg"), ("torso_imgs", "png"), ("ori_imgs", "lms")):
            missing = [i for i in img_ids if not (self.root / sub / f"{i}.{ext}").is_file()]
            if missing:
                raise FileNotFoundError(
                    f"{self.root / sub / f'{missing[0]}.{ext}'} not found ({len(missing)} of "
                    f"{len(img_ids)} {self.type} frames lack {sub}/*.{ext}): re-run data_utils/process.py")

    def _load_auds(self, frames: list, aud_features: np.ndarray | None) -> tuple[torch.Tensor, int]:
        opt = self.opt
        if aud_features is not None:
            source = "aud_features"
            feats = np.asarray(aud_features)
        elif opt.aud:
            path = Path(opt.aud)
            if path.suffix.lower() != ".npy":
                raise ValueError(f"--aud {path}: the dataset takes a features .npy; extract features "
                                 "from audio first (main.py does this for .wav/.mp3/.mp4)")
            if not path.is_file():
                raise FileNotFoundError(f"--aud {path} not found")
            source, feats = str(path), np.load(path)
        else:
            path = dataset_feature_path(self.root, opt.asr_model)
            source, feats = str(path), np.load(path)
        feats_t = features_to_tensor(feats, opt.emb, source)
        audio_dim = int(feats.shape[2]) if feats.ndim == 3 else int(feats.max()) + 1
        if not self.has_gt:
            return feats_t, audio_dim
        aud_ids = np.array([int(f["aud_id"]) for f in frames])
        short = int(aud_ids.max()) + 1 - feats_t.shape[0]
        if short > AUD_SHORTFALL_TOLERANCE:
            raise ValueError(f"{source} has {feats_t.shape[0]} feature frames but the frames need "
                             f"aud_id up to {aud_ids.max()} ({short} too few): re-extract the "
                             "features from the folder's aud.wav")
        return feats_t[np.minimum(aud_ids, feats_t.shape[0] - 1)], audio_dim

    def _color(self, rgb: torch.Tensor) -> torch.Tensor:
        return srgb_to_linear(rgb) if self.opt.color_space == "linear" else rgb

    def _image_paths(self, i: int) -> tuple[Path, Path]:
        return (self.root / "gt_imgs" / f"{i}.jpg", self.root / "torso_imgs" / f"{i}.png")

    def _read_bytes(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """GT image [H, W, 3] and GT torso RGBA [H, W, 4] of image ``i``, uint8."""
        gt_path, torso_path = self._image_paths(i)
        return (torch.from_numpy(read_image_bytes(gt_path, self.H, self.W, 3)),
                torch.from_numpy(read_image_bytes(torso_path, self.H, self.W, 4)))

    def _load_images(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The split's uint8 frames ([N, H, W, 3] and [N, H, W, 4]) with ``--preload`` 1 or 2.

        A preload that would take over half the available memory falls back to reading
        each frame from disk (with a log line): slower, but the run does not get killed.
        """
        if self.preload == 0:
            return None, None
        need = self.num_frames * self.H * self.W * 7
        free = available_memory()
        if self.preload == 1 and free is not None and need > free // 2:
            print(f"[INFO] --preload 1: the {self.num_frames} {self.type} frames need {need / 2**30:.1f} GiB, over "
                  f"half the {free / 2**30:.1f} GiB available; reading them from disk per step instead")
            self.preload = 0
            return None, None
        images = torch.empty(self.num_frames, self.H, self.W, 3, dtype=torch.uint8)
        rgba = torch.empty(self.num_frames, self.H, self.W, 4, dtype=torch.uint8)
        for k, i in enumerate(self.img_ids):
            images[k], rgba[k] = self._read_bytes(i)
        if self.preload > 1:
            images, rgba = images.to(self.device), rgba.to(self.device)
        return images, rgba

    # -- per-step access ---------------------------------------------------------------------

    def get_audio_window(self, index: int) -> torch.Tensor:
        """Audio window of loader position ``index`` (see :func:`audio_window`)  # [8|1, A, T]."""
        return audio_window(self.auds, self.opt.att, index)

    def mirror_index(self, index: int) -> int:
        """Frame used for loader position ``index`` when the audio outlasts the frames."""
        return mirror_index(index, self.num_frames)

    def frame_images(self, f: int, pixels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """GT colour and GT torso over the background of frame ``f``, float32 on device.

        Args:
            f: frame (split position).
            pixels: flat pixel indices [N] (row-major), or None for the whole frame.
        Returns:
            (image, bg_torso): [N, 3] each, or [H, W, 3] each without ``pixels``.
        """
        if self.images is None:
            rgb, rgba = self._read_bytes(self.img_ids[f])
        else:
            rgb, rgba = self.images[f], self.torso_rgba[f]
        bg = self.bg_img
        if pixels is not None:
            # Gathered as bytes, so a step converts its N pixels, not the whole frame.
            rgb = rgb.reshape(-1, 3)[pixels.to(rgb.device)]
            rgba = rgba.reshape(-1, 4)[pixels.to(rgba.device)]
            bg = bg.reshape(-1, 3)[pixels.to(bg.device)]
        rgb = rgb.to(self.device, torch.float32) / 255
        rgba = rgba.to(self.device, torch.float32) / 255
        alpha = rgba[..., 3:]
        return self._color(rgb), self._color(rgba[..., :3]) * alpha + bg * (1 - alpha)

    def _rays(self, pose: torch.Tensor, f: int, results: dict) -> dict:
        if self.training and self.opt.finetune_lips:
            rect = self.rects[f]["lips"]
            results["rect"] = rect
            return get_rays(pose, self.intrinsics, self.H, self.W, rect=rect)
        single = self.training and self.opt.patch_size == 1
        head_only = single and not self.opt.torso
        if single and (self.error_map is not None or head_only and (self.opt.face_rays > 0 or self.opt.lips_rays > 0)):
            # The head fills a small part of the frame and everything around it is copied
            # from GT, so rays inside the face (and the few hundred lip pixels, whose motion
            # the audio must explain) buy the most per step on a slow device. Those rects are
            # head settings: torso rays go uniform, or by error with --error_map.
            n_face = int(round(self.num_rays * self.opt.face_rays)) if head_only else 0
            n_lips = int(round(self.num_rays * self.opt.lips_rays)) if head_only else 0
            parts = [rect_random_pixels(self.H, self.W, n, self.rects[f][name], self.device)
                     for name, n in (("face", n_face), ("lips", n_lips)) if n > 0]
            n_err = int(round(self.num_rays * self.opt.error_map)) if self.error_map is not None else 0
            if n_err > 0:
                parts.append(self.error_map.sample(f, n_err))
            rest = self.num_rays - n_face - n_lips - n_err
            if rest > 0:
                parts.append(random_pixels(self.H, self.W, rest, self.device))
            return rays_from_pixels(pose, self.intrinsics, self.W, torch.cat(parts))
        return get_rays(pose, self.intrinsics, self.H, self.W, self.num_rays, self.opt.patch_size)

    def collate(self, index: list[int]) -> dict:
        """Batch for one loader position (``index`` is a one-element list).

        Keys: ``H``, ``W``, ``index`` [f], ``rays_o``/``rays_d`` [1, N, 3], ``poses`` [1, 4, 4],
        ``auds`` [8|1, A, T], ``eye`` [1, 1] ([1, 6] with --exp_upper) or None, ``bg_color``,
        ``bg_torso_color`` [1, N, 3], ``bg_coords`` [1, N, 2], ``images`` [1, N, 3] when
        ``has_gt``; training adds ``face_mask``, ``lhalf_mask``, ``eye_mask`` (exp_eye) [1, N]
        bool, ``rect`` for lips batches, and with ``--error_map`` the ``ErrorMap`` and the rays'
        flat ``pixels`` [N]. ``N`` is ``H*W`` outside training.
        """
        pos = int(index[0])
        f = self.mirror_index(pos)
        pose = self.poses[f:f + 1]
        results = {"H": self.H, "W": self.W, "index": [f], "poses": pose,
                   "auds": self.get_audio_window(pos)}
        rays = self._rays(pose, f, results)
        results["rays_o"], results["rays_d"] = rays["rays_o"], rays["rays_d"]
        inds = rays["inds"]  # [1, N]
        if self.error_map is not None:
            # The trainer hands each ray's error back to the map (ErrorMap.record).
            results["error_map"], results["pixels"] = self.error_map, inds[0]

        if self.training:
            rects = self.rects[f]
            results["face_mask"] = rect_mask(rays["i"], rays["j"], rects["face"])
            results["lhalf_mask"] = rect_mask(rays["i"], rays["j"], rects["lhalf"])
            if self.opt.exp_eye:
                results["eye_mask"] = rect_mask(rays["i"], rays["j"], rects["eye"])

        results["eye"] = None
        if self.eye_area is not None:
            eye = self.eye_area[f:f + 1].clone()  # [1, 1] (blink) or [1, 6] (+ upper face)
            if self.training:
                eye[:, :1] += (torch.rand(1).item() - 0.5) * 2 * EYE_JITTER
                if eye.shape[1] > 1:
                    # The standardised upper-face values get the blink's jitter relative to their
                    # scale (blink 0..1, these about -1..1), one draw per value.
                    eye[:, 1:] += (torch.rand(1, eye.shape[1] - 1) - 0.5) * 4 * EYE_JITTER
            elif self.opt.fix_eye >= 0:
                eye[:, :1].fill_(self.opt.fix_eye)
            results["eye"] = eye

        image, bg_torso = self.frame_images(f, inds[0])  # [N, 3] each
        bg = self.bg_img.reshape(-1, 3)[inds[0]] if self.opt.torso else bg_torso
        results["bg_color"] = bg[None]  # [1, N, 3]
        results["bg_torso_color"] = bg_torso[None]
        results["bg_coords"] = self.bg_coords[:, inds[0]]
        if self.has_gt:
            results["images"] = image[None]
        return results

    def dataloader(self) -> DataLoader:
        """Batch-size-1 loader over the frames (train, shuffled) or the audio (eval/test).

        ``loader._data`` is this dataset; ``loader.has_gt`` says whether GT images match.
        """
        size = self.num_frames if self.training else self.auds.shape[0]
        loader = DataLoader(list(range(size)), batch_size=1, collate_fn=self.collate,
                            shuffle=self.training, num_workers=0)
        loader._data = self
        loader.has_gt = self.has_gt
        return loader
