"""scripts/mouth_predictor.py: the audio path alone, scored on held-out windows."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import single_thread

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))


@pytest.fixture(scope="module")
def talking(tmp_path_factory):
    """A 220-frame 128² synthetic subject whose mouth opens with its audio (2 windows of 20 frames)."""
    from data_utils.synthetic import make_synthetic_subject

    return make_synthetic_subject(tmp_path_factory.mktemp("mp") / "syn", n_frames=220, size=128, seed=5)


def run(capsys, *argv):
    import mouth_predictor

    with single_thread():
        code = mouth_predictor.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if code == 0 else captured.err)


def test_audio_that_carries_the_mouth_predicts_held_out_windows(talking, tmp_path, capsys):
    # Own features: the held-out openings are predicted; the same features with the frames
    # shuffled carry nothing of the mouth, so their prediction of unseen frames fails.
    base = ["--folds", 2, "--seeds", 1, "--steps", 300, "--preset", "tiny"]
    code, own = run(capsys, talking, *base)
    assert code == 0, own
    assert [r["fold"] for r in own["rows"]] == [0, 1] and all(r["frames"] == 20 for r in own["rows"])
    assert min(r["opening_corr"] for r in own["rows"]) > 0.8, own["rows"]
    assert min(r["c0_corr"] for r in own["rows"]) > 0.8
    feats = np.load(talking / "aud.npy")
    shuffled = tmp_path / "shuffled.npy"
    np.save(shuffled, feats[np.random.default_rng(0).permutation(len(feats))])
    code, other = run(capsys, talking, *base, "--features", shuffled)
    assert code == 0, other
    assert other["features"] == str(shuffled)
    assert np.mean([r["opening_corr"] for r in other["rows"]]) < 0.4, other["rows"]


def test_mouth_predictor_errors(talking, tmp_path, capsys):
    code, err = run(capsys, tmp_path, "--steps", 10)
    assert code == 2 and "transforms_train.json" in err
    code, err = run(capsys, talking, "--folds", 2, "--only", 2, "--steps", 10, "--preset", "tiny")
    assert code == 2 and "--only 2" in err
    short = tmp_path / "short.npy"
    np.save(short, np.load(talking / "aud.npy")[:50])
    code, err = run(capsys, talking, "--features", short, "--steps", 10, "--preset", "tiny")
    assert code == 2 and "50 frames of features" in err


def test_main_flags_reach_the_fit(talking, capsys):
    # main.py flags override the preset's: the concordance term changes the fitted predictor.
    base = ["--folds", 2, "--only", 0, "--seeds", 1, "--steps", 60, "--preset", "tiny"]
    code, plain = run(capsys, talking, *base)
    assert code == 0, plain
    code, spread = run(capsys, talking, *base, "--mouth_spread", 1)
    assert code == 0, spread
    assert plain["main_flags"] == [] and spread["main_flags"] == ["--mouth_spread", "1"]
    assert spread["rows"][0]["c0_std_ratio"] != plain["rows"][0]["c0_std_ratio"]
