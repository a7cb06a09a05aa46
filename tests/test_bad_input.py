"""The bad-input matrix (README "What bad input gets"): every row gets one ``error:`` line and
exit code 2 (or, where the run can go on, one warning line and exit 0), and no file that
existed before is changed (the data folder and the workspace are hashed before and after).

Rows about faces and real footage use a cut of May_5s.mp4 and skip without ../shared/data.
"""
import errno
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import wavfile

import main as cli
from data_utils import process
from data_utils.frames import probe_video as probe_header
from nerf_triplane import checkpoint
from nerf_triplane.video import ffmpeg_exe
from tests.conftest import HEAD_ITERS, shared_file, tiny_args
from tests.integrity import changed_files, folder_digest

pytestmark = pytest.mark.usefixtures("one_thread")


def outcome(capsys) -> tuple[list[str], list[str]]:
    """(error lines, warning lines) printed to stderr; no traceback allowed."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = err.splitlines()
    errors = [ln for ln in lines if ln.startswith(("error:", "process.py: error:"))]
    warns = [ln for ln in lines if ln.startswith(("warning:", "process.py: warning:"))]
    return errors, warns


def assert_refused(code, capsys, *fragments) -> str:
    errors, _ = outcome(capsys)
    assert code == 2 and len(errors) == 1, errors
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def assert_warned(code, capsys, *fragments) -> str:
    errors, warns = outcome(capsys)
    assert code == 0 and errors == [] and len(warns) == 1, (code, errors, warns)
    for fragment in fragments:
        assert fragment in warns[0], warns[0]
    return warns[0]


class Watch:
    """Digests of folders before a run; :meth:`check` asserts the run changed none of their
    files (``strict``: and added none)."""

    def __init__(self, *folders):
        self.folders = folders
        self.before = [folder_digest(f) for f in folders]

    def check(self, strict: bool = False) -> None:
        for folder, before in zip(self.folders, self.before):
            after = folder_digest(folder)
            assert changed_files(before, after) == [], folder
            if strict:
                assert set(after) <= set(before) | {"log_ngp.txt"}, (folder, set(after) - set(before))


# ---------------------------------------------------------------------------- main.py: data folders

@pytest.mark.parametrize("missing,fragment", [
    ("transforms_train.json", "transforms_train.json"),
    ("aud.npy", "aud.npy not found"),
    ("au.csv", "au.csv not found"),
    ("bc.jpg", "bc.jpg not found"),
    ("torso_imgs", "torso_imgs/0.png not found"),
    ("gt_imgs", "gt_imgs/0.jpg not found"),
])
def test_data_folder_without_a_required_file(subject, tmp_path, capsys, missing, fragment):
    data = tmp_path / "data"
    shutil.copytree(subject, data)
    target = data / missing
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    watch = Watch(data)
    assert_refused(cli.main(tiny_args(data, tmp_path / "ws", "--iters", 1)), capsys, fragment, str(data))
    watch.check(strict=True)


def test_features_of_another_asr_model_than_the_checkpoint(subject, trained_head, tmp_path, capsys):
    data, ws = tmp_path / "data", tmp_path / "ws"
    shutil.copytree(subject, data)
    shutil.copytree(trained_head, ws)
    n = np.load(subject / "aud.npy").shape[0]
    np.save(data / "aud_ds.npy", np.random.default_rng(0).random((n, 16, 29), dtype=np.float32))
    watch = Watch(data, ws)
    code = cli.main(tiny_args(data, ws, "--test", "--asr_model", "deepspeech"))
    # The workspace's remembered model flags (model_flags.json) catch it before the checkpoint.
    assert_refused(code, capsys, "--asr_model deepspeech contradicts", "--asr_model mel")
    watch.check(strict=True)


def test_head_checkpoint_of_another_subject(subject, trained_head, tmp_path, capsys):
    from data_utils.synthetic import make_synthetic_subject

    other = tmp_path / "other"
    make_synthetic_subject(other, n_frames=22, size=64, seed=1)
    assert cli.main(tiny_args(other, tmp_path / "other_ws", "--iters", 2, "--eval_interval", 100)) == 0
    capsys.readouterr()
    head = tmp_path / "other_ws" / "checkpoints" / "ngp.pth"
    ws = tmp_path / "torso_ws"
    watch = Watch(subject, tmp_path / "other_ws")
    code = cli.main(tiny_args(subject, ws, "--torso", "--head_ckpt", head, "--iters", 1))
    assert_refused(code, capsys, str(head), "trained on 20 frames", "same folder")
    watch.check(strict=True)


# ---------------------------------------------------------------------------- main.py: --aud

@pytest.fixture
def render_ws(trained_head, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(trained_head, ws)
    return ws


def test_aud_empty_file(subject, render_ws, tmp_path, capsys):
    (tmp_path / "empty.wav").write_bytes(b"")
    watch = Watch(subject, render_ws)
    code = cli.main(tiny_args(subject, render_ws, "--test", "--test_train", "--aud", tmp_path / "empty.wav"))
    assert_refused(code, capsys, "empty.wav is empty", "speech recording")
    watch.check(strict=True)


def test_aud_unsupported_file(subject, render_ws, tmp_path, capsys):
    (tmp_path / "speech.txt").write_text("hello")
    watch = Watch(subject, render_ws)
    code = cli.main(tiny_args(subject, render_ws, "--test", "--test_train", "--aud", tmp_path / "speech.txt"))
    assert_refused(code, capsys, "speech.txt", "expected features .npy or audio")
    watch.check(strict=True)


def test_aud_silent_recording_warns_and_renders(subject, render_ws, tmp_path, capsys):
    wavfile.write(tmp_path / "silent.wav", 16000, np.zeros(8000, np.int16))  # 0.5 s: 12 frames
    # A render that goes on updates the workspace's report (results/metrics.json), as any render does.
    watch = Watch(subject, render_ws / "checkpoints")
    code = cli.main(tiny_args(subject, render_ws, "--test", "--test_train", "--aud", tmp_path / "silent.wav"))
    assert_warned(code, capsys, "silent.wav is silent", "mouth will stay closed")
    watch.check()
    assert (render_ws / "results" / "silent.mp4").is_file()


# ---------------------------------------------------------------------------- main.py: options, checkpoints

@pytest.mark.parametrize("extra,fragment", [
    (["--test"], "no checkpoint"),
    (["--iters", 0], "--iters 0: must be >= 1"),
    (["--iters", 5, "--num_rays", -5], "--num_rays -5: must be >= 1"),
    (["--iters", 5, "--preset", "huge"], "unknown preset 'huge'"),
])
def test_meaningless_options(subject, tmp_path, capsys, extra, fragment):
    ws = tmp_path / "ws"
    watch = Watch(subject)
    assert_refused(cli.main(tiny_args(subject, ws, *extra)), capsys, fragment)
    watch.check(strict=True)
    assert not (ws / "checkpoints").exists()


@pytest.mark.parametrize("kind,fragment", [
    ("empty", "is empty"), ("truncated", "truncated"), ("not a checkpoint", "not a PyTorch checkpoint"),
    ("newer format", "newer than this code reads"),
])
def test_ckpt_that_cannot_be_used(subject, trained_head, tmp_path, capsys, kind, fragment):
    good = trained_head / "checkpoints" / "ngp.pth"
    bad = tmp_path / "bad.pth"
    if kind == "empty":
        bad.write_bytes(b"")
    elif kind == "truncated":
        bad.write_bytes(good.read_bytes()[:100_000])
    elif kind == "not a checkpoint":
        bad.write_text("<html>404</html>")
    else:
        newer = torch.load(good, weights_only=True)
        torch.save({**newer, "format": checkpoint.FORMAT_VERSION + 1}, bad)
    ws = tmp_path / "ws"
    shutil.copytree(trained_head, ws)
    watch = Watch(subject, ws)
    assert_refused(cli.main(tiny_args(subject, ws, "--test", "--ckpt", bad)), capsys, str(bad), fragment)
    watch.check(strict=True)


def test_workspace_that_cannot_be_written(subject, capsys):
    # sysfs refuses new folders even to root: a real unwritable place, checked before any work.
    code = cli.main(tiny_args(subject, "/sys/ernerf_workspace", "--iters", 1))
    assert_refused(code, capsys, "cannot write /sys/ernerf_workspace", "make the folder writable")


def test_disk_full_while_saving_a_checkpoint_keeps_the_previous_one(subject, trained_head, tmp_path, capsys,
                                                                     monkeypatch):
    ws = tmp_path / "ws"
    shutil.copytree(trained_head, ws)
    real_save = torch.save

    def save_until_full(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        if getattr(f, "name", "").endswith(".pth") and "ngp_ep0002" in f.name:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", save_until_full)
    watch = Watch(subject, ws)
    code = cli.main(tiny_args(subject, ws, "--iters", 2 * HEAD_ITERS, "--eval_interval", 100))
    assert_refused(code, capsys, "cannot write", "ngp_ep0002.pth", "No space left", "free disk space")
    watch.check()
    assert sorted(p.name for p in (ws / "checkpoints").iterdir()) == ["ngp.pth", "ngp_ep0001.pth"]


@pytest.fixture
def small_disk(tmp_path):
    """A real tmpfs of 16 MiB at ``tmp_path / "disk"`` (needs root: skipped otherwise)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def test_real_full_disk_during_training_and_video(subject, small_disk, tmp_path, capsys):
    """On a real 16 MiB disk: the second epoch's checkpoint (9.6 MB) does not fit next to the
    first one and ngp.pth; then a video does not fit either."""
    ws = small_disk / "ws"
    code = cli.main(tiny_args(subject, ws, "--iters", 2 * HEAD_ITERS, "--eval_interval", 1))
    line = assert_refused(code, capsys, "cannot write", "ngp_ep0002.pth", "No space left", "free disk space")
    assert "Errno" not in line
    assert sorted(p.name for p in (ws / "checkpoints").iterdir()) == ["ngp.pth", "ngp_ep0001.pth"]
    assert checkpoint.read_checkpoint(ws / "checkpoints" / "ngp_ep0001.pth")["global_step"] == HEAD_ITERS

    from nerf_triplane.video import VideoWriter

    (small_disk / "fill").write_bytes(b"\0" * (16 * 2 ** 20 - sum(
        p.stat().st_size for p in small_disk.rglob("*") if p.is_file()) - 50_000))
    noise = np.random.default_rng(0).integers(0, 256, (40, 256, 256, 3), dtype=np.uint8)
    with pytest.raises(OSError, match="cannot write .*noise.mp4: No space left"):
        with VideoWriter(small_disk / "noise.mp4") as video:
            for frame in noise:
                video.append(frame)
    assert not [p for p in small_disk.iterdir() if "noise" in p.name]


