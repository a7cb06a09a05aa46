"""Nearest-training-frame floor: how well held-out frames are scored by copying a training head.

For each held-out frame the training frame with the most similar landmarks is found, its head
region is pasted into the GT frame (everything else stays GT, as a head-only model renders the
head over the GT torso and background), and the composite is scored like the model (PSNR,
SSIM, mouth LMD). A model that cannot beat this floor has learnt nothing beyond a lookup.

Choices:
- Matching uses all 68 landmarks (``ori_imgs/<id>.lms``) in pixels, so the chosen training
  head also sits where the held-out head is: a copy pasted at the same place. (Matching
  position- and scale-normalised shapes instead picks heads elsewhere in the frame, a weaker
  floor: 27.9 dB instead of 31.7 dB on french.mp4.) The held-out frame's landmarks come from
  its GT image, which a renderer does not have (it has the pose and the audio/blink inputs):
  the lookup is told where the mouth and head are, so both floors are generous to it.
- ``region="outline"``: the pasted region is the convex hull of the training frame's 68
  landmarks (jaw to brows), dilated by 2 % of the image side, like the face-mesh hull the issue
  measured with. The held-out frame keeps its own hair, forehead and ears: an easier task than
  the head model's, which renders all of those.
- ``region="head"`` (like for like): the hull united with the head label (face, hair, ears) of
  the parsing masks of *both* frames, dilated the same way. Everything a head model renders is
  then copied: where the held-out head is and where the training head was.
- ``full_frame_psnr`` copies the whole training frame, for reference.

Results are cached in ``<data>/baseline_<split>.json`` (outline) and
``<data>/baseline_<split>_head.json`` (head), keyed on the frame lists of both splits and the
size/mtime of their files, since the floor depends on the data only.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np

from data_utils.atomic import atomic_path
from data_utils.images import read_rgb

from .metrics import LMDMeter, psnr, ssim

HEAD_BGR = (255, 0, 0)  # head label colour of parsing/<k>.png (data_utils.parsing)
DILATE_FRACTION = 0.02
CACHE_VERSION = 3
REGIONS = ("outline", "head")


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {path.parent} a processed training folder "
                                "(data_utils/process.py writes transforms_train/val.json)?")
    with open(path) as f:
        return json.load(f)


def split_frames(data_dir: Path, split: str) -> list[dict]:
    """Frames (``img_id``, ``aud_id``) of ``split``: train -> transforms_train.json,
    test/val -> transforms_val.json."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test, got {split!r}")
    name = "train" if split == "train" else "val"
    frames = _read_json(Path(data_dir) / f"transforms_{name}.json").get("frames") or []
    if not frames:
        raise ValueError(f"{Path(data_dir) / f'transforms_{name}.json'} has no frames")
    return [{"img_id": int(f["img_id"]), "aud_id": int(f.get("aud_id", f["img_id"]))} for f in frames]


def nearest_indices(query: np.ndarray, pool: np.ndarray, exclude: np.ndarray | None = None) -> np.ndarray:
    """Index into ``pool`` of the closest landmark set (sum of squared pixel distances).

    Args:
        query: landmarks  # [Q, 68, 2]
        pool: landmarks  # [P, 68, 2]
        exclude: pairs that may not match (a frame and itself)  # [Q, P] bool, or None
    Returns:
        indices into pool  # [Q]
    """
    q = np.asarray(query, dtype=np.float64).reshape(len(query), -1)
    p = np.asarray(pool, dtype=np.float64).reshape(len(pool), -1)
    d2 = (q ** 2).sum(1)[:, None] - 2 * q @ p.T + (p ** 2).sum(1)[None]  # [Q, P]
    if exclude is not None:
        d2 = np.where(exclude, np.inf, d2)
    return d2.argmin(axis=1)


def head_mask(lms: np.ndarray, shape: tuple[int, int], parsings: tuple[np.ndarray, ...] = ()) -> np.ndarray:
    """Region pasted from a training frame: the convex hull of its landmarks united with the
    head label of each given parsing map, dilated by 2 % of the image side.

    Args:
        lms: landmarks of the training frame, pixels  # [68, 2]
        shape: (H, W) of the image.
        parsings: colour-coded parsing maps (``parsing/<id>.png`` as cv2 reads them)  # each [H, W, 3]
    Returns:
        bool mask  # [H, W]
    """
    h, w = shape
    mask = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(lms).astype(np.int32)), 1)
    for parsing_bgr in parsings:
        if parsing_bgr.shape[:2] != (h, w):
            raise ValueError(f"parsing map of shape {parsing_bgr.shape[:2]} does not match the image {(h, w)}")
        mask |= np.all(parsing_bgr == np.array(HEAD_BGR, np.uint8), axis=2).astype(np.uint8)
    r = max(1, int(round(DILATE_FRACTION * max(h, w))))
    mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    return mask.astype(bool)


def _read_parsing(path: Path) -> np.ndarray:
    parsing = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if parsing is None:
        raise FileNotFoundError(f"cannot read {path}: run data_utils/process.py --task 5 (parsing)")
    return parsing


