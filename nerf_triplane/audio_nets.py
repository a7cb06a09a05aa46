"""Small building blocks of the head network: bias-free MLP and the audio encoders."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class MLP(nn.Module):
    """``num_layers`` bias-free Linear layers with ReLU between them (none after the last)."""

    def __init__(self, dim_in: int, dim_out: int, dim_hidden: int, num_layers: int):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"MLP needs at least one layer, got num_layers={num_layers}")
        dims = [dim_in] + [dim_hidden] * (num_layers - 1) + [dim_out]
        self.net = nn.ModuleList(nn.Linear(a, b, bias=False) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[..., dim_in] -> [..., dim_out]."""
        for i, layer in enumerate(self.net):
            x = layer(x)
            if i < len(self.net) - 1:
                x = F.relu(x)
        return x


class AudioNet(nn.Module):
    """Per-frame audio encoder: four stride-2 Conv1d over time, then a 2-layer head.

    The time axis halves at each conv (16 -> 8 -> 4 -> 2 -> 1); a 2-step window
    (HuBERT features) reaches length 1 after the first conv and stays there, so
    both window lengths end in a single time step.
    """

    def __init__(self, dim_in: int = 29, dim_aud: int = 32, win_size: int = 16):
        super().__init__()
        self.win_size = win_size
        chans = [dim_in, 32, 32, 64, 64]
        layers = []
        for a, b in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv1d(a, b, kernel_size=3, stride=2, padding=1), nn.LeakyReLU(0.02)]
        self.encoder_conv = nn.Sequential(*layers)
        self.encoder_fc1 = nn.Sequential(nn.Linear(64, 64), nn.LeakyReLU(0.02), nn.Linear(64, dim_aud))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Audio windows [K, dim_in, T] (T = 16, or 2 for HuBERT) -> codes [K, dim_aud]."""
        if x.dim() != 3:
            raise ValueError(f"AudioNet expects [K, A, T] audio windows, got shape {tuple(x.shape)}")
        # Centre crop of the time axis around frame 8 (a no-op for the usual 16-step window).
        half = self.win_size // 2
        x = x[:, :, max(8 - half, 0):8 + half]
        h = self.encoder_conv(x)  # [K, 64, 1]
        if h.shape[-1] != 1:
            raise ValueError(f"AudioNet: a time window of {x.shape[-1]} steps does not reduce to 1 "
                             f"(use 16 or fewer steps)")
        return self.encoder_fc1(h[..., 0])


class AudioAttNet(nn.Module):
    """Temporal attention over a window of ``seq_len`` audio codes (softmax weights)."""

    def __init__(self, dim_aud: int = 32, seq_len: int = 8):
        super().__init__()
        self.seq_len = seq_len
        chans = [dim_aud, 16, 8, 4, 2, 1]
        layers = []
        for a, b in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv1d(a, b, kernel_size=3, stride=1, padding=1), nn.LeakyReLU(0.02)]
        self.attentionConvNet = nn.Sequential(*layers)
        self.attentionNet = nn.Sequential(nn.Linear(seq_len, seq_len), nn.Softmax(dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Windows of codes [B, seq_len, dim_aud] -> attended codes [B, dim_aud] (each window
        on its own; B = 1 for one frame)."""
        if x.dim() != 3 or x.shape[1] != self.seq_len:
            raise ValueError(f"AudioAttNet expects [B, {self.seq_len}, dim_aud] (audio windows of "
                             f"{self.seq_len} frames, --att 1/2), got shape {tuple(x.shape)}")
        scores = self.attentionConvNet(x.transpose(1, 2))  # [B, 1, seq_len]
        weights = self.attentionNet(scores.reshape(x.shape[0], self.seq_len))  # [B, seq_len]
        return (weights[..., None] * x).sum(dim=1)


def encode_audio_window(a: torch.Tensor, audio_net: AudioNet, att_net: AudioAttNet | None = None,
                        embedding: nn.Embedding | None = None) -> torch.Tensor:
    """Audio codes of one frame's window of features, or of a batch of windows in one call.

    Args:
        a: [8, A, T] window (with ``att_net``) or [1, A, T]; integer ids [8|1, T] with
            ``embedding``. A batch of windows adds a leading axis, [B, 8, A, T] (ids [B, 8, T]):
            one network call for all, about as fast as one window on the CPU.
        audio_net, att_net, embedding: the audio path's modules (None where the model has none).
    Returns:
        codes [1, dim_aud], or [B, dim_aud] for a batch
    """
    batched = a.dim() == (3 if embedding is not None else 4)
    windows = a.shape[0] if batched else 1
    if batched:
        a = a.flatten(0, 1)  # [B*K, A, T] (ids [B*K, T])
    if embedding is not None:
        a = embedding(a).transpose(-1, -2)  # [B*K, A, T]
    enc_a = audio_net(a)
    enc_a = enc_a.view(windows, -1, enc_a.shape[-1])  # [B, K, dim_aud]
    if att_net is not None:
        return att_net(enc_a)  # [B, dim_aud]
    if enc_a.shape[1] != 1:
        raise ValueError(f"--att 0 takes a single audio frame [1, A, T], got {enc_a.shape[1]} frames")
    return enc_a[:, 0]
