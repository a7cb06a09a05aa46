"""Backend selection for the grid encoder (see ``ext_common.loader``)."""
from __future__ import annotations

import torch

from ext_common import Backends

BACKENDS = Backends("gridencoder")


def backend_name(device: torch.device | str = "cpu") -> str:
    """``"cuda"``, ``"cpp"`` or ``"torch"``: what encodes tensors on ``device`` right now."""
    return BACKENDS.choose(device)
