#!/usr/bin/env bash
# The project's test command: set up the venv, build the kernels (cached), run pytest.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -k grid`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
PY=.venv/bin/python
# C++ and cuda_emu backends always; the CUDA sources are compiled and linked for sm_80 and sm_90 by
# tests/test_cuda_build.py. Both land in a cache keyed on the sources.
$PY -m ext_common build
set +e
$PY -m pytest -q -ra "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