# ---------------------------------------------------------------------------- process.py

def ffmpeg(*args) -> None:
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", *map(str, args)], check=True)


ENCODE = ["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac"]


@pytest.fixture(scope="module")
def may(tmp_path_factory):
    """A 1.2 s cut of May_5s.mp4 (one face, speech), 512x512 at 25 fps."""
    out = tmp_path_factory.mktemp("may_src") / "may.mp4"
    ffmpeg("-i", shared_file("May_5s.mp4"), "-t", 1.2, *ENCODE, out)
    return out


def video_in_own_folder(tmp_path, name) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    return folder / f"{name}.mp4"


def run_process(video, *extra) -> tuple[int, Watch]:
    """``process.py VIDEO EXTRA...`` in this process, with a :class:`Watch` of the video's folder
    taken just before."""
    watch = Watch(video.parent)
    return process.main([str(video), *map(str, extra)]), watch


def test_no_face_in_any_frame(tmp_path, capsys):
    video = video_in_own_folder(tmp_path, "noface")
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=128x128:rate=25:d=1.2", "-f", "lavfi", "-i", "sine=d=1.2",
           *ENCODE, "-shortest", video)
    code, watch = run_process(video)
    # 128x128 is cropped to the head first (data_utils/crop.py): its scan finds no face.
    assert_refused(code, capsys, "no face found in", "cut the video")
    watch.check()
    assert not list((video.parent / "ori_imgs").glob("*.lms"))