def _read_lms(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run data_utils/process.py --task 4 (landmarks)")
    lms = np.loadtxt(path, dtype=np.float64)
    if lms.shape != (68, 2):
        raise ValueError(f"{path} must hold 68 rows of 'x y', got shape {lms.shape}")
    return lms


def _cache_key(data_dir: Path, train: list[dict], held: list[dict], region: str) -> str:
    h = hashlib.sha1(f"v{CACHE_VERSION}:{region}".encode())
    for tag, frames in (("train", train), ("held", held)):
        h.update(tag.encode())
        for f in frames:
            for sub, ext in (("gt_imgs", "jpg"), ("ori_imgs", "lms"), ("parsing", "png")):
                p = data_dir / sub / f"{f['img_id']}.{ext}"
                st = p.stat() if p.exists() else None
                h.update(f"{p.name}:{st.st_size if st else -1}:{st.st_mtime_ns if st else -1};".encode())
    return h.hexdigest()


def nearest_frame_baseline(data_dir, split: str = "test", detector=None, cache: bool = True,
                           max_frames: int | None = None, region: str = "outline") -> dict:
    """Score the nearest-training-frame floor on the held-out frames of ``data_dir``.

    Args:
        data_dir: processed training folder (gt_imgs/, ori_imgs/*.lms, parsing/, transforms_*.json).
        split: frames to score: ``test``/``val`` (transforms_val.json) or ``train``
            (then the nearest *other* training frame is used).
        detector: landmark detector for LMD (``detect(rgb u8) -> [68, 2] | None``);
            default mediapipe.
        cache: read/write ``<data>/baseline_<split>[_head].json``.
        max_frames: score only this many held-out frames, evenly spread (None = all).
        region: ``outline`` (landmark hull) or ``head`` (hull + parsing head label of both
            frames, like for like); see the module docstring.
    Returns:
        ``psnr`` (dB, composite vs GT), ``ssim``, ``lmd`` (pixels, None without detections),
        ``full_frame_psnr`` (dB, whole training frame vs GT), ``n_frames``, ``lmd_frames``,
        ``matches`` (list of [held-out img_id, training img_id]), ``region``.
    """
    if region not in REGIONS:
        raise ValueError(f"region must be one of {REGIONS}, got {region!r}")
    data_dir = Path(data_dir).resolve()
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data folder {data_dir} does not exist")
    train = split_frames(data_dir, "train")
    held = split_frames(data_dir, split)
    if max_frames is not None and max_frames < len(held):
        held = [held[i] for i in np.linspace(0, len(held) - 1, max_frames).round().astype(int)]
    cache_path = data_dir / (f"baseline_{split}.json" if region == "outline" else f"baseline_{split}_{region}.json")
    key = _cache_key(data_dir, train, held, region)
    if cache and cache_path.is_file():
        try:
            cached = json.loads(cache_path.read_text())
        except json.JSONDecodeError:
            cached = {}
        if cached.get("key") == key:
            return cached["result"]

    pool = np.stack([_read_lms(data_dir / "ori_imgs" / f"{f['img_id']}.lms") for f in train])  # [P, 68, 2]
    query = np.stack([_read_lms(data_dir / "ori_imgs" / f"{f['img_id']}.lms") for f in held])  # [Q, 68, 2]
    exclude = None
    if split == "train":
        # Each training frame would match itself perfectly.
        exclude = (np.array([f["img_id"] for f in held])[:, None]
                   == np.array([f["img_id"] for f in train])[None])
    nearest = nearest_indices(query, pool, exclude)

    lmd = LMDMeter(detector)
    scores = {"psnr": [], "ssim": [], "full": []}
    matches = []
    for f, j in zip(held, nearest):
        src = train[int(j)]["img_id"]
        gt = read_rgb(data_dir / "gt_imgs" / f"{f['img_id']}.jpg")
        other = read_rgb(data_dir / "gt_imgs" / f"{src}.jpg")
        if other.shape != gt.shape:
            raise ValueError(f"gt_imgs/{src}.jpg and gt_imgs/{f['img_id']}.jpg differ in size")
        parsings = ()
        if region == "head":
            parsings = tuple(_read_parsing(data_dir / "parsing" / f"{i}.png") for i in (src, f["img_id"]))
        mask = head_mask(pool[int(j)], gt.shape[:2], parsings)
        composite = np.where(mask[..., None], other, gt)
        gt_f, comp_f = gt / 255.0, composite / 255.0
        scores["psnr"].append(psnr(comp_f, gt_f))
        scores["ssim"].append(ssim(comp_f, gt_f))
        scores["full"].append(psnr(other / 255.0, gt_f))
        lmd.update(composite, gt)
        matches.append([f["img_id"], src])
    result = {
        "psnr": float(np.mean(scores["psnr"])),
        "ssim": float(np.mean(scores["ssim"])),
        "lmd": lmd.result(),
        "full_frame_psnr": float(np.mean(scores["full"])),
        "n_frames": len(held),
        "lmd_frames": len(lmd.values),
        "matches": matches,
        "region": region,
    }
    if cache:
        with atomic_path(cache_path) as tmp:
            tmp.write_text(json.dumps({"key": key, "split": split, "result": result}, indent=2) + "\n")
    return result
