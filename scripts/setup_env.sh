#!/usr/bin/env bash
# Create or reuse the project's virtual environment and install the requirements.
# The venv lives outside the checkout (ERNERF_VENV, default ~/.cache/ernerf/venv) so
# fresh clones reuse it; .venv in the checkout links to it. Prints nothing on reuse
# unless something had to be installed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${ERNERF_VENV:-$HOME/.cache/ernerf/venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  mkdir -p "$(dirname "$VENV")"
  "$PY" -m venv "$VENV"
fi
ln -sfn "$VENV" .venv
stamp="$VENV/.ernerf-requirements.sha256"
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing requirements into $VENV (the first time copies torch, a few minutes)"
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
  "$VENV/bin/python" -m pip install -q -r requirements.txt
  # mediapipe pulls opencv-contrib-python and face-alignment pulls opencv-python; their
  # files overlap, so reinstall the headless build last and check cv2 still imports.
  "$VENV/bin/python" -m pip install -q --force-reinstall --no-deps opencv-python-headless
  "$VENV/bin/python" -c "import cv2, torch, mediapipe; print('[setup] cv2', cv2.__version__, 'torch', torch.__version__)"
  echo "$want" > "$stamp"
fi
# The live viewer's browser test drives Debian's Chromium through chromedriver (it skips without them).
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[setup] installing chromium and chromium-driver (browser test of the live viewer)"
    { DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } >/dev/null 2>&1 || \
      echo "[setup] apt-get could not install chromium: the live viewer's browser test will skip"
  else
    echo "[setup] no chromium/chromedriver: the live viewer's browser test skips (as root: apt-get install -y chromium chromium-driver)"
  fi
fi
