"""Resuming a checkpoint written on another device: CPU <-> GPU, more GPUs -> fewer, fp32 <-> fp16.

On a machine without CUDA the GPU side is simulated: a trainer whose device is ``meta``
stands for any non-CPU device (``torch.load(map_location=...)`` moves tensors there just
as it would to ``cuda``), and ``torch.cuda`` functions are replaced by fakes that fail the
way the real ones do on a machine with fewer GPUs. The ``cuda`` tests do it for real.
"""
import math

import pytest
import torch

from nerf_triplane import checkpoint
from nerf_triplane.network import NeRFNetwork
from nerf_triplane.options import parse_args
from nerf_triplane.trainer import Trainer
from tests.conftest import build_trainer, take_steps, tiny_args

pytestmark = pytest.mark.usefixtures("one_thread")


def make_trainer(subject, ws) -> Trainer:
    """A CPU trainer without datasets (fp32: ``-O``'s fp16 stays off on the CPU)."""
    opt = parse_args(tiny_args(subject, ws, "--iters", 1))
    return Trainer(opt, NeRFNetwork(opt, audio_dim=32), ws, "cpu")


def saved_checkpoint(subject, ws) -> Trainer:
    """A trainer (CPU, fp32) that wrote ``ngp_ep0001.pth`` into ``ws``."""
    trainer = make_trainer(subject, ws)
    trainer.epoch = 1
    trainer.save_checkpoint()
    return trainer


class FakeCuda:
    """``count`` visible CUDA devices whose RNG restores are recorded.

    ``set_rng_state(state, i)`` fails for ``i >= count`` with the IndexError the real one
    raises there (``torch.cuda.default_generators[i]``).
    """

    def __init__(self, monkeypatch, count: int):
        self.count, self.restored = count, []
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [torch.zeros(16, dtype=torch.uint8)] * count)
        # set_rng_state_all looks set_rng_state up in torch.cuda.random.
        for module in (torch.cuda, torch.cuda.random):
            monkeypatch.setattr(module, "set_rng_state", self.set_rng_state)

    def set_rng_state(self, state, device="cuda"):
        index = device if isinstance(device, int) else torch.device(device).index or 0
        if index >= self.count:
            raise IndexError("tuple index out of range")
        self.restored.append((index, state))


def test_resume_on_another_device_restores_cpu_rng_states(subject, tmp_path, monkeypatch):
    saved = saved_checkpoint(subject, tmp_path)
    resumed = make_trainer(subject, tmp_path)
    resumed.device = torch.device("meta")  # the trainer's device is not the CPU
    seen = []
    monkeypatch.setattr("nerf_triplane.trainer.set_rng_state",
                        lambda state: seen.append(state) or checkpoint.set_rng_state(state))
    assert resumed.load_checkpoint("latest") is not None
    assert seen and seen[0]["torch"].device.type == "cpu" and seen[0]["torch"].dtype == torch.uint8
    theirs = saved.model.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in resumed.model.state_dict().items())
    assert resumed.epoch == 1


def test_rng_restore_with_fewer_visible_gpus(monkeypatch):
    states = [torch.full((16,), i, dtype=torch.uint8) for i in range(2)]
    base = checkpoint.rng_state()
    for visible, expected in ((1, [0]), (2, [0, 1]), (3, [0, 1])):
        fake = FakeCuda(monkeypatch, visible)
        checkpoint.set_rng_state({**base, "cuda": states})
        assert [i for i, _ in fake.restored] == expected, visible
        assert all(torch.equal(s, states[i]) for i, s in fake.restored)
    fake = FakeCuda(monkeypatch, 0)
    checkpoint.set_rng_state({**base, "cuda": states})
    assert fake.restored == []


def test_gpu_checkpoint_resumes_here(subject, tmp_path, monkeypatch):
    """A checkpoint of a 2-GPU fp16 run resumes on one GPU, and a CPU fp32 one into fp16 scaling."""
    saved = saved_checkpoint(subject, tmp_path)
    path = saved.ckpts.latest()
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["scaler"] == {}  # what a run without fp16 saves
    ckpt["rng"]["cuda"] = [torch.get_rng_state()[:16].clone(), torch.get_rng_state()[:16].clone()]
    torch.save(ckpt, path)

    fake = FakeCuda(monkeypatch, 1)
    resumed = make_trainer(subject, tmp_path)
    resumed.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)  # an fp16 run's enabled scaler
    assert resumed.load_checkpoint("latest") == path
    assert [i for i, _ in fake.restored] == [0]
    assert resumed.scaler.get_scale() == 1024.0  # kept: there was no scale to restore
    assert "without fp16" in (tmp_path / "log_ngp.txt").read_text()

    # And back: an fp16 checkpoint (with a loss scale) resumed by an fp32 run.
    resumed.epoch = 2
    resumed.save_checkpoint()
    fp32 = make_trainer(subject, tmp_path)
    assert fp32.load_checkpoint("latest").name == "ngp_ep0002.pth"
    assert fp32.epoch == 2 and not fp32.scaler.is_enabled()


@pytest.mark.cuda
@pytest.mark.parametrize("first,then", [("cuda", "cuda"), ("cuda", "cpu"), ("cpu", "cuda")])
def test_resume_across_real_devices(subject, tmp_path, first, then):
    """fp16 on CUDA, fp32 on the CPU: each side resumes the other's checkpoint and trains on."""
    args = tiny_args(subject, tmp_path, "--iters", 30)
    trainer, loader, _ = build_trainer(parse_args(args + ["--device", first]))
    take_steps(trainer, loader, range(2))
    trainer.save_checkpoint(in_epoch=True)
    resumed, loader, _ = build_trainer(parse_args(args + ["--device", then]))
    assert resumed.load_checkpoint("latest") is not None
    assert resumed.global_step == 2 and resumed.fp16 == (then == "cuda")
    assert all(math.isfinite(v) for v in take_steps(resumed, loader, range(2, 4)))
