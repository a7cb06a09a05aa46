"""Command-line options of `main.py`: every flag of the reference ER-NeRF, same names.

Deviations from the reference, each deliberate:
- ``--asr_model`` defaults to ``mel``: our offline audio features (no downloaded
  weights). The feature dimension is read from the feature file, not from the name.
- ``--cuda_ray`` is not forced on: without it the renderer uses stratified sampling
  in pure torch (``--num_steps``). ``-O`` turns it on, and the occupancy-grid marcher
  runs on the CPU too (C++ backend of ``raymarching``).
- ``--fp16`` takes effect on CUDA; on the CPU training runs in fp32 unless ``ERNERF_CPU_FP16=1``
  (float16 CPU autocast and a CPU GradScaler, to exercise the fp16 path without a GPU).
- ``--warmup_step`` is honoured (linear lr warm-up); its default 0 keeps the
  reference's behaviour, which ignores the flag.
- Added: ``--device``, ``--eval_interval``, ``--save_interval``, ``--max_keep_ckpt``,
  ``--lpips_weights``, ``--asr_weights``, ``--grid_size``, ``--preset``, ``--ema_interval``, ``--verbose``,
  ``--face_rays``/``--lips_rays`` (default 0 = the reference's uniform sampling), ``--lr_aud``
  (default 1 = the reference's learning rates), ``--mouth_sup``/``--mouth_pretrain``/``--mouth_k``/
  ``--mouth_spread``/``--mouth_teacher``/``--mouth_crossfit``
  (mouth-shape targets for the audio code, ``nerf_triplane/mouth.py``; default off).
  ``--max_nonfinite`` (default 20): a step whose loss or gradient is NaN/inf is skipped;
  that many in a row stop training with one error line (the reference raised at the first).
- Added: ``--full_frame`` (``nerf_triplane/paste.py``: renders of a cropped video back in its full frame).
- ``--gui`` serves a web page (``nerf_triplane/live``) instead of a DearPyGui window: added
  ``--gui_host``, ``--gui_port``, ``--gui_max_side``; ``--max_spp`` is not built.
Flags of features that are not built raise a clear error in `main.py` (see
``UNBUILT``) instead of being ignored.
"""
from __future__ import annotations

import argparse

from data_utils.help_groups import group_options

from .option_sections import MAIN_SECTIONS

