"""Mouth-shape supervision of the audio code (an addition to the reference, off by default).

Trained through the rendering loss alone, the audio path learns little: on real clips the
per-frame codes, the pose or the mean mouth explain the lips instead, and held-out lips
barely follow the audio. Yet the same AudioNet + AudioAttNet, trained directly to predict the
mouth opening from the subject's own audio, predicts it on held-out windows of french.mp4
with a correlation of 0.56-0.82. So the audio code gets a direct target:

* every training frame's mouth shape comes from its 68 landmarks: the 20 mouth points around
  their centroid, x along the eye line, in interocular distances, so head roll, position and
  face size drop out;
* a PCA of the 20 aligned mouth points over the training frames gives ``K`` coefficients per
  frame, divided by the first component's spread (not whitened: minor components stay small
  and weigh little in the loss);
* the first ``K`` channels of the audio code ``enc_a`` (``NeRFNetwork.encode_audio``) are
  trained to equal them (MSE), on a batch of random training frames each step
  (``--mouth_sup`` weight), and optionally before the NeRF starts (``--mouth_pretrain``
  steps). No parameter is added, so checkpoints and test-time rendering are unchanged.

    sup = MouthSupervision(lms_train, audio_windows, k=6)   # lms [N, 68, 2], windows callable
    loss = sup.loss(model, batch=8)                         # scalar

With ``--mouth_teacher`` the NeRF is shown, on a share of its steps, other mouth codes than
the audio path's own: the measured shape, or (``--mouth_crossfit B``) what an audio path that
never heard the frame predicts for it (``MouthSupervision.crossfit``).
"""
from __future__ import annotations

import copy
from typing import Callable

import numpy as np
import torch
from torch import nn

from .audio_nets import encode_audio_window

MOUTH = slice(48, 68)
LEFT_EYE, RIGHT_EYE = slice(36, 42), slice(42, 48)
INNER_TOP, INNER_BOTTOM = 62 - 48, 66 - 48  # middle of the inner upper / lower lip, in MOUTH


def aligned_mouth(lms: np.ndarray) -> np.ndarray:
    """Mouth points in eye-aligned coordinates.

    Args:
        lms: iBUG-68 landmarks in pixels, NaN rows for missing detections  # [N, 68, 2]
    Returns:
        points 48-67 around their centroid, x along the line from the left to the right eye
        centre, in interocular distances; NaN rows stay NaN  # [N, 40]
    """
    lms = np.asarray(lms, dtype=np.float64)
    if lms.ndim != 3 or lms.shape[1:] != (68, 2):
        raise ValueError(f"aligned_mouth needs landmarks [N, 68, 2], got {lms.shape}")
    left, right = lms[:, LEFT_EYE].mean(1), lms[:, RIGHT_EYE].mean(1)  # [N, 2]
    axis = right - left
    iod = np.linalg.norm(axis, axis=-1, keepdims=True)  # [N, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        ux = axis / iod  # [N, 2]
    uy = np.stack([-ux[:, 1], ux[:, 0]], axis=-1)
    # Centred on the mouth itself: its place below the eyes moves with the head's pitch,
    # which the audio cannot predict.
    rel = lms[:, MOUTH] - lms[:, MOUTH].mean(axis=1, keepdims=True)  # [N, 20, 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.stack([(rel * ux[:, None]).sum(-1), (rel * uy[:, None]).sum(-1)], axis=-1) / iod[:, None]
    return out.reshape(len(lms), -1)


def shape_opening(shapes: np.ndarray) -> np.ndarray:
    """Inner-lip gap of aligned mouth shapes (``aligned_mouth`` layout), interocular units.

    Args:
        shapes: [N, 40]
    Returns:
        [N]: lower minus upper inner-lip middle point, along the face's vertical axis.
    """
    return shapes[:, 2 * INNER_BOTTOM + 1] - shapes[:, 2 * INNER_TOP + 1]


