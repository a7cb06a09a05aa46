"""A metric mean 3D face for head tracking, derived from mediapipe face-mesh output.

The reference tracker fits the BFM 3DMM (not redistributable, needs downloaded files). We track
a rigid face instead, anchored to a mean shape so that its metric scale fixes the camera
distance. That mean shape is ``assets/face_mesh478_template.npy``: the 478 mediapipe face-mesh
points averaged over real frames (generalised Procrustes), made frontal and scaled to 65 mm
between the eye centres. The 68 iBUG points are picked from it through the landmark module's
``MEDIAPIPE_TO_IBUG68``, the same map that made the ``.lms`` files, so template and landmarks
agree point for point.

Model frame (the reference's BFM frame): x to the image right (the subject's left), y up, z out
of the face towards the camera; origin at the centroid of the dense face surface (as the
reference centres the BFM mean shape); unit: decimetres (BFM vertices / 1e5), so that the
reference's ``trans / 10`` gives metres in ``transforms_*.json``.

Rebuild the asset (needs ``data_utils.landmarks``):
``python -m data_utils.face_template VIDEO [VIDEO ...] [--step 5]``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

MESH_ASSET = Path(__file__).resolve().parent / "assets" / "face_mesh478_template.npy"

# Distance between the two eye centres (mean of each eye's corners); adult average.
EYE_CENTRE_DISTANCE_DM = 0.65

# Mediapipe mesh indices used to orient the mean mesh (facts of mediapipe's topology).
_MP_R_EYE = (33, 133)  # subject's right eye: outer, inner corner
_MP_L_EYE = (263, 362)  # subject's left eye: outer, inner corner
_MP_MOUTH = (61, 291)  # mouth corners: right, left
_MP_FOREHEAD, _MP_CHIN = 10, 152

# iBUG-68 groups whose position is fixed to the skull (jaw and lips move with speech).
IBUG_BROWS = tuple(range(17, 27))
IBUG_NOSE = tuple(range(27, 36))
IBUG_EYE_CORNERS = (36, 39, 42, 45)
IBUG_EYELIDS = (37, 38, 40, 41, 43, 44, 46, 47)
STABLE_IDS = tuple(sorted(IBUG_BROWS + IBUG_NOSE + IBUG_EYE_CORNERS + IBUG_EYELIDS))


def stable_weights() -> np.ndarray:
    """Per-point fitting weights of the 68 iBUG points: ``[68]`` float64.

    Zero on jaw and lips (they move with speech), full on the nose and the eye corners,
    reduced on eyelids (blinks) and nearly zero on brows: raised brows pulled the rigid fit up,
    and the head silhouette then moved without the head. On french.mp4, brows at 0.5 let a
    fixed 3D point follow the parsing silhouette's top to 4.2 px rms, at 0.05 to 2.5 px (left
    and right sides 2.8/3.0 -> 2.8/2.6 px). Not exactly zero: the shape prior is weighted
    like the points and would leave a zero-weight point unconstrained.
    """
    w = np.zeros(68)
    w[list(IBUG_NOSE)] = 1.0
    w[list(IBUG_EYE_CORNERS)] = 1.0
    w[list(IBUG_BROWS)] = 0.05
    w[list(IBUG_EYELIDS)] = 0.3
    return w


def _procrustes(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """``src`` [P, 3] moved by the similarity transform that best fits it onto ``dst`` [P, 3]."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    u, s, vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(u @ vt))
    fix = np.diag([1.0, 1.0, d])
    rot = u @ fix @ vt
    scale = (s * np.diag(fix)).sum() / (a ** 2).sum()
    return scale * a @ rot + mu_d


