"""Train or render an ER-NeRF talking portrait.

    python main.py DATA --workspace W -O --iters 100000           # train the head
    python main.py DATA --workspace W -O --test                   # render + score the test split
    python main.py DATA --workspace W -O --iters 125000 --finetune_lips --patch_size 32   # lips
    python main.py DATA --workspace W_torso -O --torso --head_ckpt W/checkpoints/ngp.pth --iters 200000
    python main.py DATA --workspace W_torso -O --torso --test --test_train --aud speech.wav   # new audio
    python main.py DATA --workspace W -O --gui                    # live web viewer (127.0.0.1:7860)
    python main.py DATA --workspace W -O --gui --asr --asr_wav speech.wav   # driven by streamed features

Bad input (missing folder or files, mismatched features) ends with one ``error:`` line
and exit code 2; SIGINT/SIGTERM during training saves a checkpoint and exits with 130.
"""
from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import numpy as np
import torch

from data_utils.atomic import check_writable, save_npy
from data_utils.quiet import set_verbose
from nerf_triplane.option_checks import check_numbers
from nerf_triplane.options import UNBUILT, parse_args

AUDIO_SUFFIXES = (".wav", ".mp3", ".mp4", ".m4a", ".flac", ".ogg", ".aac", ".mkv", ".mov")
# Suffixes the feature extractors append to the audio file's stem (x.wav -> x_eo.npy, ...).
FEATURE_SUFFIXES = ("_feats", "_eo", "_hu", "_ds")


class UsageError(Exception):
    """Bad command line or input folder; reported as one line, exit code 2."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: no CUDA device is available (use --device cpu)")
    return torch.device(name)


def check_options(opt) -> None:
    for flag, (off, why) in UNBUILT.items():
        if getattr(opt, flag) != off:
            raise UsageError(f"--{flag} {getattr(opt, flag)}: {why}")
    if not Path(opt.path).is_dir():
        raise UsageError(f"data folder {opt.path} does not exist (make it with data_utils/process.py)")
    from nerf_triplane.live.app import check_live_options

    check_live_options(opt)
    if (opt.gui or opt.asr) and (opt.test or opt.aud):
        raise UsageError("--gui/--asr run live: leave out --test and --aud (upload audio on the page instead)")
    if opt.aud and not opt.test:
        raise UsageError("--aud drives rendering with new audio: use it with --test (and --test_train)")
    if opt.full_frame:
        if not opt.test:
            raise UsageError("--full_frame pastes a test render into the source video: use it with --test")
        from nerf_triplane.paste import load_crop

        load_crop(opt.path)


def feature_stem(path: Path) -> str:
    """Stem of a feature file without the extractor's suffix (``x_eo.npy`` -> ``x``)."""
    stem = path.stem
    for suffix in FEATURE_SUFFIXES:
        if stem.endswith(suffix):
            return stem.removesuffix(suffix)
    return stem


def companion_audio(features: Path) -> Path | None:
    """The audio file a feature ``.npy`` was extracted from, when it sits next to it."""
    for stem in dict.fromkeys((features.stem, feature_stem(features))):
        for suffix in AUDIO_SUFFIXES:
            candidate = features.with_name(stem + suffix)
            if candidate.is_file():
                return candidate
    return None


def prepare_novel_audio(opt, workspace: Path) -> Path | None:
    """For ``--aud`` given as audio/video: extract features into ``results/<stem>_feats.npy``
    and point ``opt.aud`` at them. Returns the audio file to mux into the video: the
    given one, or for a features ``.npy`` the audio next to it with the same stem (None
    if there is none: the video is then silent)."""
    if not opt.aud:
        return None
    src = Path(opt.aud)
    if not src.is_file():
        raise FileNotFoundError(f"--aud {src} not found")
    if src.suffix.lower() == ".npy":
        audio = companion_audio(src)
        if audio is None:
            print(f"[INFO] no audio file named like {src.name} next to it: the video will be silent "
                  f"(put {feature_stem(src)}.wav beside it to mux the sound)")
        return audio
    if src.suffix.lower() not in AUDIO_SUFFIXES:
        raise UsageError(f"--aud {src}: expected features .npy or audio {', '.join(AUDIO_SUFFIXES)}")
    from data_utils.asr_models import record_features
    from data_utils.audio import load_audio
    from data_utils.audio_features import extract_features
    from data_utils.input_checks import check_audio_file, silence_warning

    check_audio_file(src)
    audio = load_audio(src)
    if silent := silence_warning(audio, src):
        print(f"warning: {silent}", file=sys.stderr)
    feats = extract_features(audio, engine=opt.asr_model, fps=25, weights=opt.asr_weights or None)
    out = workspace / "results" / f"{src.stem}_feats.npy"
    out.parent.mkdir(parents=True, exist_ok=True)
    save_npy(out, feats)
    record_features(out, opt.asr_model)
    print(f"[INFO] {src}: {feats.shape[0]} frames of {opt.asr_model} features -> {out}")
    opt.aud = str(out)
    return src


