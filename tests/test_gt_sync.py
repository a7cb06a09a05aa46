"""scripts/gt_sync.py: the energy sync score of a subject's own video, over all frames and windows."""
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SUBJECT_FRAMES, error_line

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))


def test_gt_sync_of_the_synthetic_video(subject, capsys):
    """The synthetic mouth opens with the audio energy: high correlation at lag 0 over the
    whole video and in every window."""
    import gt_sync

    assert gt_sync.main([str(subject), "--window", "16", "--step", "4"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["frames"] == SUBJECT_FRAMES and result["all"]["frames"] == SUBJECT_FRAMES
    assert result["all"]["corr_at_0"] > 0.8 and abs(result["all"]["best_lag"]) <= 1
    windows = result["windows"]
    assert windows["count"] == len(range(0, SUBJECT_FRAMES - 16 + 1, 4)) and windows["size"] == 16
    assert 0.5 < windows["min"] <= windows["median"] <= windows["max"] <= 1
    assert windows["last"]["frames"] == 16


def test_gt_sync_finds_delayed_audio(subject, tmp_path):
    """Audio played 3 frames late: the mouth now leads the sound by 3 frames, and the lag-0
    correlation drops."""
    import gt_sync

    from data_utils.audio import load_audio, write_wav

    data = tmp_path / "late"
    shutil.copytree(subject, data)
    audio = load_audio(subject / "aud.wav")
    write_wav(data / "aud.wav", np.concatenate([np.zeros(3 * 640, audio.dtype), audio[:-3 * 640]]))
    late, on_time = gt_sync.gt_sync(data, window=16), gt_sync.gt_sync(subject, window=16)
    assert late["all"]["best_lag"] == -3
    assert late["all"]["corr_at_0"] < on_time["all"]["corr_at_0"] - 0.3


def test_gt_sync_errors(subject, tmp_path, capsys):
    import gt_sync

    assert gt_sync.main([str(subject), "--window", str(SUBJECT_FRAMES + 1)]) == 2
    assert "longer than" in error_line(capsys)
    assert gt_sync.main([str(subject), "--step", "0"]) == 2
    assert "positive" in error_line(capsys)
    assert gt_sync.main([str(tmp_path)]) == 2
    assert "transforms_train.json" in error_line(capsys)
    with pytest.raises(ValueError):
        gt_sync.gt_sync(subject, window=0)
