"""scripts/audio_influence.py on the tiny trained synthetic head."""
import json
import sys
from pathlib import Path

import pytest

from tests.conftest import TRAIN_FRAMES, error_line, single_thread, tiny_args

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))


def save_without_audio(workspace: Path, path: Path) -> Path:
    """Write the weights of ``workspace``'s newest checkpoint to ``path`` with AudioNet's output
    layer zeroed: every audio window then gives the same code. Returns ``path``."""
    import torch

    latest = max((workspace / "checkpoints").glob("ngp_ep*.pth"), key=lambda p: p.stat().st_mtime)
    state = torch.load(latest, map_location="cpu", weights_only=True)["model"]
    for key in ("audio_net.encoder_fc1.2.weight", "audio_net.encoder_fc1.2.bias"):
        state[key] = torch.zeros_like(state[key])
    torch.save(state, path)
    return path


def test_audio_influence_cli(subject, trained_head, capsys):
    import audio_influence

    with single_thread():
        assert audio_influence.main(tiny_args(subject, trained_head, "--frames", "4", "--split", "train")) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["frames"] == 4 and result["shift"] == 30 // 4 and result["split"] == "train"
    assert result["mse_own"] > 0 and result["mse_other"] > 0 and result["change"] > 0
    assert result["ratio"] == pytest.approx(result["mse_other"] / result["mse_own"])
    assert result["psnr_gain"] == pytest.approx(result["lips_psnr_own"] - result["lips_psnr_other"])
    assert Path(result["checkpoint"]).is_file()


def test_audio_influence_held_out_by_default(subject, trained_head):
    import audio_influence
    from nerf_triplane.options import parse_args

    with single_thread():
        result = audio_influence.audio_influence(parse_args(tiny_args(subject, trained_head)))
    assert result["split"] == "val" and result["frames"] == 3  # every held-out frame
    # Too few frames for a correlation of the mouth opening: reported as unknown.
    assert result["opening_corr_own"] is None and result["opening_gain"] is None


def test_audio_influence_same_audio_changes_nothing(subject, trained_head):
    import audio_influence
    from nerf_triplane.options import parse_args

    with single_thread():
        result = audio_influence.audio_influence(parse_args(tiny_args(subject, trained_head)), 3, shift=0,
                                                 split="train")
    assert result["change"] == 0 and result["ratio"] == 1 and result["psnr_gain"] == 0


def test_audio_influence_is_zero_without_an_audio_path(subject, trained_head, tmp_path):
    """The same head with AudioNet's output layer zeroed sees every audio window as silence:
    own and other audio render alike, where the trained head's renders differ."""
    import audio_influence
    from nerf_triplane.options import parse_args

    no_audio = save_without_audio(trained_head, tmp_path / "no_audio.pth")
    with single_thread():
        args = tiny_args(subject, trained_head)
        trained = audio_influence.audio_influence(parse_args(args), 3, split="train")
        muted = audio_influence.audio_influence(parse_args([*args, "--ckpt", str(no_audio)]), 3, split="train")
    assert trained["change"] > 1e-4
    assert muted["change"] == 0 and muted["psnr_gain"] == 0 and muted["ratio"] == 1


def test_audio_influence_errors(subject, tmp_path, capsys):
    import audio_influence

    assert audio_influence.main(tiny_args(subject, tmp_path / "empty")) == 2
    assert "no checkpoint" in error_line(capsys)
    assert audio_influence.main(tiny_args(subject, tmp_path, "--frames", "x")) == 2
    assert "--frames" in error_line(capsys)
    assert audio_influence.main(tiny_args(subject, tmp_path, "--split", "test")) == 2
    assert "--split" in error_line(capsys)


def test_audio_influence_with_the_measured_mouth(subject, trained_head):
    """``--measured`` renders a third time with the frame's measured mouth shape in the code's
    mouth channels: a different render of the same lips, scored like the other two."""
    import math

    import audio_influence
    from nerf_triplane.options import parse_args

    with single_thread():
        result = audio_influence.audio_influence(parse_args(tiny_args(subject, trained_head)), 3, split="train",
                                                 measured=True)
        plain = audio_influence.audio_influence(parse_args(tiny_args(subject, trained_head)), 3, split="train")
    assert math.isfinite(result["lips_psnr_measured"])
    assert result["lips_psnr_measured"] != result["lips_psnr_own"]
    assert result["lips_psnr_own"] == plain["lips_psnr_own"]
    assert "lips_psnr_measured" not in plain
    # Three frames are too few for a spread or a correlation: reported as unknown.
    assert result["opening_corr_measured"] is None and result["opening_std_ratio_measured"] is None
    assert result["opening_corr_code"] is None


# A head whose audio drives its lips: no per-frame codes (only the audio and the eye input vary
# between frames), the audio code held to the mouth shape, half the rays on the lips.
AUDIO_HEAD_FLAGS = ("--preset", "tiny", "--eval_interval", "1000", "--ind_dim", "0", "--lips_rays", "0.5",
                    "--mouth_sup", "1", "--mouth_pretrain", "100")
AUDIO_HEAD_ITERS = 3 * TRAIN_FRAMES


@pytest.fixture(scope="module")
def audio_head(subject, tmp_path_factory):
    """Workspace of a head trained for ``AUDIO_HEAD_ITERS`` steps with ``AUDIO_HEAD_FLAGS``."""
    import main as cli

    ws = tmp_path_factory.mktemp("audio_head")
    with single_thread():
        assert cli.main([str(subject), "--workspace", str(ws), "--device", "cpu", "--iters", str(AUDIO_HEAD_ITERS),
                         *AUDIO_HEAD_FLAGS]) == 0
    return ws


@pytest.mark.slow
def test_audio_influence_tells_an_audio_driven_head_from_a_deaf_one(subject, audio_head, tmp_path, capsys):
    """The same trained head scored twice over all training frames: as trained, its lips are
    clearly closer to GT with their own audio (ratio > 1.1, > 0.3 dB); with AudioNet's output
    layer zeroed, every audio window gives the same code and the ratio is exactly 1."""
    import audio_influence

    args = [str(subject), "--workspace", str(audio_head), "--device", "cpu", *AUDIO_HEAD_FLAGS, "--split", "train"]
    deaf_ckpt = save_without_audio(audio_head, tmp_path / "deaf.pth")
    with single_thread():
        assert audio_influence.main(args) == 0
        driven = json.loads(capsys.readouterr().out)
        assert audio_influence.main([*args, "--ckpt", str(deaf_ckpt)]) == 0
        deaf = json.loads(capsys.readouterr().out)
    assert driven["frames"] == deaf["frames"] == TRAIN_FRAMES
    assert driven["ratio"] > 1.1 and driven["psnr_gain"] > 0.3, driven
    assert deaf["ratio"] == 1 and deaf["psnr_gain"] == 0 and deaf["change"] == 0
