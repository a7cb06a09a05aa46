"""Time the whole data pipeline on one video and print per-step seconds as JSON.

    python scripts/bench_process.py /work/shared/data/french.mp4 [--workdir DIR] [--out bench.json]

The video is copied to ``<workdir>/<stem>/<stem>.mp4`` and every step runs with ``--force``
(a temporary workdir is deleted afterwards). ``realtime_factor`` is processing seconds per
second of video; ``ms_per_frame`` is over the 25 fps frames. ``steps_cpu_s`` / ``total_cpu_s``
are CPU seconds over all processes of each step: on a shared machine they stay put while the
wall times follow the other load. Parsing and torso run on two worker processes, so with two
idle cores their wall time is below their CPU time.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from data_utils import process  # noqa: E402
from data_utils.atomic import write_json  # noqa: E402
from data_utils.frames import probe_video  # noqa: E402


def bench(video: Path, workdir: Path, extra: list[str]) -> dict:
    """Run all steps on a copy of ``video`` inside ``workdir``; return the timing summary."""
    subject = workdir / video.stem / f"{video.stem}{video.suffix}"
    subject.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(video, subject)
    args = process.get_parser().parse_args([str(subject), "--force", *extra])
    run = process.run_pipeline(args, echo=lambda line: print(line, file=sys.stderr))
    meta = probe_video(video)
    n_frames = len(list((subject.parent / "ori_imgs").glob("*.jpg")))
    total = run["total_seconds"]
    return {
        "video": str(video),
        "duration_s": meta["duration"],
        "source_fps": meta["fps"],
        "frames_25fps": n_frames,
        "steps_s": {name: step["seconds"] for name, step in run["steps"].items()},
        "total_s": total,
        "steps_cpu_s": {name: step["cpu_seconds"] for name, step in run["steps"].items()},
        "total_cpu_s": round(sum(step["cpu_seconds"] for step in run["steps"].values()), 3),
        "realtime_factor": round(total / meta["duration"], 3),
        "ms_per_frame": round(1000 * total / max(n_frames, 1), 1),
        "options": extra,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("video", type=Path)
    p.add_argument("--workdir", type=Path, default=None, help="keep the processed folder here")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON to this file")
    args, extra = p.parse_known_args(argv)
    if not args.video.is_file():
        print(f"bench_process.py: error: video not found: {args.video}", file=sys.stderr)
        return 2
    tmp = None if args.workdir else tempfile.mkdtemp(prefix="bench_process_")
    try:
        summary = bench(args.video.resolve(), args.workdir or Path(tmp), extra)
    except (process.PipelineError, FileNotFoundError, ValueError, ImportError) as err:
        print(f"bench_process.py: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(summary, indent=2))
    if args.out:
        write_json(args.out, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
