"""Named training settings for ``main.py --preset NAME`` and ``scripts/run_subject.sh``.

    python -m nerf_triplane.presets cpu --stage head     # prints the main.py flags of a stage

Each preset has common flags (every stage and --test), flags of its torso stage (training
and ``--torso --test``) and per-stage iteration counts.
``--iters`` is the *total* step count of a workspace, as in the reference: the lips stage
resumes the head checkpoint and runs ``head + lips`` steps in all.

``paper``: the reference recipe (ERNERF_FACTS.md §1): 65536 rays, 128³ grid, 16 marching
steps, -O; head 100000 steps, +25000 lips (``--finetune_lips --patch_size 32``), torso 200000;
plus the mouth target of the ``cpu`` preset (``--mouth_sup 1 --mouth_pretrain 600``, below).
It keeps the reference's per-frame codes (``--ind_dim 4``), which without the target took the
mouth from the audio; with it they no longer do. A/B at the ``cpu`` preset's scale (no GPU
has run the paper schedule): ``scripts/crossval.py`` as below, folds 0 and 4, ``cpu`` preset ->
``cpu`` preset with ``--ind_dim 4``: mouth_corr 0.40 -> 0.46, 0.76 -> 0.66; opening std ratio
0.76 -> 0.82, 0.72 -> 0.66; LMD 2.22 -> 2.14, 1.52 -> 1.59 px; PSNR 30.93 -> 30.83, 31.26 ->
31.19 dB; sync_pred 0.49 -> 0.57, 0.56 -> 0.48 (GT windows 0.41, 0.47); held-out lips PSNR gain
with own vs other audio (scripts/audio_influence.py) 1.77 -> 1.92, 3.33 -> 3.53 dB.

``cpu``: the best quality this 2-core CPU machine reaches in about one hour of training for a
1-minute 512² video. Measured on May_5s processed at 512² (head stage, C++ backends,
OMP_NUM_THREADS=1, machine shared with other jobs, 50 s of training per setting from scratch):
    4096 rays, 64³ grid:  0.30 s/step, train PSNR 27.9 dB after 166 steps
    2048 rays, 64³ grid:  0.15 s/step, 27.0 dB after 343 steps
    1024 rays, 64³ grid:  0.10 s/step, 26.9 dB after 517 steps
    2048 rays, 128³ grid: 0.39 s/step, 23.8 dB after 129 steps
At equal wall time 4096 rays learn fastest, and a 128³ grid costs 2.7x per step (its refresh
dominates on the CPU) for a head that fills few of its cells. On french.mp4 (2 threads) the
head's 16000 steps take ~46 min by the training bar, its 4 validation passes included (plus
the test render), and the torso's 4000 ~4.5 min. Rays concentrated on the face (``--face_rays
0.5``, 2290 steps, 15 held-out frames; a one-off A/B of an earlier version) gave the same
held-out PSNR as uniform rays (30.17 vs 30.19 dB) for ~30 % more time per step.
``--ind_dim 0 --lips_rays 0.2``: with the reference's individual codes the
per-frame code, not the audio, explained the mouth (scripts/audio_influence.py: lips MSE with
another frame's audio / own audio = 1.00 after 2290 steps); without them and with a fifth of
the rays on the lips, the 16000-step head reaches 3.6 and its held-out lips follow the audio.
Lips finetuning (only with the AlexNet LPIPS weights) adds 1500 steps.
``--mouth_sup 1 --mouth_pretrain 600`` (nerf_triplane/mouth.py): the audio code's first 6
channels are held to the frame's mouth shape. A/B by ``scripts/crossval.py`` (french.mp4, 5
windows of 114 frames, folds 0, 1, 2, 4; ``--preset cpu --iters 2000`` for both, one thread
each), base -> mouth: mouth_corr 0.19 -> 0.40, -0.11 -> 0.58, 0.09 -> 0.47, -0.26 -> 0.76;
opening std ratio 0.55 -> 0.76, 0.37 -> 0.68, 0.49 -> 0.71, 0.20 -> 0.72; LMD 2.38 -> 2.22,
2.03 -> 1.50, 2.19 -> 1.93, 2.47 -> 1.52 px (floor 2.44, 1.79, 2.37, 2.26); PSNR 30.94 -> 30.93,
32.16 -> 32.50, 31.99 -> 32.15, 31.10 -> 31.26 dB; on folds 0, 2, 4
held-out lips PSNR gain with own vs other audio (scripts/audio_influence.py) 0.23 -> 1.77,
0.32 -> 2.30, 0.15 -> 3.33 dB. May_5s (last 11 frames, 1000 steps): PSNR 29.31 -> 29.77, LMD
3.75 -> 3.21, mouth_corr 0.21 -> 0.20. Adopted. The 16000-step schedule with it (and the speed and
torso settings below; ``scripts/run_subject.sh``, last 115 frames held out): head 31.44 -> 31.78 dB,
LMD 1.66 -> 1.24 px, mouth_corr 0.51 -> 0.81; head + torso 26.27 -> 27.04 dB.
Fold 3 with it: mouth_corr 0.71, std ratio 0.68, LMD 1.56 px (floor 1.99), PSNR 32.02 dB.
Not adopted: ``--mouth_teacher 0.5 --mouth_spread 1`` (same A/B command, one run per window),
mouth -> both: mouth_corr 0.40 -> 0.56, 0.47 -> 0.36 (folds 0, 2), 0.20 -> 0.47 (May_5s);
opening std ratio 0.76 -> 0.70, 0.71 -> 0.80, 0.13 -> 0.10; LMD 2.22 -> 2.07, 1.93 -> 1.96,
3.21 -> 3.16 px; PSNR 30.93 -> 30.99, 32.15 -> 32.11, 29.77 -> 29.73 dB: no window improves
on every figure.
Not adopted: ``--mouth_teacher 0.5 --mouth_crossfit 5`` (teacher steps show cross-fitted audio
predictions; same A/B command, folds 0, 1, 2, 4), mouth -> cross-fitted: mouth_corr 0.40 -> 0.44,
0.58 -> 0.60, 0.47 -> 0.50, 0.76 -> 0.72; opening std ratio 0.76 -> 0.80, 0.68 -> 0.66,
0.71 -> 0.63, 0.72 -> 0.66; LMD 2.22 -> 2.10, 1.50 -> 1.54, 1.93 -> 1.98, 1.52 -> 1.60 px; PSNR
30.93 -> 31.05, 32.50 -> 32.29, 32.15 -> 32.05, 31.26 -> 31.28 dB: only fold 0 gains on every figure.
Not adopted: ``--exp_upper`` (upper-face values through the eye attention), A/B ``python
scripts/crossval.py DATA --root W --folds 5 --only 0 4 --preset cpu --iters 2000 --preload 0
--exp_upper`` against the mouth runs above (+ ``scripts/region_psnr.py``), mouth -> upper:
PSNR 30.93 -> 31.82, 31.26 -> 31.84 dB (above the brows 27.96 -> 29.13, 28.95 -> 29.64); LMD
2.22 -> 2.14, 1.52 -> 1.77 px; mouth_corr 0.40 -> 0.39, 0.76 -> 0.68; opening std ratio
0.76 -> 0.72, 0.72 -> 0.64: the frame gains, the mouth loses on fold 4; May_5s (``--folds 2
--only 1 --iters 1000``): PSNR 29.77 -> 29.31 dB, LMD 3.21 -> 3.78 px, mouth_corr 0.20 -> 0.11.
``--grid_sample 0.25 --bf16`` (head stage only; the step 1.41x faster by ``scripts/bench_train.py
--compare``): same crossval command, folds 0, 1, 2, 4: PSNR 30.93 -> 31.02, 32.50 -> 32.22,
32.15 -> 32.18, 31.26 -> 31.26 dB; LMD 2.22 -> 2.21, 1.50 -> 1.55, 1.93 -> 1.83, 1.52 -> 1.58 px;
mouth_corr 0.40 -> 0.43, 0.58 -> 0.56, 0.47 -> 0.56, 0.76 -> 0.71; opening std ratio 0.76 ->
0.75, 0.68 -> 0.62, 0.71 -> 0.66, 0.72 -> 0.75; May_5s (``main.py --iters 1000``) PSNR 29.58 -> 29.49 dB, LMD 3.34 -> 3.38
px; fold 4 rerun with ``--seed 1``: 31.30 dB, 1.57 px, mouth_corr 0.73, std ratio 0.67. Adopted
for the speed: PSNR -0.05 dB on average over the five windows, the mouth better on two and a
little worse on two. With it, the
head's 16030 steps took 51 min 43 s on one thread (validation and test render included) and
the torso stage 15 min 1 s. May_5s through ``crossval.py --folds 2 --only 1 --iters
1000`` with it: PSNR 29.69 dB, LMD 3.20 px, mouth_corr 0.15 (before: 29.77, 3.21, 0.20).
``--exp_upper`` with it, fold 4: PSNR 31.26 -> 31.78 dB, LMD 1.58 -> 1.70 px, mouth_corr 0.71 ->
0.72, std ratio 0.75 -> 0.70; May_5s: 29.69 -> 29.37 dB, LMD 3.20 -> 3.86 px, mouth_corr 0.15 ->
0.01; May_5s with ``--seed 1``: 29.28 -> 29.63 dB, 3.70 -> 3.73 px, 0.10 -> -0.26: PSNR a tie over
the two seeds, the mouth worse on both, so still not adopted.
Not adopted: ``--error_map 0.3`` on top of that (same command, folds 0, 4; equal steps were equal
wall time): PSNR 31.02 -> 31.03, 31.26 -> 31.29 dB; mouth_corr 0.43 -> 0.34, 0.71 -> 0.75; opening
std ratio 0.75 -> 0.74, 0.75 -> 0.62; LMD 2.21 -> 2.22, 1.58 -> 1.65 px.
Torso stage: ``--ind_dim_torso 0 --torso_pose_norm 1 --lr_net 0.005`` (no per-frame torso codes,
the pose input standardised over the training poses, a 5x MLP learning rate). A/B by
``scripts/torso_psnr.py`` (held-out body = neck + torso pixels of torso-only renders; 4584 torso
steps from the fold's head checkpoint), old (``--ind_dim_torso 8``, raw anchors, ``--lr_net
0.001``) -> new: french fold 4, seeds 0/1/2: 20.34/19.39/20.76 -> 22.60/20.71/21.34 dB; fold 0:
17.18 -> 17.90; May_5s (last 11 frames): 26.04 -> 26.88; head + torso test render, fold 4,
seed 0: 25.83 -> 27.00 dB. Adopted (fold 4 means 20.16 -> 21.55; the seed ranges touch). Not
adopted (fold 4, seed 0, body dB): anchor spread 0.25 (21.94) or 2 (21.69), ``--lr_net 0.001``
with standardised anchors (20.55), 20000 steps (22.16), ``--error_map 0.5`` (19.94).

``tiny``: smoke runs (CI, tests): a few dozen steps on 256 rays and a 32³ grid.

Explicit command-line flags win over a preset: ``apply_preset`` changes only options whose
value still equals the parser default (or, given ``argv``, options absent from it).
"""
from __future__ import annotations

