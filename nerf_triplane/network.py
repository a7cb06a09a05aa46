"""ER-NeRF head and torso networks on top of the renderer.

Head: three 2D hash grids (xy, yz, xz planes) -> 36 features; region-aware audio
channel attention, eye attention, density/geometry MLP, SH-encoded view colour,
uncertainty. Torso: anchor-conditioned 2D deformation into a tiled grid.
Dimensions follow the reference (ERNERF_FACTS.md §2).
"""
from __future__ import annotations

import torch
from torch import nn

from gridencoder import GridEncoder
from shencoder import SHEncoder

from data_utils.expressions import NAMES as UPPER_FACE_NAMES

from .audio_nets import MLP, AudioAttNet, AudioNet, encode_audio_window
from .freq_encoder import FreqEncoder
from .renderer import NeRFRenderer


UPPER_FACE_DIM = len(UPPER_FACE_NAMES)


def audio_dim_for(asr_model: str) -> int:
    """Reference audio feature size for an ``--asr_model`` name (32 for our mel features)."""
    if "esperanto" in asr_model or "wav2vec" in asr_model:
        return 44
    if "deepspeech" in asr_model:
        return 29
    if "hubert" in asr_model:
        return 1024
    return 32


def _squash(h: torch.Tensor) -> torch.Tensor:
    """Sigmoid stretched to (-0.001, 1.001) so that 0 and 1 are reachable."""
    return torch.sigmoid(h) * (1 + 2 * 0.001) - 0.001


