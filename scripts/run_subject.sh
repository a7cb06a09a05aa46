#!/usr/bin/env bash
# One talking-head video to a trained ER-NeRF and a new-audio video, on the CPU:
#
#   scripts/run_subject.sh VIDEO [NEW_AUDIO]
#
#   1. process    data_utils/process.py -> $WORK/data/<ID>/ (the video is copied to <ID>.mp4)
#   2. head       main.py -> $WORK/trial_<ID>/ (MSE stage)
#   3. lips       --finetune_lips --patch_size 32 in the same workspace; skipped with a notice
#                 when the AlexNet LPIPS weights (alexnet-owt-7be5be79.pth) are neither in the
#                 torch hub cache nor downloadable (offline)
#   4. torso      --torso --head_ckpt trial_<ID>/checkpoints/ngp.pth -> $WORK/trial_<ID>_torso/
#   5. test       scripts/evaluate.py on the head and on the torso workspace: scores the test
#                 split that each training stage rendered at its end (results/metrics.json,
#                 report.md, strip; the nearest-frame floor and the sync scores)
#   6. new audio  --test --test_train --torso --aud NEW_AUDIO --smooth_path
#                 (default NEW_AUDIO: the subject's own data/<ID>/aud.wav)
# <ID> is the video's file name without extension. Settings come from the preset
# (nerf_triplane/presets.py: `python -m nerf_triplane.presets $PRESET --stage head` prints them).
#
# Environment: PRESET (cpu | paper | tiny; default cpu), WORK (root folder; default workspace),
# SIZE (side of the training frames, process.py --size; default 512),
# PYTHON (default .venv/bin/python), OMP_NUM_THREADS (default 1: steadier on a shared machine),
# ONLY (one stage: process | head | lips | torso | test | new_audio; default all, in order;
# scripts/run_many.py runs the stages one by one through it).
# Resumable: a finished stage leaves $WORK/data/<ID>/stage_process.done or
# $WORK/trial_<ID>*/stage_<name>.done and is skipped when
# rerun; an interrupted training resumes from its last checkpoint; process.py skips the
# steps whose outputs exist. Delete a .done file to redo that stage. Each step's wall time is
# appended to $WORK/stage_times.tsv (subject, step, seconds).
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: $0 VIDEO [NEW_AUDIO]   (env PRESET=cpu|paper|tiny, WORK=folder, SIZE=512)" >&2
  exit 2
fi
VIDEO="$(realpath "$1")"
NEW_AUDIO="${2:+$(realpath "$2")}"
[ -f "$VIDEO" ] || { echo "error: video $1 not found" >&2; exit 2; }
if [ -n "$NEW_AUDIO" ] && [ ! -f "$NEW_AUDIO" ]; then echo "error: audio $2 not found" >&2; exit 2; fi

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
PRESET="${PRESET:-cpu}"
SIZE="${SIZE:-512}"  # the training frames' side (process.py --size)
WORK="$(mkdir -p "${WORK:-workspace}" && realpath "${WORK:-workspace}")"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
cd "$ROOT"

ID="$(basename "${VIDEO%.*}")"
DATA="$WORK/data/$ID"
HEAD="$WORK/trial_$ID"
TORSO="$WORK/trial_${ID}_torso"
flags() { "$PY" -m nerf_triplane.presets "$PRESET" --stage "$1"; }
# Validates the preset name before any work starts; the other stages' flags are read when needed.
HEAD_FLAGS=$(flags head)
log() { echo "[run_subject] $*"; }
case "${ONLY:-}" in
  ""|process|head|lips|torso|test|new_audio) ;;
  *) echo "error: ONLY=$ONLY is not a stage: use process, head, lips, torso, test or new_audio" >&2; exit 2 ;;
esac
wanted() { [ -z "${ONLY:-}" ] || [ "$ONLY" = "$1" ]; }
# timed NAME command...: run a command and append its wall time to $WORK/stage_times.tsv.
timed() {
  local name="$1" t0=$SECONDS
  shift
  "$@"
  printf '%s\t%s\t%d\n' "$ID" "$name" $((SECONDS - t0)) >> "$WORK/stage_times.tsv"
  log "$name took $((SECONDS - t0)) s"
}
# stage WORKSPACE NAME LABEL command...: run a command once, marking WORKSPACE/stage_NAME.done.
stage() {
  local ws="$1" name="$2" label="$3"
  shift 3
  if [ -f "$ws/stage_$name.done" ]; then
    log "$label: done before, skipped"
    return
  fi
  log "$label -> $ws"
  timed "$name" "$@"
  touch "$ws/stage_$name.done"
}
train() { "$PY" main.py "$DATA" "$@"; }

log "subject $ID, preset $PRESET, work folder $WORK"
mkdir -p "$DATA" "$HEAD" "$TORSO"
if [ ! -f "$DATA/$ID.mp4" ]; then
  cp "$VIDEO" "$DATA/$ID.mp4"
fi

if wanted process; then
  stage "$DATA" process "1/6 process" "$PY" data_utils/process.py "$DATA/$ID.mp4" --size "$SIZE"
fi

# shellcheck disable=SC2086  # the preset flags are a word list
if wanted head; then
  stage "$HEAD" head "2/6 head ($HEAD_FLAGS)" train --workspace "$HEAD" $HEAD_FLAGS
fi
if ! wanted lips; then
  :
elif [ ! -f "$HEAD/stage_lips.done" ] && \
    ! "$PY" -c "import sys; from nerf_triplane.metrics import load_lpips; sys.exit(load_lpips(quiet=True) is None)"; then
  log "3/6 lips: skipped, no AlexNet LPIPS weights (offline and alexnet-owt-7be5be79.pth not in the torch hub cache checkpoints/)"
else
  LIPS_FLAGS=$(flags lips)
  # shellcheck disable=SC2086
  stage "$HEAD" lips "3/6 lips finetune ($LIPS_FLAGS)" train --workspace "$HEAD" $LIPS_FLAGS
fi
# shellcheck disable=SC2086
if wanted torso; then
  TORSO_FLAGS=$(flags torso)
  stage "$TORSO" torso "4/6 torso ($TORSO_FLAGS)" train --workspace "$TORSO" $TORSO_FLAGS \
    --head_ckpt "$HEAD/checkpoints/ngp.pth"
fi
# Each training run ends by rendering the test split; the evaluation scores that render.
if wanted test; then
  stage "$HEAD" test_head "5/6 test metrics, head" "$PY" scripts/evaluate.py "$HEAD" --data "$DATA"
  stage "$TORSO" test "5/6 test metrics, head+torso" "$PY" scripts/evaluate.py "$TORSO" --data "$DATA"
fi

AUDIO="${NEW_AUDIO:-$DATA/aud.wav}"
STEM="$(basename "${AUDIO%.*}")"
if ! wanted new_audio; then
  :
elif [ -f "$TORSO/results/$STEM.mp4" ] && [ "$TORSO/results/$STEM.mp4" -nt "$AUDIO" ]; then
  log "6/6 new audio: $TORSO/results/$STEM.mp4 exists, skipped"
else
  log "6/6 new audio $AUDIO -> $TORSO/results/$STEM.mp4"
  TEST_FLAGS=$(flags test)
  # shellcheck disable=SC2086
  timed new_audio "$PY" main.py "$DATA" --workspace "$TORSO" $TEST_FLAGS --torso --test --test_train \
    --aud "$AUDIO" --smooth_path
fi

log "done: reports $HEAD/results/report.md (head), $TORSO/results/report.md (head+torso), video $TORSO/results/$STEM.mp4; times $WORK/stage_times.tsv"
