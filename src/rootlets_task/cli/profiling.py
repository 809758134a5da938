"""SCT's ``-profile-time [FILE|DIR]`` and ``-trace-memory [DIR]`` (``spinalcordtoolbox/utils/profiling.py``).

* :func:`profile_time`: cProfile over the command; the table sorted by cumulative time is written to FILE (a
  ``.prof`` FILE gets pstats' binary dump instead), to ``DIR/time_profiling_results.txt`` for an existing folder,
  or to ``./time_profiling_results.txt`` when no value is given;
* :func:`trace_memory`: tracemalloc over the command; ``DIR/peak_memory.txt`` (default ``./``) holds
  ``PEAK; <KiB>`` (Python allocations; tensors allocated by torch's C++ code are not traced, in SCT neither).
"""

from __future__ import annotations

import cProfile
import io
import logging
import os
import pstats
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

TIME_FILE = "time_profiling_results.txt"
MEMORY_FILE = "peak_memory.txt"


def time_profile_path(value: str | os.PathLike) -> Path:
    """Where ``-profile-time VALUE`` writes: VALUE, or ``VALUE/time_profiling_results.txt`` for an existing folder."""
    path = Path(value)
    return path / TIME_FILE if path.is_dir() else path


@contextmanager
def profile_time(value: str | os.PathLike | None) -> Iterator[None]:
    """cProfile the block when ``value`` is set (see the module); the results are written even if the block fails."""
    if value is None:
        yield
        return
    path = time_profile_path(value)
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".prof":
            pstats.Stats(profiler).sort_stats(pstats.SortKey.CUMULATIVE).dump_stats(path)
        else:
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats(pstats.SortKey.CUMULATIVE).print_stats()
            path.write_text(text.getvalue())
        log.info("Saved time profiling results to '%s'.", path.resolve())


@contextmanager
def trace_memory(folder: str | os.PathLike | None) -> Iterator[None]:
    """tracemalloc over the block when ``folder`` is set; its peak (KiB) goes to ``folder/peak_memory.txt``."""
    if folder is None:
        yield
        return
    target = Path(folder) / MEMORY_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    tracemalloc.start()
    try:
        yield
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        target.write_text(f"PEAK; {peak / 1024:.3f}")
        log.info("Saved peak memory result to '%s'.", target.resolve())
