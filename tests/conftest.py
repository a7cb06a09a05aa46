"""Shared fixtures: the real data folder, backend switching, the tiny synthetic subject and a
head model trained on it (built once per session and reused by the trainer/main/lips/torso/
new-audio tests)."""
import os
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"

# No test downloads anything: every weight loader of the project honours this switch; the tests
# of the online-but-unreachable path lift it and refuse the network instead (no_network).
os.environ["ERNERF_OFFLINE"] = "1"

SUBJECT_FRAMES, SUBJECT_SIZE = 33, 64  # 30 train + 3 val frames of 64x64
TRAIN_FRAMES = SUBJECT_FRAMES * 10 // 11  # 30: the first 10/11 of the frames train
HEAD_EPOCHS = 1
HEAD_ITERS = HEAD_EPOCHS * TRAIN_FRAMES


def error_line(capsys) -> str:
    """The single ``error:`` line a CLI printed to stderr (and no traceback)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def shared_file(name: str) -> Path:
    """Path of a file in ../shared/data, or skip the test saying why."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"needs the real data file {path} (../shared is absent in this checkout)")
    return path


def tiny_args(folder, workspace, *extra) -> list[str]:
    """main.py arguments of the small CPU config: few rays, a coarse occupancy grid.

    ``--device cpu``: the suite gives the same results on a GPU machine (``-O``'s fp16 then
    stays off unless ``ERNERF_CPU_FP16=1``); GPU tests are marked ``cuda``.
    """
    return [str(folder), "--workspace", str(workspace), "-O", "--device", "cpu", "--num_rays", "1024",
            "--grid_size", "32", *map(str, extra)]


def build_trainer(opt):
    """Trainer on ``opt.device`` with its training loader and validation loader."""
    from nerf_triplane.network import NeRFNetwork
    from nerf_triplane.provider import NeRFDataset
    from nerf_triplane.trainer import Trainer

    train_set = NeRFDataset(opt, device=opt.device, type="train")
    model = NeRFNetwork(opt, audio_dim=train_set.audio_dim).to(opt.device)
    val_loader = NeRFDataset(opt, device=opt.device, type="val").dataloader()
    trainer = Trainer(opt, model, opt.workspace, opt.device, train=True)
    return trainer, train_set.dataloader(), val_loader


def take_steps(trainer, loader, frames) -> list[float]:
    """One optimisation step per training frame index in ``frames``, outside ``Trainer.train``;
    returns the losses."""
    from torch.utils.tensorboard import SummaryWriter

    trainer.set_train_data(loader._data)
    trainer.writer = SummaryWriter(str(trainer.workspace / "run"))
    try:
        return [trainer._optimise(loader.collate_fn([k]))[0] for k in frames]
    finally:
        trainer.writer.close()
        trainer.writer = None


def pytest_collection_modifyitems(config, items):
    """Skip the tests marked ``cuda`` when no CUDA device is visible."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("cuda"):
            item.add_marker(skip)


@contextmanager
def single_thread():
    """Small batches run faster on one thread, and the test machine is shared."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def use_backend(monkeypatch):
    """Force one backend for the duration of a test: ``use_backend("torch")``."""

    def _set(name: str, pkg: str | None = None):
        key = f"ERNERF_BACKEND_{pkg.upper()}" if pkg else "ERNERF_BACKEND"
        monkeypatch.setenv(key, name)

    return _set


@pytest.fixture(autouse=True)
def _seed():
    import torch

    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _no_cpu_fp16(monkeypatch):
    """fp32 on the CPU whatever the caller's environment; fp16 tests set ERNERF_CPU_FP16 themselves
    (``nerf_triplane.trainer.CPU_FP16_ENV``, not imported here: kernel tests stay free of the trainer)."""
    monkeypatch.delenv("ERNERF_CPU_FP16", raising=False)


@pytest.fixture
def no_network(monkeypatch):
    """Refuse every connection and name lookup (no test downloads); the list records the attempts."""
    import socket

    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[:2])
        raise ConnectionRefusedError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


@pytest.fixture
def one_thread():
    """Run the test on one torch thread (opt in with ``pytestmark = usefixtures("one_thread")``)."""
    with single_thread():
        yield


@pytest.fixture(scope="session")
def subject(tmp_path_factory) -> Path:
    """The synthetic subject folder (``SUBJECT_FRAMES`` frames of ``SUBJECT_SIZE``², with audio)."""
    from data_utils.synthetic import make_synthetic_subject

    path = tmp_path_factory.getbasetemp() / f"synthetic_{SUBJECT_FRAMES}_{SUBJECT_SIZE}"
    if not (path / "transforms_val.json").exists():
        with single_thread():
            make_synthetic_subject(path, n_frames=SUBJECT_FRAMES, size=SUBJECT_SIZE, seed=0)
    return path


@pytest.fixture(scope="session")
def trained_head(subject, tmp_path_factory) -> Path:
    """Workspace of a ``HEAD_ITERS``-step head run through main() (ends with the test render).

    Tests that train further must copy it; tests that render may add files to results/.
    """
    import main as cli

    ws = tmp_path_factory.mktemp("head_ws")
    with single_thread():
        assert cli.main(tiny_args(subject, ws, "--iters", HEAD_ITERS)) == 0
    return ws
