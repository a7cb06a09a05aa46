"""Non-finite steps: skipped and counted, a streak stops training with one line, and no
checkpoint ever holds NaN/inf weights."""
import math
import shutil

import numpy as np
import pytest
import torch

import main as cli
from nerf_triplane.checkpoint import NonFiniteWeights, nonfinite_tensors
from nerf_triplane.options import parse_args
from nerf_triplane.trainer import Trainer
from tests.conftest import build_trainer, error_line, take_steps, tiny_args
from tests.integrity import changed_files, folder_digest

pytestmark = pytest.mark.usefixtures("one_thread")


def nan_at(monkeypatch, steps):
    """Make the loss NaN at the given global steps (``Trainer.train_step`` wrapped)."""
    real = Trainer.train_step

    def train_step(self, data):
        pred, gt, loss = real(self, data)
        return pred, gt, loss * float("nan") if self.global_step in steps else loss

    monkeypatch.setattr(Trainer, "train_step", train_step)


def weights(trainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.model.parameters()]


def test_a_nan_step_is_skipped_and_counted(subject, tmp_path, monkeypatch):
    nan_at(monkeypatch, {2, 3})
    trainer, loader, _ = build_trainer(parse_args(tiny_args(subject, tmp_path / "ws", "--iters", 30)))
    take_steps(trainer, loader, [0])
    before = weights(trainer)
    losses = take_steps(trainer, loader, [1, 2])
    assert all(math.isnan(v) for v in losses)
    assert all(torch.equal(a, b) for a, b in zip(before, weights(trainer)))  # no update at all
    assert (trainer.nonfinite.skipped, trainer.nonfinite.streak) == (2, 2)
    assert math.isfinite(take_steps(trainer, loader, [3])[0])
    assert (trainer.nonfinite.skipped, trainer.nonfinite.streak) == (2, 0)
    assert not all(torch.equal(a, b) for a, b in zip(before, weights(trainer)))
    log = (tmp_path / "ws" / "log_ngp.txt").read_text()
    assert "step 3: non-finite loss (nan) or gradient, optimiser step skipped (2 so far, 2 in a row)" in log
    # The count survives a resume.
    path = trainer.save_checkpoint(in_epoch=True)
    resumed, _, _ = build_trainer(parse_args(tiny_args(subject, tmp_path / "ws", "--iters", 30)))
    assert resumed.load_checkpoint(str(path)) == path and resumed.nonfinite.skipped == 2


def test_a_nan_streak_stops_with_one_line_and_keeps_the_last_good_checkpoint(subject, tmp_path, monkeypatch, capsys):
    nan_at(monkeypatch, set(range(7, 100)))
    ws = tmp_path / "ws"
    code = cli.main(tiny_args(subject, ws, "--iters", 60, "--save_interval", 5, "--max_keep_ckpt", 5))
    assert code == 2
    line = error_line(capsys)
    assert "training stopped at step 26: 20 steps in a row (since step 7)" in line
    assert "learning rate" in line and "ngp_ep0001_step00000025.pth" in line
    saved = sorted(p.name for p in (ws / "checkpoints").iterdir())
    assert saved == [f"ngp_ep0001_step{s:08d}.pth" for s in (5, 10, 15, 20, 25)]
    for name in saved:
        ckpt = torch.load(ws / "checkpoints" / name, weights_only=True)
        assert nonfinite_tensors({"model": ckpt["model"], "ema": ckpt["ema"]}) == []


def test_an_absurd_audio_learning_rate_stops_cleanly(subject, tmp_path, capsys):
    ws = tmp_path / "ws"
    assert cli.main(tiny_args(subject, ws, "--iters", 60, "--lr_aud", 1e30, "--max_nonfinite", 20)) == 2
    line = error_line(capsys)
    assert "20 steps in a row" in line and "--lr_aud 1e+30" in line and "learning rate" in line
    assert not (ws / "checkpoints").exists()


def test_nan_in_the_data_is_named_as_the_cause(subject, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(subject, data)
    np.save(data / "aud.npy", np.full_like(np.load(subject / "aud.npy"), np.nan))
    before = folder_digest(data)
    assert cli.main(tiny_args(data, tmp_path / "ws", "--iters", 60)) == 2
    line = error_line(capsys)
    assert "likely cause: the data (frame" in line and "NaN/inf in auds" in line
    assert changed_files(before, folder_digest(data)) == []


def test_non_finite_weights_are_never_written(subject, tmp_path):
    trainer, loader, _ = build_trainer(parse_args(tiny_args(subject, tmp_path / "ws", "--iters", 30)))
    take_steps(trainer, loader, [0])
    good = trainer.save_checkpoint(in_epoch=True)
    good_bytes = good.read_bytes()
    with torch.no_grad():
        next(trainer.model.parameters()).view(-1)[0] = float("inf")
    take_steps(trainer, loader, [1])
    with pytest.raises(NonFiniteWeights, match="non-finite weights"):
        trainer.save_checkpoint(in_epoch=True)
    with pytest.raises(NonFiniteWeights):
        trainer.save_best()
    assert sorted(p.name for p in good.parent.iterdir()) == [good.name] and good.read_bytes() == good_bytes
