"""Checkpoint files of a workspace: atomic writes, keep-last-N, ``--ckpt`` resolution, RNG state.

Layout (``<workspace>/checkpoints/``):
    ngp_ep{E:04d}.pth               full state after epoch E
    ngp_ep{E:04d}_step{S:08d}.pth   full state inside epoch E, at global step S
                                    (``--save_interval`` and SIGINT/SIGTERM)
    ngp.pth                         EMA weights written after each evaluation ("best")

Full checkpoints are ordered by (epoch, step), an end-of-epoch file coming after every
in-epoch file of the same epoch; only the newest ``keep`` are kept.
"""
from __future__ import annotations

import os
import random
import re
from pathlib import Path

import numpy as np
import torch

_NAME = re.compile(r"^(?P<name>.+)_ep(?P<epoch>\d{4,})(?:_step(?P<step>\d{8,}))?\.pth$")


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file next to ``path``, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to a temporary file next to ``path``, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def rng_state() -> dict:
    """Every random generator the training loop draws from (python, numpy, torch CPU/CUDA)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore generators saved by :func:`rng_state` (CPU ByteTensors).

    CUDA generators are restored for the devices both sides have: device i gets saved state
    i, devices beyond the saved list keep theirs, saved states beyond the visible devices
    (a checkpoint from a machine with more GPUs) and all of them on a CPU-only machine are
    dropped.
    """
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        for index, cuda_state in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, index)


class CheckpointDir:
    """The ``checkpoints/`` folder of one workspace for the trainer called ``name``."""

    def __init__(self, root: str | os.PathLike, name: str = "ngp", keep: int = 2):
        if keep < 1:
            raise ValueError(f"--max_keep_ckpt must be >= 1, got {keep}")
        self.root = Path(root)
        self.name = name
        self.keep = keep

    @property
    def best_path(self) -> Path:
        return self.root / f"{self.name}.pth"

    def path_for(self, epoch: int, step: int | None = None) -> Path:
        """File of the full checkpoint after ``epoch``, or inside it at global ``step``."""
        suffix = "" if step is None else f"_step{step:08d}"
        return self.root / f"{self.name}_ep{epoch:04d}{suffix}.pth"

    def list(self) -> list[Path]:
        """Full checkpoints, oldest first."""
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.iterdir()
                 if (m := _NAME.match(p.name)) and m.group("name") == self.name]
        return sorted(found, key=_order_key)

    def latest(self) -> Path | None:
        items = self.list()
        return items[-1] if items else None

    def save(self, state: dict, epoch: int, step: int | None = None) -> Path:
        """Write a full checkpoint atomically and delete the oldest beyond ``keep``."""
        path = atomic_torch_save(state, self.path_for(epoch, step))
        items = self.list()
        for old in items[:-self.keep]:
            old.unlink(missing_ok=True)
        return path

    def resolve(self, spec: str) -> tuple[Path | None, bool]:
        """Map a ``--ckpt`` value to (file or None, model_only).

        ``scratch`` -> (None, False); ``latest`` -> newest full checkpoint;
        ``latest_model`` -> the same, weights only; ``best`` -> ``ngp.pth`` (or the newest
        full checkpoint when there is none); anything else is a path that must exist.
        """
        if spec == "scratch":
            return None, False
        if spec in ("latest", "latest_model"):
            return self.latest(), spec == "latest_model"
        if spec == "best":
            return (self.best_path if self.best_path.is_file() else self.latest()), False
        path = Path(spec).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"--ckpt {spec}: no such checkpoint file "
                                    f"(use latest, scratch, latest_model, best or an existing .pth)")
        return path, False


def _order_key(path: Path) -> tuple[int, int]:
    """Chronological key: an in-epoch file of epoch E at step S is (E, S); the end of E is
    (E, max) so it follows every in-epoch file of E."""
    m = _NAME.match(path.name)
    step = m.group("step")
    return int(m.group("epoch")), (int(step) if step is not None else 1 << 62)
