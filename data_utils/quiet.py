"""Keep mediapipe's native start-up chatter out of normal runs (``--verbose`` shows it).

MediaPipe's graphs (C++: absl, TFLite) write lines such as "All log messages before
absl::InitializeLog() is called are written to STDERR", "Feedback manager requires a model with
a single signature inference" and "Created TensorFlow Lite XNNPACK delegate for CPU" straight to
file descriptor 2 while a graph starts and runs its first frames; Python's logging cannot
silence them. ``quiet_native_logs`` sends fd 2 to a temporary file for such a call and then
writes back every line that is not known chatter, so real warnings and errors still show.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
from contextlib import contextmanager
from typing import Iterator

VERBOSE_ENV = "ERNERF_VERBOSE"  # "1": show the chatter (set by --verbose; inherited by subprocesses)
CHATTER = re.compile(
    r"All log messages before absl::InitializeLog\(\)"
    r"|Created TensorFlow Lite XNNPACK delegate"
    r"|Feedback manager requires a model with a single signature"
    r"|Using NORM_RECT without IMAGE_DIMENSIONS"
    # absl/glog INFO and WARNING lines logged before absl is initialised carry a zero date.
    r"|^[IW]0000 00:00:"
)


def set_verbose(verbose: bool) -> None:
    """Show (True) or filter (False) the native chatter in this process and its children."""
    os.environ[VERBOSE_ENV] = "1" if verbose else "0"


def is_chatter(line: str) -> bool:
    """Whether a stderr line is known mediapipe/TFLite/absl start-up chatter."""
    return CHATTER.search(line) is not None


@contextmanager
def quiet_native_logs() -> Iterator[None]:
    """Filter the chatter written to fd 2 inside the block (a no-op with ``--verbose``)."""
    if os.environ.get(VERBOSE_ENV) == "1":
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().decode(errors="replace").splitlines(keepends=True)
                    if not is_chatter(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
