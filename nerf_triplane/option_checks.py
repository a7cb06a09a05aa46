"""Numeric options of ``main.py`` that would run but mean nothing (``--iters 0``, negative ray
counts, ...): refused before any work with one message naming the flag and the valid range."""
from __future__ import annotations

import math

# flag -> smallest valid value (ints: counts and periods in steps; floats: rates, > 0).
AT_LEAST = {"iters": 1, "num_rays": 1, "max_steps": 1, "num_steps": 1, "update_extra_interval": 1,
            "max_ray_batch": 1, "ema_interval": 1, "max_keep_ckpt": 1, "max_nonfinite": 1, "patch_size": 1,
            "save_interval": 0, "eval_interval": 0, "warmup_step": 0}
POSITIVE = ("lr", "lr_net", "lr_aud", "grid_sample")


def check_numbers(opt) -> None:
    """Raise ValueError for the first option outside its range, or missing the options it needs.

    ``--iters`` and ``--num_rays`` only matter for training, so ``--test`` skips them.
    """
    for flag, low in AT_LEAST.items():
        if opt.test and flag in ("iters", "num_rays"):
            continue
        value = getattr(opt, flag)
        if value < low:
            raise ValueError(f"--{flag} {value}: must be >= {low}")
    for flag in POSITIVE:
        value = getattr(opt, flag)
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"--{flag} {value}: must be a positive finite number")
    if not (math.isfinite(opt.torso_pose_norm) and opt.torso_pose_norm >= 0):
        raise ValueError(f"--torso_pose_norm {opt.torso_pose_norm}: must be 0 (off) or a positive finite number")
    # Checked here, after the preset filled in the values it sets.
    if opt.mouth_crossfit and (opt.mouth_teacher <= 0 or opt.mouth_pretrain <= 0):
        raise ValueError("--mouth_crossfit sets what --mouth_teacher's steps show, from audio paths fitted for "
                         "2 x --mouth_pretrain steps: give --mouth_teacher > 0 and --mouth_pretrain > 0 too")
