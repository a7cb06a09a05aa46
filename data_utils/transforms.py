"""Camera json files from the head track: ``transforms_train.json`` and ``transforms_val.json``.

Same content and conventions as the reference's task 9: the head stays fixed at the origin and
the camera moves. With ``R = euler_to_rot(euler)`` and ``t = trans / 10`` (decimetres ->
metres) the camera-to-world matrix is ``[Rᵀ | −Rᵀ t]`` (OpenGL camera: x right, y up, looking
down −z). ``focal_len`` is the tracked focal, ``cx = W / 2``, ``cy = H / 2`` from the first
frame; the first ⌊N·10/11⌋ frames are the train split, the rest the val split, and
``aud_id = img_id = frame index``.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from data_utils.atomic import write_json
from data_utils.tracking import euler_to_rot


def camera_to_world(euler: torch.Tensor, trans: torch.Tensor) -> torch.Tensor:
    """Reference camera poses from the head track.

    Args:
        euler: ``[N, 3]`` radians (tracker convention).
        trans: ``[N, 3]`` decimetres (tracker convention).

    Returns:
        ``[N, 4, 4]`` float32 camera-to-world matrices, translation in metres.
    """
    rot_inv = euler_to_rot(euler.double()).transpose(1, 2)
    c2w = torch.eye(4, dtype=torch.float64).repeat(len(euler), 1, 1)
    c2w[:, :3, :3] = rot_inv
    c2w[:, :3, 3] = -(rot_inv @ (trans.double() / 10.0)[..., None])[..., 0]
    return c2w.float()


def split_index(n_frames: int) -> int:
    """Number of train frames: the first ⌊N·10/11⌋, as in the reference."""
    return int(n_frames * 10 / 11)


def write_transforms(track_pt: str | Path, ori_dir: str | Path, out_dir: str | Path) -> dict:
    """Write ``out_dir/transforms_train.json`` and ``transforms_val.json`` (atomically).

    Args:
        track_pt: ``track_params.pt`` from `tracking.track_folder` (euler, trans, focal).
        ori_dir: the frame folder the track was made from (frame size, frame count).
        out_dir: training folder.

    Returns:
        dict(n_train, n_val, focal_len, paths: list of the two json paths).
    """
    from data_utils.landmarks import list_frames

    track_pt, out_dir = Path(track_pt), Path(out_dir)
    if not track_pt.exists():
        raise FileNotFoundError(f"{track_pt} missing; run head tracking first (process.py --task 9)")
    params = torch.load(track_pt, map_location="cpu", weights_only=True)
    missing = [k for k in ("euler", "trans", "focal") if k not in params]
    if missing:
        raise ValueError(f"{track_pt} lacks {missing}; re-run head tracking (process.py --task 9 --force)")
    euler, trans = params["euler"], params["trans"]
    focal = float(params["focal"].reshape(-1)[0])
    frames = list_frames(ori_dir)
    n = len(euler)
    if n != len(frames) or trans.shape != (n, 3) or euler.shape != (n, 3):
        raise ValueError(f"{track_pt} holds {n} poses but {ori_dir} has {len(frames)} frames; "
                         "re-run head tracking (process.py --task 9 --force)")
    if n < 2:
        raise ValueError(f"{ori_dir} has {n} frame(s); train and val splits need at least 2")
    first = cv2.imread(str(frames[0]), cv2.IMREAD_UNCHANGED)
    if first is None:
        raise ValueError(f"cannot read {frames[0]}; re-extract frames (process.py --task 3 --force)")
    h, w = first.shape[:2]

    c2w = camera_to_world(euler, trans).numpy().astype(np.float64)
    n_train = split_index(n)
    paths = []
    for name, ids in (("train", range(0, n_train)), ("val", range(n_train, n))):
        content = dict(
            focal_len=focal, cx=w / 2.0, cy=h / 2.0,
            frames=[dict(img_id=i, aud_id=i, transform_matrix=c2w[i].tolist()) for i in ids])
        path = out_dir / f"transforms_{name}.json"
        write_json(path, content)
        paths.append(str(path))
    return dict(n_train=n_train, n_val=n - n_train, focal_len=focal, paths=paths)
