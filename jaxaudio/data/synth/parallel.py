"""What every built-in set generator does around its own rendering: forget the previous set
before writing over it, and render the jobs in spawned worker processes behind one progress bar.

Why spawned and in order: a caller that has already started JAX threads cannot fork safely, and
results that come back in job order make the set byte-identical whatever the worker count.
"""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Iterator, Sequence

from jaxaudio.data.synth import manifest
from jaxaudio.utils.progress import progress as progress_reporter


def start_over(root: Path) -> None:
    """Before (re)writing a set in ``root``: its manifest goes first (the set is incomplete until
    it is rewritten), then every file the previous manifest listed (a smaller set must not keep
    old files)."""
    previous = manifest.read_manifest(root)
    (root / manifest.MANIFEST_NAME).unlink(missing_ok=True)
    for rel in (previous or {}).get("files", {}):
        (root / rel).unlink(missing_ok=True)


def render_all(fn: Callable, jobs: Sequence, *, workers: int | None, desc: str, unit: str,
               progress: bool) -> Iterator:
    """``fn(job)`` for every job, in job order, in up to ``workers`` processes (default: the CPU
    count, at most 8; fewer for few jobs, since starting a worker costs about 16 jobs' time)."""
    workers = max(1, min(8, os.cpu_count() or 1)) if workers is None else max(1, workers)
    workers = min(workers, max(1, len(jobs) // 16))
    # a bar on a terminal, about ten plain lines in a log file (jaxaudio.utils.progress)
    bar = progress_reporter(len(jobs), desc=desc, unit=unit, force=None if progress else False)
    pool = None
    if workers == 1:
        stream = map(fn, jobs)
    else:
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        stream = pool.map(fn, jobs, chunksize=max(1, min(32, len(jobs) // (4 * workers))))
    try:
        for result in stream:
            yield result
            bar.update()
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown()