import argparse
import shlex
import sys

STAGES = ("head", "lips", "torso", "test")

PRESETS: dict[str, dict] = {
    "paper": {
        "flags": {"O": True, "num_rays": 65536, "grid_size": 128, "max_steps": 16, "mouth_sup": 1.0,
                  "mouth_pretrain": 600},
        "iters": {"head": 100000, "lips": 25000, "torso": 200000},
    },
    "cpu": {
        "flags": {"O": True, "num_rays": 4096, "grid_size": 64, "max_steps": 16, "ind_dim": 0,
                  "lips_rays": 0.2, "mouth_sup": 1.0, "mouth_pretrain": 600, "grid_sample": 0.25,
                  "bf16": True},
        # The torso's A/B ran in float32, so its stage keeps it.
        "torso_flags": {"ind_dim_torso": 0, "torso_pose_norm": 1.0, "lr_net": 0.005, "bf16": False},
        "iters": {"head": 16000, "lips": 1500, "torso": 4000},
    },
    "tiny": {
        "flags": {"O": True, "num_rays": 256, "grid_size": 32, "max_steps": 8, "eval_interval": 1,
                  "max_keep_ckpt": 1},
        "iters": {"head": 30, "lips": 8, "torso": 20},
    },
}

# Flags that only the lips stage adds on top of a preset's common flags.
LIPS_FLAGS = {"finetune_lips": True, "patch_size": 32}


