"""The ending the measuring scripts share: their result as JSON on stdout, or one error line."""
from __future__ import annotations

import contextlib
import json
import sys
from typing import Callable


def print_result(compute: Callable[[], object]) -> int:
    """Call ``compute()`` and print what it returns as indented JSON on stdout.

    Whatever ``compute`` prints itself goes to stderr, so stdout carries the JSON alone: the
    loaders print progress there (torch hub writes its "Downloading: ..." line to stdout).

    Args:
        compute: builds the result (a JSON-serialisable object).
    Returns:
        The exit code: 0, or 2 after one ``error: ...`` line on stderr when ``compute`` raises
        FileNotFoundError or ValueError (bad input: a missing file, a wrong option value).
    """
    try:
        with contextlib.redirect_stdout(sys.stderr):
            result = compute()
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0
