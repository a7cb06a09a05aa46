"""Pure-torch twin of the spherical-harmonics kernels (same recurrence as ``src/shencoder.h``).

Used by the tests as the reference and at run time when no compiled backend is
available; gradients come from torch autograd.
"""
from __future__ import annotations

import math

import torch


def sh_norm(l: int, m: int) -> float:
    """K_lm = sqrt((2l+1)/(4 pi) (l-m)!/(l+m)!), times sqrt(2) for m > 0."""
    k = math.sqrt((2 * l + 1) / (4 * math.pi) * math.factorial(l - m) / math.factorial(l + m))
    return k * math.sqrt(2.0) if m > 0 else k


def sh_encode(inputs: torch.Tensor, degree: int) -> torch.Tensor:
    """Real SH basis (instant-ngp order and signs) of directions.

    Args:
        inputs: directions, expected unit length (others get the same polynomials).  [N, 3]
        degree: number of bands, 1..8.

    Returns:
        Basis value l*l + l + m in column l*l + l + m.  [N, degree**2]
    """
    x, y, z = inputs.unbind(-1)  # [N] each
    columns: list[torch.Tensor | None] = [None] * (degree * degree)
    cm, sm = torch.ones_like(x), torch.zeros_like(x)  # Re, Im of (x + i y)^m
    pmm = 1.0  # Pbar_m^m = (-1)^m (2m-1)!!
    for m in range(degree):
        if m > 0:
            cm, sm = x * cm - y * sm, x * sm + y * cm
            pmm = -pmm * (2 * m - 1)
        p_prev2 = torch.zeros_like(z)
        p_prev = torch.zeros_like(z)
        for l in range(m, degree):
            if l == m:
                p = pmm + 0 * z  # constant, but on the graph so degree 1 still back-propagates (zeros)
            elif l == m + 1:
                p = (2 * m + 1) * z * pmm
            else:
                p = ((2 * l - 1) * z * p_prev - (l + m - 1) * p_prev2) / (l - m)
            p_prev2, p_prev = p_prev, p
            k = sh_norm(l, m)
            centre = l * l + l
            if m == 0:
                columns[centre] = k * p
            else:
                columns[centre + m] = k * p * cm
                columns[centre - m] = k * p * sm
    return torch.stack(columns, dim=-1)
