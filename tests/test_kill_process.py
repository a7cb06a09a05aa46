"""kill -9 inside each of the 10 steps of ``data_utils/process.py``: the rerun finishes and the
folder equals an uninterrupted run's, byte for byte (``process_log.json``, which records
timings, aside)."""
import shutil

import pytest

from tests.integrity import folder_digest, kill_at, run_script
from tests.test_data_audio import may_clip  # noqa: F401  (session fixture)

pytestmark = [pytest.mark.slow, pytest.mark.shared]

# One pause point per step, inside it: after some of its outputs, before the step is complete.
STEP_KILLS = [
    "write:*/aud.wav",                # 1 audio
    "write:*/aud.npy",                # 2 features
    "write:*/ori_imgs",               # 3 frames (the folder is complete, not yet renamed)
    "write:ori_imgs/*.lms#10",        # 4 landmarks, 10 of 30 frames written
    "write:parsing/*.png#10",         # 5 parsing
    "write:*/bc.jpg",                 # 6 background
    "write:gt_imgs/*.jpg#10",         # 7 torso + GT
    "write:*/au.csv",                 # 8 blinks
    "write:*/track_params.pt",        # 9 tracking
    "write:*/expressions.csv",        # 10 upper-face expressions
]


def fresh_copy(clip, folder):
    video = folder / "may" / "may.mp4"
    video.parent.mkdir(parents=True)
    shutil.copy(clip, video)
    return video


def test_kill_inside_every_step_then_rerun_matches_an_uninterrupted_run(may_clip, tmp_path):  # noqa: F811
    reference = fresh_copy(may_clip, tmp_path / "reference")
    done = run_script(["data_utils/process.py", reference])
    assert done.returncode == 0, done.stderr[-2000:]

    video = fresh_copy(may_clip, tmp_path / "killed")
    for point in STEP_KILLS:
        assert "[pause] write:" in kill_at(["data_utils/process.py", video], point)
    done = run_script(["data_utils/process.py", video])
    assert done.returncode == 0, done.stderr[-2000:]
    assert "10/10] expressions: done" in done.stdout  # the killed step really ran again

    ours = folder_digest(video.parent, skip=("process_log.json",))
    theirs = folder_digest(reference.parent, skip=("process_log.json",))
    assert sorted(ours) == sorted(theirs)  # no temporary left, nothing missing
    assert [name for name in ours if ours[name] != theirs[name]] == []