class MouthBasis:
    """PCA of aligned mouth shapes, fitted on training frames only.

    Args:
        lms: training landmarks  # [N, 68, 2]
        k: number of components kept (<= 40).
    """

    def __init__(self, lms: np.ndarray, k: int):
        shapes = aligned_mouth(lms)
        ok = np.isfinite(shapes).all(axis=1)
        if ok.sum() <= k:
            raise ValueError(f"mouth supervision needs more than {k} frames with landmarks, got {int(ok.sum())}")
        if not 1 <= k <= shapes.shape[1]:
            raise ValueError(f"the number of mouth components must be in 1..{shapes.shape[1]}, got {k}")
        x = shapes[ok]
        self.mean = x.mean(axis=0)  # [40]
        _, s, vt = np.linalg.svd(x - self.mean, full_matrices=False)
        self.components = vt[:k]  # [K, 40]
        self.scale = float(s[0] / np.sqrt(len(x)))  # spread of the first component
        self.explained = float((s[:k] ** 2).sum() / (s ** 2).sum())

    def shapes(self, coefficients: np.ndarray) -> np.ndarray:
        """Aligned mouth shapes [N, 40] that coefficients [N, K] (``project``'s units) describe."""
        return self.mean + (np.asarray(coefficients, dtype=np.float64) * self.scale) @ self.components

    def project(self, lms: np.ndarray) -> np.ndarray:
        """Coefficients in first-component spreads, NaN rows where landmarks are missing  # [N, K]."""
        return (aligned_mouth(lms) - self.mean) @ self.components.T / self.scale