def _preset(name: str) -> dict:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]


def stage_settings(name: str, stage: str) -> dict:
    """Option values (dest -> value) of preset ``name`` for ``stage`` (head|lips|torso|test).

    ``iters`` is the workspace's total: lips = head + lips steps (it resumes the head run).
    """
    preset = _preset(name)
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose one of: {', '.join(STAGES)}")
    settings = dict(preset["flags"])
    iters = preset["iters"]
    if stage == "head":
        settings["iters"] = iters["head"]
    elif stage == "lips":
        settings.update(LIPS_FLAGS, iters=iters["head"] + iters["lips"])
    elif stage == "torso":
        settings.update(preset.get("torso_flags", {}), torso=True, iters=iters["torso"])
    return settings


def explicit_dests(argv: list[str]) -> set[str]:
    """Option names the user wrote in ``argv`` (a parser whose defaults are all suppressed)."""
    from .options import get_parser

    parser = get_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
        action.required = False
    given, _ = parser.parse_known_args(argv)
    return set(vars(given))


def apply_preset(opt: argparse.Namespace, argv: list[str] | None = None) -> argparse.Namespace:
    """Fill ``opt`` (from ``options.parse_args``) with preset ``opt.preset``, in place.

    Only options the user did not set are changed: with ``argv`` (the command line without
    the program name) exactly the flags absent from it; without, those still equal to the
    parser default (so a flag given with its default value is taken from the preset).
    The stage follows ``opt``: --torso -> torso, --finetune_lips -> lips, --test -> test,
    else head. The -O implications are re-applied. Unknown name -> ValueError.
    """
    from .options import finalize, get_parser

    name = opt.preset
    _preset(name)
    if opt.torso:
        stage = "torso"
    elif opt.finetune_lips:
        stage = "lips"
    elif opt.test:
        stage = "test"
    else:
        stage = "head"
    settings = stage_settings(name, stage)
    if argv is not None:
        explicit = explicit_dests(argv)
        is_free = lambda dest: dest not in explicit  # noqa: E731
    else:
        defaults = vars(get_parser().parse_args([opt.path]))
        is_free = lambda dest: getattr(opt, dest) == defaults[dest]  # noqa: E731
    for dest, value in settings.items():
        if is_free(dest):
            setattr(opt, dest, value)
    return finalize(opt)


def stage_flags(name: str, stage: str) -> list[str]:
    """``main.py`` command-line flags of preset ``name`` for ``stage``, e.g. ``["-O", "--iters", "30"]``."""
    flags = []
    for dest, value in stage_settings(name, stage).items():
        flag = "-O" if dest == "O" else f"--{dest}"
        if value is True:
            flags.append(flag)
        elif value is not False:
            flags += [flag, str(value)]
    return flags


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nerf_triplane.presets",
                                     description="Print the main.py flags of a preset's stage.")
    parser.add_argument("name", help=f"preset: {', '.join(PRESETS)}")
    parser.add_argument("--stage", default="head", help=f"one of {', '.join(STAGES)}")
    args = parser.parse_args(argv)
    try:
        print(shlex.join(stage_flags(args.name, args.stage)))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
