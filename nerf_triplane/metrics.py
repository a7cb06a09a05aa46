"""Image and lip-sync metrics: PSNR, SSIM, LPIPS (AlexNet) and LMD (mouth landmark distance).

Images are float arrays/tensors in [0, 1], shaped [H, W, 3]. Each function returns a
plain float so results go straight into ``metrics.json``.

LPIPS needs torchvision's ImageNet AlexNet weights (``alexnet-owt-7be5be79.pth``):
``--lpips_weights PATH`` if given, else torchvision's own loading (the torch hub cache,
downloaded there on first use). Offline and not cached, ``load_lpips`` returns None with a
one-line notice within seconds. The small LPIPS linear heads ship inside the ``lpips`` wheel. ``ERNERF_LPIPS_RANDOM=1`` (tests only)
builds the network with a random backbone so code paths can run without the weights.
"""
from __future__ import annotations

import math
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
MOUTH = slice(48, 68)  # iBUG-68 points 48..67: outer and inner lips


def _to_tensor(img) -> torch.Tensor:
    """[H, W, 3] array or tensor -> float64 tensor on the CPU."""
    if isinstance(img, torch.Tensor):
        return img.detach().to("cpu", torch.float64)
    return torch.from_numpy(np.asarray(img, dtype=np.float64))


PSNR_CAP = 100.0  # dB: what an exact match (mean squared error <= 1e-10) scores in the reports


def capped_psnr(mse: float) -> float:
    """PSNR in dB of a mean squared error of values in [0, 1], at most ``PSNR_CAP``."""
    return PSNR_CAP if mse <= 10 ** (-PSNR_CAP / 10) else -10.0 * math.log10(mse)


def psnr(pred, gt) -> float:
    """Peak signal-to-noise ratio in dB of [H, W, 3] images in [0, 1] (inf when equal)."""
    pred, gt = _to_tensor(pred), _to_tensor(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"psnr: shapes differ, {tuple(pred.shape)} vs {tuple(gt.shape)}")
    mse = torch.mean((pred - gt) ** 2).item()
    return math.inf if mse == 0 else -10.0 * math.log10(mse)


def _gaussian_1d(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Normalised 1-D Gaussian  # [size]."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def ssim(pred, gt, window: int = 11, sigma: float = 1.5) -> float:
    """Structural similarity (Wang et al. 2004) of [H, W, C] images in [0, 1].

    Gaussian window (11, sigma 1.5), K1 = 0.01, K2 = 0.03, statistics over the valid
    region only, averaged over channels. Identical images give exactly 1.
    """
    pred, gt = _to_tensor(pred), _to_tensor(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"ssim: shapes differ, {tuple(pred.shape)} vs {tuple(gt.shape)}")
    if pred.ndim == 2:
        pred, gt = pred[..., None], gt[..., None]
    if min(pred.shape[:2]) < window:
        raise ValueError(f"ssim: images must be at least {window}x{window}, got {tuple(pred.shape[:2])}")
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    x = pred.permute(2, 0, 1)[:, None]  # [C, 1, H, W]
    y = gt.permute(2, 0, 1)[:, None]
    g = _gaussian_1d(window, sigma).to(x.dtype)
    # The Gaussian is separable: two 1-D passes over all five moments at once, as
    # unfold + matmul (several times faster than conv2d for float64 on the CPU).
    moments = torch.cat([x, y, x * x, y * y, x * y])  # [5C, 1, H, W]
    blurred = (moments.unfold(3, window, 1) @ g).unfold(2, window, 1) @ g  # [5C, 1, H-w+1, W-w+1]
    mu_x, mu_y, xx, yy, xy = blurred.chunk(5)
    var_x, var_y, cov = xx - mu_x ** 2, yy - mu_y ** 2, xy - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2)
    return (num / den).mean().item()


def alexnet_state(path: str | os.PathLike | None = None) -> dict:
    """AlexNet state dict: ``path`` if given, else torchvision's (hub cache, downloaded on a miss).

    Raises FileNotFoundError (one line: the file, the reason, the fix) when neither works.
    """
    from data_utils.downloads import OFFLINE_VARS, failure_reason, network_timeout, offline

    found = find_alexnet_weights(path)
    if found is not None:
        return torch.load(found, map_location="cpu", weights_only=True)
    from torchvision.models import AlexNet_Weights

    weights = AlexNet_Weights.IMAGENET1K_V1
    where = Path(torch.hub.get_dir()) / "checkpoints"
    fix = "connect once, or copy the file there, or pass --lpips_weights PATH"
    if offline():
        raise FileNotFoundError(f"LPIPS needs the AlexNet weights {ALEXNET_FILE}, which are not in {where} "
                                f"and offline mode is set ({'/'.join(OFFLINE_VARS)}): {fix}")
    try:
        with network_timeout():
            return weights.get_state_dict(progress=False)
    except OSError as err:  # URLError, timeouts, refused connections
        raise FileNotFoundError(
            f"LPIPS needs the AlexNet weights {ALEXNET_FILE}, which are not in {where} and could not be "
            f"downloaded from {weights.url} ({failure_reason(err)}): {fix}") from err