def test_faces_missing_in_more_than_a_tenth_of_the_frames(may, tmp_path, capsys):
    video = video_in_own_folder(tmp_path, "gaps")
    ffmpeg("-i", may, "-f", "lavfi", "-i", "color=black:size=512x512:rate=25:d=0.4", "-f", "lavfi", "-i",
           "anullsrc=r=44100:cl=mono:d=0.4", "-filter_complex", "[0:v][0:a][1:v][2:a]concat=n=2:v=1:a=1[v][a]",
           "-map", "[v]", "-map", "[a]", *ENCODE, video)
    code, watch = run_process(video)
    assert_refused(code, capsys, "no face found in 10/40 frames (frames 30-39)")
    watch.check()


def test_several_faces_warn_and_use_the_largest(may, tmp_path, capsys):
    video = video_in_own_folder(tmp_path, "two")
    # A second, smaller copy of the speaker beside her: the largest face is never in doubt, so
    # the head crop of step 3 (a 768x512 source) follows the same one in every frame.
    ffmpeg("-i", may, "-filter_complex", "[0:v]scale=256:256,pad=256:512[s];[0:v][s]hstack[v]", "-map", "[v]",
           "-map", "0:a", *ENCODE, video)
    code, watch = run_process(video, "--task", "3")
    assert_warned(code, capsys, "2 faces in the image; using the largest")
    watch.check()
    x0, _, side = json.loads((video.parent / "crop.json").read_text())["box"]
    assert x0 + side / 2 < 512  # centred on the large speaker, the left 512 columns
    # The crop holds the large face only, so the landmark step sees one face per frame.
    code, watch = run_process(video, "--task", "4")
    assert code == 0 and outcome(capsys) == ([], [])



