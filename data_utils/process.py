"""Turn a talking-head video into an ER-NeRF training folder (offline with the default engines).

    python data_utils/process.py data/<ID>/<ID>.mp4 [--task N] [--asr_model mel] [--force]

Outputs go next to the video (see ERNERF_FACTS.md §5). The ten steps run in order; each is
skipped when its outputs already exist (``--force`` redoes the selected steps) and writes
through temporary names, so a killed run simply re-runs the unfinished step. Per-step wall
times are printed and merged into ``process_log.json``. A video that is not ``--size``² (any
size, aspect or frame rate) is cropped around the head in step 3 (``data_utils/crop.py``,
recorded in ``crop.json``); a ``--size``² video is used as it is. Bad input (missing or
unreadable video, no audio stream, a folder holding another subject's files, missing weights, a
face too small, cut by the frame edge or leaving any fixed crop) ends with a one-line message
and exit code 2.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import resource
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

if __package__ in (None, ""):  # run as a script: make `data_utils` importable as a package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from data_utils.asr_models import record_features  # noqa: E402
from data_utils.atomic import check_writable, remove_stale_temps, save_npy, write_json  # noqa: E402
from data_utils.audio import SAMPLE_RATE, extract_wav, load_audio  # noqa: E402
from data_utils.audio_features import engine_for, extract_features, feature_file_for  # noqa: E402
from data_utils.crop import CROP_NAME, crop_for_video, ffmpeg_filter, needs_crop  # noqa: E402
from data_utils.frames import extract_frames, probe_video  # noqa: E402
from data_utils.help_groups import group_options  # noqa: E402
from data_utils.input_checks import (check_audio_covers, check_frame_size, grayscale_warning,  # noqa: E402
                                     variable_rate_warning, video_warnings)
from data_utils.quiet import set_verbose  # noqa: E402

FPS = 25
LOG_NAME = "process_log.json"
SUBJECT_NAME = "subject.json"


class PipelineError(Exception):
    """A user-facing failure: printed as one line, exit code 2."""


@dataclass
class Job:
    """One pipeline run: the video, its folder and the CLI options."""

    video: Path
    args: argparse.Namespace
    meta: dict = field(default_factory=dict)
    echo: Callable[[str], None] = print  # where progress lines go (stderr for scripts that print JSON)

    @property
    def root(self) -> Path:
        return self.video.parent

    @property
    def ori(self) -> Path:
        return self.root / "ori_imgs"

    def frame_ids(self) -> list[int]:
        """Indices k of the extracted ``ori_imgs/<k>.jpg``, sorted."""
        if not self.ori.is_dir():
            return []
        return sorted(int(p.stem) for p in self.ori.glob("*.jpg") if p.stem.isdigit())

    def all_frames_have(self, folder: Path, suffix: str) -> bool:
        """Whether every extracted frame k has ``folder/<k><suffix>``."""
        ids = self.frame_ids()
        return bool(ids) and all((folder / f"{k}{suffix}").is_file() for k in ids)


def _step_module(module: str, step: str):
    """Import ``data_utils.<module>`` lazily so a missing module only breaks its own step."""
    try:
        return importlib.import_module(f"data_utils.{module}")
    except ModuleNotFoundError as err:
        if err.name == f"data_utils.{module}":
            raise PipelineError(f"step '{step}' needs data_utils/{module}.py, which is missing") from err
        raise PipelineError(f"step '{step}' cannot import data_utils/{module}.py: missing package "
                            f"'{err.name}' (see requirements.txt)") from err


def _require_frames(job: Job, step: str) -> None:
    if not job.frame_ids():
        raise PipelineError(f"step '{step}' needs the frames in {job.ori}: run --task 3 first")


# ---------------------------------------------------------------------------- steps

def _require_audio(job: Job) -> None:
    if not job.meta["has_audio"]:
        raise PipelineError(f"{job.video} has no audio stream: the audio steps (1, 2) need one")


def _audio(job: Job):
    _require_audio(job)
    extract_wav(job.video, job.root / "aud.wav")


def _features(job: Job):
    _require_audio(job)
    wav = job.root / "aud.wav"
    if not wav.is_file():
        raise PipelineError(f"step 'features' needs {wav}: run --task 1 first")
    audio = load_audio(wav)
    check_audio_covers(len(audio) / SAMPLE_RATE, job.meta, job.video)
    feats = extract_features(audio, engine=job.args.asr_model, fps=FPS, weights=job.args.asr_weights)
    out = job.root / feature_file_for(job.args.asr_model)
    save_npy(out, feats)
    record_features(out, job.args.asr_model)
    return {"shape": list(feats.shape), "file": out.name}


def _frames(job: Job):
    plan = None
    if needs_crop(job.meta["width"], job.meta["height"], job.args.size):
        plan = crop_for_video(job.video, job.meta, job.args.size)
        write_json(job.root / CROP_NAME, plan)
    count = extract_frames(job.video, job.ori, fps=FPS, filters=None if plan is None else ffmpeg_filter(plan))
    if gray := grayscale_warning(sorted(job.ori.glob("*.jpg"))):
        warnings.warn(gray)
    return {"frames": count} if plan is None else {"frames": count, "crop": plan}


def _landmarks(job: Job):
    _require_frames(job, "landmarks")
    return _step_module("landmarks", "landmarks").detect_folder(job.ori, engine=job.args.landmark_engine)


def _parsing(job: Job):
    _require_frames(job, "parsing")
    mod = _step_module("parsing", "parsing")
    return mod.parse_folder(job.ori, job.root / "parsing", engine=job.args.parsing_engine,
                            bisenet_weights=job.args.bisenet_weights)


def _background(job: Job):
    _require_frames(job, "background")
    mod = _step_module("background", "background")
    return mod.extract_background(job.ori, job.root / "parsing", job.root / "bc.jpg")


def _torso(job: Job):
    _require_frames(job, "torso")
    mod = _step_module("torso", "torso")
    return mod.extract_torso_and_gt(job.ori, job.root / "parsing", job.root / "bc.jpg",
                                    job.root / "torso_imgs", job.root / "gt_imgs")


def _blinks(job: Job):
    _require_frames(job, "blinks")
    return _step_module("blinks", "blinks").write_au_csv(job.ori, job.root / "au.csv",
                                                         openface_csv=job.args.openface_csv)


def _tracking(job: Job):
    _require_frames(job, "tracking")
    track_pt = job.root / "track_params.pt"
    if job.args.force or not track_pt.is_file():
        stats = _step_module("tracking", "tracking").track_folder(job.ori, track_pt, focal=job.args.focal,
                                                                  log=job.echo)
    else:
        stats = {"track_params": "kept"}
    written = _step_module("transforms", "tracking").write_transforms(track_pt, job.ori, job.root)
    return {**stats, "transforms": written}


def _expressions(job: Job):
    _require_frames(job, "expressions")
    return _step_module("expressions", "expressions").write_expressions_csv(job.root)


TRACKING_OUTPUTS = ("track_params.pt", "transforms_train.json", "transforms_val.json")


@dataclass(frozen=True)
class Step:
    number: int
    name: str
    run: Callable[[Job], object]
    done: Callable[[Job], bool]


STEPS = (
    Step(1, "audio", _audio, lambda j: (j.root / "aud.wav").is_file()),
    Step(2, "features", _features, lambda j: (j.root / feature_file_for(j.args.asr_model)).is_file()),
    Step(3, "frames", _frames, lambda j: bool(j.frame_ids()) and (
        not needs_crop(j.meta["width"], j.meta["height"], j.args.size) or (j.root / CROP_NAME).is_file())),
    Step(4, "landmarks", _landmarks, lambda j: j.all_frames_have(j.ori, ".lms")),
    Step(5, "parsing", _parsing, lambda j: j.all_frames_have(j.root / "parsing", ".png")),
    Step(6, "background", _background, lambda j: (j.root / "bc.jpg").is_file()),
    Step(7, "torso", _torso, lambda j: j.all_frames_have(j.root / "torso_imgs", ".png")
         and j.all_frames_have(j.root / "gt_imgs", ".jpg")),
    Step(8, "blinks", _blinks, lambda j: (j.root / "au.csv").is_file()),
    Step(9, "tracking", _tracking, lambda j: all((j.root / n).is_file() for n in TRACKING_OUTPUTS)),
    Step(10, "expressions", _expressions, lambda j: (j.root / "expressions.csv").is_file()),
)


# ---------------------------------------------------------------------------- checks

def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def claim_folder(video: Path) -> None:
    """Refuse a folder whose ``subject.json`` names another video; otherwise (re)write the marker."""
    marker = video.parent / SUBJECT_NAME
    mine = {"video": video.name, "size": video.stat().st_size, "sha256": _sha256(video)}
    if marker.is_file():
        try:
            theirs = json.loads(marker.read_text())
        except json.JSONDecodeError as err:
            raise PipelineError(f"{marker} is not valid JSON: delete it to re-claim the folder") from err
        if theirs.get("sha256") != mine["sha256"]:
            raise PipelineError(
                f"{video.parent} holds the files of another subject ({theirs.get('video')!r}, "
                f"{theirs.get('size')} bytes), not of {video.name}: process each video in its own "
                f"folder data/<ID>/<ID>.mp4 (or delete the old outputs and {SUBJECT_NAME})")
        return
    write_json(marker, mine)


def _parse_tasks(task: int) -> list[Step]:
    if task == -1:
        return list(STEPS)
    if not 1 <= task <= len(STEPS):
        raise PipelineError(f"--task must be -1 (all) or 1..{len(STEPS)}, got {task}")
    return [STEPS[task - 1]]


# ---------------------------------------------------------------------------- driver

def _cpu_seconds() -> float:
    """CPU time (user + system, s) of this process and its finished children (worker pools, ffmpeg)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_pipeline(args: argparse.Namespace, echo: Callable[[str], None] = print) -> dict:
    """Run the selected steps on ``args.path`` and return the log entry of this run.

    Returns:
        ``dict(video, steps={name: dict(task, status 'done'|'skipped', seconds, cpu_seconds,
        result)}, total_seconds)``; the same is merged into ``<folder>/process_log.json``.
        ``cpu_seconds`` is the step's CPU time over all its processes: unlike the wall
        ``seconds`` it barely depends on what else the machine runs.

    Raises:
        PipelineError, FileNotFoundError, ValueError, ImportError: user-facing problems.
    """
    video = Path(args.path)
    if not video.is_file():
        raise PipelineError(f"video not found: {video} (expected data/<ID>/<ID>.mp4)")
    engine_for(args.asr_model)
    if args.size < 64 or args.size % 2:
        raise PipelineError(f"--size must be an even number of pixels >= 64, got {args.size}")
    steps = _parse_tasks(args.task)
    job = Job(video=video.resolve(), args=args, meta=probe_video(video), echo=echo)
    check_frame_size(job.meta, job.video)
    for message in [*video_warnings(job.meta, job.video), variable_rate_warning(job.video)]:
        if message:
            warnings.warn(message)
    check_writable(job.root)
    claim_folder(job.video)
    # A killed earlier run may have left temporaries; its finished outputs are complete.
    remove_stale_temps(job.root)

    log_path = job.root / LOG_NAME
    log = json.loads(log_path.read_text()) if log_path.is_file() else {}
    log.update(video=job.video.name, meta=job.meta)
    log.setdefault("steps", {})
    run = {"video": str(job.video), "steps": {}}
    start = time.perf_counter()
    for step in steps:
        label = f"[{step.number}/{len(STEPS)}] {step.name}"
        if not args.force and step.done(job):
            echo(f"{label}: outputs exist, skipped (--force to redo)")
            run["steps"][step.name] = {"task": step.number, "status": "skipped", "seconds": 0.0, "cpu_seconds": 0.0}
            continue
        echo(f"{label} ...")
        t0, cpu0 = time.perf_counter(), _cpu_seconds()
        result = step.run(job)
        seconds = time.perf_counter() - t0
        entry = {"task": step.number, "status": "done", "seconds": round(seconds, 3),
                 "cpu_seconds": round(_cpu_seconds() - cpu0, 3), "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        if isinstance(result, dict):
            entry["result"] = _jsonable(result)
        run["steps"][step.name] = entry
        log["steps"][step.name] = entry
        write_json(log_path, log)
        echo(f"{label}: done in {seconds:.1f} s")
    run["total_seconds"] = round(time.perf_counter() - start, 3)
    return run


def _jsonable(obj):
    try:
        return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
    except (TypeError, ValueError):
        return str(obj)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", help="the video, data/<ID>/<ID>.mp4; outputs go next to it")
    p.add_argument("--task", type=int, default=-1,
                   help="step to run (-1 = all): 1 audio, 2 features, 3 frames, 4 landmarks, "
                        "5 parsing, 6 background, 7 torso/gt, 8 blinks, 9 tracking/transforms, "
                        "10 upper-face expressions")
    p.add_argument("--asr_model", default="mel",
                   help="audio model: mel (offline) | deepspeech | a Hugging Face HuBERT/wav2vec2 id or folder")
    p.add_argument("--asr_weights", default=None,
                   help="DeepSpeech's .pb, or a folder replacing the named model's download")
    p.add_argument("--landmark_engine", default="mediapipe", choices=("mediapipe", "fan"),
                   help="mediapipe (weights in the wheel) | fan (face-alignment, downloads on first use)")
    p.add_argument("--parsing_engine", default="mediapipe", choices=("mediapipe", "bisenet"),
                   help="mediapipe (weights in the wheel) | bisenet (needs --bisenet_weights)")
    p.add_argument("--bisenet_weights", default=None, help="BiSeNet 79999_iter.pth for --parsing_engine bisenet")
    p.add_argument("--openface_csv", default=None, help="OpenFace FeatureExtraction csv to use for au.csv")
    p.add_argument("--size", type=int, default=512,
                   help="training frame side (px): other videos are cropped around the head and resized to it")
    p.add_argument("--focal", type=float, default=None, help="fix the focal length (pixels) instead of fitting it")
    p.add_argument("--force", action="store_true", help="redo the selected steps even if their outputs exist")
    p.add_argument("--verbose", action="store_true", help="show mediapipe/TFLite start-up logs")
    return group_options(p, {"steps": ("task", "force", "verbose"),
                             "models": ("asr_model", "asr_weights", "landmark_engine", "parsing_engine",
                                        "bisenet_weights"),
                             "step settings": ("size", "openface_csv", "focal")})


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"process.py: warning: {' '.join(str(message).split())}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    warnings.showwarning = _print_warning  # one line per warning, like the errors
    set_verbose(args.verbose)
    try:
        run = run_pipeline(args)
    except (PipelineError, OSError, ValueError, ImportError) as err:
        print(f"process.py: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print(f"total {run['total_seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