def find_alexnet_weights(path: str | os.PathLike | None = None) -> Path | None:
    """The AlexNet weights file: ``path`` if given (must exist), else the torch hub cache copy."""
    if path:
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"--lpips_weights: {path} does not exist (expected {ALEXNET_FILE})")
        return path
    cached = Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE
    return cached if cached.is_file() else None


def load_lpips(weights: str | os.PathLike | None = None, device: str | torch.device = "cpu",
               quiet: bool = False):
    """LPIPS(alex) network in eval mode, or None when the AlexNet weights are not available.

    ``weights`` is an explicit AlexNet state-dict path (torchvision format). When it is
    empty, torchvision's cache or download is used; failing both, a one-line notice says why
    and where to put the file (``quiet`` drops it). A missing explicit path raises.
    """
    import lpips

    with warnings.catch_warnings():
        # torchvision deprecation notes about lpips' `pretrained=` call.
        warnings.simplefilter("ignore", UserWarning)
        return _build_lpips(lpips, weights, device, quiet)


def _build_lpips(lpips, weights, device, quiet: bool):
    if os.environ.get("ERNERF_LPIPS_RANDOM") == "1":
        net = lpips.LPIPS(net="alex", pretrained=False, pnet_rand=True, verbose=False)
        return net.eval().to(device)
    if weights:
        state = alexnet_state(weights)
    else:
        try:
            state = alexnet_state()
        except FileNotFoundError as err:
            if not quiet:
                print(f"[metrics] LPIPS skipped: {err}", file=sys.stderr)
            return None
    # pnet_rand builds an empty backbone (no second download); it is filled from `state`.
    net = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
    layers = {}
    for sl in (net.net.slice1, net.net.slice2, net.net.slice3, net.net.slice4, net.net.slice5):
        for name, module in sl.named_children():
            layers[int(name)] = module
    for idx, module in layers.items():
        own = {k: state[f"features.{idx}.{k}"] for k in module.state_dict()}
        module.load_state_dict(own)
    return net.eval().to(device)


@torch.no_grad()
def lpips_distance(net, pred, gt) -> float:
    """LPIPS between [H, W, 3] images in [0, 1] (``normalize=True`` maps them to [-1, 1])."""
    dev = next(net.parameters()).device
    p = _to_tensor(pred).float().permute(2, 0, 1)[None].to(dev)
    g = _to_tensor(gt).float().permute(2, 0, 1)[None].to(dev)
    return net(p, g, normalize=True).item()


def mouth_lmd(lms_pred: np.ndarray, lms_gt: np.ndarray) -> float:
    """Landmark distance of the mouth: points 48..67 of two [68, 2] sets, each mean-centred,
    mean Euclidean distance in pixels."""
    a = np.asarray(lms_pred, dtype=np.float64)
    b = np.asarray(lms_gt, dtype=np.float64)
    if a.shape != (68, 2) or b.shape != (68, 2):
        raise ValueError(f"mouth_lmd needs two [68, 2] landmark sets, got {a.shape} and {b.shape}")
    a, b = a[MOUTH], b[MOUTH]
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    return float(np.linalg.norm(a - b, axis=1).mean())


class LMDMeter:
    """Running LMD over frame pairs, detecting landmarks with ``detector.detect(rgb uint8)``.

    Frames where either detection fails are skipped and counted in ``skipped``.
    """

    def __init__(self, detector=None):
        if detector is None:
            from data_utils.landmarks import LandmarkDetector

            detector = LandmarkDetector(engine="mediapipe")
        self.detector = detector
        self.values: list[float] = []
        self.skipped = 0

    def update(self, pred_u8: np.ndarray, gt_u8: np.ndarray) -> float | None:
        """Add one frame pair (uint8 [H, W, 3] RGB); returns its LMD or None if skipped."""
        lp = self.detector.detect(pred_u8)
        lg = self.detector.detect(gt_u8)
        if lp is None or lg is None:
            self.skipped += 1
            return None
        value = mouth_lmd(lp, lg)
        self.values.append(value)
        return value

    def result(self) -> float | None:
        """Mean LMD over the measured frames (None when no frame had both detections)."""
        return float(np.mean(self.values)) if self.values else None
