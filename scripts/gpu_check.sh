#!/usr/bin/env bash
# The one check to run when a GPU machine is lent (H100/H200 class: its own python3 with torch
# and nvcc, 16 cores, no network). About 6 minutes, at most GPU_CHECK_BUDGET_S (480 s); prints
# one JSON object at the end and writes it (after every phase) to $OUT/gpu_check.json, with the
# phase logs in $OUT/gpu_check_logs/.
#
#   bash scripts/gpu_check.sh             # on the GPU machine; exits 2 at once without CUDA
#   bash scripts/gpu_check.sh --dry-run   # anywhere: every phase in a tiny CPU mode (~1 min)
#
# Phases; each has its own time limit, and a failing phase does not stop the others:
#   build          python3 -m ext_common build --cuda --archs <this GPU's capability>, one
#                  process per kernel package, in parallel
#   data           (during build) the synthetic subject of bench_train and train: 250 frames, 450²
#   pytest         the whole suite, CUDA tests included (pass/fail/skip counts from junit xml);
#                  runs in the background on the upper half of the cores while the phases
#                  below use the lower half (taskset), so that the check fits its budget
#   bench_kernels  scripts/bench_kernels.py --device cuda: torch reference vs CUDA, GPU tensors
#   bench_train    scripts/bench_train.py --device cuda --preset paper at 450²: it/s, render FPS
#   train          main.py SUBJECT --preset paper --iters 100000 on that subject, stopped
#                  after GPU_CHECK_TRAIN_S (120) s by `timeout` (SIGTERM: the trainer saves a
#                  checkpoint); steps and it/s from its log
#   train_test     main.py --test on that checkpoint: held-out PSNR/SSIM/LMD (results/metrics.json)
# Exit status: 0 when every phase is ok, 1 otherwise, 2 for no CUDA (without --dry-run).
#
# Environment: PYTHON (default python3: the GPU machine cannot build the project's venv, it has
# no network), OUT, GPU_CHECK_WORK (scratch folder, default /tmp/gpu_check, replaced),
# GPU_CHECK_BUDGET_S, GPU_CHECK_TRAIN_S. Wheels in .whl/*.whl (pure-Python packages that
# python lacks) are installed with pip --no-index --no-deps into /tmp/site, put on PYTHONPATH.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

DRY=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    *) echo "gpu_check: unknown argument '$arg' (usage: bash scripts/gpu_check.sh [--dry-run])" >&2; exit 2 ;;
  esac
done
PY="${PYTHON:-python3}"