def concordance(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Lin's concordance correlation of each column over the rows.

    The MSE-best prediction of an uncertain target is shrunk toward its mean by the
    correlation, so a mouth predicted by MSE alone opens less than the real one on unseen audio
    (it mumbles); concordance is highest for a prediction with the target's own spread.

    Args:
        pred, target: [B, K]
    Returns:
        [K] in [-1, 1]: 2 cov / (var_pred + var_target + (mean difference)^2)
    """
    mp, mt = pred.mean(0), target.mean(0)
    cov = ((pred - mp) * (target - mt)).mean(0)
    denom = pred.var(0, unbiased=False) + target.var(0, unbiased=False) + (mp - mt) ** 2
    return 2 * cov / denom.clamp(min=1e-8)


def audio_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters of a model's audio path: AudioNet, and AudioAttNet / the embedding where present."""
    return [p for name in ("audio_net", "audio_att_net", "embedding")
            if (m := getattr(model, name, None)) is not None for p in m.parameters()]


class AudioPredictor(nn.Module):
    """A freshly initialised copy of a model's audio path, to predict mouth codes on its own.

    Args:
        model: a ``NeRFNetwork`` (its AudioNet, AudioAttNet and embedding are copied).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.audio_net = copy.deepcopy(model.audio_net)
        self.audio_att_net = copy.deepcopy(getattr(model, "audio_att_net", None)) if getattr(model, "att", 0) else None
        self.embedding = copy.deepcopy(getattr(model, "embedding", None)) if getattr(model, "emb", False) else None
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def encode_audio(self, a: torch.Tensor) -> torch.Tensor:
        """Audio window [8|1, A, T] -> code [1, 32], as ``NeRFNetwork.encode_audio``."""
        return encode_audio_window(a, self.audio_net, self.audio_att_net, self.embedding)


class MouthSupervision:
    """Targets and loss tying the first ``k`` audio-code channels to the mouth shape.

    Args:
        lms: landmarks of the training frames, in split order  # [N, 68, 2]
        audio_window: loader position -> the model's audio input for that frame
            (``NeRFDataset.get_audio_window``)  # [8|1, A, T]
        k: mouth components (<= the audio code size, 32).
        spread: weight of the concordance term (``--mouth_spread``), which holds the spread of
            the predicted mouth to the measured one's; 0 = MSE only.
    """

    def __init__(self, lms: np.ndarray, audio_window: Callable[[int], torch.Tensor], k: int = 6,
                 spread: float = 0.0):
        self.basis = MouthBasis(lms, k)
        targets = self.basis.project(lms)
        self.valid = np.flatnonzero(np.isfinite(targets).all(axis=1))  # positions with landmarks
        self._valid_set = set(self.valid.tolist())
        self.targets = torch.from_numpy(np.nan_to_num(targets)).float()  # [N, K]
        self.audio_window = audio_window
        self.k = k
        self.spread = spread
        spreads = self.targets[self.valid].var(dim=0)  # [K]
        self.channel_weight = spreads / spreads.sum()
        self.crossfit_codes: torch.Tensor | None = None  # [N, K] once ``crossfit`` ran

    def teacher(self, position: int) -> torch.Tensor | None:
        """Mouth coefficients the NeRF is shown for one training position  # [1, K].

        The cross-fitted prediction after ``crossfit``, else the measured shape (None for a
        frame without landmarks).
        """
        if self.crossfit_codes is not None:
            return self.crossfit_codes[position:position + 1]
        if position not in self._valid_set:
            return None
        return self.targets[position:position + 1]

    def crossfit(self, model, blocks: int, steps: int, seed: int = 0) -> torch.Tensor:
        """Predict every training position's mouth code with an audio path that never heard it.

        At test time the NeRF sees codes that the audio path predicts for unheard speech:
        shrunk toward the mean and off by the prediction's error, unlike the near-perfect codes
        it memorises for its training frames. Cross-fitted codes look like the test-time ones.
        The positions are cut into ``blocks`` contiguous blocks; for each, a fresh
        ``AudioPredictor`` is fitted (``pretrain``) on the frames more than one audio window
        away from the block and predicts the block. Torch's global RNG is left untouched, so
        a resumed run draws what an uninterrupted one does.

        Returns:
            the predictions, also kept as ``crossfit_codes`` (served by ``teacher``)  # [N, K]
        """
        n = len(self.targets)
        if not 2 <= blocks <= n:
            raise ValueError(f"cross-fitting needs 2..{n} blocks of training frames, got {blocks}")
        edges = np.linspace(0, n, blocks + 1).round().astype(int)
        margin = 8  # frames: the widest audio window (--att 2 spans 8 frames of features)
        codes = torch.zeros(n, self.k)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for lo, hi in zip(edges[:-1], edges[1:]):
                pool = self.valid[(self.valid < lo - margin) | (self.valid >= hi + margin)]
                predictor = AudioPredictor(model)
                self.pretrain(predictor, steps, pool=pool)
                with torch.no_grad():
                    codes[lo:hi] = self.codes(predictor, range(lo, hi))[:, :self.k].float().cpu()
        self.crossfit_codes = codes
        return codes

    def agreement(self, codes: torch.Tensor) -> float:
        """Correlation of the first mouth component of ``codes`` [N, K] with the measured one."""
        x, y = codes[self.valid, 0].double(), self.targets[self.valid, 0].double()
        return float(torch.corrcoef(torch.stack([x, y]))[0, 1])

    def codes(self, model, positions: list[int]) -> torch.Tensor:
        """Audio codes of training positions  # [B, 32]."""
        # One batched call: per-window calls cost ~9x more on the CPU (conv call overhead).
        return model.encode_audio(torch.stack([self.audio_window(int(p)) for p in positions]))

    def loss(self, model, batch: int, positions: list[int] | None = None,
             pool: np.ndarray | None = None) -> torch.Tensor:
        """MSE between ``enc_a[:, :k]`` and the mouth coefficients of ``batch`` random frames
        of ``pool`` (default: every frame with landmarks; drawn from torch's global RNG, so
        resumed runs draw the same) or of ``positions``, plus ``spread`` x the concordance
        loss over the batch (see :func:`concordance`)."""
        if positions is None:
            pool = self.valid if pool is None else pool
            pick = torch.randint(len(pool), (batch,))
            positions = pool[pick.numpy()].tolist()
        codes = self.codes(model, positions)[:, :self.k].float()
        target = self.targets[positions].to(codes.device)
        loss = ((codes - target) ** 2).mean()
        if self.spread > 0 and len(positions) > 1:
            weight = self.channel_weight.to(codes.device)
            loss = loss + self.spread * ((1 - concordance(codes, target)) * weight).sum()
        return loss

    def pretrain(self, model, steps: int, batch: int = 32, lr: float = 1e-3,
                 pool: np.ndarray | None = None) -> float:
        """Fit the audio path (AudioNet, AudioAttNet) alone, on the frames of ``pool``
        (default: all with landmarks), e.g. before the NeRF starts.

        Returns:
            the last batch loss (mean squared error in first-component spreads).
        """
        optimiser = torch.optim.AdamW(audio_parameters(model), lr=lr, weight_decay=1e-2)
        last = float("nan")
        for _ in range(steps):
            loss = self.loss(model, batch, pool=pool)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            last = loss.item()
        return last
