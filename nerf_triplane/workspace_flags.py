"""The model flags a workspace was trained with, kept in ``<workspace>/model_flags.json``.

Training writes the file when it starts; ``--test``, ``--aud`` and resuming read it, so the
flags that shape the network and its rendering (``-O``, ``--grid_size``, ``--asr_model``, …)
need not be repeated. A torso workspace without its own file starts from the head's
(``--head_ckpt``). A flag given on the command line that contradicts the file is refused with
one line; flags not given take the workspace's values (over a preset's and the defaults).
Training with ``--ckpt scratch`` starts over: it ignores the file and writes a new one.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

FILE_NAME = "model_flags.json"
# Flags that change the network's tensors or how its rays are rendered; training-only flags
# (iterations, rays per batch, losses, learning rates) stay free between runs.
MODEL_FLAGS = ("asr_model", "asr_weights", "emb", "att", "ind_dim", "ind_num", "ind_dim_torso", "amb_dim",
               "exp_eye", "exp_upper", "fp16", "cuda_ray", "grid_size", "bound", "scale", "offset", "dt_gamma",
               "min_near", "density_thresh", "density_thresh_torso", "max_steps", "num_steps", "color_space",
               "torso_shrink")
# A head workspace's own torso settings are defaults, not choices: the torso run may set them.
TORSO_ONLY = ("ind_dim_torso", "density_thresh_torso", "torso_shrink")
# Flags that set others: writing -O sets these.
IMPLIED = {"O": ("fp16", "cuda_ray", "exp_eye")}


def _has_checkpoint(workspace: Path) -> bool:
    return any((workspace / "checkpoints").glob("*.pth"))


def _read(path: Path) -> dict:
    try:
        flags = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: delete it and give the model flags on the command line") from err
    if not isinstance(flags, dict):
        raise ValueError(f"{path} does not hold a JSON object: delete it and give the model flags on the command line")
    return flags


def stored_flags(workspace: str | Path, head_ckpt: str = "") -> tuple[dict, Path | None]:
    """The remembered flags for a run in ``workspace`` and the file they come from.

    The workspace's own file counts only when the workspace has a checkpoint (a file left in an
    emptied workspace describes nothing); else the head workspace's file of ``head_ckpt``
    (``HEAD/checkpoints/ngp.pth`` -> ``HEAD/model_flags.json``) without its torso settings.
    """
    own = Path(workspace) / FILE_NAME
    if own.is_file() and _has_checkpoint(Path(workspace)):
        return _read(own), own
    if head_ckpt:
        head = Path(head_ckpt).resolve().parent.parent / FILE_NAME
        if head.is_file():
            return {k: v for k, v in _read(head).items() if k not in TORSO_ONLY}, head
    return {}, None


def _flag(dest: str, value) -> str:
    if isinstance(value, bool):
        return f"--{dest}" if value else f"no --{dest}"
    shown = " ".join(map(str, value)) if isinstance(value, list) else value
    return f"--{dest} {shown}"


def apply_stored_flags(opt: argparse.Namespace, explicit: set[str]) -> Path | None:
    """Fill ``opt``'s model flags from the workspace (or head) file, in place.

    Args:
        opt: parsed options (after any preset).
        explicit: option names written on the command line (``presets.explicit_dests``).

    Returns:
        the file used, or None. ValueError when an explicit flag contradicts it.
    """
    if opt.ckpt == "scratch" and not opt.test:
        return None  # a fresh training run chooses its flags anew (and rewrites the file)
    stored, source = stored_flags(opt.workspace, opt.head_ckpt if opt.torso else "")
    if source is None:
        return None
    given = set(explicit)
    for flag, implied in IMPLIED.items():
        if flag in given:
            given.update(implied)
    for dest in MODEL_FLAGS:
        if dest not in stored or not hasattr(opt, dest):
            continue
        value, want = getattr(opt, dest), stored[dest]
        if isinstance(value, tuple):
            value = list(value)
        if dest in given and value != want:
            raise ValueError(f"{_flag(dest, value)} contradicts {source}, which was trained with "
                             f"{_flag(dest, want)}: drop the flag (the trained value is used) or train a new --workspace")
        setattr(opt, dest, want)
    return source


def save_flags(opt: argparse.Namespace) -> Path:
    """Write ``<workspace>/model_flags.json`` (atomically) from ``opt``; returns its path."""
    from data_utils.atomic import write_json

    path = Path(opt.workspace) / FILE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {dest: getattr(opt, dest) for dest in MODEL_FLAGS if hasattr(opt, dest)})
    return path
