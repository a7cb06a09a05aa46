"""Training and inference speed of a preset's configuration: per kernel backend, before/after
settings in one run, or a torch-profiler breakdown of the step.

    .venv/bin/python scripts/bench_train.py [--size 450] [--steps 16] [--device cpu|cuda]
                                            [--preset paper] [--backends torch,cpp] [--json PATH]
    .venv/bin/python scripts/bench_train.py --subject DATA --ckpt CKPT --preset cpu --stage head
                                            --compare [--before grid_sample=1 ...] [--blocks 6]
    .venv/bin/python scripts/bench_train.py --subject DATA --ckpt CKPT --preset cpu --stage head
                                            --profile before|after

Default mode: builds a small synthetic subject at ``--size``² (cached under ``--data``), or uses
the processed subject ``--subject``, then for each backend (``--device cpu``: ``torch`` and
``cpp``; ``--device cuda``: ``torch`` and ``cuda``, all on GPU tensors) times ``--steps``
training steps of ``--stage`` of ``--preset`` (``paper``, the reference config: ``-O``, 65536
rays, 128³ occupancy grid, 16 marching steps; grid refresh every 16 steps; timed after one
warm-up step) and the rendering of full frames. On CUDA ``-O`` trains under fp16 autocast, as
the reference does. Prints ``{"config": ..., "results": {backend: {"train_it_s", "infer_fps", ...}}}``.

``--compare``: two trainers of the same stage, from the same seed and ``--ckpt``: "before" (the
preset with the ``--before`` option overrides, default the settings before issue 14:
``grid_sample=1 bf16=0``, the whole occupancy grid in one network call and the per-tensor
AdamW loop; the audio windows are batched in both) and "after" (the
preset as it is, with ``--after`` overrides). They take turns, one block of
``update_extra_interval`` steps (one grid refresh, data loading included) each, ``--blocks``
times; steps/s is the block size over the median block time. Prints ``{"config", "before",
"after", "ratio"}`` (ratio = after steps/s / before steps/s).

``--profile before|after``: ``--steps`` steps of that trainer under ``torch.profiler`` (CPU),
after one warm-up step; prints ``{"config", "s_per_step", "breakdown": {category: {"ms_per_step",
"share"}}}``. Each profiled op's own time goes to one category: ``density-grid refresh``
(inside ``update_extra_state``), ``data loading`` (batch assembly), ``optimiser`` (AdamW),
``grid encode`` (hash-grid and SH encoders, forward and backward), ``marching``,
``compositing``, ``MLPs`` (matmuls and their activations), ``audio nets`` (convolutions),
``other tensor ops`` (losses, concatenation, indexing, ...); ``Python overhead`` is the wall
time no op accounts for. Run it with ``OMP_NUM_THREADS=1`` for the one-thread figures.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

# The settings of the head step before issue 14 (see --compare).
BEFORE = {"grid_sample": 1.0, "bf16": False}
MLP_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::relu", "aten::clamp_min", "aten::threshold_backward",
           "aten::sigmoid", "aten::sigmoid_backward")
CONV_OPS = ("conv", "leaky_relu")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def parse_overrides(items: list[str], opt) -> dict:
    """``["key=value", ...]`` (several per item, space separated) -> {option: value}, each value
    converted to the type of the option's current value (bools from 0/1/true/false)."""
    out = {}
    for item in items:
        for pair in item.split():
            key, _, value = pair.partition("=")
            if not hasattr(opt, key) or not _:
                raise SystemExit(f"--before/--after: {pair!r} is not OPTION=VALUE of a main.py option")
            current = getattr(opt, key)
            if isinstance(current, bool):
                out[key] = value.lower() in ("1", "true", "yes")
            else:
                out[key] = type(current)(value)
    return out


def train_argv(data: Path, workspace: str, args) -> list[str]:
    """main.py arguments of the timed configuration: the preset's ``--stage``, images preloaded
    for the synthetic subject (on the GPU for ``--device cuda``), ``--num_rays`` when given."""
    from nerf_triplane.presets import stage_flags

    argv = [str(data), "--workspace", workspace, *stage_flags(args.preset, args.stage), "--device", args.device]
    if not args.subject:
        argv += ["--preload", "2" if args.device == "cuda" else "1"]
    if args.num_rays:
        argv += ["--num_rays", str(args.num_rays)]
    return argv


