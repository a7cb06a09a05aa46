"""Real spherical-harmonics encoding with CUDA, C++ CPU and torch backends."""
from .backend import backend_name
from .sphere_harmonics import SHEncoder, sh_encode

__all__ = ["SHEncoder", "sh_encode", "backend_name"]