def test_several_faces_in_a_512_video_warn_at_the_landmarks(may, tmp_path, capsys):
    video = video_in_own_folder(tmp_path, "two512")
    ffmpeg("-i", may, "-filter_complex", "[0:v][0:v]hstack,scale=512:512[v]", "-map", "[v]", "-map", "0:a",
           *ENCODE, video)
    assert process.main([str(video), "--task", "3"]) == 0  # 512²: no crop
    capsys.readouterr()
    code, watch = run_process(video, "--task", "4")
    assert_warned(code, capsys, "30 frames show several faces; used the largest")
    watch.check()


def test_no_audio_stream(may, tmp_path, capsys):
    video = video_in_own_folder(tmp_path, "mute")
    ffmpeg("-i", may, "-an", "-c:v", "copy", video)
    code, watch = run_process(video)
    assert_refused(code, capsys, "has no audio stream")
    watch.check()


@pytest.mark.parametrize("kind", ["corrupt", "truncated", "zero-length"])
def test_unreadable_video(may, tmp_path, capsys, kind):
    video = video_in_own_folder(tmp_path, "bad")
    data = may.read_bytes()
    video.write_bytes({"corrupt": bytes(reversed(data)), "truncated": data[:20_000], "zero-length": b""}[kind])
    code, watch = run_process(video)
    assert_refused(code, capsys, str(video))
    watch.check(strict=True)


def test_video_under_one_second_warns(may, tmp_path, capsys):
    video = video_in_own_folder(tmp_path, "short")
    ffmpeg("-i", may, "-t", 0.6, *ENCODE, video)
    code, watch = run_process(video, "--task", "1")
    assert_warned(code, capsys, "is only 0.60 s long")
    watch.check()


