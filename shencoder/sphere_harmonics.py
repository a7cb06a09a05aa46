"""Real spherical-harmonics direction encoder (instant-ngp basis) with three backends."""
from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from . import _torch_impl
from .backend import BACKENDS

MAX_DEGREE = 8


class _SHEncode(torch.autograd.Function):
    """Compiled forward/backward; the torch backend uses autograd instead."""

    @staticmethod
    def forward(ctx, inputs, degree, module):
        ctx.save_for_backward(inputs)
        ctx.degree, ctx.module = degree, module
        return module.sh_encode_forward(inputs, degree)

    @staticmethod
    @once_differentiable
    def backward(ctx, v_outputs):
        (inputs,) = ctx.saved_tensors
        v_outputs = v_outputs.to(inputs.dtype).contiguous()
        return ctx.module.sh_encode_backward(v_outputs, inputs, ctx.degree), None, None


def _check_degree(degree: int) -> None:
    if not isinstance(degree, int) or not 1 <= degree <= MAX_DEGREE:
        raise ValueError(f"shencoder: degree must be an int in [1, {MAX_DEGREE}], got {degree!r}")


def sh_encode(inputs: torch.Tensor, degree: int = 4) -> torch.Tensor:
    """Real SH basis of directions, on the backend chosen for their device.

    Args:
        inputs: unit directions (float32/float64; float16 is computed in float32).  [..., 3]
        degree: number of bands, 1..8.

    Returns:
        Basis (column l*l + l + m holds band l, order m), float32 or float64.  [..., degree**2]

    Note:
        Differentiable w.r.t. ``inputs``.
    """
    _check_degree(degree)
    if inputs.shape[-1] != 3:
        raise ValueError(f"shencoder: inputs must have last dim 3, got shape {tuple(inputs.shape)}")
    if not inputs.is_floating_point():
        raise ValueError(f"shencoder: inputs must be floating point, got {inputs.dtype}")
    lead = inputs.shape[:-1]
    dtype = torch.float64 if inputs.dtype == torch.float64 else torch.float32
    flat = inputs.reshape(-1, 3).to(dtype).contiguous()  # [N, 3]
    name, module = BACKENDS.get(flat.device)
    if name == "torch":
        outputs = _torch_impl.sh_encode(flat, degree)
    else:
        outputs = _SHEncode.apply(flat, degree, module)
    return outputs.reshape(*lead, degree * degree)


class SHEncoder(nn.Module):
    """Spherical-harmonics encoding of view directions.

    Args:
        input_dim: must be 3.
        degree: number of bands, 1..8; ``output_dim = degree**2``.

    Shapes: ``forward(inputs [..., 3], size) -> [..., degree**2]``.

    >>> SHEncoder(degree=4)(torch.tensor([[0.0, 0.0, 1.0]])).shape
    torch.Size([1, 16])
    """

    def __init__(self, input_dim: int = 3, degree: int = 4):
        super().__init__()
        if input_dim != 3:
            raise ValueError(f"SHEncoder: input_dim must be 3, got {input_dim}")
        _check_degree(degree)
        self.input_dim, self.degree = input_dim, degree
        self.output_dim = degree * degree

    def extra_repr(self) -> str:
        return f"input_dim={self.input_dim}, degree={self.degree}, output_dim={self.output_dim}"

    def forward(self, inputs: torch.Tensor, size: float = 1) -> torch.Tensor:
        """Basis of ``inputs / size``.

        Args:
            inputs: directions of length ``size``.  [..., 3]
            size: their length.

        Returns:
            Basis in float32 (float64 for float64 inputs), also under autocast.  [..., degree**2]
        """
        if inputs.shape[-1] != 3:
            raise ValueError(f"SHEncoder: inputs must have last dim 3, got shape {tuple(inputs.shape)}")
        if not inputs.is_floating_point():
            raise ValueError(f"SHEncoder: inputs must be floating point, got {inputs.dtype}")
        with torch.autocast(inputs.device.type, enabled=False):
            return sh_encode(inputs / size, self.degree)
