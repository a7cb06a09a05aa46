"""Sinusoidal (NeRF-style) positional encoding in pure torch."""
import torch
from torch import nn


class FreqEncoder(nn.Module):
    """``[x, sin(2^0 x), cos(2^0 x), ..., sin(2^(K-1) x), cos(2^(K-1) x)]``.

    Frequencies are powers of two with no factor of pi, as in the reference's
    ``freqencoder``. Each sin/cos block is ``input_dim`` wide, so
    ``output_dim = input_dim * (1 + 2 * degree)``.

    >>> FreqEncoder(input_dim=2, degree=8).output_dim
    34
    """

    def __init__(self, input_dim: int = 3, degree: int = 4):
        super().__init__()
        if input_dim < 1 or degree < 0:
            raise ValueError(f"FreqEncoder needs input_dim >= 1 and degree >= 0, got {input_dim}, {degree}")
        self.input_dim = input_dim
        self.degree = degree
        self.output_dim = input_dim * (1 + 2 * degree)
        self.register_buffer("freqs", 2.0 ** torch.arange(degree, dtype=torch.float32), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode ``x`` [..., D] (any range) into [..., D * (1 + 2 * degree)], float32."""
        if x.shape[-1] != self.input_dim:
            raise ValueError(f"FreqEncoder expects [..., {self.input_dim}] inputs, got {tuple(x.shape)}")
        x = x.float()
        scaled = x[..., None, :] * self.freqs[:, None]  # [..., K, D]
        waves = torch.stack([torch.sin(scaled), torch.cos(scaled)], dim=-2)  # [..., K, 2, D]
        return torch.cat([x, waves.flatten(-3)], dim=-1)
