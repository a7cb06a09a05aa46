"""scripts/audio_influence.py on the tiny trained synthetic head."""
import json
import sys
from pathlib import Path

import pytest

from tests.conftest import error_line, single_thread, tiny_args

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))


def test_audio_influence_cli(subject, trained_head, capsys):
    import audio_influence

    with single_thread():
        assert audio_influence.main(tiny_args(subject, trained_head, "--frames", "4")) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["frames"] == 4 and result["shift"] == 30 // 4
    assert result["mse_own"] > 0 and result["mse_other"] > 0 and result["change"] > 0
    assert result["ratio"] == pytest.approx(result["mse_other"] / result["mse_own"])
    assert Path(result["checkpoint"]).is_file()


def test_audio_influence_same_audio_changes_nothing(subject, trained_head):
    import audio_influence
    from nerf_triplane.options import parse_args

    with single_thread():
        result = audio_influence.audio_influence(parse_args(tiny_args(subject, trained_head)), 3, shift=0)
    assert result["change"] == 0 and result["ratio"] == 1


def test_audio_influence_errors(subject, tmp_path, capsys):
    import audio_influence

    assert audio_influence.main(tiny_args(subject, tmp_path / "empty")) == 2
    assert "no checkpoint" in error_line(capsys)
    assert audio_influence.main(tiny_args(subject, tmp_path, "--frames", "x")) == 2
    assert "--frames" in error_line(capsys)
