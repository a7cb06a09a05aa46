"""Trainer on a tiny synthetic subject: learning, exact resume, EMA/LR schedule, checkpoints."""
import math
import os
import signal

import pytest
import torch

from nerf_triplane.options import parse_args
from nerf_triplane.trainer import EMA, Trainer, _binary_entropy, lr_factor
from tests.conftest import build_trainer, tiny_args

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.slow
def test_training_learns(subject, tmp_path):
    opt = parse_args(tiny_args(subject, tmp_path / "ws", "--iters", 200, "--eval_interval", 1000))
    torch.manual_seed(0)
    trainer, train_loader, val_loader = build_trainer(opt)
    before = trainer.evaluate(val_loader)["psnr"]
    assert trainer.train(train_loader, val_loader)
    after = trainer.evaluate(val_loader)["psnr"]
    first, last = sum(trainer.losses[:20]) / 20, sum(trainer.losses[-20:]) / 20
    assert trainer.global_step == 210  # ceil(200 / 30) = 7 full epochs
    assert last < 0.5 * first, (first, last)
    assert after > before + 3, (before, after)
    ws = tmp_path / "ws"
    # Last two epoch checkpoints, the EMA/"best" file, logs, opt and tensorboard events.
    assert sorted(p.name for p in (ws / "checkpoints").iterdir()) == ["ngp.pth", "ngp_ep0006.pth", "ngp_ep0007.pth"]
    assert "density_grid" not in torch.load(ws / "checkpoints" / "ngp.pth", weights_only=True)["model"]
    assert "PSNR" in (ws / "log_ngp.txt").read_text()
    assert "Namespace(" in (ws / "opt.txt").read_text()
    assert list((ws / "run" / "ngp").glob("events.out.tfevents.*"))
    assert (ws / "validation" / "ngp_ep0007_0001_rgb.png").is_file()


@pytest.mark.slow
def test_sigint_checkpoint_then_resume_gives_same_next_loss(subject, tmp_path):
    args = tiny_args(subject, tmp_path / "ws", "--iters", 30, "--eval_interval", 1000)
    stop_at = 12

    torch.manual_seed(0)
    reference, loader, _ = build_trainer(parse_args(args))
    assert reference.train(loader)
    assert len(reference.losses) == 30

    # Same run, interrupted by a real SIGINT during step `stop_at`.
    torch.manual_seed(0)
    first, loader, _ = build_trainer(parse_args(args + ["--workspace", str(tmp_path / "ws2")]))
    step = first.optimise

    def optimise_and_interrupt(data):
        out = step(data)
        if first.global_step == stop_at:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    first.optimise = optimise_and_interrupt
    handler_before = signal.getsignal(signal.SIGINT)
    assert first.train(loader) is False
    assert signal.getsignal(signal.SIGINT) is handler_before
    assert first.losses == reference.losses[:stop_at]
    saved = sorted(p.name for p in (tmp_path / "ws2" / "checkpoints").iterdir())
    assert saved == [f"ngp_ep0001_step{stop_at:08d}.pth"]

    # A fresh process-like start (other seed on purpose) resumes from the checkpoint.
    torch.manual_seed(123)
    resumed, loader, _ = build_trainer(parse_args(args + ["--workspace", str(tmp_path / "ws2")]))
    resumed.load_checkpoint("latest")
    assert (resumed.global_step, resumed.epoch, resumed.epoch_step) == (stop_at, 0, stop_at)
    assert resumed.train(loader)
    assert resumed.losses[0] == reference.losses[stop_at]
    assert resumed.losses == pytest.approx(reference.losses[stop_at:], rel=1e-4)


def test_lr_schedule_and_warmup():
    assert lr_factor(0, 100, 0.5, 0) == 1.0
    assert lr_factor(50, 100, 0.5, 0) == pytest.approx(0.5 ** 0.5)
    assert lr_factor(100, 100, 0.05, 0) == pytest.approx(0.05)
    assert lr_factor(4, 100, 0.5, 10) == pytest.approx(0.5 ** 0.04 * 0.5)
    assert lr_factor(200, 100, 0.5, 0) == pytest.approx(0.25)  # keeps decaying, as the reference


def test_ema_warmup_decay_and_swap():
    p = torch.nn.Parameter(torch.zeros(3))
    frozen = torch.nn.Parameter(torch.ones(1), requires_grad=False)
    ema = EMA([p, frozen], decay=0.95)
    assert len(ema.shadow) == 1
    with torch.no_grad():
        p.fill_(1.0)
    assert ema.update() == pytest.approx(2 / 11)
    assert torch.allclose(ema.shadow[0], torch.full((3,), 1 - 2 / 11))
    with ema.applied():
        assert torch.allclose(p, torch.full((3,), 1 - 2 / 11))
    assert torch.equal(p.detach(), torch.ones(3))
    for _ in range(200):
        last = ema.update()
    assert last == 0.95
    other = EMA([torch.nn.Parameter(torch.zeros(3))])
    other.load_state_dict(ema.state_dict())
    assert other.num_updates == 201 and torch.equal(other.shadow[0], ema.shadow[0])


