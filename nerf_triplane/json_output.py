"""The ending the measuring scripts share: their result as JSON on stdout, or one error line."""
from __future__ import annotations

import contextlib
import json
import sys
from typing import Callable


def print_result(compute: Callable[[], object], progress_to_stderr: bool = False) -> int:
    """Call ``compute()`` and print what it returns as indented JSON on stdout.

    Args:
        compute: builds the result (a JSON-serialisable object).
        progress_to_stderr: send what ``compute`` prints itself (loaders' progress lines) to
            stderr, so stdout carries the JSON only.
    Returns:
        The exit code: 0, or 2 after one ``error: ...`` line on stderr when ``compute`` raises
        FileNotFoundError or ValueError (bad input: a missing file, a wrong option value).
    """
    try:
        with contextlib.redirect_stdout(sys.stderr) if progress_to_stderr else contextlib.nullcontext():
            result = compute()
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0
