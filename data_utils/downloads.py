"""Bounded first-use downloads of model weights through the libraries' own loaders, and the
offline switch.

torch hub, torchvision and face-alignment fetch weights with ``urllib`` and no timeout; on a
machine whose network silently drops packets that can hang for minutes. ``network_timeout``
bounds each connect/read for the duration of a load, so an offline machine gets its one-line
error within seconds, while a connected one downloads as the library always does.

``offline()``: ``ERNERF_OFFLINE``, ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` set to a true
value forbids every download (Hugging Face models, AlexNet, FAN): only cached weights are used.
The test suite sets ``ERNERF_OFFLINE=1`` so that no test can download anything.
"""
from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from typing import Iterator

DOWNLOAD_TIMEOUT_S = 10.0  # per socket operation, not for the whole download
OFFLINE_VARS = ("ERNERF_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def offline() -> bool:
    """Whether downloads are forbidden (one of ``OFFLINE_VARS`` is 1/true/yes/on)."""
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on") for k in OFFLINE_VARS)


@contextmanager
def network_timeout(seconds: float = DOWNLOAD_TIMEOUT_S) -> Iterator[None]:
    """Default socket timeout of ``seconds`` inside the block (the previous one restored after)."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def failure_reason(err: BaseException) -> str:
    """A download error as a few words for a one-line message (``urlopen error [Errno -2] …``)."""
    reason = getattr(err, "reason", None) or err
    text = " ".join(str(reason).split()) or type(err).__name__
    return text[:160]