def mean_mesh(meshes: np.ndarray, iters: int = 3) -> np.ndarray:
    """Metric, frontal mean face from mediapipe meshes.

    Args:
        meshes: ``[K, 478, 3]`` mediapipe face-mesh points in pixels (x = column, y = row,
            z = depth on the x scale, smaller = closer to the camera); frames with NaN skipped.
        iters: generalised-Procrustes rounds.

    Returns:
        ``[478, 3]`` float32 in decimetres, model frame (x image-right, y up, z to camera),
        origin at the centroid, 65 mm between the eye centres.
    """
    meshes = np.asarray(meshes, dtype=np.float64)
    if meshes.ndim != 3 or meshes.shape[1:] != (478, 3):
        raise ValueError(f"meshes must be [K, 478, 3] mediapipe points, got {meshes.shape}")
    meshes = meshes[np.isfinite(meshes).all(axis=(1, 2))]
    if len(meshes) == 0:
        raise ValueError("mean_mesh: no frame with a detected face mesh")
    # pixels (x right, y down, z away) -> right-handed model frame (x right, y up, z towards camera)
    meshes = meshes * np.array([1.0, -1.0, -1.0])
    ref = meshes[0]
    for _ in range(iters):
        ref = np.mean([_procrustes(m, ref) for m in meshes], axis=0)

    eye_r, eye_l = ref[list(_MP_R_EYE)].mean(0), ref[list(_MP_L_EYE)].mean(0)
    x_axis = (eye_l - eye_r) + (ref[_MP_MOUTH[1]] - ref[_MP_MOUTH[0]])
    x_axis /= np.linalg.norm(x_axis)
    up = ref[_MP_FOREHEAD] - ref[_MP_CHIN]
    y_axis = up - x_axis * (up @ x_axis)
    y_axis /= np.linalg.norm(y_axis)
    z_axis = np.cross(x_axis, y_axis)
    frontal = (ref - ref.mean(0)) @ np.stack([x_axis, y_axis, z_axis], axis=1)
    scale = EYE_CENTRE_DISTANCE_DM / np.linalg.norm(eye_l - eye_r)
    return (frontal * scale).astype(np.float32)


def load_mesh_template(path: str | Path = MESH_ASSET) -> np.ndarray:
    """The stored mean face mesh: ``[478, 3]`` float64, decimetres, model frame."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"face template {path} is missing; rebuild it with "
            "`python -m data_utils.face_template VIDEO`")
    mesh = np.load(path).astype(np.float64)
    if mesh.shape != (478, 3):
        raise ValueError(f"face template {path} must hold [478, 3] points, got {mesh.shape}")
    return mesh


def face68_template(path: str | Path = MESH_ASSET) -> np.ndarray:
    """The mean face at the 68 iBUG landmarks: ``[68, 3]`` float64, decimetres, model frame."""
    from data_utils.landmarks import MEDIAPIPE_TO_IBUG68

    return load_mesh_template(path)[np.asarray(MEDIAPIPE_TO_IBUG68)]


def _collect_meshes(videos: list[str], step: int) -> np.ndarray:
    import imageio.v3 as iio

    from data_utils.landmarks import LandmarkDetector

    detector = LandmarkDetector("mediapipe")
    meshes = []
    for video in videos:
        if not Path(video).exists():
            raise FileNotFoundError(f"video {video} does not exist")
        for k, frame in enumerate(iio.imiter(video)):
            if k % step == 0:
                mesh = detector.detect_mesh(frame)
                meshes.append(np.full((478, 3), np.nan) if mesh is None else mesh)
    return np.stack(meshes)


def main(argv: list[str] | None = None) -> None:
    from data_utils.atomic import save_npy

    p = argparse.ArgumentParser(description="rebuild the mean 3D face template from videos")
    p.add_argument("videos", nargs="+", help="talking-head videos (frontal faces)")
    p.add_argument("--step", type=int, default=5, help="use every STEP-th frame")
    p.add_argument("--out", default=str(MESH_ASSET))
    args = p.parse_args(argv)
    mesh = mean_mesh(_collect_meshes(args.videos, args.step))
    save_npy(args.out, mesh)
    print(f"wrote {args.out}: {mesh.shape}, extent {np.ptp(mesh, axis=0).round(3)} dm")


if __name__ == "__main__":
    main()
