"""One mechanism that builds, loads and selects the backends of all kernel packages."""
from .loader import Backends

__all__ = ["Backends"]