# Flags accepted for compatibility whose feature this project does not provide: flag -> (the value
# that leaves the feature off, why any other value is refused).
UNBUILT = {
    "max_spp": (1, "several samples per pixel are not part of this project's viewer: leave it at 1"),
}


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="main.py",
        description="ER-NeRF: train or render a talking-portrait NeRF from a processed video folder.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("path", type=str, help="training folder made by data_utils/process.py")
    p.add_argument("-O", action="store_true", help="equals --fp16 --cuda_ray --exp_eye")
    p.add_argument("--test", action="store_true", help="render the test split and report metrics")
    p.add_argument("--test_train", action="store_true", help="with --test: render the train split (new-audio driving)")
    p.add_argument("--full_frame", action="store_true",
                   help="with --test: also paste the render back into the source video's frames (<name>_full.mp4)")
    p.add_argument("--data_range", type=int, nargs="*", default=[0, -1], help="frame slice [start, end] (-1 = all)")
    p.add_argument("--workspace", type=str, default="workspace", help="run folder: checkpoints, logs, results")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--device", type=str, default="auto", help="auto (cuda if available) | cpu | cuda")
    p.add_argument("--preset", type=str, default="", help="named settings from nerf_triplane/presets.py (empty = none)")
    p.add_argument("--verbose", action="store_true", help="show mediapipe/TFLite start-up logs")

    g = p.add_argument_group("training")
    g.add_argument("--iters", type=int, default=200000, help="total training iterations")
    g.add_argument("--lr", type=float, default=1e-2, help="learning rate of the hash-grid encoders")
    g.add_argument("--lr_net", type=float, default=1e-3, help="learning rate of the MLPs and codes")
    g.add_argument("--lr_aud", type=float, default=1.0,
                   help="multiplier of the audio-path learning rates (AudioNet, attention nets)")
    g.add_argument("--ckpt", type=str, default="latest", help="latest | scratch | latest_model | best | PATH")
    g.add_argument("--num_rays", type=int, default=4096 * 16, help="rays per training image")
    g.add_argument("--cuda_ray", action="store_true", help="occupancy-grid ray marching (runs on CPU too)")
    g.add_argument("--max_steps", type=int, default=16, help="max samples per ray when marching")
    g.add_argument("--num_steps", type=int, default=16, help="samples per ray without --cuda_ray")
    g.add_argument("--upsample_steps", type=int, default=0, help="unused, kept for compatibility")
    g.add_argument("--update_extra_interval", type=int, default=16, help="steps between density-grid updates")
    g.add_argument("--grid_sample", type=float, default=1.0,
                   help="share of the head occupancy-grid cells re-evaluated per update after the first 16 "
                        "(half random seen cells, half random occupied ones, as instant-ngp; 1 = all, the reference)")
    g.add_argument("--max_ray_batch", type=int, default=4096, help="ray chunk size of the stratified renderer")
    g.add_argument("--warmup_step", type=int, default=0, help="linear lr warm-up steps (0 = none, as the reference)")
    g.add_argument("--amb_aud_loss", type=int, default=1, help="ambient-audio loss on/off")
    g.add_argument("--amb_eye_loss", type=int, default=1, help="ambient-eye loss on/off")
    g.add_argument("--unc_loss", type=int, default=1, help="uncertainty-weighted loss on/off")
    g.add_argument("--lambda_amb", type=float, default=1e-4, help="weight of the ambient losses")
    g.add_argument("--fp16", action="store_true", help="mixed precision (CUDA; on the CPU only with ERNERF_CPU_FP16=1)")
    g.add_argument("--bf16", action="store_true",
                   help="on the CPU, run the MLP and conv layers in bfloat16 (autocast); ignored (fp32) on a CPU "
                        "without native bfloat16 (AVX512-BF16 or AMX), where it would be slower")
    g.add_argument("--eval_interval", type=int, default=0, help="epochs between evaluations (0 = about every 5000 steps)")
    g.add_argument("--save_interval", type=int, default=0, help="steps between extra checkpoints inside an epoch (0 = per epoch only)")
    g.add_argument("--max_keep_ckpt", type=int, default=2, help="number of ngp_ep*.pth kept")
    g.add_argument("--max_nonfinite", type=int, default=20,
                   help="steps in a row with a non-finite loss/gradient (each skipped) that stop training")
    g.add_argument("--ema_interval", type=int, default=1000,
                   help="steps between EMA updates of the weights saved in ngp.pth (reference: 1000)")

    g = p.add_argument_group("model")
    g.add_argument("--bg_img", type=str, default="", help="background image ('' = <path>/bc.jpg, or white/black)")
    g.add_argument("--fbg", action="store_true", help="unused, kept for compatibility")
    g.add_argument("--exp_eye", action="store_true", help="condition density on the eye (blink) area")
    g.add_argument("--fix_eye", type=float, default=-1, help="if >= 0, use this constant eye area")
    g.add_argument("--smooth_eye", action="store_true", help="smooth the eye-area sequence over time")
    g.add_argument("--exp_upper", action="store_true",
                   help="also condition density on the upper face (brow raise l/r, furrow, eye openness l/r "
                        "from <path>/expressions.csv) through the eye attention; needs --exp_eye (-O)")
    g.add_argument("--torso_shrink", type=float, default=0.8, help="scale of torso 2D coordinates before deformation")
    g.add_argument("--torso_pose_norm", type=float, default=0.0,
                   help="standardise the torso's pose input (projected anchors) over the training poses to this "
                        "standard deviation (0 = off, the reference's raw anchors)")
    g.add_argument("--color_space", type=str, default="srgb", help="srgb | linear")
    g.add_argument("--preload", type=int, default=0, help="0: read images per step, 1: preload to RAM (7 bytes a pixel; from disk per step when that "
                        "exceeds half the available memory), 2: preload to the device")
    g.add_argument("--bound", type=float, default=1, help="scene box [-bound, bound]^3")
    g.add_argument("--scale", type=float, default=4, help="camera translation scale")
    g.add_argument("--offset", type=float, nargs="*", default=[0, 0, 0], help="camera translation offset")
    g.add_argument("--dt_gamma", type=float, default=1 / 256, help="adaptive step growth")
    g.add_argument("--min_near", type=float, default=0.05, help="minimum near distance")
    g.add_argument("--density_thresh", type=float, default=10, help="head occupancy threshold on sigma")
    g.add_argument("--density_thresh_torso", type=float, default=0.01, help="torso occupancy threshold on alpha")
    g.add_argument("--grid_size", type=int, default=128, help="occupancy grid resolution per axis")
    g.add_argument("--patch_size", type=int, default=1, help=">1: train on square patches (LPIPS)")
    g.add_argument("--face_rays", type=float, default=0.0,
                   help="fraction of each training batch drawn inside the face rectangle (0 = uniform)")
    g.add_argument("--lips_rays", type=float, default=0.0,
                   help="fraction of each training batch drawn inside the lips square (0 = uniform)")
    g.add_argument("--error_map", type=float, default=0.0,
                   help="fraction of each head or torso training batch drawn in proportion to a coarse per-image "
                        "map of recent colour error (nerf_triplane/error_map.py; 0 = off, the reference)")
    g.add_argument("--mouth_sup", type=float, default=0.0,
                   help="weight of the mouth-shape target of the audio code (0 = off, the reference)")
    g.add_argument("--mouth_pretrain", type=int, default=0,
                   help="steps fitting the audio path to the mouth shapes before the head trains (0 = none)")
    g.add_argument("--mouth_k", type=int, default=6, help="mouth-shape components the audio code carries")
    g.add_argument("--mouth_spread", type=float, default=0.0,
                   help="weight of a concordance term that keeps the predicted mouth as wide open as the "
                        "measured one (0 = MSE only)")
    g.add_argument("--mouth_teacher", type=float, default=0.0,
                   help="share of head steps whose NeRF sees the frame's measured mouth shape in the audio "
                        "code's mouth channels (0 = never, the reference)")
    g.add_argument("--mouth_crossfit", type=int, default=0,
                   help="B >= 2: --mouth_teacher shows, instead of the measured shape, what an audio path "
                        "fitted on the other B-1 blocks of training frames (2 x --mouth_pretrain steps) "
                        "predicts: held-out-like codes (0 = off)")
    g.add_argument("--init_lips", action="store_true", help="unused by the reference, kept for compatibility")
    g.add_argument("--finetune_lips", action="store_true", help="lips LPIPS finetuning stage")
    g.add_argument("--smooth_lips", action="store_true", help="smooth the audio code over time at inference")
    g.add_argument("--lpips_weights", type=str, default="", help="AlexNet weights file for LPIPS (else the torch hub cache)")
    g.add_argument("--torso", action="store_true", help="train/render the torso branch (head frozen)")
    g.add_argument("--head_ckpt", type=str, default="", help="head checkpoint to start torso training from")

    g = p.add_argument_group("live viewer")
    g.add_argument("--gui", action="store_true", help="serve the live web viewer of the newest checkpoint")
    g.add_argument("--gui_host", type=str, default="127.0.0.1",
                   help="address the viewer listens on (0.0.0.0 exposes it to the network)")
    g.add_argument("--gui_port", type=int, default=7860, help="viewer port (0 = any free port)")
    g.add_argument("--gui_max_side", type=int, default=128,
                   help="longest side of the render on the CPU (a GPU renders --W x --H)")
    g.add_argument("--W", type=int, default=450, help="viewer frame width")
    g.add_argument("--H", type=int, default=450, help="viewer frame height")
    g.add_argument("--radius", type=float, default=3.35, help="orbit camera distance from the head centre")
    g.add_argument("--fovy", type=float, default=21.24, help="orbit camera vertical field of view (degrees)")
    g.add_argument("--max_spp", type=int, default=1, help="GUI samples per pixel (not built)")

    g = p.add_argument_group("audio and codes")
    g.add_argument("--att", type=int, default=2, help="audio attention: 0 off, 1 left window, 2 centred window")
    g.add_argument("--aud", type=str, default="", help="new audio: features .npy, or .wav/.mp3/.mp4 to extract")
    g.add_argument("--emb", action="store_true", help="audio as class ids through an embedding")
    g.add_argument("--ind_dim", type=int, default=4, help="per-frame head code size (0 = off)")
    g.add_argument("--ind_num", type=int, default=10000, help="number of per-frame codes (> training frames)")
    g.add_argument("--ind_dim_torso", type=int, default=8, help="per-frame torso code size")
    g.add_argument("--amb_dim", type=int, default=2, help="unused by the tri-plane network")
    g.add_argument("--part", action="store_true", help="use 1/10 of the training frames")
    g.add_argument("--part2", action="store_true", help="use the first 375 frames (15 s)")
    g.add_argument("--train_camera", action="store_true", help="learn a per-frame camera correction")
    g.add_argument("--smooth_path", action="store_true", help="smooth camera poses over a window")
    g.add_argument("--smooth_path_window", type=int, default=7, help="window of --smooth_path")

    g = p.add_argument_group("audio features")
    g.add_argument("--asr", action="store_true", help="stream audio features live (microphone, or --asr_wav)")
    g.add_argument("--asr_wav", type=str, default="", help="--asr: stream this audio file in real time")
    g.add_argument("--asr_play", action="store_true", help="--asr: play the streamed sound on this machine")
    g.add_argument("--asr_model", type=str, default="mel",
                   help="audio model: mel (offline) | deepspeech | a Hugging Face HuBERT/wav2vec2 id or folder")
    g.add_argument("--asr_weights", type=str, default="", help="DeepSpeech's .pb, or a folder replacing the named model's download")
    g.add_argument("--asr_save_feats", action="store_true",
                   help="--asr: write the streamed features to <workspace>/results/<stem>_asr.npy")
    g.add_argument("--fps", type=int, default=50, help="--asr: audio feature steps per second (only 50)")
    g.add_argument("-l", type=int, default=10, help="--asr: left context of each block, in 20 ms steps")
    g.add_argument("-m", type=int, default=50, help="--asr: block length, in 20 ms steps")
    g.add_argument("-r", type=int, default=10, help="--asr: right context (look-ahead) of each block, in 20 ms steps")
    return group_options(p, MAIN_SECTIONS)


