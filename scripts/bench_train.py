"""Training and inference speed of a preset's configuration, per kernel backend.

    .venv/bin/python scripts/bench_train.py [--size 450] [--steps 16] [--device cpu|cuda]
                                            [--preset paper] [--backends torch,cpp] [--json PATH]

Builds a small synthetic subject at ``--size``² (cached under ``--data``), then for each
backend (``--device cpu``: ``torch`` and ``cpp``; ``--device cuda``: ``torch`` and ``cuda``,
all on GPU tensors) times ``--steps`` training steps of the head stage of ``--preset``
(``paper``, the reference config: ``-O``, 65536 rays, 128³ occupancy grid, 16 marching steps;
grid refresh every 16 steps; timed after one warm-up step) and the rendering of full frames.
On CUDA ``-O`` trains under fp16 autocast, as the reference does. Prints one JSON object:
``{"config": ..., "results": {backend: {"train_it_s", "infer_fps", ...}}}``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_backend(backend: str, data: Path, args) -> dict:
    from nerf_triplane.network import NeRFNetwork
    from nerf_triplane.options import parse_args
    from nerf_triplane.provider import NeRFDataset
    from nerf_triplane.trainer import Trainer, _to_device

    os.environ["ERNERF_BACKEND"] = backend
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as ws:
        opt = parse_args(train_argv(data, ws, args))
        torch.manual_seed(0)
        train_set = NeRFDataset(opt, device=device, type="train")
        model = NeRFNetwork(opt, audio_dim=train_set.audio_dim).to(device)
        trainer = Trainer(opt, model, ws, device, train=True)
        trainer.set_train_data(train_set)
        from torch.utils.tensorboard import SummaryWriter

        trainer.writer = SummaryWriter(str(Path(ws) / "run"))
        model.mark_untrained_grid(train_set.poses, train_set.intrinsics)
        loader = train_set.dataloader()

        def batch(k: int) -> dict:
            return _to_device(loader.collate_fn([k % len(loader.dataset)]), device)

        trainer._optimise(batch(0))  # warm-up: first grid refresh, kernel compilation
        _sync(device)
        t0 = time.perf_counter()
        for k in range(args.steps):
            trainer._optimise(batch(k + 1))
        _sync(device)
        train_s = (time.perf_counter() - t0) / args.steps
        trainer.writer.close()

        test_set = NeRFDataset(opt, device=device, type="test")
        test_loader = test_set.dataloader()
        model.eval()
        frames = [_to_device(test_loader.collate_fn([k]), device) for k in range(args.frames + 1)]
        trainer.render_frame(frames[0], testing=True)  # warm-up
        _sync(device)
        t0 = time.perf_counter()
        for data in frames[1:]:
            trainer.render_frame(data, testing=True)
        _sync(device)
        infer_s = (time.perf_counter() - t0) / args.frames
    return {"train_it_s": round(1 / train_s, 4), "train_s_per_it": round(train_s, 3),
            "infer_fps": round(1 / infer_s, 4), "infer_s_per_frame": round(infer_s, 3),
            "steps": args.steps, "frames": args.frames, "device": str(device), "fp16": trainer.fp16,
            "mean_density": round(float(model.mean_density), 4)}


def train_argv(data: Path, workspace: str, args) -> list[str]:
    """main.py arguments of the timed configuration: the preset's head stage, images preloaded
    (on the GPU for ``--device cuda``), ``--num_rays`` when given."""
    from nerf_triplane.presets import stage_flags

    argv = [str(data), "--workspace", workspace, *stage_flags(args.preset, "head"), "--device", args.device,
            "--preload", "2" if args.device == "cuda" else "1"]
    if args.num_rays:
        argv += ["--num_rays", str(args.num_rays)]
    return argv


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=450, help="image side in pixels")
    parser.add_argument("--steps", type=int, default=16,
                        help="timed training steps per backend (16 = one occupancy-grid refresh)")
    parser.add_argument("--frames", type=int, default=2, help="timed rendered frames per backend")
    parser.add_argument("--preset", type=str, default="paper",
                        help="nerf_triplane/presets.py settings of the head stage (paper = the reference)")
    parser.add_argument("--num_rays", type=int, default=0, help="rays per training step (0: the preset's)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where model and batches live")
    parser.add_argument("--backends", type=str, default="",
                        help="comma list (default: torch,cpp on the CPU, torch,cuda on CUDA)")
    parser.add_argument("--data", type=str, default="", help="synthetic subject folder (default: a cache dir)")
    parser.add_argument("--json", type=str, default="", help="also write the JSON object to this file")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible to torch")

    from data_utils.synthetic import make_synthetic_subject
    from nerf_triplane.options import parse_args

    data = Path(args.data or Path.home() / ".cache" / "ernerf" / f"bench_synthetic_{args.size}")
    if not (data / "transforms_val.json").is_file():
        # 22 frames: 20 train + 2 test, enough for a few steps and frames.
        make_synthetic_subject(data, n_frames=22, size=args.size, seed=0)
    backends = args.backends.split(",") if args.backends else ["torch", "cuda" if args.device == "cuda" else "cpp"]
    opt = parse_args(train_argv(data, "unused", args))
    config = {"size": args.size, "preset": args.preset, "device": args.device, "num_rays": opt.num_rays,
              "grid_size": opt.grid_size, "max_steps": opt.max_steps, "torch_threads": torch.get_num_threads()}
    if args.device == "cuda":
        config["gpu"] = torch.cuda.get_device_name()
    report = {"config": config, "results": {}}
    for backend in backends:
        print(f"[bench] {backend} ...", file=sys.stderr, flush=True)
        report["results"][backend] = bench_backend(backend, data, args)
        if args.json:
            # Rewritten after every backend, so a run cut short keeps the backends it finished.
            Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