def test_checkpoint_with_other_audio_dim_is_rejected(subject, tmp_path):
    from nerf_triplane.network import NeRFNetwork

    opt = parse_args(tiny_args(subject, tmp_path / "ws", "--iters", 1))
    trainer = Trainer(opt, NeRFNetwork(opt, audio_dim=32), opt.workspace, "cpu")
    trainer.epoch = 1
    trainer.save_checkpoint()
    other = Trainer(opt, NeRFNetwork(opt, audio_dim=29), opt.workspace, "cpu", train=False)
    with pytest.raises(ValueError, match="audio features of dim 32"):
        other.load_checkpoint("latest")


def test_binary_entropy_is_finite_for_half_weights():
    # In float16 the clamp's 1 - 1e-5 rounds to 1: log2(0) made a NaN.
    weights = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float16)
    torch.testing.assert_close(_binary_entropy(weights), _binary_entropy(weights.float()))


def test_fp16_is_a_notice_on_cpu(subject, tmp_path, capsys):
    from nerf_triplane.network import NeRFNetwork

    opt = parse_args(tiny_args(subject, tmp_path / "ws", "--iters", 1))
    assert opt.fp16
    trainer = Trainer(opt, NeRFNetwork(opt, audio_dim=32), opt.workspace, "cpu")
    assert not trainer.fp16
    assert "fp32" in capsys.readouterr().out
    assert math.isclose(trainer.optimizer.param_groups[0]["lr"], opt.lr_net)
    assert trainer.optimizer.defaults["betas"] == (0.0, 0.99)


@pytest.mark.parametrize("flags", [["--patch_size", 32], ["--finetune_lips", "--patch_size", 32], ["--torso"]],
                         ids=["patches", "lips", "torso"])
def test_other_training_modes_take_steps(subject, tmp_path, monkeypatch, flags):
    # LPIPS losses with a random AlexNet: the real weights cannot be downloaded here.
    monkeypatch.setenv("ERNERF_LPIPS_RANDOM", "1")
    opt = parse_args(tiny_args(subject, tmp_path / "ws", "--iters", 100, *flags))
    trainer, loader, _ = build_trainer(opt)
    trainer.set_train_data(loader._data)
    from torch.utils.tensorboard import SummaryWriter

    trainer.writer = SummaryWriter(str(tmp_path / "ws" / "run"))
    params = [p for g in trainer.optimizer.param_groups for p in g["params"]]
    before = [p.detach().clone() for p in params]
    lips_batches = []
    for k in range(3):
        # The batch kind depends on the previous step (lips and patch batches alternate).
        batch = loader.collate_fn([k])
        lips_batches.append("rect" in batch)
        trainer.optimise(batch)
    trainer.writer.close()
    assert all(math.isfinite(v) for v in trainer.losses)
    assert any(not torch.equal(a, p) for a, p in zip(before, params))
    if "--finetune_lips" in flags:
        # The lips run alternates lips-rectangle batches and random patch batches.
        assert lips_batches == [True, False, True]


def test_bf16_autocasts_the_cpu_step(subject, tmp_path, monkeypatch):
    # --bf16: the MLPs run in bfloat16 under autocast, the weights stay float32, and the steps'
    # losses stay close to float32 steps on the same batches.
    import nerf_triplane.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "cpu_has_native_bf16", lambda: True)
    losses = {}
    for bf16 in (False, True):
        opt = parse_args(tiny_args(subject, tmp_path / f"ws{bf16}", "--iters", 10, *(["--bf16"] if bf16 else [])))
        torch.manual_seed(0)
        trainer, loader, _ = build_trainer(opt)
        assert trainer.bf16 == bf16 and not trainer.fp16
        trainer.prepare_training(loader._data)
        dtypes = []
        hook = trainer.model.sigma_net.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
        torch.manual_seed(1)
        losses[bf16] = [trainer.optimise(loader.collate_fn([k]))[0] for k in range(2)]
        hook.remove()
        assert set(dtypes) == {torch.bfloat16 if bf16 else torch.float32}
        assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    for fp32, bf16 in zip(losses[False], losses[True]):
        assert fp32 != bf16 and abs(fp32 - bf16) < 0.05 * fp32, losses


def test_bf16_falls_back_to_fp32_without_native_bfloat16(subject, tmp_path, monkeypatch):
    import nerf_triplane.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "cpu_has_native_bf16", lambda: False)
    opt = parse_args(tiny_args(subject, tmp_path / "ws", "--iters", 10, "--bf16"))
    trainer, _, _ = build_trainer(opt)
    assert not trainer.bf16
    assert "no native bfloat16" in (tmp_path / "ws" / f"log_{trainer.name}.txt").read_text()


def test_cpu_has_native_bf16_reads_the_cpu_flags(tmp_path):
    from nerf_triplane.trainer import cpu_has_native_bf16

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("flags\t\t: fpu sse2 avx2 avx512f avx512bw\n")
    assert cpu_has_native_bf16(cpuinfo) is False
    for flag in ("avx512_bf16", "amx_bf16"):
        cpuinfo.write_text(f"flags\t\t: fpu sse2 avx2 avx512f {flag} avx512bw\n")
        assert cpu_has_native_bf16(cpuinfo) is True
    assert cpu_has_native_bf16(tmp_path / "missing") is None
