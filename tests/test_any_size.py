"""Any video in, the whole frame out: the head crop of ``data_utils/crop.py`` (through
``process.py``) and the paste-back of ``nerf_triplane/paste.py`` (``main.py --test --full_frame``),
on short cuts of the real french.mp4 scaled and padded into other sizes, aspects and rates."""
import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from data_utils import process
from data_utils.audio import ffmpeg_exe
from data_utils.crop import CropError, needs_crop, plan_crop
from nerf_triplane.paste import blend_weights, composite, source_schedule
from nerf_triplane.video import probe_video
from tests.conftest import error_line, shared_file, single_thread

SIZE = 128  # training side of the test folders: renders stay cheap
# name: (filter graph from french.mp4, seconds, (width, height), fps)
CLIPS = {
    "wide": ("color=c=0x4a7a3a:s=1280x720:r=25[bg];[0:v]scale=640:640[f];[bg][f]overlay=420:40:shortest=1",
             2.0, (1280, 720), 25),
    "portrait": ("color=c=0x30406a:s=1080x1920:r=30[bg];[0:v]scale=1080:1080[f];[bg][f]overlay=0:420:shortest=1",
                 1.2, (1080, 1920), 30),
    # Narrower than the crop: the box reaches past both sides and repeats the edges.
    "narrow60": ("color=c=0x7a3a4a:s=300x400:r=60[bg];[0:v]scale=400:400[f];[bg][f]overlay=-70:0:shortest=1",
                 1.2, (300, 400), 60),
}


