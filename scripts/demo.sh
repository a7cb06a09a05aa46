#!/usr/bin/env bash
# The whole pipeline on the embedded synthetic subject, on the CPU, with no user data:
#   1. environment (venv + requirements, reused when present)
#   2. synthetic training folder (data_utils/synthetic.py) with its own speech-like audio
#   3. head training; it ends by rendering and scoring the held-out frames
#   4. lip finetuning (--finetune_lips --patch_size 32), only when the AlexNet LPIPS weights
#      are available (torch hub cache, downloaded on first use); offline and not cached, one
#      line says it is skipped
#   5. torso training from the head checkpoint (--torso --head_ckpt) in its own workspace,
#      ending with the held-out frames rendered head + torso
#   6. the head + torso model driven by new audio: DEMO_AUD (a wav/mp3/mp4, or features .npy);
#      default: a different synthetic utterance than the one the subject was trained on
# Every stage resumes from its last checkpoint when rerun, and a finished one is not repeated.
# Settings (environment): DEMO_DATA, DEMO_WORKSPACE, DEMO_ITERS, DEMO_LIPS_ITERS,
# DEMO_TORSO_ITERS, DEMO_FRAMES, DEMO_SIZE, DEMO_AUD, DEMO_LPIPS_WEIGHTS.
# Measured on 2 shared CPU cores (busy with a concurrent test run): 7 min 20 s from scratch;
# held-out PSNR 32.5 dB head (GT torso under it), 31.4 dB head + learned torso.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
PY=.venv/bin/python

DATA="${DEMO_DATA:-data/synthetic}"
WS="${DEMO_WORKSPACE:-workspace/demo}"
WS_TORSO="${WS}_torso"
ITERS="${DEMO_ITERS:-2000}"
LIPS_ITERS="${DEMO_LIPS_ITERS:-500}"
TORSO_ITERS="${DEMO_TORSO_ITERS:-1000}"
FRAMES="${DEMO_FRAMES:-250}"
SIZE="${DEMO_SIZE:-128}"
# Small-image CPU config: 2048 rays per step, 64^3 occupancy grid, reference losses/schedule.
# The reference's EMA step of 1000 leaves a 2000-step run's ngp.pth (the torso's head) mostly
# untrained weights; every 10 steps the average covers the last few hundred steps instead.
TRAIN_FLAGS=(-O --num_rays 2048 --grid_size 64 --eval_interval 1000 --ema_interval 10)
# These small batches are many small tensor ops. Measured per step (2048 rays): two threads
# are 1.5x faster than one on an idle 2-core machine but 2-4x slower on a busy one, so the
# default is one thread, which keeps the demo's time predictable. Export it to override.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

if [ ! -f "$DATA/transforms_val.json" ]; then
  echo "[demo] writing the synthetic subject to $DATA ($FRAMES frames, ${SIZE}x${SIZE})"
  $PY data_utils/synthetic.py "$DATA" --frames "$FRAMES" --size "$SIZE" --seed 0
fi
mkdir -p "$WS"
AUD="${DEMO_AUD:-$WS/other_speech.wav}"
if [ -z "${DEMO_AUD:-}" ] && [ ! -f "$AUD" ]; then
  # A different utterance (other seed) than the one the subject was trained on.
  $PY -c "import sys; from data_utils.synthetic import make_speech_like_audio; from data_utils.audio import write_wav; write_wav(sys.argv[1], make_speech_like_audio(4.0, seed=7))" "$AUD"
fi
if [ ! -f "$AUD" ]; then
  echo "[demo] DEMO_AUD=$AUD does not exist: give a .wav/.mp3/.mp4 or a features .npy" >&2
  exit 2
fi

echo "[demo] head training ($ITERS iterations; rerun to resume if interrupted)"
$PY main.py "$DATA" --workspace "$WS" --iters "$ITERS" "${TRAIN_FLAGS[@]}"

LPIPS_FLAGS=()
if [ -n "${DEMO_LPIPS_WEIGHTS:-}" ]; then
  LPIPS_FLAGS=(--lpips_weights "$DEMO_LPIPS_WEIGHTS")
fi
if $PY -c "import sys; from nerf_triplane.metrics import load_lpips; sys.exit(load_lpips(sys.argv[1] or None, quiet=True) is None)" "${DEMO_LPIPS_WEIGHTS:-}" >/dev/null 2>&1; then
  echo "[demo] lip finetuning ($LIPS_ITERS more iterations, LPIPS on lips rects and 32x32 patches)"
  $PY main.py "$DATA" --workspace "$WS" --iters "$((ITERS + LIPS_ITERS))" --finetune_lips --patch_size 32 \
    "${TRAIN_FLAGS[@]}" "${LPIPS_FLAGS[@]}"
else
  HUB=$($PY -c "import torch; print(torch.hub.get_dir() + '/checkpoints')")
  echo "[demo] lip finetuning skipped: it needs the AlexNet LPIPS weights alexnet-owt-7be5be79.pth, not in $HUB and not downloadable (offline?); or DEMO_LPIPS_WEIGHTS=PATH"
fi

echo "[demo] torso training from $WS/checkpoints/ngp.pth ($TORSO_ITERS iterations, head frozen)"
$PY main.py "$DATA" --workspace "$WS_TORSO" --torso --head_ckpt "$WS/checkpoints/ngp.pth" \
  --iters "$TORSO_ITERS" "${TRAIN_FLAGS[@]}"

echo "[demo] driving the head + torso model with new audio ($AUD)"
$PY main.py "$DATA" --workspace "$WS_TORSO" "${TRAIN_FLAGS[@]}" --torso --test --test_train --aud "$AUD"

echo
echo "[demo] results:"
ls -1 "$WS/results"/*.mp4 "$WS_TORSO/results"/*.mp4
for w in "$WS" "$WS_TORSO"; do
  $PY -c "import json, sys; m = json.load(open(sys.argv[1] + '/results/metrics.json')); r = lambda v, f: 'n/a' if v is None else format(v, f); print(f\"[demo] {sys.argv[1]}: held-out PSNR {r(m['psnr'], '.2f')} dB, SSIM {r(m['ssim'], '.4f')}, LPIPS {r(m['lpips'], '.4f')}, LMD {r(m['lmd'], '.2f')} px\")" "$w"
done
NAME=$(basename "$AUD"); NAME="${NAME%.*}"
echo "[demo] new-audio video: $WS_TORSO/results/${NAME%_feats}.mp4"
