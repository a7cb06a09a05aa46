"""68-point iBUG facial landmarks: MediaPipe face mesh (offline, default) or face-alignment FAN.

Landmarks are pixel coordinates ``[68, 2]`` with x = column, y = row, in iBUG-68 order, which is
what face_alignment writes and what the reference reads from ``ori_imgs/<k>.lms``:
0–16 jaw (0 = subject's right jaw end, i.e. image left; 8 = chin), 17–21 right brow, 22–26 left
brow, 27–30 nose bridge (27 between the eyes, 30 tip), 31–35 nostrils (left to right in the
image), 36–41 right eye, 42–47 left eye (each: outer/inner corner, two upper-lid points, the
other corner, two lower-lid points, clockwise in the image), 48–59 outer lips (48 right mouth
corner, 51 top centre, 54 left corner, 57 bottom centre), 60–67 inner lips.
"""
from __future__ import annotations

import os
import re
import time
import warnings
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from tqdm import tqdm

from data_utils.atomic import atomic_paths
from data_utils.images import read_rgb  # noqa: F401  (also read through this module by parsing.py)
from data_utils.quiet import quiet_native_logs

# MediaPipe face-mesh vertex for each iBUG-68 point. Chosen on real frames (numbers drawn on
# May_5s.mp4): the jaw vertices are the face-oval vertices nearest to 8 equal arc-length steps
# from the ear (127 / 356) to the chin (152); the eye corners and lids are the mesh eye contour
# (33/133 and 362/263 corners, lids a third and two thirds along); brows follow the upper brow
# edge; lips use the mesh's outer (61 … 291) and inner (78 … 308) lip loops.
MEDIAPIPE_TO_IBUG68 = np.array(
    [
        # 0–16 jaw, image left -> chin -> image right
        127, 234, 93, 132, 58, 136, 149, 148, 152, 377, 378, 365, 288, 361, 323, 454, 356,
        # 17–21 right brow (outer -> inner), 22–26 left brow (inner -> outer)
        70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
        # 27–30 nose bridge (top -> tip), 31–35 nostril base (image left -> right)
        168, 197, 5, 4, 98, 97, 2, 326, 327,
        # 36–41 right eye: outer corner, upper x2, inner corner, lower x2
        33, 160, 158, 133, 153, 144,
        # 42–47 left eye: inner corner, upper x2, outer corner, lower x2
        362, 385, 387, 263, 373, 380,
        # 48–59 outer lips: right corner, upper lip to left corner, lower lip back
        61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,
        # 60–67 inner lips: right corner, upper, left corner, lower
        78, 81, 13, 311, 308, 402, 14, 178,
    ],
    dtype=np.int64,
)

ENGINES = ("mediapipe", "fan")
_FRAME_NAME = re.compile(r"^(\d+)\.jpg$")


def _check_rgb(rgb: np.ndarray) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        got = f"{rgb.dtype} {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise ValueError(f"landmark detection needs an RGB uint8 image [H, W, 3], got {got}")


def fan_weight_files() -> list[Path]:
    """Paths where face-alignment looks for its FAN-2D and S3FD weights (torch hub cache)."""
    import torch
    from face_alignment import api
    from face_alignment.detection.sfd import sfd_detector

    folder = Path(torch.hub.get_dir()) / "checkpoints"
    urls = (api.models_urls["2DFAN-4"], sfd_detector.models_urls["s3fd"])
    return [folder / os.path.basename(urlparse(u).path) for u in urls]


def _bbox_area(points: np.ndarray) -> float:
    span = points[:, :2].max(axis=0) - points[:, :2].min(axis=0)
    return float(span[0] * span[1])


