"""Backend selection of the raymarching package (see ``ext_common.loader``)."""
import torch

from ext_common import Backends

BACKENDS = Backends("raymarching")


def backend_name(device: torch.device | str = "cpu") -> str:
    """Backend ("cuda", "cpp" or "torch") that runs raymarching for tensors on ``device``."""
    return BACKENDS.choose(device)
