"""Training loop, evaluation and test rendering of ER-NeRF (workspace files named "ngp").

Follows the reference trainer (ERNERF_FACTS.md §1, §4): AdamW (betas (0, 0.99)) on the
model's parameter groups, per-step LambdaLR decay ``gamma ** (step / iters)``, occupancy
grid refresh every ``--update_extra_interval`` steps, EMA every ``--ema_interval`` steps (1000, as the reference), one
checkpoint per epoch (last ``--max_keep_ckpt`` kept), evaluation with EMA weights and
``ngp.pth`` after it.

Deviations, each deliberate:
- Resume is exact: checkpoints hold the RNG states, and the epoch order comes from a
  generator seeded by (seed, epoch), so a run stopped and resumed (also mid-epoch, via
  ``--save_interval`` or SIGINT/SIGTERM) continues with the same batches and losses.
- Evaluation also runs after the last epoch, so every training run leaves ``ngp.pth``;
  while the EMA has had no update yet it evaluates the raw weights.
- LPIPS losses use ``normalize=True`` (inputs in [0, 1] mapped to [-1, 1]).
- ``--fp16`` autocast and grad scaling on CUDA; on the CPU only with ``ERNERF_CPU_FP16=1``
  (float16 CPU autocast is slow: it exists so that the fp16 code path, i.e. the dtypes
  reaching the kernels and the grad scaler, can be tested without a GPU), else one notice.
- Checkpoints load onto the CPU and are copied into the model/optimiser wherever they live,
  so runs resume across devices (CPU <-> GPU, more GPUs -> fewer, fp32 <-> fp16).
- ``--warmup_step > 0`` adds a linear learning-rate warm-up (0 = reference behaviour).
- The lips/patch alternation of ``--finetune_lips`` is saved in checkpoints, so a resumed
  finetune run continues with the batch kind it would have drawn next.
- ``test`` also writes every predicted frame losslessly (``results/<name>_frames/``).
- Checkpoints are read as plain data (``torch.load(weights_only=True)``, ``checkpoint.py``)
  and written durably (fsync, rename, fsync of the folder); none is written with NaN/inf weights.
- A step whose loss or gradient is not finite is skipped, not applied (the reference raised);
  ``--max_nonfinite`` in a row stop training (``nonfinite.py``).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import threading
import time
import warnings
from contextlib import ExitStack, contextmanager, nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import tqdm

from data_utils.atomic import fsync_path, storage_error
from data_utils.pause import pause_point

from .audio_source import check_features_model
from .checkpoint import (CheckpointDir, atomic_write_text, read_checkpoint, rng_state, save_checkpoint_file,
                         set_rng_state)
from .metrics import LMDMeter, load_lpips, lpips_distance, psnr, ssim
from .mouth import MouthSupervision
from .nonfinite import NonFiniteGuard, grads_finite
from .provider import linear_to_srgb, srgb_to_linear
from .video import VideoWriter

EMA_DECAY = 0.95
REG_INTERVAL = 16  # steps between smoothness-regulariser evaluations
MOUTH_BATCH = 8  # frames per step whose audio code is held to their mouth shape (--mouth_sup)
EVAL_EVERY_STEPS = 5000  # default evaluation period when --eval_interval is 0
CPU_FP16_ENV = "ERNERF_CPU_FP16"  # "1": --fp16 also autocasts (float16) and scales gradients on the CPU


class EMA:
    """Exponential moving average of the trainable parameters (torch_ema semantics).

    On its n-th update the decay used is ``min(decay, (1 + n) / (10 + n))``; ``n`` is
    part of the state, so the warm-up resumes with a checkpoint.
    """

    def __init__(self, params, decay: float = EMA_DECAY):
        self.params = [p for p in params if p.requires_grad]
        self.decay = decay
        self.num_updates = 0
        self.shadow = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self) -> float:
        """Move the shadows toward the current weights; returns the decay used."""
        self.num_updates += 1
        decay = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        for s, p in zip(self.shadow, self.params):
            s.sub_((s - p.detach()) * (1 - decay))
        return decay

    @contextmanager
    def applied(self):
        """Temporarily load the averaged weights into the model (restored on exit)."""
        with torch.no_grad():
            backup = [p.detach().clone() for p in self.params]
            for s, p in zip(self.shadow, self.params):
                p.copy_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for b, p in zip(backup, self.params):
                    p.copy_(b)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": [s.clone() for s in self.shadow]}

    def load_state_dict(self, state: dict) -> None:
        if len(state["shadow"]) != len(self.shadow):
            raise ValueError(f"EMA state has {len(state['shadow'])} tensors, the model {len(self.shadow)}")
        self.decay = state["decay"]
        self.num_updates = state["num_updates"]
        with torch.no_grad():
            for s, v in zip(self.shadow, state["shadow"]):
                s.copy_(v)


def lr_factor(step: int, iters: int, gamma: float, warmup: int) -> float:
    """Learning-rate multiplier after ``step`` scheduler steps: ``gamma ** (step / iters)``,
    times a linear warm-up ``min(1, (step + 1) / warmup)`` when ``warmup > 0``."""
    factor = gamma ** (step / iters)
    if warmup > 0:
        factor *= min(1.0, (step + 1) / warmup)
    return factor


def _to_device(data: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in data.items()}


def _u8(img: torch.Tensor) -> np.ndarray:
    """[H, W(, 3)] float in [0, 1] -> uint8, truncating like the reference (NaN -> 0)."""
    return (torch.nan_to_num(img, 0.0).clamp(0, 1) * 255).to(torch.uint8).cpu().numpy()


def _as_images(rays: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Ray colours [1, P*h*w, 3] (patch-major, row-major inside a patch) -> [P, 3, h, w]."""
    return rays.reshape(-1, h, w, 3).permute(0, 3, 1, 2)