class LandmarkDetector:
    """Single-face landmark detector.

    Args:
        engine: ``"mediapipe"`` (face mesh shipped in the mediapipe wheel, ~5-10 ms per 512²
            frame on CPU) or ``"fan"`` (face_alignment 2D-FAN + S3FD, loaded by face-alignment:
            the torch hub cache, downloaded there on first use).
        video: mediapipe only: track across consecutive frames (faster, temporally stable);
            keep False for unrelated images.
        device: torch device for the FAN engine.

    When several faces are visible the largest one is returned and a warning is issued.
    """

    def __init__(self, engine: str = "mediapipe", video: bool = False, device: str = "cpu"):
        if engine not in ENGINES:
            raise ValueError(f"unknown landmark engine {engine!r}; use one of {ENGINES}")
        self.engine = engine
        self.last_num_faces = 0
        self._warm = False  # whether a face was found: the first one logs a projection warning
        if engine == "mediapipe":
            import mediapipe as mp

            with quiet_native_logs():
                self._mesh = mp.solutions.face_mesh.FaceMesh(
                    static_image_mode=not video, max_num_faces=2, refine_landmarks=True
                )
                # The graph's threads open its models (and log about it) after the constructor
                # returns; one blank frame waits for them inside the filtered window.
                self._mesh.process(np.zeros((64, 64, 3), np.uint8))
        else:
            self._fan = self._load_fan(device)

    @staticmethod
    def _load_fan(device: str):
        import face_alignment

        from data_utils.downloads import OFFLINE_VARS, failure_reason, network_timeout, offline

        missing = [p for p in fan_weight_files() if not p.is_file()]
        if missing and offline():
            raise FileNotFoundError(
                f"FAN landmark weights {', '.join(p.name for p in missing)} are not in {missing[0].parent} and "
                f"offline mode is set ({'/'.join(OFFLINE_VARS)}): connect once (face-alignment caches them "
                "there), or use --landmark_engine mediapipe")
        try:
            with network_timeout():  # face-alignment's own loader: hub cache, downloaded on a miss
                return face_alignment.FaceAlignment(
                    face_alignment.LandmarksType.TWO_D, device=device, flip_input=False, compile=False
                )
        except OSError as err:  # URLError, timeouts, refused connections
            missing = [p.name for p in fan_weight_files() if not p.is_file()]
            raise FileNotFoundError(
                f"FAN landmark weights {', '.join(missing) or '(face-alignment)'} are not in "
                f"{fan_weight_files()[0].parent} and could not be downloaded ({failure_reason(err)}): "
                "connect once (face-alignment caches them there), or use --landmark_engine mediapipe"
            ) from err

    def detect_mesh(self, rgb: np.ndarray) -> np.ndarray | None:
        """MediaPipe face mesh of the largest face.

        Args:
            rgb: image ``[H, W, 3]`` uint8, RGB.

        Returns:
            ``[478, 3]`` float64 (x = column, y = row in pixels, z in the same pixel scale,
            smaller = closer to the camera), or None when no face is found.
        """
        if self.engine != "mediapipe":
            raise ValueError(f"detect_mesh needs engine='mediapipe', this detector uses {self.engine!r}")
        _check_rgb(rgb)
        h, w = rgb.shape[:2]
        if self._warm:
            result = self._mesh.process(rgb)
        else:
            with quiet_native_logs():
                result = self._mesh.process(rgb)
        faces = result.multi_face_landmarks or []
        self._warm = self._warm or bool(faces)
        self.last_num_faces = len(faces)
        if not faces:
            return None
        meshes = [np.array([(p.x * w, p.y * h, p.z * w) for p in f.landmark]) for f in faces]
        if len(meshes) > 1:
            warnings.warn(f"{len(meshes)} faces in the image; using the largest", stacklevel=2)
        return max(meshes, key=_bbox_area)

    def detect(self, rgb: np.ndarray) -> np.ndarray | None:
        """68 iBUG landmarks of the largest face.

        Args:
            rgb: image ``[H, W, 3]`` uint8, RGB.

        Returns:
            ``[68, 2]`` float64 pixels (x = column, y = row), or None when no face is found.
        """
        if self.engine == "mediapipe":
            mesh = self.detect_mesh(rgb)
            return None if mesh is None else mesh[MEDIAPIPE_TO_IBUG68, :2].copy()
        _check_rgb(rgb)
        faces = self._fan.get_landmarks_from_image(rgb) or []
        self.last_num_faces = len(faces)
        if not faces:
            return None
        if len(faces) > 1:
            warnings.warn(f"{len(faces)} faces in the image; using the largest", stacklevel=2)
        return np.asarray(max(faces, key=_bbox_area), dtype=np.float64)[:, :2]

    def close(self) -> None:
        """Release the mediapipe graph (no-op for FAN)."""
        if self.engine == "mediapipe":
            self._mesh.close()

    def __enter__(self) -> "LandmarkDetector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def list_frames(ori_dir: str | os.PathLike) -> list[Path]:
    """``<k>.jpg`` files of a frame folder sorted by k; FileNotFoundError if there are none."""
    ori_dir = Path(ori_dir)
    if not ori_dir.is_dir():
        raise FileNotFoundError(f"frame folder {ori_dir} does not exist; extract frames first (process.py --task 3)")
    frames = [p for p in ori_dir.iterdir() if _FRAME_NAME.match(p.name)]
    if not frames:
        raise FileNotFoundError(f"no <k>.jpg frames in {ori_dir}; extract frames first (process.py --task 3)")
    return sorted(frames, key=lambda p: int(p.stem))


