"""Multi-resolution hash/tiled grid encoder (Instant-NGP style) with three backends."""
from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from . import _torch_impl
from .backend import BACKENDS
from .levels import INPUT_DIMS, LEVEL_DIMS, LevelTable, build_level_table, per_level_scale_for


class _GridEncode(torch.autograd.Function):
    """Compiled forward/backward; the torch backend uses autograd instead."""

    @staticmethod
    def forward(ctx, inputs, embeddings, table, module):
        outputs = module.grid_encode_forward(inputs, embeddings, *table.kernel_args())
        ctx.save_for_backward(inputs, embeddings)
        ctx.table, ctx.module = table, module
        return outputs

    @staticmethod
    @once_differentiable
    def backward(ctx, v_outputs):
        inputs, embeddings = ctx.saved_tensors
        v_outputs = v_outputs.to(embeddings.dtype).contiguous()
        v_embeddings, v_inputs = ctx.module.grid_encode_backward(
            v_outputs, inputs, embeddings, *ctx.table.kernel_args(), ctx.needs_input_grad[0])
        return (v_inputs if ctx.needs_input_grad[0] else None,
                v_embeddings if ctx.needs_input_grad[1] else None, None, None)


def grid_encode(inputs: torch.Tensor, embeddings: torch.Tensor, table: LevelTable) -> torch.Tensor:
    """Grid features of points in the unit cube, on the backend chosen for their device.

    Args:
        inputs: points in [0, 1]; any coordinate outside gives zero features.  [..., D]
        embeddings: stacked level tables (float32/float64; float16 on CUDA with float32 inputs).
            [table.num_rows, C]
        table: level layout from ``build_level_table``.

    Returns:
        Level-major features in the dtype of ``embeddings``.  [..., L*C]

    Note:
        Differentiable w.r.t. ``embeddings`` and, when it requires grad, ``inputs``
        (zero outside the unit cube; piecewise smooth, kinks on cell faces for "linear").
    """
    if inputs.shape[-1] != table.input_dim:
        raise ValueError(f"gridencoder: inputs must have last dim {table.input_dim}, got shape {tuple(inputs.shape)}")
    if not inputs.is_floating_point() or not embeddings.is_floating_point():
        raise ValueError(f"gridencoder: inputs and embeddings must be floating point, got {inputs.dtype} "
                         f"and {embeddings.dtype}")
    lead = inputs.shape[:-1]
    compute_dtype = torch.float32 if embeddings.dtype == torch.float16 else embeddings.dtype
    flat = inputs.reshape(-1, table.input_dim).to(compute_dtype).contiguous()  # [N, D]
    name, module = BACKENDS.get(flat.device)
    if name == "torch":
        outputs = _torch_impl.grid_encode(flat, embeddings, table)
    else:
        outputs = _GridEncode.apply(flat, embeddings.contiguous(), table, module)
    return outputs.reshape(*lead, table.num_levels * embeddings.shape[-1])  # [..., L*C]


class GridEncoder(nn.Module):
    """Learned features on L grids of growing resolution, blended at each input point.

    Args:
        input_dim: D, 2 or 3.
        num_levels: L.
        level_dim: C, channels per level (1, 2, 4 or 8).
        per_level_scale: resolution growth per level (ignored if ``desired_resolution``).
        base_resolution: cells per side at level 0.
        log2_hashmap_size: log2 of the most rows a level may have.
        desired_resolution: cells per side at level L-1; sets ``per_level_scale``.
        gridtype: "hash" (spatial hash when the dense grid does not fit) or "tiled" (wrap).
        align_corners: vertices at the cube's faces (True) or cell centres there (False).
        interpolation: "linear" or "smoothstep" (C1-smooth in the inputs).

    Shapes: ``forward(inputs [..., D], bound) -> [..., L*C]``.

    >>> enc = GridEncoder(input_dim=2, num_levels=12, level_dim=1, base_resolution=64,
    ...                   log2_hashmap_size=14, desired_resolution=512)
    >>> enc(torch.zeros(5, 2)).shape
    torch.Size([5, 12])
    """

    def __init__(self, input_dim: int = 3, num_levels: int = 16, level_dim: int = 2, per_level_scale: float = 2,
                 base_resolution: int = 16, log2_hashmap_size: int = 19, desired_resolution: int | None = None,
                 gridtype: str = "hash", align_corners: bool = False, interpolation: str = "linear"):
        super().__init__()
        if input_dim not in INPUT_DIMS:
            raise ValueError(f"GridEncoder: input_dim must be one of {INPUT_DIMS}, got {input_dim}")
        if level_dim not in LEVEL_DIMS:
            raise ValueError(f"GridEncoder: level_dim must be one of {LEVEL_DIMS}, got {level_dim}")
        if desired_resolution is not None:
            per_level_scale = per_level_scale_for(base_resolution, desired_resolution, num_levels)
        self.input_dim, self.num_levels, self.level_dim = input_dim, num_levels, level_dim
        self.per_level_scale, self.base_resolution = float(per_level_scale), base_resolution
        self.log2_hashmap_size, self.desired_resolution = log2_hashmap_size, desired_resolution
        self.output_dim = num_levels * level_dim
        self.table = build_level_table(input_dim, num_levels, self.per_level_scale, base_resolution,
                                       log2_hashmap_size, gridtype, align_corners, interpolation)
        self.register_buffer("offsets", torch.tensor(self.table.offsets, dtype=torch.int32))  # [L+1]
        self.embeddings = nn.Parameter(torch.empty(self.table.num_rows, level_dim))  # [rows, C]
        self.reset_parameters()

    @property
    def gridtype(self) -> str:
        return self.table.gridtype

    @property
    def align_corners(self) -> bool:
        return self.table.align_corners

    @property
    def interpolation(self) -> str:
        return self.table.interpolation

    def reset_parameters(self) -> None:
        nn.init.uniform_(self.embeddings, -1e-4, 1e-4)

    def extra_repr(self) -> str:
        return (f"input_dim={self.input_dim}, num_levels={self.num_levels}, level_dim={self.level_dim}, "
                f"resolution={self.base_resolution}->{self.table.resolutions[-1]} "
                f"(per_level_scale={self.per_level_scale:.4f}), rows={self.table.num_rows} "
                f"(log2_hashmap_size={self.log2_hashmap_size}), gridtype={self.gridtype}, "
                f"align_corners={self.align_corners}, interpolation={self.interpolation}")

    def forward(self, inputs: torch.Tensor, bound: float = 1) -> torch.Tensor:
        """Features of points in [-bound, bound]^D (outside: zeros).

        Args:
            inputs: points.  [..., D]
            bound: half-width of the encoded cube.

        Returns:
            Features; float16 under CUDA autocast when level_dim is even, else the
            embeddings' dtype.  [..., L*C]
        """
        if inputs.shape[-1] != self.input_dim:
            raise ValueError(f"GridEncoder: inputs must have last dim {self.input_dim}, "
                             f"got shape {tuple(inputs.shape)}")
        if not inputs.is_floating_point():
            raise ValueError(f"GridEncoder: inputs must be floating point, got {inputs.dtype}")
        embeddings = self.embeddings
        # Half tables only where channels pair up for the GPU's atomics (as the reference).
        if inputs.is_cuda and torch.is_autocast_enabled("cuda") and self.level_dim % 2 == 0:
            embeddings = embeddings.half()
        compute_dtype = torch.float32 if embeddings.dtype == torch.float16 else embeddings.dtype
        unit = (inputs.to(compute_dtype) + bound) / (2 * bound)  # [..., D] in [0, 1]
        return grid_encode(unit, embeddings, self.table)
