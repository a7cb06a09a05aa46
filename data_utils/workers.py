"""Spreading per-frame work over processes, with a progress bar."""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Sequence

from tqdm import tqdm

# Frames per task sent to a worker: big enough that pickling and the round trip are noise
# (a frame takes ~10 ms), small enough that the two workers finish close together.
CHUNK = 16


def map_jobs(fn: Callable[[object], None], jobs: Sequence, workers: int, desc: str,
             initializer: Callable[[], None] | None = None, start: str = "fork") -> None:
    """Call ``fn(job)`` for every job, in this process (``workers <= 1``) or in ``workers`` processes.

    Args:
        fn: module-level function (pickled by name); its return value is ignored, its first
            exception is raised here.
        jobs: picklable arguments, one per frame.
        workers: number of processes.
        desc: progress bar label.
        initializer: run once per process before its first job (here too when ``workers <= 1``),
            e.g. to build a model each worker keeps.
        start: ``multiprocessing`` start method. ``"fork"`` starts in milliseconds; ``"spawn"``
            gives fresh interpreters, needed by MediaPipe graphs, which abort in a child forked
            from a process that already ran one (as the landmark step does). Spawned workers
            import the calling script again, so it needs the ``if __name__ == "__main__":`` guard.
    """
    progress = tqdm(total=len(jobs), desc=desc, unit="frame")
    try:
        if workers <= 1:
            if initializer is not None:
                initializer()
            for job in jobs:
                fn(job)
                progress.update()
        else:
            context = multiprocessing.get_context(start)
            with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=initializer) as pool:
                for _ in pool.map(fn, jobs, chunksize=CHUNK):
                    progress.update()
    finally:
        progress.close()
