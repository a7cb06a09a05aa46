"""Shared helpers of the kernel benchmarks (``scripts/bench_kernels.py``).

Each ``scripts/bench/<pkg>.py`` defines ``run(quick: bool = False) -> dict`` that
times forward+backward per available backend and reports ``cpp_over_torch_speedup``.
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


def available_backends(backends) -> list[str]:
    """Of "torch", "cpp", "cuda": those that can run here (``backends`` is an ``ext_common.Backends``)."""
    names = ["torch"]
    if backends.module("cpp") is not None:
        names.append("cpp")
    if torch.cuda.is_available() and backends.module("cuda") is not None:
        names.append("cuda")
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
