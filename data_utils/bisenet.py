"""The reference's face-parsing network for ``process.py --parsing_engine bisenet``.

19-class BiSeNet (ResNet-18 context path + feature fusion, written here; parameter names match
``79999_iter.pth`` of face-parsing.PyTorch) run at 512²; classes map to the four labels of
:mod:`data_utils.parsing` as the reference does (0 background, 1-13 and 17-18 head, 14-15 neck,
16 torso). The weights are never downloaded: put the file at
``data_utils/face_parsing/79999_iter.pth`` or pass its path. Kept apart from ``parsing.py`` so
the offline engine's worker processes do not import torch.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from data_utils.parsing import BACKGROUND, HEAD, NECK, TORSO

DEFAULT_BISENET_WEIGHTS = Path(__file__).resolve().parent / "face_parsing" / "79999_iter.pth"
# BiSeNet class -> our label (classes 14 neck, 15 necklace, 16 cloth; the rest of the face is head).
BISENET_TO_LABEL = np.array([BACKGROUND] + [HEAD] * 13 + [NECK, NECK, TORSO, HEAD, HEAD], dtype=np.uint8)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class _ConvBNReLU(nn.Module):
    def __init__(self, cin: int, cout: int, k: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class _AttentionRefinement(nn.Module):
    """3x3 conv, then channel re-weighting from the globally pooled features."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = _ConvBNReLU(cin, cout, 3)
        self.conv_atten = nn.Conv2d(cout, cout, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(cout)

    def forward(self, x):
        feat = self.conv(x)
        return feat * torch.sigmoid(self.bn_atten(self.conv_atten(feat.mean((2, 3), keepdim=True))))


class _ContextPath(nn.Module):
    """ResNet-18 features at strides 8/16/32, refined top-down with global context."""

    def __init__(self):
        super().__init__()
        from torchvision.models import resnet18

        self.resnet = resnet18(weights=None)
        self.resnet.fc = nn.Identity()  # classification head unused; keeps the state dict clean
        self.arm16 = _AttentionRefinement(256, 128)
        self.arm32 = _AttentionRefinement(512, 128)
        self.conv_head32 = _ConvBNReLU(128, 128, 3)
        self.conv_head16 = _ConvBNReLU(128, 128, 3)
        self.conv_avg = _ConvBNReLU(512, 128, 1)

    def forward(self, x):
        r = self.resnet
        x = r.maxpool(r.relu(r.bn1(r.conv1(x))))
        feat8 = r.layer2(r.layer1(x))  # [B, 128, H/8, W/8]
        feat16 = r.layer3(feat8)  # [B, 256, H/16, W/16]
        feat32 = r.layer4(feat16)  # [B, 512, H/32, W/32]
        context = self.conv_avg(feat32.mean((2, 3), keepdim=True))  # [B, 128, 1, 1]
        up32 = F.interpolate(self.arm32(feat32) + context, size=feat16.shape[2:], mode="nearest")
        up32 = self.conv_head32(up32)
        up16 = F.interpolate(self.arm16(feat16) + up32, size=feat8.shape[2:], mode="nearest")
        return feat8, self.conv_head16(up16)


class _FeatureFusion(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.convblk = _ConvBNReLU(cin, cout, 1)
        self.conv1 = nn.Conv2d(cout, cout // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(cout // 4, cout, 1, bias=False)

    def forward(self, spatial, context):
        feat = self.convblk(torch.cat([spatial, context], dim=1))
        atten = torch.sigmoid(self.conv2(F.relu(self.conv1(feat.mean((2, 3), keepdim=True)))))
        return feat + feat * atten


class _OutputHead(nn.Module):
    def __init__(self, cin: int, mid: int, n_classes: int):
        super().__init__()
        self.conv = _ConvBNReLU(cin, mid, 3)
        self.conv_out = nn.Conv2d(mid, n_classes, 1, bias=False)

    def forward(self, x):
        return self.conv_out(self.conv(x))


class BiSeNet(nn.Module):
    """Face-parsing BiSeNet: image ``[B, 3, H, W]`` (ImageNet-normalised) -> logits ``[B, C, H, W]``."""

    def __init__(self, n_classes: int = 19):
        super().__init__()
        self.cp = _ContextPath()
        self.ffm = _FeatureFusion(256, 256)
        self.conv_out = _OutputHead(256, 256, n_classes)

    def forward(self, x):
        feat8, context8 = self.cp(x)
        logits = self.conv_out(self.ffm(feat8, context8))
        return F.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=True)


def load_bisenet(weights: str | os.PathLike | None = None) -> BiSeNet:
    """BiSeNet with ``79999_iter.pth`` loaded (CPU, eval mode); FileNotFoundError when absent."""
    path = Path(weights) if weights is not None else DEFAULT_BISENET_WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(
            f"BiSeNet face-parsing weights {path} not found; put 79999_iter.pth (face-parsing.PyTorch) "
            f"at {DEFAULT_BISENET_WEIGHTS} or pass bisenet_weights=..., or use engine='mediapipe'"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    # The stride-16/32 auxiliary heads only served training; inference reads the fused head.
    state = {k: v for k, v in state.items() if not k.startswith(("conv_out16.", "conv_out32."))}
    model = BiSeNet(19)
    model.load_state_dict(state)
    return model.eval()


class BisenetParser:
    """Reference-style parsing: resize to 512², BiSeNet argmax, back to frame size (nearest)."""

    def __init__(self, weights: str | os.PathLike | None = None, model: BiSeNet | None = None):
        self.model = (model if model is not None else load_bisenet(weights)).eval()
        self._mean = torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1)
        self._std = torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1)

    @torch.no_grad()
    def classes(self, rgb: np.ndarray) -> np.ndarray:
        """RGB uint8 ``[H, W, 3]`` -> BiSeNet class map ``[H, W]`` uint8 (0..18)."""
        h, w = rgb.shape[:2]
        x = torch.from_numpy(cv2.resize(rgb, (512, 512), interpolation=cv2.INTER_LINEAR))
        x = (x.permute(2, 0, 1)[None].float() / 255.0 - self._mean) / self._std
        cls = self.model(x)[0].argmax(0).to(torch.uint8).numpy()
        return cv2.resize(cls, (w, h), interpolation=cv2.INTER_NEAREST)

    def parse(self, rgb: np.ndarray) -> np.ndarray:
        """RGB uint8 ``[H, W, 3]`` -> ``[H, W]`` uint8 labels (BACKGROUND, HEAD, NECK, TORSO)."""
        return BISENET_TO_LABEL[self.classes(rgb)]
