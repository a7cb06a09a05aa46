"""Video probing and frame extraction at the pipeline's 25 fps, via imageio-ffmpeg's ffmpeg."""
from __future__ import annotations

import errno
import os
import re
import subprocess
from pathlib import Path

from tqdm import tqdm

from .atomic import atomic_dir
from .audio import ffmpeg_exe

_DURATION = re.compile(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)")
_VIDEO = re.compile(r"Stream #\S+.*?: Video: .*?(\d{2,5})x(\d{2,5})")
_FPS = re.compile(r"([\d.]+)\s*(?:fps|tbr)")


def probe_video(path: str | os.PathLike) -> dict:
    """Read a video's header (no decoding).

    Returns:
        ``dict(fps, width, height, n_frames, duration, has_audio)``; ``n_frames`` is the header
        estimate ``round(duration * fps)``, ``duration`` in seconds.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ffmpeg cannot open it, or it has no video stream / duration.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    # `ffmpeg -i` without an output always exits non-zero; the header goes to stderr regardless.
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)],
                          capture_output=True)
    info = proc.stderr.decode(errors="replace")
    if "Invalid data found" in info or "Error opening input" in info:
        raise ValueError(f"{path} is not a readable video (ffmpeg: invalid data; truncated or not a video file)")
    video_line = next((ln for ln in info.splitlines() if ": Video: " in ln), None)
    duration = _DURATION.search(info)
    if video_line is None or duration is None:
        raise ValueError(f"{path} has no video stream with a known duration")
    size = _VIDEO.search(video_line)
    fps = _FPS.search(video_line)
    if size is None or fps is None:
        raise ValueError(f"cannot read the frame size/rate of {path} from ffmpeg: {video_line.strip()}")
    h, m, s = duration.groups()
    seconds = int(h) * 3600 + int(m) * 60 + float(s)
    rate = float(fps.group(1))
    return dict(fps=rate, width=int(size.group(1)), height=int(size.group(2)),
                n_frames=int(round(seconds * rate)), duration=seconds,
                has_audio=any(": Audio: " in ln for ln in info.splitlines()))


def extract_frames(video: str | os.PathLike, out_dir: str | os.PathLike, fps: float = 25,
                   quality: int = 2, progress: bool = True, filters: str | None = None) -> int:
    """Decode ``video`` at ``fps`` into ``out_dir/<k>.jpg`` (k = 0, 1, ...), replacing the folder atomically.

    Frame ``k`` shows the video at time ``k / fps`` of the container clock (the first frame is
    repeated when the video stream starts late, as french.mp4's does by 80 ms), which keeps frame
    ``k`` aligned with audio feature ``k``. Other rates are resampled by ffmpeg's ``fps`` filter
    (nearest frame in time).

    Args:
        quality: ffmpeg JPEG quality ``-q:v`` (1 best .. 31); 2 keeps files small at no visible cost.
        progress: show a tqdm bar (frames written so far).
        filters: more ffmpeg ``-vf`` filters applied after the resampling (the crop of
            ``data_utils/crop.py``); None leaves the frames as decoded.

    Returns:
        number of frames written

    Raises:
        ValueError: the video cannot be decoded, or decodes to far fewer frames than its header
            announces (truncated file).
    """
    video, out_dir = Path(video), Path(out_dir)
    meta = probe_video(video)
    expected = int(round(meta["duration"] * fps))
    vf = f"fps={fps}:start_time=0" + (f",{filters}" if filters else "")
    with atomic_dir(out_dir) as tmp:
        code, err = _run_with_progress(
            ["-i", str(video), "-vf", vf, "-qmin", "1", "-q:v", str(quality),
             "-start_number", "0", str(tmp / "%d.jpg")], total=expected, desc="frames", progress=progress)
        count = sum(1 for p in tmp.iterdir() if p.suffix == ".jpg")
        if code != 0 and "No space left on device" in err:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # atomic_dir names the folder and the fix
        if code != 0 or count == 0:
            raise ValueError(f"cannot decode frames of {video}: {err or 'no frames'}")
        if count < expected - max(2, int(0.02 * expected)):
            raise ValueError(f"{video} looks truncated: decoded {count} frames, header announces "
                             f"{meta['duration']:.2f} s = {expected} frames at {fps} fps")
    return count


def _run_with_progress(args: list[str], total: int, desc: str, progress: bool) -> tuple[int, str]:
    """Run ffmpeg, advancing a tqdm bar from its ``-progress`` frame counter.

    Returns:
        (exit code, last stderr line)
    """
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-nostats", "-progress", "pipe:1", *args]
    with tqdm(total=total, desc=desc, unit="frame", disable=not progress) as bar, \
            subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        for line in proc.stdout:
            if line.startswith("frame="):
                bar.update(max(0, int(line.split("=", 1)[1]) - bar.n))
        err = proc.stderr.read().strip().splitlines()
        code = proc.wait()
    return code, err[-1] if err else ""
