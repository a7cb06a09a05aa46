"""Checkpoints are data, never code: refused files, format versions, old files, durable writes."""
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch

import main as cli
from data_utils import atomic
from nerf_triplane.checkpoint import FORMAT_VERSION, CheckpointError, atomic_torch_save, read_checkpoint
from tests.conftest import HEAD_ITERS, error_line, tiny_args
from tests.integrity import changed_files, folder_digest

pytestmark = pytest.mark.usefixtures("one_thread")


class _OpensFile:
    """Pickles into a call of ``open(path, "w")``: unpickling it creates ``path``."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def evil_checkpoint(path, marker) -> None:
    """A ``.pth`` with real weights whose unpickling would create ``marker``."""
    torch.save({"payload": _OpensFile(marker), "model": {"sigma_net.net.0.weight": torch.zeros(2, 2)}}, path)


def test_the_evil_file_would_run_code(tmp_path):
    """The test file is really dangerous: a plain unpickler creates the marker."""
    evil_checkpoint(tmp_path / "evil.pth", tmp_path / "marker")
    with zipfile.ZipFile(tmp_path / "evil.pth") as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    with pytest.raises(pickle.UnpicklingError):  # the payload runs before the tensors fail to load
        pickle.loads(data)
    assert (tmp_path / "marker").exists()


@pytest.mark.parametrize("where", ["--ckpt", "--head_ckpt", "checkpoints/"])
def test_code_in_a_checkpoint_is_refused(subject, trained_head, tmp_path, capsys, where):
    marker = tmp_path / "marker"
    ws = tmp_path / "ws"
    (ws / "checkpoints").mkdir(parents=True)
    evil = tmp_path / "evil.pth"
    if where == "checkpoints/":
        evil = ws / "checkpoints" / "ngp_ep0009.pth"  # newest: picked by --ckpt latest
    evil_checkpoint(evil, marker)
    extra = {"--ckpt": ["--ckpt", evil], "--head_ckpt": ["--torso", "--head_ckpt", evil], "checkpoints/": []}[where]
    before = folder_digest(tmp_path)
    assert cli.main(tiny_args(subject, ws, "--iters", HEAD_ITERS + 1, *extra)) == 2
    line = error_line(capsys)
    assert str(evil) in line and "refused" in line and "run code" in line
    assert not marker.exists()
    after = folder_digest(tmp_path)
    assert changed_files(before, after) == [] and set(after) - set(before) <= {"ws/log_ngp.txt"}


def test_refused_files_name_the_file_and_the_fix(trained_head, tmp_path):
    good = trained_head / "checkpoints" / "ngp.pth"
    cases = {
        "empty.pth": b"",
        "truncated.pth": good.read_bytes()[: good.stat().st_size // 2],
        "text.pth": b"not a checkpoint\n",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    torch.save([1, 2, 3], tmp_path / "list.pth")
    newer = torch.load(good, weights_only=True)
    newer["format"] = FORMAT_VERSION + 1
    torch.save(newer, tmp_path / "newer.pth")
    expected = {"empty.pth": "is empty", "truncated.pth": "truncated", "text.pth": "not a PyTorch checkpoint",
                "list.pth": "not an ER-NeRF checkpoint", "newer.pth": "newer than this code reads"}
    for name, fragment in expected.items():
        with pytest.raises(CheckpointError) as info:
            read_checkpoint(tmp_path / name)
        message = str(info.value)
        assert str(tmp_path / name) in message and fragment in message and "\n" not in message, message


def test_written_checkpoints_are_plain_data_with_a_format(trained_head):
    for path in (trained_head / "checkpoints").glob("*.pth"):
        ckpt = torch.load(path, weights_only=True)  # no allow-list at all
        assert ckpt["format"] == FORMAT_VERSION, path
    assert torch.serialization.get_unsafe_globals_in_checkpoint(trained_head / "checkpoints" / "ngp_ep0001.pth") == []


def test_checkpoint_of_the_previous_format_resumes(subject, trained_head, tmp_path, capsys):
    """Files written before "format" existed (numpy RNG state as an array) still load."""
    ws = tmp_path / "ws"
    (ws / "checkpoints").mkdir(parents=True)
    old = torch.load(trained_head / "checkpoints" / "ngp_ep0001.pth", weights_only=True)
    del old["format"]
    np.random.seed(5)
    old["rng"]["numpy"] = np.random.get_state()  # what the previous code saved
    torch.save(old, ws / "checkpoints" / "ngp_ep0001.pth")
    assert torch.serialization.get_unsafe_globals_in_checkpoint(ws / "checkpoints" / "ngp_ep0001.pth")
    assert read_checkpoint(ws / "checkpoints" / "ngp_ep0001.pth")["format"] == 0
    assert cli.main(tiny_args(subject, ws, "--iters", HEAD_ITERS + 1, "--eval_interval", 100)) == 0
    assert "loaded" in (ws / "log_ngp.txt").read_text()
    assert torch.load(ws / "checkpoints" / "ngp_ep0002.pth", weights_only=True)["global_step"] == 2 * HEAD_ITERS


def test_saves_sync_the_file_before_and_the_folder_after_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    monkeypatch.setattr(atomic.os, "replace", replace)
    target = tmp_path / "ckpt" / "ngp.pth"
    atomic_torch_save({"x": torch.ones(3)}, target)
    assert [e[0] for e in events] == ["fsync", "replace", "fsync"], events
    tmp = events[0][1]
    assert events[1][1:] == (tmp, str(target)) and events[2][1] == str(target.parent)
    assert torch.equal(torch.load(target, weights_only=True)["x"], torch.ones(3))

    events.clear()
    real_sync = os.sync
    monkeypatch.setattr(atomic.os, "sync", lambda: (events.append(("sync",)), real_sync()))
    with atomic.atomic_dir(tmp_path / "frames") as folder:
        for k in range(3):
            (folder / f"{k}.png").write_bytes(b"x")
    # The whole folder flushed at once, then renamed, then the parent's entry synced.
    assert [e[0] for e in events] == ["sync", "replace", "fsync"], events
    assert events[-1] == ("fsync", str(tmp_path))
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == ["0.png", "1.png", "2.png"]