# One line of machine facts (JSON) after the compute capability, or "none" without CUDA.
PROBE=$("$PY" - 2>/dev/null <<'EOF'
import json, os, platform, subprocess
import torch
from ext_common import build
info = {"python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "cpus": os.cpu_count(), "cuda_available": torch.cuda.is_available(), "nvcc": None}
cap = "none"
if info["cuda_available"]:
    cap = "%d.%d" % torch.cuda.get_device_capability()
    props = torch.cuda.get_device_properties(0)
    info.update(gpu=props.name, capability=cap, gpu_memory_gib=round(props.total_memory / 2 ** 30, 1),
                gpus=torch.cuda.device_count())
nvcc = build.nvcc_path()
if nvcc:
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout.strip().splitlines()
    info["nvcc"] = out[-1] if out else nvcc
print(cap, json.dumps(info))
EOF
)
if [ -z "$PROBE" ]; then
  echo "gpu_check: '$PY' cannot import torch and ext_common from $(pwd) (set PYTHON=...)" >&2
  exit 2
fi
CAP=${PROBE%% *}
if [ "$CAP" = none ] && [ "$DRY" = 0 ]; then
  echo "gpu_check: no CUDA device visible to $PY (torch.cuda.is_available() is False): run it on the GPU machine, or pass --dry-run" >&2
  exit 2
fi

WORK="${GPU_CHECK_WORK:-/tmp/gpu_check}"
LOGS="$WORK/logs"
if [ -e "$WORK" ] && [ ! -e "$WORK/.gpu_check" ]; then
  echo "gpu_check: GPU_CHECK_WORK=$WORK exists and is not a folder of an earlier run: give a new path" >&2
  exit 2
fi
rm -rf "$WORK"
mkdir -p "$LOGS"
touch "$WORK/.gpu_check"
echo "${PROBE#* }" >"$WORK/machine.json"
# The dry run's budget allows for compiling the C++ backends from a cold cache (minutes on two
# cores); with a warm one it takes about a minute.
BUDGET_S="${GPU_CHECK_BUDGET_S:-$([ "$DRY" = 1 ] && echo 600 || echo 480)}"
START_S=$SECONDS
DEADLINE=$((SECONDS + BUDGET_S))

if compgen -G ".whl/*.whl" >/dev/null; then
  SITE="${GPU_CHECK_SITE:-/tmp/site}"
  if "$PY" -m pip install --quiet --no-index --no-deps --upgrade --target "$SITE" .whl/*.whl >"$LOGS/wheels.log" 2>&1; then
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "[gpu_check] installing .whl/*.whl failed, see $LOGS/wheels.log" >&2
  fi
fi

if [ "$DRY" = 1 ]; then
  MODE=dry-run DEVICE=cpu
  BUILD_ARGS=()
  SIZE=32 FRAMES=22 PRESET=tiny
  TRAIN_S="${GPU_CHECK_TRAIN_S:-20}"
  # One fast test file stands in for the suite (this script is itself run by the suite).
  PYTEST_ARGS=(tests/test_shencoder.py)
  BENCH_KERNELS_ARGS=(--quick --only shencoder)
  BENCH_TRAIN_ARGS=(--steps 1 --frames 1 --backends cpp)
  LIMIT_BUILD=400 LIMIT_DATA=60 LIMIT_PYTEST=100 LIMIT_BENCH=60 LIMIT_TEST=60
else
  MODE=gpu DEVICE=cuda
  BUILD_ARGS=(--cuda --archs "$CAP")
  SIZE=450 FRAMES=250 PRESET=paper
  TRAIN_S="${GPU_CHECK_TRAIN_S:-120}"
  PYTEST_ARGS=()
  BENCH_KERNELS_ARGS=()
  # CUDA first: a run cut short by its limit keeps the figures that matter most.
  BENCH_TRAIN_ARGS=(--steps 16 --frames 2 --backends "cuda,torch")
  LIMIT_BUILD=240 LIMIT_DATA=150 LIMIT_PYTEST=420 LIMIT_BENCH=120 LIMIT_TEST=90
fi
SUBJECT="$WORK/subject" TRAIN_WS="$WORK/train_ws"
export PY LOGS

# Cores: of those this process may use (a nested run stays inside its caller's), pytest gets
# the upper half, the benchmarks and training the lower half.
read -r MAIN_LIST PYTEST_LIST < <("$PY" -c 'import os
cpus = sorted(os.sched_getaffinity(0))
half = len(cpus) // 2
print(",".join(map(str, cpus[:half])) or "-", ",".join(map(str, cpus[half:])))')
MAIN_CPUS=() PYTEST_CPUS=()
NCPU=$(nproc)
MAIN_THREADS=$NCPU PYTEST_THREADS=$NCPU
if [ "$MAIN_LIST" != - ] && command -v taskset >/dev/null; then
  MAIN_CPUS=(taskset -c "$MAIN_LIST") PYTEST_CPUS=(taskset -c "$PYTEST_LIST")
  MAIN_THREADS=$((NCPU / 2)) PYTEST_THREADS=$((NCPU - NCPU / 2))
fi
echo "${PYTEST_CPUS[2]:-}" >"$WORK/pytest_cpus"

now_ms() { date +%s%3N; }

# phase NAME LIMIT_S [KILL_AFTER_S [SIGNAL]] -- CMD...: run CMD under `timeout` (SIGNAL at the
# limit, default TERM; KILL after KILL_AFTER_S more, default 10), the limit cut to the time
# left; output in $LOGS/NAME.log, "rc milliseconds limit" in $LOGS/NAME.status.
phase() {
  local name=$1 limit=$2 grace=10 signal=TERM
  shift 2
  if [ "$1" != -- ]; then grace=$1; shift; fi
  if [ "$1" != -- ]; then signal=$1; shift; fi
  shift
  local left=$((DEADLINE - SECONDS))
  [ "$limit" -gt "$left" ] && limit=$left
  if [ "$limit" -lt 5 ]; then
    echo "skipped 0 0" >"$LOGS/$name.status"
    echo "[gpu_check] $name: skipped, the ${BUDGET_S} s budget is spent" >&2
    return
  fi
  touch "$LOGS/$name.started"
  echo "[gpu_check] $name (limit $limit s)" >&2
  local t0 rc
  t0=$(now_ms)
  timeout -s "$signal" -k "$grace" "$limit" "$@" >"$LOGS/$name.log" 2>&1
  rc=$?
  echo "$rc $(($(now_ms) - t0)) $limit" >"$LOGS/$name.status"
  echo "[gpu_check] $name: rc $rc in $((($(now_ms) - t0) / 1000)) s" >&2
}

# The kernel packages build in parallel (logs: build_<pkg>.log); the phase fails if any does.
build_packages() {
  local pids=() rc=0 pkg
  for pkg in gridencoder shencoder raymarching; do
    "$PY" -m ext_common build "$@" "$pkg" >"$LOGS/build_$pkg.log" 2>&1 &
    pids+=($!)
  done
  for pkg in "${pids[@]}"; do wait "$pkg" || rc=1; done
  return $rc
}
export -f build_packages

# Assemble the JSON from the phases' status files, logs and outputs; "final" also prints it.
report() {
  "$PY" - "$WORK" "$MODE" "$((SECONDS - START_S))" "$1" "${OUT:-}" <<'EOF'
import json, re, sys
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path

work, mode, elapsed, final, out = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4] == "final", sys.argv[5]
logs = work / "logs"
PHASES = ("build", "data", "pytest", "bench_kernels", "bench_train", "train", "train_test")


def read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def tail(name, n=15):
    """Last lines of a phase's log (the build's: of each package's log), tqdm/ANSI-cleaned."""
    files = sorted(logs.glob("build_*.log")) if name == "build" else [logs / f"{name}.log"]
    out = []
    for f in files:
        try:
            text = f.read_text(errors="replace")
        except OSError:
            continue
        lines = [re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", line.split("\r")[-1]) for line in text.splitlines()]
        out += [line[:300] for line in lines if line.strip()][-max(n // len(files), 3):]
    return out


def build_figures():
    seconds = {}
    for line in tail("build", 100):
        m = re.match(r"(\w+): (\w+) backend ready \(([\d.]+) s", line)
        if m:
            seconds.setdefault(m[1], {})[m[2]] = float(m[3])
    return {"build_seconds": seconds}


def pytest_figures():
    try:
        root = ET.parse(work / "pytest.xml").getroot()
    except (OSError, ET.ParseError):
        return {}
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    count = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    failed, skips = [], {}
    for case in root.iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            failed.append(f"{case.get('classname')}::{case.get('name')}")
        skip = case.find("skipped")
        if skip is not None:
            reason = (skip.get("message") or "")[:120]
            skips[reason] = skips.get(reason, 0) + 1
    cpus = (work / "pytest_cpus").read_text().strip()
    return {"passed": count["tests"] - count["failures"] - count["errors"] - count["skipped"],
            "failed": count["failures"], "errors": count["errors"], "skipped": count["skipped"],
            "failed_tests": failed[:30], "skip_reasons": dict(sorted(skips.items(), key=lambda kv: -kv[1])[:8]),
            "pinned": cpus or None}


def train_figures():
    log = logs / "train_ngp.txt"
    try:
        lines = log.read_text().splitlines()
    except OSError:
        return {"steps": 0}
    stamp = lambda line: datetime.strptime(line[:19], "%Y-%m-%d %H:%M:%S")  # noqa: E731
    start = next((line for line in lines if "[INFO] training" in line), None)
    steps = [(stamp(line), int(m[1])) for line in lines for m in [re.search(r"\bstep (\d+)", line)] if m]
    figures = {"steps": max((s for _, s in steps), default=0)}
    if start is not None and steps:
        seconds = (steps[-1][0] - stamp(start)).total_seconds()
        figures["train_loop_s"] = seconds
        if seconds > 0:
            figures["it_s"] = round(figures["steps"] / seconds, 2)
    return figures


def test_figures():
    m = read_json(work / "train_ws" / "results" / "metrics.json") or {}
    keys = ("frames", "psnr", "ssim", "lpips", "lmd")
    figures = {k: m.get(k) for k in keys if k in m}
    if isinstance(m.get("baseline"), dict):
        figures["nearest_frame_psnr"] = m["baseline"].get("psnr")
    if isinstance(m.get("baseline_head"), dict):
        figures["nearest_frame_head_psnr"] = m["baseline_head"].get("psnr")
    return figures


def phase(name):
    status = logs / f"{name}.status"
    if not status.exists():
        state = "running" if (logs / f"{name}.started").exists() else "not run"
        return {"ok": False, "rc": None, "state": state}
    rc, ms, limit = status.read_text().split()
    if rc == "skipped":
        return {"ok": False, "rc": None, "state": "skipped: time budget spent"}
    entry = {"rc": int(rc), "seconds": round(int(ms) / 1000, 1), "limit_s": int(limit)}
    if name == "build":
        entry.update(build_figures())
    elif name == "pytest":
        entry.update(pytest_figures())
        entry["stopped_by_time_limit"] = entry["rc"] == 124
    elif name in ("bench_kernels", "bench_train"):
        entry["figures"] = read_json(work / f"{name}.json")
    elif name == "train":
        entry.update(train_figures())
        # `timeout` ends the run on purpose: 124 is its normal end.
        entry["stopped_by_time_limit"] = entry["rc"] == 124
    elif name == "train_test":
        entry.update(test_figures())
    ok = {"train": entry["rc"] in (0, 124) and entry.get("steps", 0) > 0,
          "train_test": entry["rc"] == 0 and entry.get("psnr") is not None,
          "pytest": entry["rc"] == 0 and entry.get("passed", 0) > 0}.get(name, entry["rc"] == 0)
    if name in ("bench_kernels", "bench_train"):
        ok = ok and entry["figures"] is not None
    entry = {"ok": bool(ok), **entry}
    if not ok:
        entry["log_tail"] = tail(name)
    return entry


phases = {name: phase(name) for name in PHASES}
summary = {}
kernels = phases["bench_kernels"].get("figures") or {}
for pkg in ("gridencoder", "shencoder", "raymarching"):
    for key, value in (kernels.get(pkg) or {}).items():
        if key.endswith("_over_torch_speedup"):
            summary[f"{pkg}_{key}"] = value
for backend, r in ((phases["bench_train"].get("figures") or {}).get("results") or {}).items():
    summary[f"{backend}_train_it_s"], summary[f"{backend}_infer_fps"] = r.get("train_it_s"), r.get("infer_fps")
for key, phase_name in (("train_steps", "train"), ("train_it_s", "train"), ("heldout_psnr", "train_test")):
    source = {"train_steps": "steps", "train_it_s": "it_s", "heldout_psnr": "psnr"}[key]
    if phases[phase_name].get(source) is not None:
        summary[key] = phases[phase_name][source]
pt = phases["pytest"]
if "passed" in pt:
    summary["pytest"] = f"{pt['passed']} passed, {pt['failed']} failed, {pt['errors']} errors, {pt['skipped']} skipped"
report = {"mode": mode, "ok": all(p["ok"] for p in phases.values()), "seconds": elapsed, "final": final,
          "machine": read_json(work / "machine.json"), "summary": summary, "phases": phases}
text = json.dumps(report, indent=1)
(work / "gpu_check.json").write_text(text + "\n")
if out:
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "gpu_check.json").write_text(text + "\n")
    copy = Path(out) / "gpu_check_logs"
    copy.mkdir(exist_ok=True)
    for f in list(logs.glob("*.log")) + [work / "pytest.xml"]:
        if f.exists():
            data = f.read_bytes()
            (copy / f.name).write_bytes(data[-400_000:])  # the end of a log says why it stopped
if final:
    print(text)
    sys.exit(0 if report["ok"] else 1)
EOF
}

# ---- build, with the subject written meanwhile
phase data "$LIMIT_DATA" -- "$PY" data_utils/synthetic.py "$SUBJECT" --frames "$FRAMES" --size "$SIZE" --seed 0 &
DATA_PID=$!
phase build "$LIMIT_BUILD" -- bash -c 'build_packages "$@"' _ "${BUILD_ARGS[@]}"
report partial
wait "$DATA_PID"
report partial

# ---- pytest in the background; the rest on the other cores. At its limit pytest gets SIGINT,
# on which it stops like on Ctrl-C and still writes the junit xml of the tests it ran.
phase pytest "$LIMIT_PYTEST" 30 INT -- env OMP_NUM_THREADS="$PYTEST_THREADS" "${PYTEST_CPUS[@]}" \
  "$PY" -m pytest -q -ra --junitxml="$WORK/pytest.xml" "${PYTEST_ARGS[@]}" &
PYTEST_PID=$!

export OMP_NUM_THREADS=$MAIN_THREADS
phase bench_kernels "$LIMIT_BENCH" -- "${MAIN_CPUS[@]}" "$PY" scripts/bench_kernels.py --device "$DEVICE" \
  --json "$WORK/bench_kernels.json" "${BENCH_KERNELS_ARGS[@]}"
report partial
phase bench_train "$LIMIT_BENCH" -- "${MAIN_CPUS[@]}" "$PY" scripts/bench_train.py --device "$DEVICE" \
  --preset "$PRESET" --size "$SIZE" --data "$SUBJECT" --json "$WORK/bench_train.json" \
  "${BENCH_TRAIN_ARGS[@]}"
report partial

# Training stops when `timeout` sends SIGTERM; the time left after it is kept for train_test.
TRAIN_LEFT=$((DEADLINE - SECONDS - LIMIT_TEST - 10))
[ "$TRAIN_S" -gt "$TRAIN_LEFT" ] && TRAIN_S=$TRAIN_LEFT
PRELOAD=$([ "$DEVICE" = cuda ] && echo 2 || echo 1)
phase train "$TRAIN_S" 60 -- "${MAIN_CPUS[@]}" "$PY" main.py "$SUBJECT" --workspace "$TRAIN_WS" \
  --preset "$PRESET" -O --iters 100000 --device "$DEVICE" --preload "$PRELOAD"
# train_test appends to the same log: keep the training's own lines for the figures.
cp "$TRAIN_WS/log_ngp.txt" "$LOGS/train_ngp.txt" 2>/dev/null
report partial
phase train_test "$LIMIT_TEST" -- "${MAIN_CPUS[@]}" "$PY" main.py "$SUBJECT" --workspace "$TRAIN_WS" \
  --preset "$PRESET" -O --test --device "$DEVICE"
report partial

wait "$PYTEST_PID"
report final