def finalize(opt: argparse.Namespace) -> argparse.Namespace:
    """Apply the flag implications of the reference (``-O``)."""
    if opt.O:
        opt.fp16 = True
        opt.cuda_ray = True
        opt.exp_eye = True
    if len(opt.data_range) != 2:
        raise ValueError(f"--data_range takes two integers (start end), got {opt.data_range}")
    if len(opt.offset) != 3:
        raise ValueError(f"--offset takes three floats, got {opt.offset}")
    if opt.patch_size > 1 and opt.num_rays % (opt.patch_size ** 2) != 0:
        raise ValueError(f"--num_rays ({opt.num_rays}) must be a multiple of --patch_size^2 ({opt.patch_size ** 2})")
    for flag in ("face_rays", "lips_rays", "error_map"):
        if not 0.0 <= getattr(opt, flag) <= 1.0:
            raise ValueError(f"--{flag} is a fraction in [0, 1], got {getattr(opt, flag)}")
    if opt.face_rays + opt.lips_rays + opt.error_map > 1.0:
        raise ValueError(f"--face_rays + --lips_rays + --error_map must not exceed 1, "
                         f"got {opt.face_rays + opt.lips_rays + opt.error_map}")
    if opt.mouth_sup < 0 or opt.mouth_pretrain < 0 or opt.mouth_spread < 0:
        raise ValueError("--mouth_sup, --mouth_pretrain and --mouth_spread must be >= 0")
    if not 0 <= opt.mouth_teacher <= 1:
        raise ValueError(f"--mouth_teacher is a share of steps in [0, 1], got {opt.mouth_teacher}")
    if not 1 <= opt.mouth_k <= 32:
        raise ValueError(f"--mouth_k must be in 1..32 (the audio code has 32 channels), got {opt.mouth_k}")
    if opt.mouth_crossfit == 1 or opt.mouth_crossfit < 0:
        raise ValueError(f"--mouth_crossfit is a number of blocks >= 2 (0 = off), got {opt.mouth_crossfit}")
    return opt


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` (default ``sys.argv[1:]``) into the options namespace."""
    return finalize(get_parser().parse_args(argv))
