"""Per-level layout of a multi-resolution grid: table offsets, scales and resolutions.

Computed once in Python (float64) and handed to every backend, so the torch
reference, the C++ and the CUDA kernels index exactly the same rows.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

GRIDTYPES = ("hash", "tiled")
INTERPOLATIONS = ("linear", "smoothstep")
INPUT_DIMS = (2, 3)
LEVEL_DIMS = (1, 2, 4, 8)
MAX_LEVELS = 32  # gridencoder.h: kMaxLevels


@dataclass(frozen=True)
class LevelTable:
    """Static layout of the L levels of one grid.

    Attributes:
        offsets: first embedding row of each level, plus the total row count.  (L+1,)
        scales: ``s_l = base * per_level_scale**l - 1``; a point u in [0, 1] sits at
            ``u * s_l (+ 0.5 unless align_corners)`` in grid units.  (L,)
        resolutions: ``ceil(base * per_level_scale**l)``, the cells per side.  (L,)
        input_dim: D, 2 or 3.
        gridtype: "hash" or "tiled".
        align_corners: grid vertices at u = 0 and 1 (True) or cell centres there (False).
        interpolation: "linear" or "smoothstep".
    """

    offsets: tuple[int, ...]
    scales: tuple[float, ...]
    resolutions: tuple[int, ...]
    input_dim: int
    gridtype: str
    align_corners: bool
    interpolation: str

    @property
    def num_levels(self) -> int:
        return len(self.scales)

    @property
    def num_rows(self) -> int:
        return self.offsets[-1]

    def kernel_args(self) -> tuple:
        """Positional arguments shared by ``grid_encode_forward/backward`` of the compiled modules."""
        return (list(self.offsets), list(self.scales), list(self.resolutions),
                GRIDTYPES.index(self.gridtype), self.align_corners,
                INTERPOLATIONS.index(self.interpolation))


def per_level_scale_for(base_resolution: int, desired_resolution: int, num_levels: int) -> float:
    """Growth factor that takes level 0 at ``base_resolution`` to ``desired_resolution`` at level L-1."""
    if num_levels == 1:
        return 1.0
    return 2.0 ** (math.log2(desired_resolution / base_resolution) / (num_levels - 1))


def build_level_table(input_dim: int, num_levels: int, per_level_scale: float, base_resolution: int,
                      log2_hashmap_size: int, gridtype: str = "hash", align_corners: bool = False,
                      interpolation: str = "linear") -> LevelTable:
    """Rows per level: ``ceil8(min(2**log2_hashmap_size, side**D))`` with side = res (+1 unless align_corners)."""
    if input_dim not in INPUT_DIMS:
        raise ValueError(f"gridencoder: input_dim must be one of {INPUT_DIMS}, got {input_dim}")
    if not 1 <= num_levels <= MAX_LEVELS:
        raise ValueError(f"gridencoder: num_levels must be in [1, {MAX_LEVELS}], got {num_levels}")
    if gridtype not in GRIDTYPES:
        raise ValueError(f"gridencoder: gridtype must be one of {GRIDTYPES}, got {gridtype!r}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"gridencoder: interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    if base_resolution < 1 or per_level_scale <= 0:
        raise ValueError(f"gridencoder: need base_resolution >= 1 and per_level_scale > 0, "
                         f"got {base_resolution} and {per_level_scale}")
    if not 1 <= log2_hashmap_size <= 30:
        raise ValueError(f"gridencoder: log2_hashmap_size must be in [1, 30], got {log2_hashmap_size}")
    max_rows = 2 ** log2_hashmap_size
    offsets, scales, resolutions = [0], [], []
    for level in range(num_levels):
        grid_size = base_resolution * per_level_scale ** level
        res = int(math.ceil(grid_size))
        side = res if align_corners else res + 1
        rows = min(max_rows, side ** input_dim)
        offsets.append(offsets[-1] + int(math.ceil(rows / 8) * 8))
        scales.append(grid_size - 1.0)
        resolutions.append(res)
    if offsets[-1] >= 2 ** 32:
        raise ValueError(f"gridencoder: {offsets[-1]} embedding rows do not fit 32-bit indices; "
                         f"lower log2_hashmap_size or num_levels")
    return LevelTable(tuple(offsets), tuple(scales), tuple(resolutions), input_dim, gridtype,
                      bool(align_corners), interpolation)