def load_head_for_torso(model, path: str, train_frames: int) -> None:
    """Load the head weights of ``--head_ckpt`` and freeze them (torso training).

    Args:
        model: torso-enabled ``NeRFNetwork``.
        path: head checkpoint (``ngp.pth`` or ``ngp_ep*.pth`` of a head workspace).
        train_frames: number of training frames of this run; must match the head's.
    """
    from nerf_triplane.checkpoint import read_checkpoint
    from nerf_triplane.trainer import check_compatible

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--head_ckpt {path} not found (give the head workspace's checkpoints/ngp.pth)")
    ckpt = read_checkpoint(path)
    state = ckpt["model"]
    if not any(k.startswith("sigma_net") for k in state):
        raise ValueError(f"--head_ckpt {path} holds no head network (no sigma_net weights)")
    if any(k.startswith("torso_") for k in state):
        raise ValueError(f"--head_ckpt {path} is a torso checkpoint: give the head workspace's checkpoint")
    check_compatible(model, ckpt, path)
    head_frames = ckpt.get("train_frames")
    if head_frames is not None and int(head_frames) != train_frames:
        raise ValueError(f"--head_ckpt {path} was trained on {head_frames} frames but this data has "
                         f"{train_frames} training frames: use the same folder and --data_range/--part/--part2")
    missing, unexpected = model.load_state_dict(state, strict=False)
    print(f"[INFO] head from {path}: {len(missing)} missing (torso) keys, {len(unexpected)} unexpected")
    for attr in ("mean_density", "iter_density"):
        if attr in ckpt:
            setattr(model, attr, ckpt[attr])
    for name, param in model.named_parameters():
        if name in state:
            param.requires_grad = False


def remember_model_flags(opt, argv: list[str] | None) -> None:
    """Take the model flags this workspace (or its --head_ckpt's) was trained with, and give a
    local ``--asr_model`` folder as an absolute path so checkpoints name it wherever they run."""
    from data_utils.asr_models import resolve
    from nerf_triplane.presets import explicit_dests
    from nerf_triplane.workspace_flags import apply_stored_flags

    source = apply_stored_flags(opt, explicit_dests(argv) if argv is not None else set())
    if source is not None:
        print(f"[INFO] model flags from {source}")
    name = resolve(opt.asr_model).name
    if Path(name).is_absolute():
        opt.asr_model = name


def run(opt, argv: list[str] | None = None) -> int:
    from nerf_triplane.audio_source import features_source
    from nerf_triplane.network import NeRFNetwork
    from nerf_triplane.provider import NeRFDataset
    from nerf_triplane.trainer import Trainer
    from nerf_triplane.trained_model import load_trained
    from nerf_triplane.workspace_flags import save_flags

    check_options(opt)
    if opt.preset:
        from nerf_triplane.presets import apply_preset

        apply_preset(opt, argv)
    check_numbers(opt)
    remember_model_flags(opt, argv)
    seed_everything(opt.seed)
    # The reference disables TF32 for precision; it only matters on CUDA.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device = pick_device(opt.device)
    workspace = Path(opt.workspace)
    check_writable(workspace)

    if opt.gui or opt.asr:
        from nerf_triplane.live.app import run_live

        return run_live(opt, device)

    if opt.test:
        aud_arg = str(Path(opt.aud).resolve()) if opt.aud else ""
        audio_path = prepare_novel_audio(opt, workspace)
        dataset = NeRFDataset(opt, device=device, type="train" if opt.test_train else "test")
        # --test_train renders full frames of the train split in order.
        dataset.training = False
        dataset.num_rays = -1
        loader = dataset.dataloader()
        _, trainer, _ = load_trained(opt, dataset, device, purpose="--test")
        name = feature_stem(Path(opt.aud)) if opt.aud else None
        rendered = trainer.test(loader, name=name, audio_path=audio_path, aud_arg=aud_arg)
        name = name or rendered.get("name") or Path(rendered["video"]).stem
        if opt.full_frame:
            from nerf_triplane.paste import paste_render

            paste_render(workspace, name, opt.path, audio_path)
        from nerf_triplane.evaluation import evaluate_workspace

        # The render just written is the workspace's newest: score it (sync, floor, report).
        report = evaluate_workspace(workspace, data=opt.path, name=name, lpips_weights=opt.lpips_weights or None)
        print(f"[INFO] evaluation report: {report['paths']['report']}")
        return 0

    train_set = NeRFDataset(opt, device=device, type="train")
    model = NeRFNetwork(opt, audio_dim=train_set.audio_dim).to(device)
    model.audio_source = features_source(opt)
    if opt.torso and opt.head_ckpt:
        load_head_for_torso(model, opt.head_ckpt, train_set.num_frames)
    elif opt.torso and not any(Path(workspace, "checkpoints").glob("ngp_ep*.pth")):
        print("[WARN] --torso without --head_ckpt: the head stays untrained (give --head_ckpt HEAD.pth)")
    valid_loader = NeRFDataset(opt, device=device, type="val").dataloader()
    trainer = Trainer(opt, model, workspace, device, train=True)
    trainer.load_checkpoint(opt.ckpt)
    save_flags(opt)
    if not trainer.train(train_set.dataloader(), valid_loader):
        return 130
    test_loader = NeRFDataset(opt, device=device, type="test").dataloader()
    trainer.test(test_loader)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        opt = parse_args(argv)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    set_verbose(opt.verbose)
    try:
        return run(opt, argv)
    except (UsageError, OSError, ValueError, FloatingPointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
