"""Multi-resolution hash/tiled grid encoding with CUDA, C++ CPU and torch backends."""
from .backend import backend_name
from .grid import GridEncoder, grid_encode
from .levels import LevelTable, build_level_table, per_level_scale_for

__all__ = ["GridEncoder", "grid_encode", "backend_name", "LevelTable", "build_level_table", "per_level_scale_for"]
