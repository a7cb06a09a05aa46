"""Shared helpers of the kernel benchmarks (``scripts/bench_kernels.py``).

Each ``scripts/bench/<pkg>.py`` defines ``run(quick: bool = False, device: str = "cpu") -> dict``
that times forward+backward of the torch reference and of the native backend of ``device``
("cpp" on "cpu", "cuda" on "cuda") on tensors of that device, and reports
``<native>_over_torch_speedup``.
"""
from __future__ import annotations

import contextlib
import os
import statistics
import time
from typing import Callable, Iterator

import torch


@contextlib.contextmanager
def forced_backend(pkg: str, name: str) -> Iterator[None]:
    """Select backend ``name`` for package ``pkg`` inside the block (env override, restored after)."""
    key = f"ERNERF_BACKEND_{pkg.upper()}"
    saved = os.environ.get(key)
    os.environ[key] = name
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = saved


def native_backend(device: str) -> str:
    """The compiled backend that serves tensors on ``device`` ("cpu" or "cuda")."""
    return "cuda" if device == "cuda" else "cpp"


def available_backends(backends, device: str = "cpu") -> list[str]:
    """"torch", plus the native backend of ``device`` when it loads (``backends``: an ``ext_common.Backends``)."""
    names = ["torch"]
    if backends.module(native_backend(device)) is not None:
        names.append(native_backend(device))
    return names


def median_ms(fn: Callable[[], object], repeats: int, device: str = "cpu", warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in milliseconds over ``repeats`` runs after ``warmup`` runs."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)
