"""Many subjects at once: each subject's stages as Ray tasks, one table at the end.

    python scripts/run_many.py VIDEOS --work W [--preset tiny] [--address HOST:PORT]
    python scripts/run_many.py VIDEOS --work W --index 3      # one subject, no Ray (Slurm array)
    python scripts/run_many.py VIDEOS --work W --table        # only (re)write the table

``VIDEOS`` is a folder of videos, or a CSV with the columns ``video`` and optionally ``audio``
(new speech for the last stage) and ``preset``; relative paths are relative to the CSV. Each
subject runs ``process -> head -> lips -> torso -> test -> new_audio`` in ``W/<ID>/``, every
stage through ``scripts/run_subject.sh`` (``ONLY=<stage>``), so there is one implementation of
the stages; a rerun skips the stages that are done. Without ``--address`` a local Ray instance is
started (``--num_cpus``); with it, an existing cluster is used. Training stages ask for a GPU
when the cluster has one, a CPU otherwise. A failing subject is reported with its one-line error
and the others go on. The table (``W/run_many.csv``, ``W/run_many.md``) has every subject's
status (done | failed | incomplete), stage times (s, this and earlier runs) and test metrics.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from data_utils.atomic import write_text  # noqa: E402  (the driver's table; Ray tasks use stdlib only)

STAGES = ("process", "head", "lips", "torso", "test", "new_audio")
TRAINING = ("head", "lips", "torso", "new_audio")  # stages that render/train a NeRF
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm")
FAILED_NAME = "failed.txt"  # W/<ID>/failed.txt: the one-line error of the subject's last failed stage
# run_subject.sh's names in stage_times.tsv, per stage of this table.
TIMED = {"process": ("process",), "head": ("head",), "lips": ("lips",), "torso": ("torso",),
         "test": ("test_head", "test"), "new_audio": ("new_audio",)}


def read_subjects(source: Path, preset: str) -> list[dict]:
    """Subjects of a folder of videos or a CSV: ``[{id, video, audio, preset}]`` (paths absolute).

    ValueError naming the file for a missing/unreadable list, a CSV without a ``video`` column or
    two subjects with the same id.
    """
    if source.is_dir():
        rows = [{"video": str(p)} for p in sorted(source.iterdir()) if p.suffix.lower() in VIDEO_SUFFIXES]
        base = source
    elif source.is_file():
        with open(source, newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "video" not in reader.fieldnames:
                raise ValueError(f"{source} has no 'video' column: write a header line video,audio,preset")
            rows = list(reader)
        base = source.parent
    else:
        raise ValueError(f"{source} does not exist: give a folder of videos or a CSV (video,audio,preset)")
    subjects, seen = [], {}
    for row in rows:
        video = (base / row["video"].strip()).resolve()
        audio = (row.get("audio") or "").strip()
        subject = {"id": video.stem, "video": str(video), "audio": str((base / audio).resolve()) if audio else "",
                   "preset": (row.get("preset") or "").strip() or preset}
        if subject["id"] in seen:
            raise ValueError(f"{source}: {seen[subject['id']]} and {video} share the id {subject['id']!r}: rename one")
        seen[subject["id"]] = video
        subjects.append(subject)
    if not subjects:
        raise ValueError(f"{source} lists no videos ({', '.join(VIDEO_SUFFIXES)})")
    return subjects


def error_line(stderr: str, stdout: str = "") -> str:
    """The one-line error a failed stage printed (``error:`` lines first), else its last line."""
    lines = [line.strip() for line in (stderr + "\n" + stdout).splitlines() if line.strip()]
    flagged = [line for line in lines if line.startswith("error:") or ": error:" in line]
    return (flagged or lines or ["failed without a message"])[-1]


def run_stage(subject: dict, stage: str, work: str, previous: dict | None = None) -> dict:
    """Run one stage of one subject through run_subject.sh; never raises.

    Returns:
        ``{"id", "stage", "ok", "ran" (False when it was done before), "seconds", "error"}``; a
        stage after a failed one is not run and carries that failure on.
    """
    if previous is not None and not previous["ok"]:
        return {**previous, "stage": stage, "ran": False, "seconds": 0.0}
    root = Path(work) / subject["id"]
    root.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, ONLY=stage, PRESET=subject["preset"], WORK=str(root), SIZE=str(subject.get("size", 512)))
    cmd = ["bash", str(ROOT / "scripts" / "run_subject.sh"), subject["video"]]
    if subject["audio"]:
        cmd.append(subject["audio"])
    start = time.perf_counter()
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    seconds = round(time.perf_counter() - start, 1)
    failed = root / FAILED_NAME
    if run.returncode != 0:
        error = f"{stage}: {error_line(run.stderr, run.stdout)}"
        tmp = failed.with_name(f".{FAILED_NAME}.partial")
        tmp.write_text(error + "\n")
        os.replace(tmp, failed)  # for the table of a later --table or --index run
        return {"id": subject["id"], "stage": stage, "ok": False, "ran": True, "seconds": seconds, "error": error}
    if failed.is_file() and failed.read_text().startswith(f"{stage}:"):
        failed.unlink()
    ran = " took " in run.stdout  # run_subject.sh logs "<name> took N s" for stages it runs
    return {"id": subject["id"], "stage": stage, "ok": True, "ran": ran, "seconds": seconds, "error": ""}


def run_with_ray(subjects: list[dict], work: Path, address: str | None, num_cpus: int | None) -> list[dict]:
    """All subjects' stages as Ray tasks (each subject's in order); the results of every stage."""
    import ray

    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        # "local": a new instance of our own, never another job's cluster found on this machine.
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    try:
        gpus = ray.cluster_resources().get("GPU", 0) > 0
        task = ray.remote(run_stage)
        refs = []
        for subject in subjects:
            previous = None
            for stage in STAGES:
                needs = {"num_gpus": 1, "num_cpus": 1} if gpus and stage in TRAINING else {"num_cpus": 1}
                previous = task.options(**needs, name=f"{subject['id']}:{stage}").remote(
                    subject, stage, str(work), previous)
                refs.append(previous)
        return ray.get(refs)
    finally:
        ray.shutdown()


def run_one(subject: dict, work: Path) -> list[dict]:
    """One subject's stages in order, in this process (no Ray)."""
    results, previous = [], None
    for stage in STAGES:
        previous = run_stage(subject, stage, str(work), previous)
        results.append(previous)
    return results