class Run:
    """One trainer of the timed stage, ready to step: ``step()`` assembles the next training
    batch of its dataset and runs ``Trainer.optimise`` on it."""

    def __init__(self, data: Path, args, stack: ExitStack, overrides: dict | None = None, dataset=None,
                 grid_block: int | None = None, fused_adam: bool = True):
        from nerf_triplane.network import NeRFNetwork
        from nerf_triplane.options import parse_args
        from nerf_triplane.provider import NeRFDataset
        from nerf_triplane.trainer import Trainer, lr_factor

        self.device = torch.device(args.device)
        ws = stack.enter_context(tempfile.TemporaryDirectory())
        opt = parse_args(train_argv(data, ws, args))
        for key, value in (overrides or {}).items():
            setattr(opt, key, value)
        self.opt = opt
        torch.manual_seed(0)
        self.dataset = dataset or NeRFDataset(opt, device=self.device, type="train")
        self.model = NeRFNetwork(opt, audio_dim=self.dataset.audio_dim).to(self.device)
        if grid_block is not None:
            self.model.grid_block = grid_block
        self.trainer = Trainer(opt, self.model, ws, self.device, train=True)
        if not fused_adam:
            # The per-tensor AdamW loop of the trainer before issue 14, same groups and schedule.
            trainer = self.trainer
            groups = [{"params": g["params"], "lr": g["initial_lr"], "weight_decay": g["weight_decay"]}
                      for g in trainer.optimizer.param_groups]
            trainer.optimizer = torch.optim.AdamW(groups, betas=(0.0, 0.99), eps=1e-8, fused=False)
            gamma, iters, warmup = 0.05 if opt.finetune_lips else 0.5, max(int(opt.iters), 1), int(opt.warmup_step)
            trainer.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
                trainer.optimizer, lambda k: lr_factor(k, iters, gamma, warmup))
        if args.ckpt:
            self.trainer.load_checkpoint(args.ckpt)
        self.trainer.prepare_training(self.dataset)
        self.k = 0

    def batch(self) -> dict:
        """The next training batch (frames in order)."""
        with torch.profiler.record_function("data"):
            batch = self.dataset.collate([self.k % self.dataset.num_frames])
        self.k += 1
        return batch

    def step(self) -> None:
        self.trainer.optimise(self.batch())


def bench_backend(backend: str, data: Path, args) -> dict:
    from nerf_triplane.provider import NeRFDataset

    os.environ["ERNERF_BACKEND"] = backend
    with ExitStack() as stack:
        run = Run(data, args, stack)
        device, trainer = run.device, run.trainer
        run.step()  # warm-up: first grid refresh, kernel compilation
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            run.step()
        _sync(device)
        train_s = (time.perf_counter() - t0) / args.steps

        test_set = NeRFDataset(run.opt, device=device, type="test")
        run.model.eval()
        frames = [test_set.collate([k]) for k in range(args.frames + 1)]
        trainer.render_frame(frames[0], testing=True)  # warm-up
        _sync(device)
        t0 = time.perf_counter()
        for frame in frames[1:]:
            trainer.render_frame(frame, testing=True)
        _sync(device)
        infer_s = (time.perf_counter() - t0) / args.frames
    return {"train_it_s": round(1 / train_s, 4), "train_s_per_it": round(train_s, 3),
            "infer_fps": round(1 / infer_s, 4), "infer_s_per_frame": round(infer_s, 3),
            "steps": args.steps, "frames": args.frames, "device": str(device), "fp16": trainer.fp16,
            "bf16": trainer.bf16, "mean_density": round(float(run.model.mean_density), 4)}


def compare(data: Path, args) -> dict:
    """Before/after steps/s, interleaved by blocks of one grid-refresh period."""
    from nerf_triplane.options import parse_args

    base = parse_args(train_argv(data, "unused", args))
    before, after = settings(base, args)
    with ExitStack() as stack:
        runs = {"before": Run(data, args, stack, **before)}
        runs["after"] = Run(data, args, stack, **after, dataset=runs["before"].dataset)
        period = int(base.update_extra_interval)
        times = {name: [] for name in runs}
        for run in runs.values():
            run.step()  # warm-up
        for _ in range(args.blocks):
            for name, run in runs.items():
                _sync(run.device)
                t0 = time.perf_counter()
                for _ in range(period):
                    run.step()
                _sync(run.device)
                times[name].append(time.perf_counter() - t0)
    out = {"config": config_of(base, args) | {"block_steps": period, "blocks": args.blocks}}
    for name, run in runs.items():
        block_s = statistics.median(times[name])
        out[name] = {"overrides": {"before": before, "after": after}[name]["overrides"],
                     "steps_per_s": round(period / block_s, 4),
                     "s_per_step": round(block_s / period, 4),
                     "block_s": [round(t, 3) for t in times[name]]}
    out["ratio"] = round(out["after"]["steps_per_s"] / out["before"]["steps_per_s"], 3)
    return out


def settings(base, args) -> tuple[dict, dict]:
    """``Run`` keyword arguments of the "before" and "after" trainers."""
    before = {"overrides": {**BEFORE, **parse_overrides(args.before, base)},
              # The pre-issue-14 refresh evaluated all cells of a cascade in one network call,
              # and AdamW looped over the tensors.
              "grid_block": base.grid_size ** 3, "fused_adam": False}
    return before, {"overrides": parse_overrides(args.after, base)}


def _category(event) -> str:
    """Breakdown category of one profiled event's own time (see the module docstring)."""
    scopes, e = [], event
    while e is not None:
        scopes.append(e.name)
        e = e.cpu_parent
    if "density_grid_refresh" in scopes:
        return "density-grid refresh"
    if "data" in scopes:
        return "data loading"
    if any(s.startswith("Optimizer.") for s in scopes):
        return "optimiser"
    name = event.name
    if "GridEncode" in name or "SHEncode" in name:
        return "grid encode"
    if "march_rays" in name:
        return "marching"
    if "CompositeRays" in name:
        return "compositing"
    if name in MLP_OPS:
        return "MLPs"
    if any(c in name for c in CONV_OPS):
        return "audio nets"
    return "other tensor ops"


