"""Checkpoint files of a workspace: safe reading, durable atomic writes, keep-last-N,
``--ckpt`` resolution, RNG state.

Layout (``<workspace>/checkpoints/``):
    ngp_ep{E:04d}.pth               full state after epoch E
    ngp_ep{E:04d}_step{S:08d}.pth   full state inside epoch E, at global step S
                                    (``--save_interval`` and SIGINT/SIGTERM)
    ngp.pth                         EMA weights written after each evaluation ("best")

Full checkpoints are ordered by (epoch, step), an end-of-epoch file coming after every
in-epoch file of the same epoch; only the newest ``keep`` are kept.

A checkpoint is data, never code: files are read with ``torch.load(weights_only=True)``, so
they may hold only tensors and plain Python values (the RNG states are stored as tensors and
ints). Files of format 0 (written before ``"format"`` existed) hold numpy's RNG state as an
array; reading them allows exactly the numpy globals that rebuild a plain array
(:data:`LEGACY_GLOBALS`). Every write refuses non-finite weights.
"""
from __future__ import annotations

import os
import pickle
import random
import re
import zipfile
from pathlib import Path

import numpy as np
import torch

from data_utils.atomic import atomic_path, remove_stale_temps

_NAME = re.compile(r"^(?P<name>.+)_ep(?P<epoch>\d{4,})(?:_step(?P<step>\d{8,}))?\.pth$")

FORMAT_VERSION = 1  # "format" of the files this code writes; 0 = no "format" key (older code)
# What numpy's ndarray pickles into (its reconstructor, ndarray, dtype and the uint32 dtype
# class of the legacy RNG key): enough to rebuild a plain array, nothing that runs code.
LEGACY_GLOBALS = [np.zeros(1).__reduce__()[0], np.ndarray, np.dtype, type(np.dtype(np.uint32))]


class CheckpointError(ValueError):
    """A file that cannot be used as a checkpoint; the message names it and the fix."""


class NonFiniteWeights(FloatingPointError):
    """A checkpoint about to be written holds NaN/inf weights; nothing is written."""


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint onto the CPU as plain data, or raise :class:`CheckpointError`.

    Returns a dict with at least ``"model"`` (a bare state dict is wrapped) and ``"format"``.
    Refused, each with one message naming the file: an empty or truncated file, a file that is
    not a checkpoint, a pickle that would build other Python objects (it could run code), and
    a file of a newer format.
    """
    path = Path(path)
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes, a save cut short?): delete it and rerun, "
                              f"or give a complete .pth written by main.py")
    try:
        with torch.serialization.safe_globals(LEGACY_GLOBALS):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Unsupported global" in str(err) or "Unsupported class" in str(err):
            raise CheckpointError(
                f"{path} refused: it holds Python objects other than tensors and plain values, which could "
                f"run code when loaded; only tensors and plain values are accepted: use checkpoints written by main.py"
            ) from None
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (a pickle it cannot read as plain data): "
                              f"give a .pth written by main.py") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, KeyError, ValueError) as err:
        raise CheckpointError(f"{path} is truncated or not a PyTorch checkpoint ({_first_line(err)}): "
                              f"delete it, or give a complete .pth written by main.py") from None
    if isinstance(ckpt, dict) and "model" not in ckpt and ckpt and all(
            isinstance(v, torch.Tensor) for v in ckpt.values()):
        ckpt = {"model": ckpt}
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise CheckpointError(f"{path} is not an ER-NeRF checkpoint (no model weights): "
                              f"give a .pth written by main.py")
    version = ckpt.setdefault("format", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {version!r}, newer than this code reads "
                              f"({FORMAT_VERSION}): update ER-NeRF-everywhere (git pull) to load it")
    return ckpt


def _first_line(err: Exception) -> str:
    text = str(err).strip().split(". ")[0]
    return text[:120] if len(text) > 3 else type(err).__name__


def nonfinite_tensors(state: dict, prefix: str = "") -> list[str]:
    """Names (dotted keys) of the floating-point tensors in nested ``state`` holding NaN/inf."""
    bad = []
    items = state.items() if isinstance(state, dict) else enumerate(state)
    for key, value in items:
        name = f"{prefix}{key}"
        if isinstance(value, torch.Tensor):
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                bad.append(name)
        elif isinstance(value, (dict, list, tuple)):
            bad.extend(nonfinite_tensors(value, name + "."))
    return bad


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file next to ``path``, fsync it, rename it over ``path``
    and fsync the folder (``data_utils.atomic``); a failure leaves the old ``path`` intact."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            try:
                torch.save(obj, f)
            except RuntimeError as err:
                # A failed write (full disk) surfaces as a zip-writer RuntimeError; report the write.
                if isinstance(err.__context__, OSError):
                    raise err.__context__ from err
                raise
    return Path(path)


def save_checkpoint_file(state: dict, path: str | os.PathLike) -> Path:
    """Write a checkpoint: the current ``"format"`` added, its weights (``"model"``, ``"ema"``)
    checked finite first (:class:`NonFiniteWeights` otherwise, nothing written)."""
    bad = nonfinite_tensors({k: state[k] for k in ("model", "ema") if k in state})
    if bad:
        raise NonFiniteWeights(f"not saving {path}: non-finite weights in {', '.join(bad[:3])}"
                               + (f" and {len(bad) - 3} more" if len(bad) > 3 else ""))
    return atomic_torch_save({**state, "format": FORMAT_VERSION}, path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to a temporary file next to ``path``, then rename over it (durably)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def rng_state() -> dict:
    """Every random generator the training loop draws from (python, numpy, torch CPU/CUDA),
    as tensors, ints and floats only (``weights_only`` loading)."""
    numpy_state = np.random.get_state(legacy=False)
    state = {
        "python": random.getstate(),
        "numpy": {"bit_generator": numpy_state["bit_generator"],
                  "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
                  "pos": int(numpy_state["state"]["pos"]), "has_gauss": int(numpy_state["has_gauss"]),
                  "gauss": float(numpy_state["gauss"])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore generators saved by :func:`rng_state` (or by format-0 files, whose numpy state
    is numpy's legacy tuple).

    CUDA generators are restored for the devices both sides have: device i gets saved state
    i, devices beyond the saved list keep theirs, saved states beyond the visible devices
    (a checkpoint from a machine with more GPUs) and all of them on a CPU-only machine are
    dropped.
    """
    random.setstate(_as_tuples(state["python"]))
    saved = state["numpy"]
    if isinstance(saved, dict):
        np.random.set_state({"bit_generator": saved["bit_generator"],
                             "state": {"key": saved["key"].numpy().astype(np.uint32), "pos": saved["pos"]},
                             "has_gauss": saved["has_gauss"], "gauss": saved["gauss"]})
    else:
        np.random.set_state(saved)
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        for index, cuda_state in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, index)


def _as_tuples(value):
    # random.setstate needs tuples; a state that went through lists comes back as tuples.
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


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
        """Write a full checkpoint atomically and durably, then delete the oldest beyond
        ``keep`` and what a killed save left (this trainer is the folder's only writer)."""
        path = save_checkpoint_file(state, self.path_for(epoch, step))
        items = self.list()
        for old in items[:-self.keep]:
            old.unlink(missing_ok=True)
        remove_stale_temps(self.root)
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