# ---------------------------------------------------------------------------- table

def _metrics(workspace: Path) -> dict:
    path = workspace / "results" / "metrics.json"
    if not path.is_file():
        return {}
    m = json.loads(path.read_text())
    return {"psnr": m.get("psnr"), "lmd": m.get("lmd")}


def subject_row(subject: dict, work: Path) -> dict:
    """A table row from the subject's folder: stage seconds (summed over runs), metrics, status."""
    root = work / subject["id"]
    failure = (root / FAILED_NAME).read_text().strip() if (root / FAILED_NAME).is_file() else ""
    seconds: dict[str, float] = {}
    times = root / "stage_times.tsv"
    if times.is_file():
        for line in times.read_text().splitlines():
            _, name, value = line.split("\t")
            seconds[name] = seconds.get(name, 0) + int(value)
    # The last stage's output (run_subject.sh: the new-audio video, default audio data/<ID>/aud.wav).
    stem = Path(subject["audio"]).stem if subject["audio"] else "aud"
    finished = (root / f"trial_{subject['id']}_torso" / "results" / f"{stem}.mp4").is_file()
    row = {"subject": subject["id"], "status": "failed" if failure else "done" if finished else "incomplete",
           "error": failure}
    for stage in STAGES:
        spent = [seconds[n] for n in TIMED[stage] if n in seconds]
        row[f"{stage}_s"] = sum(spent) if spent else None
    head, torso = _metrics(root / f"trial_{subject['id']}"), _metrics(root / f"trial_{subject['id']}_torso")
    row.update(head_psnr=head.get("psnr"), head_lmd=head.get("lmd"), torso_psnr=torso.get("psnr"),
               torso_lmd=torso.get("lmd"))
    return row


def _cell(value) -> str:
    if value is None:
        return ""
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def write_table(rows: list[dict], work: Path) -> tuple[Path, Path]:
    """``W/run_many.csv`` and ``W/run_many.md`` (atomically); returns their paths."""
    columns = list(rows[0])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows({k: _cell(v) for k, v in row.items()} for row in rows)
    md = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    md += ["| " + " | ".join(_cell(row[c]).replace("|", "/") for c in columns) + " |" for row in rows]
    paths = work / "run_many.csv", work / "run_many.md"
    write_text(paths[0], buffer.getvalue())
    write_text(paths[1], "\n".join(md) + "\n")
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("videos", help="folder of videos, or CSV with columns video[,audio][,preset]")
    parser.add_argument("--work", required=True, help="work folder: W/<ID>/ per subject, the table in W/")
    parser.add_argument("--preset", default="cpu", help="preset of subjects whose CSV row names none")
    parser.add_argument("--size", type=int, default=512, help="side of the training frames (process.py --size)")
    parser.add_argument("--address", default=None, help="Ray cluster to join (default: start a local one)")
    parser.add_argument("--num_cpus", type=int, default=None, help="CPUs of the local Ray instance (default: all)")
    parser.add_argument("--index", type=int, default=None,
                        help="run only subject INDEX (0-based), without Ray: one Slurm array task")
    parser.add_argument("--table", action="store_true", help="only write the table from the work folder")
    args = parser.parse_args(argv)
    work = Path(args.work).resolve()
    try:
        from nerf_triplane.presets import PRESETS

        subjects = [{**s, "size": args.size} for s in read_subjects(Path(args.videos), args.preset)]
        unknown = sorted({s["preset"] for s in subjects} - set(PRESETS))
        if unknown:
            raise ValueError(f"unknown preset {', '.join(unknown)} in {args.videos}: use {', '.join(PRESETS)}")
        if args.index is not None and not 0 <= args.index < len(subjects):
            raise ValueError(f"--index {args.index}: {args.videos} lists {len(subjects)} subjects (0..{len(subjects) - 1})")
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    work.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    if args.index is not None:
        subjects = [subjects[args.index]]
        results = run_one(subjects[0], work)
    elif not args.table:
        results = run_with_ray(subjects, work, args.address, args.num_cpus)
    failures = {r["id"]: r["error"] for r in results if not r["ok"]}
    for r in results:
        if r["ran"]:
            print(f"[run_many] {r['id']} {r['stage']}: {'done' if r['ok'] else 'FAILED'} in {r['seconds']} s")
    for sid, err in failures.items():
        print(f"[run_many] {sid} failed: {err}", file=sys.stderr)
    if args.index is None:
        csv_path, md_path = write_table([subject_row(s, work) for s in subjects], work)
        print(md_path.read_text(), end="")
        print(f"[run_many] table: {csv_path}, {md_path}")
    ran = sum(r["ran"] for r in results)
    print(f"[run_many] {ran} stages run, {len(failures)} of {len(subjects)} subjects failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
