"""Test-only pause points, so a test can SIGKILL a run at a known place.

``ERNERF_PAUSE_AT=PATTERN`` (or ``PATTERN#N``) makes the N-th (default first) call of
:func:`pause_point` whose label matches ``PATTERN`` (``fnmatch``) print ``[pause] LABEL`` to
stderr and sleep until the process is killed. Labels:

- ``write:<folder name>/<file name>``: an atomic write whose temporary file (or folder) is
  complete but not yet synced or renamed into place (``data_utils.atomic``: every step output
  of ``process.py``, checkpoints, videos, rendered frames), e.g. ``write:checkpoints/ngp.pth``;
- ``step:<global step>``: right after that optimiser step (``nerf_triplane.trainer``).

Unset (every normal run) the call is one dictionary lookup.
"""
from __future__ import annotations

import fnmatch
import os
import sys
import time

PAUSE_ENV = "ERNERF_PAUSE_AT"
_matches = 0


def pause_point(label: str) -> None:
    """Stop here forever if ``ERNERF_PAUSE_AT`` selects ``label`` (see the module doc)."""
    global _matches
    spec = os.environ.get(PAUSE_ENV)
    if not spec:
        return
    pattern, _, nth = spec.partition("#")
    if not fnmatch.fnmatchcase(label, pattern):
        return
    _matches += 1
    if _matches != int(nth or 1):
        return
    sys.stderr.write(f"[pause] {label}\n")
    sys.stderr.flush()
    while True:
        time.sleep(3600)