def _binary_entropy(a: torch.Tensor) -> torch.Tensor:
    """Entropy in bits of opacities ``a`` [...] in [0, 1], computed in float32 (float16 would
    round 1 - 1e-5 to 1)."""
    a = a.float().clamp(1e-5, 1 - 1e-5)
    return -a * torch.log2(a) - (1 - a) * torch.log2(1 - a)


MODEL_ATTRS = ("mean_density", "mean_density_torso", "iter_density")


class FrameDir:
    """Lossless copy of a rendered video: ``<path>/{k:04d}.png`` plus ``index.json``.

    Frames go to a hidden temporary folder next to ``path``; :meth:`commit` writes the
    index and renames the folder into place (replacing an older one), :meth:`abort`
    deletes it, so ``path`` only ever holds a complete set.
    """

    def __init__(self, path: Path):
        self.path = path
        self.tmp = path.with_name(f".{path.name}.partial")
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        self.count = 0

    def append(self, frame_u8: np.ndarray) -> None:
        """Write the next frame, uint8 RGB [H, W, 3]."""
        import imageio.v2 as imageio

        try:
            imageio.imwrite(self.tmp / f"{self.count:04d}.png", frame_u8)
        except OSError as err:
            raise storage_error(err, self.path) from err
        self.count += 1

    def commit(self, index: dict) -> Path:
        (self.tmp / "index.json").write_text(json.dumps(index, indent=1) + "\n")
        pause_point(f"write:{self.path.parent.name}/{self.path.name}")
        for frame in self.tmp.iterdir():
            fsync_path(frame)
        fsync_path(self.tmp)
        old = self.path.with_name(f".{self.path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if self.path.exists():
            os.replace(self.path, old)
        os.replace(self.tmp, self.path)
        fsync_path(self.path.parent)
        shutil.rmtree(old, ignore_errors=True)
        return self.path

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def cpu_has_native_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool | None:
    """Whether this CPU computes bfloat16 natively: the AVX512-BF16 or AMX-BF16 flag in ``cpuinfo``.

    None where the file cannot be read (not Linux): unknown.
    """
    try:
        flags = Path(cpuinfo).read_text().split()
    except OSError:
        return None
    return "avx512_bf16" in flags or "amx_bf16" in flags


class Trainer:
    """Owns the optimiser state and the workspace of one model.

    Args:
        opt: options namespace (``nerf_triplane.options.parse_args``).
        model: ``NeRFNetwork`` already on ``device``.
        workspace: output folder (checkpoints/, results/, validation/, run/, logs).
        device: torch device of the model and batches.
        train: build optimiser, scheduler, EMA and scaler (False for ``--test``).
    """

    name = "ngp"

    def __init__(self, opt, model, workspace: str | Path, device: str | torch.device = "cpu", train: bool = True):
        self.opt = opt
        self.model = model
        self.device = torch.device(device)
        self.workspace = Path(workspace)
        self.workspace.mkdir(parents=True, exist_ok=True)
        self.ckpts = CheckpointDir(self.workspace / "checkpoints", self.name, opt.max_keep_ckpt)
        self.log_path = self.workspace / f"log_{self.name}.txt"
        cpu_fp16 = self.device.type == "cpu" and os.environ.get(CPU_FP16_ENV, "0") == "1"
        self.fp16 = bool(opt.fp16) and (self.device.type == "cuda" or cpu_fp16)
        # --bf16: bfloat16 autocast of the matmuls/convs on the CPU (no loss scaling needed:
        # bfloat16 has float32's exponent range).
        self.bf16 = bool(getattr(opt, "bf16", False)) and self.device.type == "cpu" and not self.fp16
        if self.bf16 and cpu_has_native_bf16() is False:
            # Without AVX512-BF16/AMX the bfloat16 matmuls are emulated, slower than float32.
            self.bf16 = False
            self.log("[INFO] --bf16: this CPU has no native bfloat16 (AVX512-BF16 or AMX); running in fp32")
        if opt.fp16 and not self.fp16:
            self.log(f"[INFO] --fp16 needs CUDA (or {CPU_FP16_ENV}=1 to test the fp16 path on the CPU); "
                     f"running in {'bfloat16 autocast (--bf16)' if self.bf16 else 'fp32'} on {self.device.type}")
        if getattr(opt, "bf16", False) and self.device.type != "cpu":
            self.log("[INFO] --bf16 only applies on the CPU; ignored")

        self.epoch = 0  # completed epochs
        self.epoch_step = 0  # steps already done inside epoch self.epoch + 1
        self.global_step = 0
        self.checkpoint_path: Path | None = None
        self.train_frames: int | None = None  # training-set size, recorded in checkpoints
        self.losses: list[float] = []  # loss of every step taken by this Trainer
        self.loss_terms: dict[str, float] = {}  # named parts of the last step's loss
        self._stop_signal: int | None = None
        self.writer = None
        self.nonfinite = NonFiniteGuard(opt.max_nonfinite)

        self.optimizer = self.lr_scheduler = self.ema = self.scaler = None
        if train:
            # Not fused: torch's fused CPU AdamW costs 7x less per step but, over the demo's 2000
            # head steps, ended 0.77 dB lower held-out than this per-tensor loop (README).
            self.optimizer = torch.optim.AdamW(model.get_params(opt.lr, opt.lr_net, lr_aud=opt.lr_aud),
                                               betas=(0.0, 0.99), eps=1e-8)
            gamma = 0.05 if opt.finetune_lips else 0.5
            iters, warmup = max(int(opt.iters), 1), int(opt.warmup_step)
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.optimizer, lambda k: lr_factor(k, iters, gamma, warmup))
            self.ema = EMA(model.parameters(), EMA_DECAY)
            self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.fp16)
        # Started with --finetune_lips, the run alternates lips-rect and patch batches.
        self.flip_finetune_lips = bool(opt.finetune_lips)
        self.mouth = None  # MouthSupervision while training the head with --mouth_sup/--mouth_pretrain
        self.lpips_train = None
        if train and 1 < opt.patch_size < 32:
            raise ValueError(f"--patch_size {opt.patch_size}: the patch LPIPS loss (AlexNet) needs patches of "
                             "at least 32x32 (the reference uses 32)")
        if train and (opt.patch_size > 1 or opt.finetune_lips):
            self.lpips_train = load_lpips(opt.lpips_weights, self.device, quiet=True)
            if self.lpips_train is None:
                raise FileNotFoundError(
                    "--patch_size > 1 and --finetune_lips train with an LPIPS loss, which needs the AlexNet "
                    "weights alexnet-owt-7be5be79.pth: put them in the torch hub cache "
                    f"({Path(torch.hub.get_dir()) / 'checkpoints'}) or pass --lpips_weights PATH")

    # ---- logging -----------------------------------------------------------------------

    def log(self, msg: str) -> None:
        """Print ``msg`` and append it to ``log_ngp.txt``."""
        tqdm.tqdm.write(msg)
        with open(self.log_path, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}\n")

    def _autocast(self):
        if self.fp16:
            # float16 on both devices: CPU autocast would default to bfloat16.
            return torch.autocast(self.device.type, dtype=torch.float16)
        if self.bf16:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return nullcontext()

    # ---- steps -------------------------------------------------------------------------

    def render_args(self, data: dict, perturb: bool, force_all_rays: bool = False) -> dict:
        """Keyword arguments of ``model.render`` / ``render_torso`` for a batch: ``eye`` [1, 1] (or
        None) and ``index`` (frame ids, [1]) from ``data``, the marching settings of the options."""
        return dict(eye=data.get("eye"), index=data["index"], dt_gamma=self.opt.dt_gamma, perturb=perturb,
                    force_all_rays=force_all_rays, max_steps=self.opt.max_steps, T_thresh=1e-4)

    def _lpips_loss(self, pred: torch.Tensor, gt: torch.Tensor, pad_h: int = 0, pad_w: int = 0) -> torch.Tensor:
        """Mean LPIPS of [P, 3, h, w] images in [0, 1], zero-padded (in [-1, 1] space) by
        ``pad_h`` rows and ``pad_w`` columns on each side."""
        pad = [pad_w, pad_w, pad_h, pad_h]
        return self.lpips_train(F.pad(pred * 2 - 1, pad), F.pad(gt * 2 - 1, pad)).mean()

    def train_step(self, data: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Forward one batch and build the loss (facts §4).

        Returns:
            prediction [1, N, 3], target [1, N, 3], scalar loss.
        """
        opt, model = self.opt, self.model
        s = min(self.global_step / max(opt.iters, 1), 1.0)

        if opt.torso:
            out = model.render_torso(data["rays_o"], data["rays_d"], data["auds"], data["bg_coords"], data["poses"],
                                     bg_color=data["bg_color"], **self.render_args(data, perturb=True))
            pred, gt = out["torso_color"], data["bg_torso_color"]
            if opt.color_space == "linear":
                gt = srgb_to_linear(gt)
            mse = F.mse_loss(pred, gt)
            loss = mse + ((1 - model.anchor_points[:, 3]) ** 2).mean()
            self.loss_terms = {"mse": mse.item()}
            return pred, gt, loss

        gt = data["images"]  # [1, N, 3]
        if opt.color_space == "linear":
            gt = srgb_to_linear(gt)
        N = gt.shape[1]
        out = model.render(data["rays_o"], data["rays_d"], data["auds"], data["bg_coords"], data["poses"],
                           bg_color=data["bg_color"], mouth=self._teacher_mouth(data),
                           **self.render_args(data, True, opt.patch_size > 1 or opt.train_camera))
        pred = out["image"]
        face = data["face_mask"].reshape(-1)  # [N] bool
        loss = ((pred - gt) ** 2).mean(-1)  # [1, N]

        if opt.unc_loss and not self.flip_finetune_lips:
            u = out["uncertainty"].reshape(-1)  # [N]
            weight = F.softmax(u, dim=-1) * N
            loss = loss * (0.2 + 0.8 * ((1 - s) + s * weight.detach()).clamp(0, 10))
            beta = u + 1
            err = (pred - gt).norm(dim=-1).reshape(-1).detach()
            loss_u = (err / (2 * beta ** 2) + torch.log(beta) ** 2 / 2) * face
            loss = loss + s * loss_u + 1e-3 * s * u * (~face)

        self.loss_terms = {"mse": F.mse_loss(pred.detach(), gt).item()}
        extra = torch.zeros((), device=pred.device)
        if opt.patch_size > 1 and not opt.finetune_lips:
            p = opt.patch_size
            patch = self._lpips_loss(_as_images(pred, p, p), _as_images(gt, p, p))
            self.loss_terms["lpips_patch"] = patch.item()
            extra = extra + 0.1 * patch
        if opt.finetune_lips:
            if "rect" not in data:
                raise ValueError("--finetune_lips batches must come from a training NeRFDataset built with the "
                                 "same options (its lips batches carry 'rect')")
            xmin, xmax, ymin, ymax = (int(v) for v in data["rect"])
            h, w = xmax - xmin, ymax - ymin
            # AlexNet needs >= 32 px: small lip rects are padded up to it.
            pad_h, pad_w = max(0, (32 - h + 1) // 2), max(0, (32 - w + 1) // 2)
            lips = self._lpips_loss(_as_images(pred, h, w), _as_images(gt, h, w), pad_h, pad_w)
            self.loss_terms["lpips_lips"] = lips.item()
            extra = extra + 0.01 * lips
        if self.flip_finetune_lips:
            opt.finetune_lips = not opt.finetune_lips

        loss = loss.mean() + extra
        loss = loss + 1e-4 * _binary_entropy(out["weights_sum"]).mean()

        lambda_amb = s * opt.lambda_amb
        amb_aud = out["ambient_aud"].reshape(-1)
        if opt.amb_aud_loss:
            loss = loss + lambda_amb * (amb_aud * (~face)).mean()
        if opt.amb_eye_loss:
            amb_eye = out["ambient_eye"].reshape(-1) / opt.max_steps
            loss = loss + lambda_amb * (amb_eye * amb_aud.detach() * face).mean()

        if self.mouth is not None and opt.mouth_sup > 0:
            mouth = self.mouth.loss(model, MOUTH_BATCH)
            self.loss_terms["mouth"] = mouth.item()
            loss = loss + opt.mouth_sup * mouth

        if self.global_step % REG_INTERVAL == 0 and not self.flip_finetune_lips:
            loss = loss + s * 1e-5 * self._smoothness(out["rays"])
        return pred, gt, loss

    def _teacher_mouth(self, data: dict) -> torch.Tensor | None:
        """The frame's measured mouth shape [1, K] on a ``--mouth_teacher`` share of head steps.

        Seeing the true mouth shape in the code's mouth channels teaches the NeRF to draw the
        mouth from those channels rather than from the pose or the other channels, so at test
        time the audio's prediction of them drives the lips at full amplitude.
        """
        if self.mouth is None or self.opt.mouth_teacher <= 0:
            return None
        # Drawn from torch's global RNG every step, so resumed runs draw the same.
        if torch.rand(()).item() >= self.opt.mouth_teacher:
            return None
        return self.mouth.teacher(int(data["index"][0]))

    def _smoothness(self, rays) -> torch.Tensor:
        """MSE between attention/uncertainty outputs at the samples and at jittered samples."""
        xyzs, dirs, enc_a, code, eye = rays
        code = code.detach() if code is not None else None
        jitter = (torch.rand_like(xyzs) * 2 - 1) * 1e-3
        with torch.no_grad():
            _, _, aud_raw, eye_raw, unc_raw = self.model(xyzs, dirs, enc_a.detach(), code, eye)
        _, _, aud_reg, eye_reg, unc_reg = self.model(xyzs + jitter, dirs, enc_a.detach(), code, eye)
        reg = torch.zeros((), device=xyzs.device)
        if self.opt.unc_loss:
            reg = reg + F.mse_loss(unc_reg, unc_raw)
        if self.opt.amb_aud_loss:
            reg = reg + F.mse_loss(aud_reg, aud_raw)
        if self.opt.amb_eye_loss:
            reg = reg + F.mse_loss(eye_reg, eye_raw)
        return reg

    @torch.no_grad()
    def render_frame(self, data: dict, testing: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Render a full frame: RGB [H, W, 3] (sRGB) and depth [H, W] in [0, 1].

        ``data`` is one test/val ``NeRFDataset`` batch (all rays of a frame), on any device.
        ``testing`` sets ``model.testing`` (constant uncertainty, as the reference's test_step).
        """
        H, W = int(data["H"]), int(data["W"])
        data = _to_device(data, self.device)
        self.model.testing = testing
        try:
            with self._autocast():
                out = self.model.render(data["rays_o"], data["rays_d"], data["auds"], data["bg_coords"],
                                        data["poses"], bg_color=data["bg_color"],
                                        **self.render_args(data, perturb=False))
        finally:
            self.model.testing = False
        rgb = out["image"].float().reshape(H, W, 3)
        if self.opt.color_space == "linear":
            rgb = linear_to_srgb(rgb)
        return rgb, out["depth"].float().reshape(H, W)

    # ---- training ----------------------------------------------------------------------

    def set_train_data(self, dataset) -> None:
        """Give the model a dataset's audio features [N, A, T] (or ids [N, T] with --emb), eye areas
        [N, 1] (or None) and poses [N, 4, 4]: occupancy-grid refreshes draw random frames from
        them, and renders pick the eye area per frame."""
        self.model.aud_features = dataset.auds
        self.model.eye_area = dataset.eye_area
        self.model.poses = dataset.poses

    def prepare_training(self, dataset) -> None:
        """What ``train`` sets up before its first step, for callers that drive ``optimise``
        themselves: ``set_train_data``, the mouth supervision (``--mouth_*``; its audio-path
        pretraining only at step 0), the training-set size recorded in checkpoints and, with
        ``--cuda_ray``, the cells no training camera sees marked empty.

        Args:
            dataset: the training ``NeRFDataset``.
        """
        opt = self.opt
        n = dataset.num_frames
        if n >= opt.ind_num:
            raise ValueError(f"{n} training frames need --ind_num > {n} (per-frame codes), got {opt.ind_num}")
        self.set_train_data(dataset)
        self.mouth = None
        if not opt.torso and (opt.mouth_sup > 0 or opt.mouth_pretrain > 0 or opt.mouth_teacher > 0):
            self.mouth = MouthSupervision(dataset.landmarks, dataset.get_audio_window, opt.mouth_k,
                                           opt.mouth_spread)
            if self.global_step == 0 and opt.mouth_pretrain > 0:
                last = self.mouth.pretrain(self.model, opt.mouth_pretrain)
                self.log(f"[INFO] audio path fitted to {opt.mouth_k} mouth components "
                         f"({self.mouth.basis.explained:.0%} of the shape variance) for {opt.mouth_pretrain} "
                         f"steps: loss {last:.4f}")
            if opt.mouth_crossfit:
                started = time.time()
                # Twice the main path's pretraining: it goes on learning while the head trains.
                codes = self.mouth.crossfit(self.model, opt.mouth_crossfit, 2 * opt.mouth_pretrain, seed=opt.seed)
                self.log(f"[INFO] teacher codes cross-fitted over {opt.mouth_crossfit} blocks in "
                         f"{time.time() - started:.0f} s: their first mouth component correlates "
                         f"{self.mouth.agreement(codes):.2f} with the measured one")
        self.train_frames = n
        if opt.torso and opt.torso_pose_norm > 0 and self.global_step == 0:
            self.model.normalise_anchors(dataset.poses, opt.torso_pose_norm)
        if opt.cuda_ray:
            self.model.mark_untrained_grid(dataset.poses, dataset.intrinsics)

    def _epoch_order(self, n: int, epoch: int, shuffle: bool) -> list[int]:
        if not shuffle:
            return list(range(n))
        g = torch.Generator().manual_seed(int(self.opt.seed) * 1_000_003 + epoch)
        return torch.randperm(n, generator=g).tolist()

    @contextmanager
    def _catch_stop_signals(self):
        """SIGINT/SIGTERM during training: finish the step, checkpoint, return. A second
        SIGINT interrupts at once."""
        def handler(signum, frame):
            if self._stop_signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self._stop_signal = signum

        if threading.current_thread() is not threading.main_thread():
            # Python only delivers signals to the main thread; elsewhere keep the defaults.
            yield
            return
        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def train(self, train_loader, valid_loader=None) -> bool:
        """Train until ``ceil(iters / #frames)`` epochs are complete.

        Returns True when finished, False when stopped by SIGINT/SIGTERM (after writing
        an in-epoch checkpoint).
        """
        from torch.utils.tensorboard import SummaryWriter

        opt = self.opt
        dataset = train_loader._data
        n = len(train_loader.dataset)
        self.prepare_training(dataset)
        max_epochs = math.ceil(opt.iters / n)
        eval_interval = opt.eval_interval if opt.eval_interval > 0 else max(1, EVAL_EVERY_STEPS // n)
        shuffle = isinstance(train_loader.sampler, torch.utils.data.RandomSampler)
        with open(self.workspace / "opt.txt", "a") as f:
            f.write(str(opt) + "\n")
        self.writer = SummaryWriter(str(self.workspace / "run" / self.name))
        self.log(f"[INFO] training {n} frames for {max_epochs} epochs ({opt.iters} iters), from step "
                 f"{self.global_step}, device {self.device}")

        bar = tqdm.tqdm(total=max_epochs * n, initial=min(self.global_step, max_epochs * n),
                        desc="train", dynamic_ncols=True, mininterval=1.0)
        self._stop_signal = None
        try:
            with self._catch_stop_signals():
                for epoch in range(self.epoch + 1, max_epochs + 1):
                    order = self._epoch_order(n, epoch, shuffle)
                    for pos in range(self.epoch_step, n):
                        batch = train_loader.collate_fn([train_loader.dataset[order[pos]]])
                        loss, mse = self.optimise(batch)
                        self.epoch_step = pos + 1
                        bar.update(1)
                        skipped = {"skipped": self.nonfinite.skipped} if self.nonfinite.skipped else {}
                        bar.set_postfix(loss=f"{loss:.4f}", psnr=f"{-10 * math.log10(max(mse, 1e-10)):.2f}",
                                        lr=f"{self.optimizer.param_groups[0]['lr']:.2e}", **skipped, refresh=False)
                        pause_point(f"step:{self.global_step}")
                        if self._stop_signal is not None:
                            name = signal.Signals(self._stop_signal).name
                            path = self.save_checkpoint(in_epoch=True)
                            self.log(f"[INFO] {name}: saved {path} at step {self.global_step}; "
                                     f"rerun the same command to resume")
                            return False
                        if opt.save_interval > 0 and self.global_step % opt.save_interval == 0 and pos + 1 < n:
                            self.save_checkpoint(in_epoch=True)
                    self.epoch, self.epoch_step = epoch, 0
                    self.save_checkpoint()
                    if valid_loader is not None and (epoch % eval_interval == 0 or epoch == max_epochs):
                        self.evaluate(valid_loader)
                        self.save_best()
        finally:
            bar.close()
            self.writer.close()
            self.writer = None
        return True

    def optimise(self, data: dict) -> tuple[float, float]:
        """One optimisation step on a batch: occupancy-grid refresh when due, forward, loss,
        backward, AdamW/scheduler/EMA updates; scalars go to ``self.writer`` when one is open.

        Args:
            data: one ``NeRFDataset`` batch (``dataset.collate([k])``), on any device: ``rays_o``,
                ``rays_d`` [1, N, 3], ``images`` [1, N, 3], ``auds`` [8, A, T], ``poses``
                [1, 4, 4], ``index`` [1], ``bg_color`` [1, N, 3], ``face_mask`` [1, N], ...
        Returns:
            (loss, colour MSE) as floats.
        """
        opt, model = self.opt, self.model
        data = _to_device(data, self.device)
        model.train()
        # The torso occupancy grid is refreshed with or without --cuda_ray (the head grid only with it).
        if (opt.cuda_ray or opt.torso) and self.global_step % opt.update_extra_interval == 0:
            with self._autocast():
                model.update_extra_state()
        self.global_step += 1
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            pred, gt, loss = self.train_step(data)
        self.scaler.scale(loss).backward()
        loss_v = loss.item()
        finite = math.isfinite(loss_v) and (self.fp16 or grads_finite(self.optimizer))
        if finite or self.fp16:
            # Under fp16 the grad scaler skips steps with non-finite gradients itself.
            self.scaler.step(self.optimizer)
        self.scaler.update()
        with warnings.catch_warnings():
            # A skipped first step trips torch's order check; the schedule follows global_step anyway.
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler")
            self.lr_scheduler.step()
        if self.global_step % self.opt.ema_interval == 0:
            self.ema.update()
        if self.nonfinite.record(finite, self.global_step, data):
            self.log(f"[WARN] step {self.global_step}: non-finite loss ({loss_v}) or gradient, optimiser step "
                     f"skipped ({self.nonfinite.skipped} so far, {self.nonfinite.streak} in a row)")
            o = self.opt
            self.nonfinite.stop_if_diverged(self.global_step, f"--lr {o.lr}, --lr_net {o.lr_net}, --lr_aud {o.lr_aud}",
                                            str(self.ckpts.latest() or "none yet"))
        self.losses.append(loss_v)
        if data.get("error_map") is not None:  # --error_map: where this batch erred, for the next draws
            data["error_map"].record(int(data["index"][0]), data["pixels"],
                                     ((pred.detach().float() - gt.float()) ** 2).mean(-1))
        mse = F.mse_loss(pred.detach().float(), gt.float()).item()
        if self.writer is not None:
            self.writer.add_scalar("train/loss", loss_v, self.global_step)
            self.writer.add_scalar("train/lr", self.optimizer.param_groups[0]["lr"], self.global_step)
            for key, value in self.loss_terms.items():
                self.writer.add_scalar(f"train/{key}", value, self.global_step)
        return loss_v, mse

    # ---- evaluation / test -------------------------------------------------------------

    @contextmanager
    def _eval_weights(self):
        """EMA weights when the EMA has been updated at least once, else the raw weights."""
        if self.ema is not None and self.ema.num_updates > 0:
            with self.ema.applied():
                yield
        else:
            yield

    def evaluate(self, loader, name: str | None = None) -> dict:
        """Render every frame of ``loader`` (with GT), write validation PNGs, log PSNR/LPIPS.

        RNG states are restored afterwards so evaluation does not change the training
        sequence. Returns ``{"psnr", "lpips"}`` (lpips None without AlexNet weights).
        """
        import imageio.v2 as imageio

        name = name or f"{self.name}_ep{self.epoch:04d}"
        out_dir = self.workspace / "validation"
        out_dir.mkdir(parents=True, exist_ok=True)
        if not hasattr(self, "_lpips_eval"):
            self._lpips_eval = load_lpips(self.opt.lpips_weights, self.device)
        saved_rng = rng_state()
        psnrs, lpips_values = [], []
        self.model.eval()
        self.model.prev_enc_a = None
        with self._eval_weights():
            for k in range(len(loader.dataset)):
                data = _to_device(loader.collate_fn([loader.dataset[k]]), self.device)
                rgb, depth = self.render_frame(data, testing=False)
                gt = data["images"].float().reshape(rgb.shape)
                if self.opt.color_space == "linear":
                    gt = linear_to_srgb(gt)
                psnrs.append(psnr(rgb, gt))
                if self._lpips_eval is not None:
                    lpips_values.append(lpips_distance(self._lpips_eval, rgb, gt))
                imageio.imwrite(out_dir / f"{name}_{k + 1:04d}_rgb.png", _u8(rgb))
                imageio.imwrite(out_dir / f"{name}_{k + 1:04d}_depth.png", _u8(depth))
                if k == 0 and self.writer is not None:
                    both = torch.cat([gt, rgb], dim=1).permute(2, 0, 1).clamp(0, 1)
                    self.writer.add_image("evaluate/gt_pred", both, self.global_step)
        set_rng_state(saved_rng)
        result = {"psnr": float(np.mean(psnrs)), "lpips": float(np.mean(lpips_values)) if lpips_values else None}
        if self.writer is not None:
            self.writer.add_scalar("evaluate/PSNR", result["psnr"], self.global_step)
            if result["lpips"] is not None:
                self.writer.add_scalar("evaluate/LPIPS", result["lpips"], self.global_step)
        lp = "n/a" if result["lpips"] is None else f"{result['lpips']:.4f}"
        self.log(f"[EVAL] {name} step {self.global_step}: PSNR {result['psnr']:.3f}  LPIPS(alex) {lp}")
        return result

    def test(self, loader, name: str | None = None, audio_path: str | Path | None = None,
             aud_arg: str | None = None) -> dict:
        """Render every frame of ``loader`` into ``results/<name>.mp4`` and ``_depth.mp4``.

        With GT (``loader.has_gt``) also ``_pred_gt.mp4`` (prediction | GT) and
        ``results/metrics.json`` (PSNR, SSIM, LPIPS or null, LMD with detection counts).
        ``audio_path`` is muxed into the colour video. Every prediction is also saved as
        ``results/<name>_frames/{k:04d}.png`` (the uint8 frame the metrics and video use) with
        ``index.json``: ``{"frames": [{"k", "img_id", "aud_id"}], "data", "split", "aud",
        "torso"}``; ``img_id`` is the training-video frame (ping-pong over the split when the
        audio is longer), ``aud_id`` the frame's audio-feature row (with ``--aud``: row k of
        the new features). ``aud_arg`` is recorded as ``aud`` (default ``opt.aud``).
        Returns the metrics dict (or the video paths without GT).
        """
        name = name or f"{self.name}_ep{self.epoch:04d}"
        out_dir = self.workspace / "results"
        out_dir.mkdir(parents=True, exist_ok=True)
        has_gt = bool(getattr(loader, "has_gt", False))
        dataset = loader._data
        lpips_net = load_lpips(self.opt.lpips_weights, self.device) if has_gt else None
        lmd = LMDMeter() if has_gt else None
        scores = {"psnr": [], "ssim": [], "lpips": []}
        self.model.eval()
        self.model.prev_enc_a = None
        n = len(loader.dataset)
        self.log(f"[INFO] rendering {n} frames to {out_dir / name}.mp4")
        with ExitStack() as stack:
            video = stack.enter_context(VideoWriter(out_dir / f"{name}.mp4", 25, audio_path))
            depth_video = stack.enter_context(VideoWriter(out_dir / f"{name}_depth.mp4", 25))
            pair_video = stack.enter_context(VideoWriter(out_dir / f"{name}_pred_gt.mp4", 25)) if has_gt else None
            frames = FrameDir(out_dir / f"{name}_frames")
            stack.push(lambda exc_type, exc, tb: frames.abort() if exc_type is not None else None)
            index = []
            for k in tqdm.tqdm(range(n), desc="test", dynamic_ncols=True, mininterval=1.0):
                data = _to_device(loader.collate_fn([loader.dataset[k]]), self.device)
                rgb, depth = self.render_frame(data, testing=True)
                pred_u8 = _u8(rgb)
                video.append(pred_u8)
                depth_video.append(_u8(depth))
                frames.append(pred_u8)
                f = dataset.mirror_index(k)
                index.append({"k": k, "img_id": dataset.img_ids[f], "aud_id": dataset.aud_ids[f] if has_gt else k})
                if not has_gt:
                    continue
                gt = data["images"].float().reshape(rgb.shape)
                if self.opt.color_space == "linear":
                    gt = linear_to_srgb(gt)
                gt_u8 = _u8(gt)
                pair_video.append(np.concatenate([pred_u8, gt_u8], axis=1))
                scores["psnr"].append(psnr(rgb, gt))
                scores["ssim"].append(ssim(rgb, gt))
                if lpips_net is not None:
                    scores["lpips"].append(lpips_distance(lpips_net, rgb, gt))
                lmd.update(pred_u8, gt_u8)
        frames.commit({"frames": index, "data": str(Path(dataset.root).resolve()), "split": dataset.type,
                       "aud": self.opt.aud if aud_arg is None else str(aud_arg), "torso": bool(self.opt.torso)})
        videos = {"video": video.path, "depth": depth_video.path}
        if not has_gt:
            self.log(f"[INFO] wrote {videos['video']} and {videos['depth']}")
            return {k: str(v) for k, v in videos.items()}
        videos["pred_gt"] = pair_video.path
        metrics = {
            "name": name,
            "checkpoint": None if self.checkpoint_path is None else str(self.checkpoint_path),
            "frames": n,
            "psnr": float(np.mean(scores["psnr"])),
            "ssim": float(np.mean(scores["ssim"])),
            "lpips": float(np.mean(scores["lpips"])) if scores["lpips"] else None,
            "lmd": lmd.result(),
            "lmd_frames": len(lmd.values),
            "lmd_skipped": lmd.skipped,
            "videos": {k: str(v) for k, v in videos.items()},
        }
        atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        lp = "n/a" if metrics["lpips"] is None else f"{metrics['lpips']:.4f}"
        lm = "n/a" if metrics["lmd"] is None else f"{metrics['lmd']:.3f}"
        self.log(f"[TEST] {name}: PSNR {metrics['psnr']:.3f}  SSIM {metrics['ssim']:.4f}  LPIPS {lp}  "
                 f"LMD {lm} ({lmd.skipped} frames without landmarks) -> {out_dir / 'metrics.json'}")
        return metrics

    # ---- checkpoints -------------------------------------------------------------------

    def _model_state(self) -> dict:
        state = {"epoch": self.epoch, "global_step": self.global_step, "model": self.model.state_dict(),
                 "audio_dim": int(self.model.audio_in_dim), "asr_model": self.opt.asr_model,
                 "train_frames": self.train_frames}
        for attr in MODEL_ATTRS:
            if hasattr(self.model, attr):
                state[attr] = getattr(self.model, attr)
        return state

    def save_checkpoint(self, in_epoch: bool = False) -> Path:
        """Full checkpoint (model, optimiser, scheduler, scaler, EMA, RNG, position).

        ``in_epoch`` names it by the current step inside epoch ``epoch + 1``.
        """
        state = self._model_state()
        state.update(epoch_step=self.epoch_step, skipped_steps=self.nonfinite.skipped,
                     optimizer=self.optimizer.state_dict(),
                     lr_scheduler=self.lr_scheduler.state_dict(), scaler=self.scaler.state_dict(),
                     ema=self.ema.state_dict(), rng=rng_state())
        if self.flip_finetune_lips:
            state["lips_phase"] = bool(self.opt.finetune_lips)
        if in_epoch:
            return self.ckpts.save(state, self.epoch + 1, self.global_step)
        return self.ckpts.save(state, self.epoch)

    def save_best(self) -> Path:
        """``ngp.pth``: EMA weights (raw before the first EMA update), no density grid."""
        with self._eval_weights():
            state = self._model_state()
        state["model"] = {k: v for k, v in state["model"].items() if k != "density_grid"}
        return save_checkpoint_file(state, self.ckpts.best_path)

    def load_checkpoint(self, spec: str) -> Path | None:
        """Load per ``--ckpt`` (latest | scratch | latest_model | best | PATH).

        Restores the model weights and grid state, and unless weights-only the training
        position, optimiser, scheduler, scaler, EMA and RNG states. Returns the file
        loaded, or None (scratch / nothing found).
        """
        path, model_only = self.ckpts.resolve(spec)
        if path is None:
            if spec != "scratch":
                self.log(f"[INFO] no checkpoint in {self.ckpts.root}; starting from scratch")
            return None
        # Onto the CPU: RNG states must stay CPU ByteTensors, and load_state_dict copies the
        # rest to wherever the model and optimiser live (so runs resume across devices).
        ckpt = read_checkpoint(path)
        self._check_compatible(ckpt, path)
        missing, unexpected = self.model.load_state_dict(ckpt["model"], strict=False)
        if missing:
            self.log(f"[INFO] {path.name}: missing keys {missing}")
        if unexpected:
            self.log(f"[INFO] {path.name}: unexpected keys {unexpected}")
        for attr in MODEL_ATTRS:
            if attr in ckpt and hasattr(self.model, attr):
                setattr(self.model, attr, ckpt[attr])
        self.checkpoint_path = path
        if self.ema is not None and "ema" in ckpt:
            self.ema.load_state_dict(ckpt["ema"])
        if not model_only:
            self.epoch = int(ckpt.get("epoch", 0))
            self.global_step = int(ckpt.get("global_step", 0))
            self.epoch_step = int(ckpt.get("epoch_step", 0))
            self.nonfinite.skipped = int(ckpt.get("skipped_steps", 0))
            if self.optimizer is not None and "optimizer" in ckpt:
                self.optimizer.load_state_dict(ckpt["optimizer"])
                self.lr_scheduler.load_state_dict(ckpt["lr_scheduler"])
                self._load_scaler(ckpt["scaler"], path)
            if self.optimizer is not None and "rng" in ckpt:
                set_rng_state(ckpt["rng"])
            if self.flip_finetune_lips and "lips_phase" in ckpt:
                self.opt.finetune_lips = bool(ckpt["lips_phase"])
        self.log(f"[INFO] loaded {path} (epoch {self.epoch}, step {self.global_step})")
        return path

    def _load_scaler(self, state: dict, path: Path) -> None:
        """Restore the fp16 loss scale; a run without fp16 saved none (``{}``), so an fp16 run
        resuming it keeps its fresh scale (an fp32 run ignores a saved one)."""
        if not state and self.scaler.is_enabled():
            self.log(f"[INFO] {path.name} was saved without fp16 grad scaling: starting from a fresh loss scale")
            return
        self.scaler.load_state_dict(state)

    def _check_compatible(self, ckpt: dict, path: Path) -> None:
        check_compatible(self.model, ckpt, path)
        if not self.model.torso or self.optimizer is not None:
            return
        if not any(k.startswith("torso_") for k in ckpt["model"]):
            raise ValueError(f"{path} has no torso branch: --torso renders need a checkpoint trained with "
                             "--torso --head_ckpt HEAD.pth (or drop --torso to render the head over the GT torso)")


def check_compatible(model, ckpt: dict, path: Path) -> None:
    """Clear errors for a checkpoint of another configuration (audio features, flags).

    Args:
        model: the ``NeRFNetwork`` about to receive the weights.
        ckpt: loaded checkpoint, with the state dict under ``"model"``.
        path: file name for the messages.
    """
    check_features_model(ckpt.get("asr_model"), getattr(model, "audio_source", None), path)
    want = int(model.audio_in_dim)
    have = ckpt.get("audio_dim")
    if have is not None and int(have) != want:
        raise ValueError(
            f"{path} was trained on audio features of dim {have} (--asr_model {ckpt.get('asr_model')}), "
            f"but the features given have dim {want}: use features from the same --asr_model")
    own = model.state_dict()
    codes = ckpt["model"].get("individual_codes")
    if codes is not None and "individual_codes" in own and codes.shape[0] != own["individual_codes"].shape[0]:
        raise ValueError(f"{path} holds {codes.shape[0]} per-frame codes but --ind_num is "
                         f"{own['individual_codes'].shape[0]}: pass --ind_num {codes.shape[0]}")
    for key, value in ckpt["model"].items():
        if key in own and tuple(value.shape) != tuple(own[key].shape):
            raise ValueError(f"{path}: tensor {key} has shape {tuple(value.shape)} but this model needs "
                             f"{tuple(own[key].shape)}; train and test with the same model flags "
                             "(--asr_model, --ind_num, --ind_dim, --grid_size, --bound, --att, --emb, -O/--exp_eye)")
