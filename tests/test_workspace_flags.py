"""A workspace remembers the model flags it was trained with (model_flags.json)."""
import json

import pytest

import main as cli
from nerf_triplane.options import parse_args
from nerf_triplane.presets import explicit_dests
from nerf_triplane.workspace_flags import FILE_NAME, apply_stored_flags, save_flags, stored_flags
from tests.conftest import error_line

pytestmark = pytest.mark.usefixtures("one_thread")


def test_training_writes_the_model_flags(trained_head):
    flags = json.loads((trained_head / FILE_NAME).read_text())
    assert flags["grid_size"] == 32 and flags["cuda_ray"] and flags["exp_eye"] and flags["asr_model"] == "mel"
    assert "iters" not in flags and "num_rays" not in flags  # training-only flags stay free


def test_test_without_repeating_the_flags(subject, trained_head, capsys):
    # Without the stored flags this stopped with "tensor density_grid has shape (1, 32768) but
    # this model needs (1, 2097152)" (default --grid_size 128, no -O).
    assert cli.main([str(subject), "--workspace", str(trained_head), "--device", "cpu", "--test"]) == 0
    assert f"model flags from {trained_head / FILE_NAME}" in capsys.readouterr().out


def test_contradicting_flag_is_one_line(subject, trained_head, capsys):
    args = [str(subject), "--workspace", str(trained_head), "--device", "cpu", "--test", "--grid_size", "64"]
    assert cli.main(args) == 2
    line = error_line(capsys)
    assert "--grid_size 64" in line and "--grid_size 32" in line and FILE_NAME in line


def _workspace(tmp_path, *train_args):
    ws = tmp_path / "ws"
    (ws / "checkpoints").mkdir(parents=True)
    (ws / "checkpoints" / "ngp_ep0001.pth").write_bytes(b"")
    save_flags(parse_args([str(tmp_path), "--workspace", str(ws), *train_args]))
    return ws


def test_flags_fill_and_contradict(tmp_path):
    ws = _workspace(tmp_path, "--grid_size", "64", "--asr_model", "hubert", "--offset", "0", "0.5", "0")
    argv = [str(tmp_path), "--workspace", str(ws), "--test", "-O"]
    opt = parse_args(argv)
    # Trained without -O: -O now would change the renderer and the network's inputs.
    with pytest.raises(ValueError, match=r"--exp_eye contradicts .*model_flags.json, which was trained with no --exp_eye"):
        apply_stored_flags(opt, explicit_dests(argv))
    argv = [str(tmp_path), "--workspace", str(ws), "--test", "--grid_size", "64", "--num_rays", "8"]
    opt = parse_args(argv)
    assert apply_stored_flags(opt, explicit_dests(argv)) == ws / FILE_NAME
    assert (opt.grid_size, opt.asr_model, opt.offset, opt.num_rays) == (64, "hubert", [0, 0.5, 0], 8)
    argv = [str(tmp_path), "--workspace", str(ws), "--ckpt", "scratch", "--grid_size", "16"]
    opt = parse_args(argv)
    assert apply_stored_flags(opt, explicit_dests(argv)) is None and opt.asr_model == "mel"  # starts over


def test_stale_file_and_torso_from_head(tmp_path):
    ws = _workspace(tmp_path, "-O", "--grid_size", "48", "--torso_shrink", "0.5")
    torso = tmp_path / "torso"
    flags, source = stored_flags(torso, str(ws / "checkpoints" / "ngp.pth"))
    assert source == ws / FILE_NAME and flags["grid_size"] == 48 and "torso_shrink" not in flags
    (ws / "checkpoints" / "ngp_ep0001.pth").unlink()  # an emptied workspace: its file describes nothing
    assert stored_flags(ws) == ({}, None)
