"""scripts/crossval.py: held-out windows, fold folders and the CLI on the tiny synthetic subject."""
import json
import sys
from pathlib import Path

import pytest

from tests.conftest import SUBJECT_FRAMES, single_thread

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))


def test_fold_windows_are_disjoint_and_cover_the_clip():
    import crossval

    windows = crossval.fold_windows(1260, 5)
    assert [len(w) for w in windows] == [114] * 5
    assert windows[0].start == 0 and windows[-1].stop == 1260
    assert all(a.stop <= b.start for a, b in zip(windows, windows[1:]))
    with pytest.raises(ValueError, match="cannot hold out"):
        crossval.fold_windows(10, 5)


def test_make_fold_resplits_and_links(subject, tmp_path):
    import crossval

    fold = crossval.make_fold(subject, tmp_path / "f1", 1, 3)
    train = json.loads((fold / "transforms_train.json").read_text())
    val = json.loads((fold / "transforms_val.json").read_text())
    ids = sorted(int(f["img_id"]) for f in train["frames"] + val["frames"])
    assert ids == list(range(SUBJECT_FRAMES))
    window = crossval.fold_windows(SUBJECT_FRAMES, 3)[1]
    assert [int(f["img_id"]) for f in val["frames"]] == list(window)
    original = json.loads((subject / "transforms_val.json").read_text())
    assert {k: v for k, v in val.items() if k != "frames"} == {k: v for k, v in original.items() if k != "frames"}
    assert (fold / "aud.npy").is_symlink() and (fold / "gt_imgs").resolve() == (subject / "gt_imgs").resolve()
    # The subject's own split is untouched.
    assert len(original["frames"]) == SUBJECT_FRAMES - SUBJECT_FRAMES * 10 // 11


def test_crossval_cli_trains_scores_and_resumes(subject, tmp_path, capsys):
    import crossval

    args = [str(subject), "--root", str(tmp_path), "--folds", "3", "--only", "2", "--preset", "tiny",
            "--num_rays", "512", "--iters", "20"]
    with single_thread():
        assert crossval.main(args) == 0
    table = json.loads(capsys.readouterr().out)
    (row,) = table["rows"]
    assert row["fold"] == 2 and row["frames"] == SUBJECT_FRAMES // 11
    assert row["psnr"] > 10 and row["floor_psnr"] is not None
    assert (tmp_path / "fold2" / "ws" / "results" / "heldout_frames" / "index.json").is_file()
    stamp = (tmp_path / "fold2" / "row.json").stat().st_mtime_ns
    assert crossval.main(args) == 0  # a finished fold is reused, not trained again
    assert (tmp_path / "fold2" / "row.json").stat().st_mtime_ns == stamp
    assert json.loads(capsys.readouterr().out)["rows"] == table["rows"]
    assert crossval.main([*args[:5], "--only", "3"]) == 2


def test_fold_row_reports_both_floors():
    """A fold's row carries the landmark-outline floor and the like-for-like (head) floor."""
    import crossval

    report = {"frames": 114, "metrics": {"psnr": 31.0, "lmd": 2.0, "mouth_corr": 0.5},
              "baseline": {"psnr": 31.4, "lmd": 2.4, "region": "outline"},
              "baseline_head": {"psnr": 29.9, "lmd": 2.5, "region": "head"},
              "sync": {"corr_at_0": 0.3, "corr_pred": 0.5}, "sync_gt": {"corr_at_0": 0.2, "corr_pred": 0.6}}
    row = crossval.fold_row(3, report)
    assert (row["floor_psnr"], row["floor_lmd"]) == (31.4, 2.4)
    assert (row["floor_head_psnr"], row["floor_head_lmd"]) == (29.9, 2.5)
    assert (row["fold"], row["frames"], row["psnr"], row["sync_pred_gt"]) == (3, 114, 31.0, 0.6)
    # Without floors (--no-baseline or no GT) both are unknown.
    bare = crossval.fold_row(0, {**report, "baseline": None, "baseline_head": None})
    assert bare["floor_psnr"] is None and bare["floor_head_psnr"] is None
