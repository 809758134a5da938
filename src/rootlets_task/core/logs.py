"""Logging: the library logs (``logging.getLogger(__name__)`` in every module); the command line configures it once.

* :func:`configure`: ``rootlets: message`` lines on stderr (``rootlets: warning: ...``, ``rootlets: error: ...``), at the
  command's verbosity (0 warnings only, 1 progress, 2 detail);
* :func:`unit_log`: while a batch unit runs, what this thread logs goes to the unit's own log file (and not to the
  terminal), so units running side by side on threaded Dask workers never mix their logs; the logger's level is
  restored afterwards.

The package logger has a ``NullHandler`` (set in ``rootlets_task/__init__.py``, as a library should): a program that
embeds the package and configures no logging sees no "No handlers could be found" fallback output.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

PACKAGE = "rootlets_task"
LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}
_in_unit = threading.local()
_units_lock = threading.Lock()
_units = {"open": 0, "level": logging.NOTSET}  # units logging now (threads side by side), the level before the first


class _Stderr(logging.StreamHandler):
    """A handler writing to whatever ``sys.stderr`` is at the time (so redirections and test capture see it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ assigns it
        pass


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.levelno >= logging.ERROR:
            return f"rootlets: error: {text}"
        return f"rootlets: warning: {text}" if record.levelno >= logging.WARNING else f"rootlets: {text}"


class _Rewriting(logging.Formatter):
    """A formatter whose lines pass through ``rewrite`` (when given)."""

    def __init__(self, fmt: str, rewrite: Callable[[str], str] | None = None):
        super().__init__(fmt)
        self.rewrite = rewrite

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return self.rewrite(text) if self.rewrite else text


class _UnitFile(logging.FileHandler):
    """A unit's log file. A line that cannot be written (a full disk) is dropped without logging's traceback on
    stderr: the unit's result already carries the error, in one line."""

    def handleError(self, record: logging.LogRecord) -> None:
        if not isinstance(sys.exc_info()[1], OSError):
            super().handleError(record)


def is_terminal(stream=None) -> bool:
    """Whether ``stream`` (default: stderr now) is a terminal: progress bars only there, never in a log file, where each
    of their updates would be one more line."""
    stream = sys.stderr if stream is None else stream
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a file
        return False


def _not_in_unit(record: logging.LogRecord) -> bool:
    return not getattr(_in_unit, "active", False)


def configure(verbosity: int = 1) -> None:
    """Show the package's log on stderr at ``verbosity`` (0, 1 or 2); calling again replaces the earlier set-up."""
    logger = logging.getLogger(PACKAGE)
    for handler in [h for h in logger.handlers if isinstance(h, _Stderr)]:
        logger.removeHandler(handler)
    handler = _Stderr()
    handler.setFormatter(_Format())
    handler.setLevel(LEVELS.get(verbosity, logging.DEBUG))
    handler.addFilter(_not_in_unit)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False


@contextlib.contextmanager
def unit_log(path: str | Path, rewrite: Callable[[str], str] | None = None) -> Iterator[None]:
    """Send what the current thread logs to ``path`` (and nowhere else) while the block runs; ``rewrite``: applied to
    each line (e.g. :func:`rootlets_task.core.places.portable_text`: a log shared with its derivative names no local
    folder)."""
    logger = logging.getLogger(PACKAGE)
    thread = threading.get_ident()
    handler = _UnitFile(path, encoding="utf-8")
    handler.setFormatter(_Rewriting("%(asctime)s %(levelname)s %(name)s: %(message)s", rewrite=rewrite))
    handler.addFilter(lambda record: record.thread == thread)
    with _units_lock:
        if _units["open"] == 0:
            _units["level"] = logger.level
        _units["open"] += 1
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    _in_unit.active = True
    try:
        yield
    finally:
        _in_unit.active = False
        logger.removeHandler(handler)
        with contextlib.suppress(OSError):  # a full disk: the unit's own error says so; its log is lost either way
            handler.close()
        with _units_lock:
            _units["open"] -= 1
            if _units["open"] == 0:  # the last unit is done: the caller's level again (only the units needed INFO)
                logger.setLevel(_units["level"])