class NeRFNetwork(NeRFRenderer):
    """The ER-NeRF model (see ``NeRFRenderer`` for rendering and grid state).

    Args:
        opt: options namespace (``nerf_triplane.options.parse_args``).
        audio_dim: size A of one audio feature step (the dataset's ``audio_dim``);
            None derives it from ``opt.asr_model`` like the reference.
        grid_size: occupancy-grid resolution; None uses ``opt.grid_size`` (default 128).
    """

    def __init__(self, opt, audio_dim: int | None = None, grid_size: int | None = None):
        super().__init__(opt, grid_size=grid_size)
        self.audio_in_dim = int(audio_dim) if audio_dim is not None else audio_dim_for(opt.asr_model)
        self.emb = bool(opt.emb)
        if self.emb:
            self.embedding = nn.Embedding(self.audio_in_dim, self.audio_in_dim)

        self.audio_dim = 32
        self.audio_net = AudioNet(self.audio_in_dim, self.audio_dim)
        self.att = int(opt.att)
        if self.att not in (0, 1, 2):
            raise ValueError(f"--att must be 0, 1 or 2, got {self.att}")
        if self.att > 0:
            self.audio_att_net = AudioAttNet(self.audio_dim)

        def plane():
            return GridEncoder(input_dim=2, num_levels=12, level_dim=1, base_resolution=64,
                               log2_hashmap_size=14, desired_resolution=512 * self.bound, gridtype="hash")

        self.encoder_xy, self.encoder_yz, self.encoder_xz = plane(), plane(), plane()
        self.in_dim = self.encoder_xy.output_dim * 3

        self.geo_feat_dim = 64
        # The eye input: the blink, plus the five upper-face values with --exp_upper; each
        # channel gets its own spatial attention, so a brow value acts where the brows are.
        if opt.exp_upper and not self.exp_eye:
            raise ValueError("--exp_upper feeds the upper face through the eye attention: add -O or --exp_eye")
        self.eye_dim = (1 + (UPPER_FACE_DIM if opt.exp_upper else 0)) if self.exp_eye else 0
        if self.exp_eye:
            self.eye_att_net = MLP(self.in_dim, self.eye_dim, 16, 2)
        self.aud_ch_att_net = MLP(self.in_dim, self.audio_dim, 64, 2)
        self.sigma_net = MLP(self.in_dim + self.audio_dim + self.eye_dim, 1 + self.geo_feat_dim, 64, 3)
        self.encoder_dir = SHEncoder(input_dim=3, degree=4)
        self.color_net = MLP(self.encoder_dir.output_dim + self.geo_feat_dim + self.individual_dim, 3, 64, 2)
        self.unc_net = MLP(self.in_dim, 1, 32, 2)

        if self.torso:
            self.anchor_points = nn.Parameter(torch.tensor(
                [[0.01, 0.01, 0.1, 1.0], [-0.1, -0.1, 0.1, 1.0], [0.1, -0.1, 0.1, 1.0]]))
            self.torso_deform_encoder = FreqEncoder(input_dim=2, degree=8)
            self.anchor_encoder = FreqEncoder(input_dim=6, degree=3)
            # Identity unless --torso_pose_norm fits them to the training poses
            # (``normalise_anchors``); kept in checkpoints so renders use the same map.
            self.register_buffer("anchor_mean", torch.zeros(6))
            self.register_buffer("anchor_scale", torch.ones(6))
            cond_dim = (self.torso_deform_encoder.output_dim + self.anchor_encoder.output_dim
                        + self.individual_dim_torso)
            self.torso_deform_net = MLP(cond_dim, 2, 32, 3)
            self.torso_encoder = GridEncoder(input_dim=2, num_levels=16, level_dim=2, base_resolution=16,
                                             log2_hashmap_size=16, desired_resolution=2048, gridtype="tiled")
            self.torso_net = MLP(self.torso_encoder.output_dim + cond_dim, 4, 32, 3)

    # ---- audio -------------------------------------------------------------------------

    def encode_audio(self, a: torch.Tensor | None) -> torch.Tensor | None:
        """Audio window -> code [1, 32], or B windows -> codes [B, 32] (None stays None).

        Args:
            a: [8, A, T] window (att 1/2) or [1, A, T] (att 0); with ``--emb`` integer
                ids [8, T] / [1, T]. A batch of windows adds a leading axis, [B, 8, A, T]
                (ids [B, 8, T]): one network call for all, as fast as one window on the CPU.
        """
        if a is None:
            return None
        return encode_audio_window(a, self.audio_net, self.audio_att_net if self.att > 0 else None,
                                   self.embedding if self.emb else None)

    # ---- head --------------------------------------------------------------------------

    def encode_x(self, x: torch.Tensor) -> torch.Tensor:
        """Tri-plane features of points ``x`` [N, 3] in [-bound, bound] -> [N, 36]."""
        xy, yz, xz = x[:, :2], x[:, 1:], x[:, ::2]
        return torch.cat([self.encoder_xy(xy, bound=self.bound),
                          self.encoder_yz(yz, bound=self.bound),
                          self.encoder_xz(xz, bound=self.bound)], dim=-1)

    def density(self, x: torch.Tensor, enc_a: torch.Tensor, e: torch.Tensor | None = None,
                enc_x: torch.Tensor | None = None) -> dict:
        """Density and geometry features of points.

        Args:
            x: sample points [N, 3] in [-bound, bound].
            enc_a: audio code [1, 32].
            e: eye input [1, eye_dim] (blink area, then the upper-face values with
                ``exp_upper``), used only when the network was built with ``exp_eye``.
            enc_x: precomputed ``encode_x(x)`` [N, 36].
        Returns:
            dict of ``sigma`` [N], ``geo_feat`` [N, 64], ``ambient_aud`` [N, 1]
            (norm of the audio channel attention), ``ambient_eye`` [N, 1] (eye
            attention, its mean over the eye channels; zeros without exp_eye).
        """
        if enc_x is None:
            enc_x = self.encode_x(x)
        aud_ch_att = self.aud_ch_att_net(enc_x)  # [N, 32]
        enc_w = enc_a * aud_ch_att
        if self.exp_eye:
            if e is None:
                raise ValueError("the network was built with --exp_eye, so density() needs the eye input "
                                 "e [1, eye_dim]")
            eye_att = torch.sigmoid(self.eye_att_net(enc_x))  # [N, eye_dim]
            h = torch.cat([enc_x, enc_w, e.reshape(1, self.eye_dim).to(enc_x) * eye_att], dim=-1)
            # The ambient-eye loss keeps all eye channels' attention off the audio's region.
            eye_att = eye_att.mean(dim=-1, keepdim=True)
        else:
            eye_att = torch.zeros_like(enc_x[:, :1])
            h = torch.cat([enc_x, enc_w], dim=-1)
        h = self.sigma_net(h)
        return {
            # float32 as CUDA autocast computes exp; CPU autocast would keep float16 (inf above 11.09).
            "sigma": torch.exp(h[:, 0].float()),
            "geo_feat": h[:, 1:],
            "ambient_aud": aud_ch_att.norm(dim=-1, keepdim=True),
            "ambient_eye": eye_att,
        }

    def predict_uncertainty(self, enc_x: torch.Tensor) -> torch.Tensor:
        """Per-point uncertainty [N] = softplus(unc_net(f)); ln 2 when testing or unc_loss is off."""
        if self.testing or not self.opt.unc_loss:
            raw = torch.zeros_like(enc_x[:, 0])
        else:
            # Detached: the uncertainty head must not shape the shared tri-plane features.
            raw = self.unc_net(enc_x.detach())[:, 0]
        return torch.log(1 + torch.exp(raw.float()))

    def forward(self, x: torch.Tensor, d: torch.Tensor, enc_a: torch.Tensor, c: torch.Tensor | None,
                e: torch.Tensor | None = None):
        """Evaluate the head at sample points.

        Args:
            x: points [N, 3] in [-bound, bound].
            d: unit view directions [N, 3].
            enc_a: audio code [1, 32].
            c: individual code [1, ind_dim]; None only when ind_dim is 0.
            e: eye input [1, eye_dim] (exp_eye; see ``density``).
        Returns:
            sigma [N], rgb [N, 3] in (-0.001, 1.001), ambient_aud [N, 1], ambient_eye [N, 1],
            uncertainty [N].
        """
        enc_x = self.encode_x(x)
        out = self.density(x, enc_a, e, enc_x)
        h = [self.encoder_dir(d), out["geo_feat"]]
        if self.individual_dim > 0:
            if c is None:
                raise ValueError(f"the network has --ind_dim {self.individual_dim}: "
                                 f"forward() needs the code c [1, ind_dim]")
            h.append(c.reshape(1, -1).expand(x.shape[0], -1))
        rgb = _squash(self.color_net(torch.cat(h, dim=-1)))
        return out["sigma"], rgb, out["ambient_aud"], out["ambient_eye"], self.predict_uncertainty(enc_x)

    # ---- torso -------------------------------------------------------------------------

    def project_anchors(self, poses: torch.Tensor) -> torch.Tensor:
        """The three anchor points seen from each head pose: mapped by the inverse pose and
        projected to 2D.

        Args:
            poses: head poses (camera-to-world, ngp convention) [P, 4, 4].
        Returns:
            [P, 6] (x, y of each anchor, unitless image-plane coordinates).
        """
        anchors = self.anchor_points[None] @ poses.transpose(1, 2).inverse()  # [P, 3, 4]
        return (anchors[..., :2] / anchors[..., 3:] / anchors[..., 2:3]).reshape(poses.shape[0], -1)

    @torch.no_grad()
    def normalise_anchors(self, poses: torch.Tensor, spread: float) -> None:
        """Standardise the projected anchors over the training poses (``--torso_pose_norm``).

        As the head turns, the anchors move by about 1 % of the frame (french.mp4: std 0.01
        over 1146 poses), so without this the torso's deformation MLP sees the pose as a tiny
        signal and learns the body's sway slowly. Afterwards the anchors of the training
        poses have mean 0 and standard deviation ``spread`` per coordinate; the map is fixed
        (buffers ``anchor_mean``, ``anchor_scale`` [6]) while the anchor points keep learning.

        Args:
            poses: training head poses [P, 4, 4].
            spread: target standard deviation (> 0).
        """
        anchors = self.project_anchors(poses.to(self.anchor_points.device).float())
        # A static camera track has no spread: keep the scale at 0.1 % of the frame at least.
        std = anchors.std(0, unbiased=False).clamp_min(1e-3) if anchors.shape[0] > 1 else torch.ones_like(anchors[0])
        self.anchor_mean.copy_(anchors.mean(0))
        self.anchor_scale.copy_(std / spread)

    def forward_torso(self, x: torch.Tensor, poses: torch.Tensor, c: torch.Tensor | None = None):
        """Torso alpha and colour at image-plane coordinates.

        Args:
            x: background coordinates [N, 2] in [-1, 1] (row, col).
            poses: head pose (camera-to-world, ngp convention) [1, 4, 4].
            c: torso code [1, ind_dim_torso] or None.
        Returns:
            alpha [N, 1], color [N, 3] (both in (-0.001, 1.001)), deformation dx [N, 2].
        """
        x = x * self.opt.torso_shrink
        anchors = (self.project_anchors(poses) - self.anchor_mean) / self.anchor_scale  # [1, 6]
        h = [self.torso_deform_encoder(x), self.anchor_encoder(anchors).expand(x.shape[0], -1)]
        if c is not None and self.individual_dim_torso > 0:
            h.append(c.reshape(1, -1).expand(x.shape[0], -1))
        h = torch.cat(h, dim=-1)  # [N, 84]
        dx = self.torso_deform_net(h)
        warped = (x + dx).clamp(-1, 1)
        out = self.torso_net(torch.cat([self.torso_encoder(warped, bound=1), h], dim=-1))
        return _squash(out[:, :1]), _squash(out[:, 1:]), dx

    # ---- optimiser ---------------------------------------------------------------------

    def get_params(self, lr: float, lr_net: float, wd: float = 0, lr_aud: float = 1.0) -> list[dict]:
        """AdamW parameter groups of the reference.

        Grid encoders (and the audio embedding) keep AdamW's default weight decay, as in
        the reference. With ``--torso`` only the torso parameters are returned. ``lr_aud``
        multiplies the learning rates of the audio path (AudioNet, AudioAttNet and the audio
        channel attention); 1 is the reference.
        """
        if self.torso:
            params = [
                {"params": list(self.torso_encoder.parameters()), "lr": lr},
                {"params": list(self.torso_net.parameters()), "lr": lr_net, "weight_decay": wd},
                {"params": list(self.torso_deform_net.parameters()), "lr": lr_net, "weight_decay": wd},
                {"params": [self.anchor_points], "lr": lr_net, "weight_decay": wd},
            ]
            if self.individual_dim_torso > 0:
                params.append({"params": [self.individual_codes_torso], "lr": lr_net, "weight_decay": wd})
            return params

        params = [
            {"params": list(self.audio_net.parameters()), "lr": lr_net * lr_aud, "weight_decay": wd},
            {"params": list(self.encoder_xy.parameters()), "lr": lr},
            {"params": list(self.encoder_yz.parameters()), "lr": lr},
            {"params": list(self.encoder_xz.parameters()), "lr": lr},
            {"params": list(self.sigma_net.parameters()), "lr": lr_net, "weight_decay": wd},
            {"params": list(self.color_net.parameters()), "lr": lr_net, "weight_decay": wd},
        ]
        if self.att > 0:
            params.append({"params": list(self.audio_att_net.parameters()), "lr": lr_net * 5 * lr_aud,
                           "weight_decay": 1e-4})
        if self.emb:
            params.append({"params": list(self.embedding.parameters()), "lr": lr})
        if self.individual_dim > 0:
            params.append({"params": [self.individual_codes], "lr": lr_net, "weight_decay": wd})
        if self.train_camera:
            params.append({"params": [self.camera_dT], "lr": 1e-5, "weight_decay": 0})
            params.append({"params": [self.camera_dR], "lr": 1e-5, "weight_decay": 0})
        params.append({"params": list(self.aud_ch_att_net.parameters()), "lr": lr_net * lr_aud, "weight_decay": wd})
        for net in [self.unc_net] + ([self.eye_att_net] if self.exp_eye else []):
            params.append({"params": list(net.parameters()), "lr": lr_net, "weight_decay": wd})
        return params
