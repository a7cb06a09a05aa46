"""Shared fixtures: the real data folder and backend switching."""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


def shared_file(name: str) -> Path:
    """Path of a file in ../shared/data, or skip the test saying why."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"needs the real data file {path} (../shared is absent in this checkout)")
    return path


@pytest.fixture
def use_backend(monkeypatch):
    """Force one backend for the duration of a test: ``use_backend("torch")``."""

    def _set(name: str, pkg: str | None = None):
        key = f"ERNERF_BACKEND_{pkg.upper()}" if pkg else "ERNERF_BACKEND"
        monkeypatch.setenv(key, name)

    return _set


@pytest.fixture(autouse=True)
def _seed():
    import torch

    torch.manual_seed(0)