def profile(data: Path, args) -> dict:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from nerf_triplane.options import parse_args

    base = parse_args(train_argv(data, "unused", args))
    which = dict(zip(("before", "after"), settings(base, args)))[args.profile]
    with ExitStack() as stack:
        run = Run(data, args, stack, **which)
        run.step()  # warm-up
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            for _ in range(args.steps):
                run.step()
            wall = time.perf_counter() - t0
    totals: dict[str, float] = {}
    for event in prof.events():
        cat = _category(event)
        totals[cat] = totals.get(cat, 0.0) + event.self_cpu_time_total / 1e6
    totals["Python overhead"] = max(0.0, wall - sum(totals.values()))
    order = sorted(totals, key=totals.get, reverse=True)
    breakdown = {c: {"ms_per_step": round(1e3 * totals[c] / args.steps, 2), "share": round(totals[c] / wall, 3)}
                 for c in order}
    config = config_of(base, args) | {"steps": args.steps, "profiled": args.profile,
                                      "overrides": which["overrides"]}
    return {"config": config, "s_per_step": round(wall / args.steps, 4),
            "breakdown": breakdown}


def config_of(opt, args) -> dict:
    config = {"data": str(args.subject or "synthetic"), "preset": args.preset, "stage": args.stage,
              "device": args.device, "num_rays": opt.num_rays, "grid_size": opt.grid_size,
              "max_steps": opt.max_steps, "grid_sample": opt.grid_sample, "bf16": opt.bf16,
              "torch_threads": torch.get_num_threads(), "ckpt": args.ckpt or None}
    if args.device == "cuda":
        config["gpu"] = torch.cuda.get_device_name()
    return config


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=450, help="image side of the synthetic subject, pixels")
    parser.add_argument("--subject", type=str, default="", help="processed subject folder (default: synthetic)")
    parser.add_argument("--ckpt", type=str, default="", help="checkpoint the trainers start from (default: scratch)")
    parser.add_argument("--stage", choices=("head", "torso"), default="head", help="preset stage timed")
    parser.add_argument("--steps", type=int, default=16,
                        help="timed (or profiled) training steps (16 = one occupancy-grid refresh)")
    parser.add_argument("--frames", type=int, default=2, help="timed rendered frames per backend")
    parser.add_argument("--preset", type=str, default="paper",
                        help="nerf_triplane/presets.py settings of the stage (paper = the reference)")
    parser.add_argument("--num_rays", type=int, default=0, help="rays per training step (0: the preset's)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where model and batches live")
    parser.add_argument("--backends", type=str, default="",
                        help="comma list (default: torch,cpp on the CPU, torch,cuda on CUDA)")
    parser.add_argument("--compare", action="store_true", help="before/after steps/s in one run (interleaved)")
    parser.add_argument("--before", action="append", default=[],
                        help="OPTION=VALUE overrides of the 'before' trainer (default: grid_sample=1 bf16=0)")
    parser.add_argument("--after", action="append", default=[],
                        help="OPTION=VALUE overrides of the 'after' (and --profile) trainer (default: none)")
    parser.add_argument("--blocks", type=int, default=6, help="--compare: timed blocks per trainer")
    parser.add_argument("--profile", choices=("before", "after"), default="",
                        help="torch.profiler breakdown of --steps steps of that trainer")
    parser.add_argument("--data", type=str, default="", help="synthetic subject folder (default: a cache dir)")
    parser.add_argument("--json", type=str, default="", help="also write the JSON object to this file")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible to torch")

    # stdout carries the JSON alone: the trainer's log lines go to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        report = measure(subject_folder(args), args)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return report


def subject_folder(args) -> Path:
    """``--subject``, or the synthetic subject at ``--size``, made on first use."""
    if args.subject:
        return Path(args.subject)
    from data_utils.synthetic import make_synthetic_subject

    data = Path(args.data or Path.home() / ".cache" / "ernerf" / f"bench_synthetic_{args.size}")
    if not (data / "transforms_val.json").is_file():
        # 22 frames: 20 train + 2 test, enough for a few steps and frames.
        make_synthetic_subject(data, n_frames=22, size=args.size, seed=0)
    return data


def measure(data: Path, args) -> dict:
    """The report of the mode ``args`` asks for (see the module docstring)."""
    if args.compare or args.profile:
        report = compare(data, args) if args.compare else profile(data, args)
    else:
        from nerf_triplane.options import parse_args

        backends = args.backends.split(",") if args.backends else ["torch", "cuda" if args.device == "cuda" else "cpp"]
        config = config_of(parse_args(train_argv(data, "unused", args)), args)
        report = {"config": config, "results": {}}
        for backend in backends:
            print(f"[bench] {backend} ...", file=sys.stderr, flush=True)
            report["results"][backend] = bench_backend(backend, data, args)
            if args.json:
                # Rewritten after every backend, so a run cut short keeps the backends it finished.
                Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