def test_variable_frame_rate_warns_and_resamples(may, tmp_path, capsys):
    parts = tmp_path / "parts"
    parts.mkdir()
    source = shared_file("May_5s.mp4")
    ffmpeg("-i", source, "-t", 1, "-an", *ENCODE[:4], parts / "a.mp4")
    ffmpeg("-ss", 1, "-i", source, "-t", 1, "-r", 10, "-an", *ENCODE[:4], parts / "b.mp4")  # 25 fps, then 10
    (parts / "list.txt").write_text("file a.mp4\nfile b.mp4\n")
    ffmpeg("-f", "concat", "-i", parts / "list.txt", "-c", "copy", parts / "joined.mp4")
    video = video_in_own_folder(tmp_path, "vfr")
    ffmpeg("-i", parts / "joined.mp4", "-i", source, "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac",
           "-shortest", video)
    code, watch = run_process(video, "--task", "3")
    assert_warned(code, capsys, "variable frame rate", "resampled to a constant 25 fps")
    watch.check()
    seconds = probe_header(video)["duration"]
    assert abs(len(list((video.parent / "ori_imgs").glob("*.jpg"))) - 25 * seconds) <= 1  # constant 25 fps


def test_audio_much_shorter_than_the_video(may, tmp_path, capsys):
    video = video_in_own_folder(tmp_path, "cut")
    ffmpeg("-i", may, "-filter_complex", "[0:a]atrim=0:0.3[a]", "-map", "0:v", "-map", "[a]", *ENCODE, video)
    code, watch = run_process(video)
    assert_refused(code, capsys, "its audio lasts 0.3", "video 1.20 s", "cut the video to the audio")
    watch.check()
    assert not (video.parent / "aud.npy").exists()


def test_odd_and_non_square_resolution(may, tmp_path, capsys):
    video = video_in_own_folder(tmp_path, "odd")
    ffmpeg("-i", may, "-vf", "scale=721:1281", "-pix_fmt", "yuv444p", *ENCODE, video)
    code, watch = run_process(video)
    assert_refused(code, capsys, "is 721x1281", "crop=720:1280")
    watch.check(strict=True)


def test_grayscale_video_warns(may, tmp_path, capsys):
    video = video_in_own_folder(tmp_path, "gray")
    ffmpeg("-i", may, "-vf", "hue=s=0", *ENCODE, video)
    code, watch = run_process(video, "--task", "3")
    assert_warned(code, capsys, "grayscale")
    watch.check()


def test_data_folder_that_cannot_be_written(may, tmp_path, capsys, monkeypatch):
    video = video_in_own_folder(tmp_path, "ro")
    shutil.copy(may, video)
    real = tempfile.NamedTemporaryFile

    def read_only(*args, dir=None, **kwargs):  # the folder behaves as on a read-only mount
        if dir is not None and str(dir) == str(video.parent):
            raise OSError(errno.EROFS, "Read-only file system")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", read_only)
    code, watch = run_process(video)
    assert_refused(code, capsys, f"cannot write {video.parent}", "Read-only", "make the folder writable")
    watch.check(strict=True)


def test_real_full_disk_while_extracting_frames(may, small_disk, capsys):
    video = small_disk / "may" / "may.mp4"
    video.parent.mkdir()
    shutil.copy(may, video)
    free = 16 * 2 ** 20 - may.stat().st_size - 500_000  # 30 frames of 512x512 need ~1.5 MB
    (small_disk / "fill").write_bytes(b"\0" * free)
    code, watch = run_process(video, "--task", "3")
    assert_refused(code, capsys, f"cannot write {video.parent / 'ori_imgs'}", "No space left", "free disk space")
    watch.check()
    assert sorted(p.name for p in video.parent.iterdir()) == ["may.mp4", "subject.json"]  # no partial frames


def test_disk_full_inside_a_step_keeps_the_earlier_output(may, tmp_path, capsys, monkeypatch):
    video = video_in_own_folder(tmp_path, "full")
    shutil.copy(may, video)
    assert process.main([str(video), "--task", "1"]) == 0
    assert process.main([str(video), "--task", "2"]) == 0
    capsys.readouterr()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", full)
    code, watch = run_process(video, "--task", "2", "--force")
    assert_refused(code, capsys, "cannot write", "aud.npy", "free disk space")
    watch.check(strict=True)