def make_clip(dst: Path, seconds: float, graph: str | None = None, fps: float | None = None) -> Path:
    """``seconds`` of french.mp4 from 1 s in (its video starts late), through ``graph``, with audio."""
    args = [ffmpeg_exe(), "-v", "error", "-y", "-ss", "1", "-t", str(seconds), "-i", str(shared_file("french.mp4"))]
    if graph:
        args += ["-filter_complex", graph]
    if fps:
        args += ["-r", str(fps)]
    dst.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([*args, "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(dst)], check=True)
    return dst


def run_process(capsys, video: Path, *extra) -> tuple[int, str]:
    code = process.main([str(video), *map(str, extra)])
    return code, capsys.readouterr().err


def tiny(folder: Path, workspace: Path, *extra) -> list[str]:
    return [str(folder), "--workspace", str(workspace), "--preset", "tiny", "--device", "cpu",
            "--eval_interval", "100", *map(str, extra)]


@pytest.fixture(scope="module", params=sorted(CLIPS))
def full_frame_run(request, tmp_path_factory):
    """A clip processed at ``SIZE``, a tiny head trained on it, and its test render pasted back."""
    import main as cli

    name = request.param
    graph, seconds, _, _ = CLIPS[name]
    root = tmp_path_factory.mktemp(name)
    video = make_clip(root / name / f"{name}.mp4", seconds, graph)
    with single_thread():
        assert process.main([str(video), "--size", str(SIZE)]) == 0
        ws = root / "ws"
        assert cli.main(tiny(video.parent, ws, "--iters", 10)) == 0
        assert cli.main(tiny(video.parent, ws, "--test", "--full_frame")) == 0
    return name, video, ws


def test_square_25fps_video_is_left_as_it_is(capsys, tmp_path):
    video = make_clip(tmp_path / "sq" / "sq.mp4", 1.0, fps=25)
    assert probe_video(video)["width"] == 512 and not needs_crop(512, 512, 512)
    code, err = run_process(capsys, video, "--task", 3)
    assert code == 0, err
    assert not (video.parent / "crop.json").exists()
    # The frames step is the one it always was: byte for byte what plain extraction writes.
    from data_utils.frames import extract_frames

    extract_frames(video, tmp_path / "plain", fps=25, progress=False)
    ours = sorted((video.parent / "ori_imgs").glob("*.jpg"))
    assert len(ours) >= 25 and {p.name for p in ours} == {p.name for p in (tmp_path / "plain").glob("*.jpg")}
    for path in ours:
        assert hashlib.sha256(path.read_bytes()).digest() == \
            hashlib.sha256((tmp_path / "plain" / path.name).read_bytes()).digest()


def test_crop_process_train_and_full_frame(full_frame_run):
    name, video, ws = full_frame_run
    _, _, (width, height), fps = CLIPS[name]
    crop = json.loads((video.parent / "crop.json").read_text())
    assert crop["source"]["width"] == width and crop["source"]["height"] == height
    assert crop["source"]["fps"] == fps and crop["size"] == SIZE
    x0, y0, side = crop["box"]
    assert crop["scale"] == pytest.approx(SIZE / side)
    pad = crop["padding"]
    assert pad == {"left": max(0, -x0), "top": max(0, -y0), "right": max(0, x0 + side - width),
                   "bottom": max(0, y0 + side - height)}
    assert any(pad.values()) == (name == "narrow60")
    # The head is inside the crop: the training frames' landmarks sit in the upper middle.
    lms = np.stack([np.loadtxt(p) for p in sorted((video.parent / "ori_imgs").glob("*.lms"))])
    eyes = lms[:, 36:48].mean(axis=1).mean(axis=0) / SIZE
    assert 0.3 < eyes[0] < 0.7 and 0.25 < eyes[1] < 0.55, eyes

    results = ws / "results"
    report = json.loads(next(results.glob("*_full.json")).read_text())
    info = probe_video(report["video"])
    n_render = len(json.loads((results / f"{Path(report['video']).stem[:-5]}_frames" / "index.json").read_text())["frames"])
    assert (info["width"], info["height"], info["fps"]) == (width, height, fps)
    assert info["has_audio"] and info["frames"] == report["frames"] == round(n_render * fps / 25)
    assert np.isfinite(report["seam_psnr"]) and report["seam_pixels"] > 0


def test_full_frame_keeps_the_source_outside_the_crop(full_frame_run):
    """The lossless still of the pasted video equals its source frame wherever the crop is not."""
    import cv2
    import imageio_ffmpeg

    name, video, ws = full_frame_run
    results = ws / "results"
    report = json.loads(next(results.glob("*_full.json")).read_text())
    stem = Path(report["video"]).stem[:-5]
    index = json.loads((results / f"{stem}_frames" / "index.json").read_text())["frames"]
    crop = json.loads((video.parent / "crop.json").read_text())
    j = report["frames"] // 2
    _, s = source_schedule([f["img_id"] for f in index], crop["source"]["fps"], 10 ** 6)[j]
    reader = imageio_ffmpeg.read_frames(str(video))
    w, h = next(reader)["size"]
    source = next(np.frombuffer(b, np.uint8).reshape(h, w, 3) for i, b in enumerate(reader) if i == s)
    still = cv2.cvtColor(cv2.imread(report["still"]), cv2.COLOR_BGR2RGB)
    _, region = blend_weights(crop["box"], w, h)
    outside = np.ones((h, w), bool)
    outside[region] = False
    assert outside.any()
    assert np.array_equal(still[outside], source[outside])
    assert not np.array_equal(still[region], source[region])  # the render is in


def test_blend_is_exact_outside_and_feathered_inside():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (90, 160, 3), dtype=np.uint8)
    render = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    box = [40, 10, 64]
    alpha, region = blend_weights(box, 160, 90)
    out = composite(frame, render, box, alpha, region)
    keep = np.ones((90, 160), bool)
    keep[region] = False
    assert np.array_equal(out[keep], frame[keep])
    assert alpha[32, 32] == 1 and 0 < alpha[0, 32] < 0.05 and 0 < alpha[32, 0] < 0.05
    import cv2

    big = cv2.resize(render, (64, 64), interpolation=cv2.INTER_CUBIC)
    assert np.array_equal(out[10 + 32, 40 + 32], big[32, 32])
    # A box past the frame's left and top edges: no ramp there, the render reaches the edge.
    alpha, region = blend_weights([-8, -4, 64], 160, 90)
    assert region == (slice(0, 60), slice(0, 56))
    assert alpha[0, 0] == 1 and alpha[30, -1] < 0.05 and alpha[-1, 20] < 0.05


def test_source_schedule_follows_the_pose_track_at_the_source_rate():
    # 60 fps source, renders of frames 10, 11, 12 then back 12, 11 (a ping-pong turn).
    sched = source_schedule([10, 11, 12, 12, 11], 60, 10 ** 6)
    assert len(sched) == 12
    assert [k for k, _ in sched] == [0, 0, 0, 1, 1, 2, 2, 2, 3, 3, 4, 4]
    # The source runs on in time between renders, and backwards after the turn.
    assert [s for _, s in sched] == [24, 25, 26, 27, 28, 29, 30, 31, 28, 27, 26, 25]
    assert max(s for _, s in source_schedule([0, 1, 2], 30, 2)) == 1  # clamped to the source


def test_head_leaving_the_crop_names_the_frames():
    lms = _face()
    times = np.arange(50) / 5
    walk = np.stack([lms + [400 if 20 <= i <= 35 else 0, 0] for i in range(50)])
    with pytest.raises(CropError, match=r"leaves the .* box .* in 16 of 50 sampled frames \(frames 100-179 "):
        plan_crop(times, walk, 1280, 720, 512, "walk.mp4", 25, 10.0)
    plan = plan_crop(times, np.stack([lms] * 50), 1280, 720, 512, "still.mp4", 25, 10.0)
    assert plan["scan"]["head_outside"] == 0 and plan["box"][2] % 2 == 0


def _face() -> np.ndarray:
    """68 landmarks of the frontal mean face with a 200 px jaw, eyes centred at (640, 300)  # [68, 2]."""
    from data_utils.face_template import face68_template

    face = face68_template()[:, :2] * [1.0, -1.0]  # model y points up, image rows down
    face *= 200.0 / np.linalg.norm(face[16] - face[0])
    return face - face[36:48].mean(axis=0) + [640.0, 300.0]


def test_bad_sources_are_one_clear_line(capsys, tmp_path):
    small = make_clip(tmp_path / "small" / "small.mp4", 1.0, "[0:v]scale=140:140")
    code, err = run_process(capsys, small, "--size", 63)
    assert code == 2 and err.count("\n") == 1 and "--size must be an even number" in err
    code, err = run_process(capsys, small, "--task", 3)
    assert code == 2 and err.count("\n") == 1 and "small.mp4: the face is only" in err and "film closer" in err
    edge = make_clip(tmp_path / "edge" / "edge.mp4", 1.0,
                     "color=c=0x4a7a3a:s=1280x720:r=25[bg];[0:v]scale=640:640[f];[bg][f]overlay=320:-300:shortest=1")
    code, err = run_process(capsys, edge, "--task", 3)
    assert code == 2 and "edge.mp4: the face is cut by the frame edge in" in err and "frames 0-24" in err
    for folder in (small.parent, edge.parent):
        assert not (folder / "ori_imgs").exists() and not (folder / "crop.json").exists()


def test_full_frame_needs_a_cropped_folder(subject, tmp_path, capsys):
    import main as cli

    assert cli.main(tiny(subject, tmp_path / "ws", "--test", "--full_frame")) == 2
    assert "crop.json" in error_line(capsys)
    assert cli.main(tiny(subject, tmp_path / "ws", "--iters", 1, "--full_frame")) == 2
    assert "use it with --test" in error_line(capsys)


def test_short_audio_does_not_cut_the_video(tmp_path):
    """The pasted video's audio (the training audio under the renders) can be shorter than its
    frames at the source rate; every frame must still be written."""
    from scipy.io import wavfile

    from nerf_triplane.video import write_video

    wavfile.write(tmp_path / "short.wav", 16000, np.full(1600, 1000, np.int16))  # 0.1 s
    frames = [np.full((32, 32, 3), 8 * i, np.uint8) for i in range(30)]  # 0.5 s at 60 fps
    info = probe_video(write_video(tmp_path / "v.mp4", frames, 60, tmp_path / "short.wav"))
    assert info["frames"] == 30 and info["has_audio"]
