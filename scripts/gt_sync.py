"""Audio-lip sync of a subject's own video (no model): over all its frames and over windows.
Prints JSON on stdout.

    python scripts/gt_sync.py DATA [--window 115] [--step 1]

The score is the evaluation's energy sync (:func:`nerf_triplane.sync.sync_score`: correlation
of the inner-lip opening with the audio energy around each frame, lags -10..10 frames) for the
GT video, with the mouth opening taken from the data pipeline's landmarks
(``ori_imgs/<img_id>.lms``, the frames of both ``transforms_*.json`` in ``img_id`` order) and the
audio from ``aud.wav``. The evaluation of a render detects the landmarks on the GT frames
again instead, so its ``sync_gt`` on a window can differ slightly from this one.

Output: ``all`` (the score over every frame: ``corr_at_0``, ``best_lag``, ``best_corr``,
``frames``) and ``windows``: the same over every run of ``--window`` consecutive frames
starting every ``--step`` frames: their ``count`` and the ``min``, ``median`` and ``max`` of
``corr_at_0``, and ``last`` (the score of the final window: the reference's held-out tail when
``--window`` is its size). Bad input ends with one ``error:`` line and exit code 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SUMMARY = ("corr_at_0", "best_lag", "best_corr", "frames")


def gt_sync(data, window: int = 115, step: int = 1) -> dict:
    """Sync score of the GT video of ``data`` over all frames and over windows (module docstring).

    Args:
        data: processed training folder (``aud.wav``, ``ori_imgs/*.lms``, ``transforms_*.json``).
        window: frames per window.
        step: frames between window starts.
    Returns:
        ``frames``, ``all`` {corr_at_0, best_lag, best_corr, frames}, ``windows`` {size, step,
        count, min, median, max (of corr_at_0 over the windows where it is defined), last}.
    """
    from data_utils.audio import load_audio
    from nerf_triplane.baseline import split_frames
    from nerf_triplane.provider import read_lms
    from nerf_triplane.sync import audio_envelope, mouth_opening, sync_score

    data = Path(data)
    if window < 1 or step < 1:
        raise ValueError(f"--window and --step must be positive, got {window} and {step}")
    frames = sorted(split_frames(data, "train") + split_frames(data, "val"), key=lambda f: f["img_id"])
    if window > len(frames):
        raise ValueError(f"--window {window} is longer than the video's {len(frames)} frames")
    wav = data / "aud.wav"
    if not wav.is_file():
        raise FileNotFoundError(f"{wav} not found: run data_utils/process.py --task 1 on {data}")
    opening = mouth_opening(np.stack([read_lms(data / "ori_imgs" / f"{f['img_id']}.lms") for f in frames]))
    envelope = audio_envelope(load_audio(wav), 16000, frame_ids=[f["aud_id"] for f in frames])

    def summary(sl: slice) -> dict:
        score = sync_score(opening[sl], envelope[sl])
        return {k: score[k] for k in SUMMARY}

    scores = [summary(slice(s, s + window)) for s in range(0, len(frames) - window + 1, step)]
    at_0 = np.array([s["corr_at_0"] for s in scores if s["corr_at_0"] is not None])
    stats = {"min": float(at_0.min()), "median": float(np.median(at_0)), "max": float(at_0.max())} if at_0.size \
        else {"min": None, "median": None, "max": None}
    return {"data": str(data), "frames": len(frames), "all": summary(slice(None)),
            "windows": {"size": window, "step": step, "count": len(scores), **stats,
                        "last": summary(slice(len(frames) - window, None))}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="processed training folder")
    parser.add_argument("--window", type=int, default=115,
                        help="frames per window (default: french.mp4's held-out tail)")
    parser.add_argument("--step", type=int, default=1, help="frames between window starts")
    args = parser.parse_args(argv)
    from nerf_triplane.json_output import print_result

    return print_result(lambda: gt_sync(args.data, args.window, args.step))


if __name__ == "__main__":
    sys.exit(main())