def frame_ranges(indices: list[int]) -> str:
    """Compact text for sorted frame numbers: ``[3, 4, 5, 9]`` -> ``"3-5, 9"``."""
    parts: list[str] = []
    start = prev = None
    for i in indices:
        if prev is not None and i == prev + 1:
            prev = i
            continue
        if start is not None:
            parts.append(f"{start}-{prev}" if prev != start else f"{start}")
        start = prev = i
    if start is not None:
        parts.append(f"{start}-{prev}" if prev != start else f"{start}")
    return ", ".join(parts)


def write_lms(path: str | os.PathLike, lms: np.ndarray) -> None:
    """Write ``[68, 2]`` landmarks to ``path`` as the reference's ``%f`` text (not atomic by
    itself: ``path`` is a temporary name from ``data_utils.atomic``)."""
    np.savetxt(path, lms, fmt="%f")


def detect_folder(ori_dir: str | os.PathLike, engine: str = "mediapipe", max_missing: float = 0.1) -> dict:
    """Write ``<k>.lms`` next to every ``<k>.jpg`` of ``ori_dir``.

    Frames are processed in order with tracking (video mode). Frames without a face get
    landmarks linearly interpolated from the nearest detected frames (held at the ends), with a
    warning naming them; if more than ``max_missing`` of the frames have no face, nothing is
    written and a ValueError lists the frame ranges.

    Returns:
        dict(n_frames, n_detected, n_interpolated, missing_frames (text ranges), n_multi_face,
        seconds, ms_per_frame).
    """
    frames = list_frames(ori_dir)
    t0 = time.perf_counter()
    found: dict[int, np.ndarray] = {}
    n_multi = 0
    with LandmarkDetector(engine, video=True) as det, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # multi-face frames are summarised once below
        for i, path in enumerate(tqdm(frames, desc="landmarks", unit="frame")):
            lms = det.detect(read_rgb(path))
            n_multi += det.last_num_faces > 1
            if lms is not None:
                found[i] = lms
    n = len(frames)
    missing = [i for i in range(n) if i not in found]
    missing_text = frame_ranges([int(frames[i].stem) for i in missing])
    if len(missing) > max_missing * n:
        raise ValueError(
            f"{ori_dir}: no face found in {len(missing)}/{n} frames (frames {missing_text}); "
            f"at most {max_missing:.0%} may miss - cut the video to the part where one face is clearly visible"
        )
    if n_multi:
        warnings.warn(f"{ori_dir}: {n_multi} frames show several faces; used the largest", stacklevel=2)
    if missing:
        warnings.warn(f"{ori_dir}: no face in frames {missing_text}; landmarks interpolated", stacklevel=2)
        have = np.array(sorted(found))
        stack = np.stack([found[i] for i in have])  # [n_found, 68, 2]
        flat = stack.reshape(len(have), -1)
        for i in missing:
            found[i] = np.array([np.interp(i, have, flat[:, j]) for j in range(flat.shape[1])]).reshape(68, 2)
    with atomic_paths([path.with_suffix(".lms") for path in frames]) as tmps:
        for i, tmp in enumerate(tmps):
            write_lms(tmp, found[i])
    seconds = time.perf_counter() - t0
    return dict(
        n_frames=n,
        n_detected=n - len(missing),
        n_interpolated=len(missing),
        missing_frames=missing_text,
        n_multi_face=n_multi,
        seconds=round(seconds, 3),
        ms_per_frame=round(1000 * seconds / n, 2),
    )
