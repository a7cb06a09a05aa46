"""Pure-torch twin of the grid-encoding kernels.

Same math as ``src/gridencoder.h``, vectorised over points and the 2**D cell
corners, with gradients from torch autograd. Used by the tests as the reference
and at run time when no compiled backend is available.
"""
from __future__ import annotations

import torch

from .levels import LevelTable

# Primes of the spatial hash; coordinate d is multiplied by PRIMES[d] (mod 2**32).
PRIMES = (1, 2654435761, 805459861, 3674653429, 2097192037, 1434869437, 2165219737)
_U32 = 0xFFFFFFFF


def grid_rows(cells: torch.Tensor, table_size: int, resolution: int, gridtype: str,
              align_corners: bool) -> torch.Tensor:
    """Row of each integer vertex inside one level's table.

    Args:
        cells: integer vertex coordinates, int64.  [..., D]
        table_size: rows of this level.
        resolution: cells per side of this level.
        gridtype: "hash" or "tiled".
        align_corners: whether a side has ``resolution`` (True) or ``resolution + 1`` vertices.

    Returns:
        Row indices in [0, table_size), int64.  [...]
    """
    side = resolution if align_corners else resolution + 1
    index = torch.zeros(cells.shape[:-1], dtype=torch.int64, device=cells.device)
    stride = 1
    for d in range(cells.shape[-1]):
        # The dense layout stops growing once one more axis would overflow the table.
        if stride > table_size:
            break
        index = index + cells[..., d] * stride
        stride *= side
    if gridtype == "hash" and stride > table_size:
        index = torch.zeros_like(index)
        for d in range(cells.shape[-1]):
            index = index ^ ((cells[..., d] * PRIMES[d]) & _U32)
    return index % table_size


def grid_encode(inputs: torch.Tensor, embeddings: torch.Tensor, table: LevelTable) -> torch.Tensor:
    """Multi-resolution grid features of points in the unit cube.

    Args:
        inputs: points in [0, 1]; a point with any coordinate outside gets zero features.  [N, D]
        embeddings: all levels' tables stacked.  [table.num_rows, C]
        table: level layout.

    Returns:
        Features, level-major (level l occupies columns l*C .. l*C+C-1).  [N, L*C]
    """
    n, dim = inputs.shape
    num_corners = 1 << dim
    bits = torch.tensor([[(k >> d) & 1 for d in range(dim)] for k in range(num_corners)],
                        dtype=torch.bool, device=inputs.device)  # [K, D]
    inside = ((inputs >= 0) & (inputs <= 1)).all(dim=-1)  # [N]
    u = torch.where(inside[:, None], inputs, torch.zeros_like(inputs))  # [N, D]
    shift = 0.0 if table.align_corners else 0.5
    features = []
    for level in range(table.num_levels):
        pos = u * table.scales[level] + shift  # [N, D]
        cell = torch.floor(pos)
        frac = pos - cell
        if table.interpolation == "smoothstep":
            frac = frac * frac * (3 - 2 * frac)
        corner_cells = cell.long()[:, None, :] + bits.long()  # [N, K, D]
        factors = torch.where(bits, frac[:, None, :], 1 - frac[:, None, :])  # [N, K, D]
        weights = factors[..., 0]
        for d in range(1, dim):
            weights = weights * factors[..., d]  # [N, K]
        start, stop = table.offsets[level], table.offsets[level + 1]
        rows = start + grid_rows(corner_cells, stop - start, table.resolutions[level], table.gridtype,
                                 table.align_corners)  # [N, K]
        corner_feats = embeddings[rows.reshape(-1)].reshape(n, num_corners, -1)  # [N, K, C]
        level_feats = (weights[..., None].to(embeddings.dtype) * corner_feats).sum(dim=1)  # [N, C]
        features.append(level_feats * inside[:, None])
    return torch.cat(features, dim=-1)
