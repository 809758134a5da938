"""Paths as recorded in files that are shared (sidecars, records, QC pages, logs, the dataset description).

A derivative is shared, archived and published: it must not carry the machine's folders. While :func:`shared_paths`
is active, :func:`portable` writes a path inside a named dataset as a BIDS URI (``bids:raw:sub-01/anat/x.nii.gz``;
the name ``""`` is the dataset being written, ``bids::sub-01/...``), and a path inside the base folder (the folder the
outputs go to) relative to it. Any other path is written relative to the base when the two share a folder below the
file system's root, else as its file name only. :func:`portable_text` does the same to the paths inside a text (a
tool's command line, a log line).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload


@dataclass(frozen=True)
class Places:
    """Named dataset roots (name -> folder; a BIDS URI names them) and the base folder of relative paths."""

    datasets: Mapping[str, Path] = field(default_factory=dict)
    base: Path | None = None
    aliases: Mapping[Path, str] = field(default_factory=dict)  # folder -> how it is written (e.g. a scratch folder)

    def prefixes(self) -> list[tuple[str, str]]:
        """(absolute folder, its portable form), longest folder first so that nested folders win."""
        found = [(str(folder), text) for folder, text in self.aliases.items()]
        found += [(str(root), f"bids:{name}:") for name, root in self.datasets.items()]
        if self.base is not None:
            found.append((str(self.base), ""))
        return sorted(found, key=lambda item: len(item[0]), reverse=True)


_PLACES: ContextVar[Places | None] = ContextVar("rootlets_task_places", default=None)


def _absolute(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(path))


@contextmanager
def shared_paths(base: str | os.PathLike | None = None, datasets: Mapping[str, str | os.PathLike] | None = None,
                 aliases: Mapping[Any, str] | None = None, keep: bool = False) -> Iterator[Places]:
    """Record paths portably while the block runs. ``keep``: an enclosing setting stays (a batch unit calls the chain,
    which sets its own for single runs)."""
    current = _PLACES.get()
    if keep and current is not None:
        yield current
        return
    places = Places({name: _absolute(root) for name, root in (datasets or {}).items()},
                    _absolute(base) if base is not None else None,
                    {_absolute(folder): text for folder, text in (aliases or {}).items()})
    token = _PLACES.set(places)
    try:
        yield places
    finally:
        _PLACES.reset(token)


def active() -> bool:
    """Whether paths are being shared (:func:`shared_paths`)."""
    return _PLACES.get() is not None


def _join(prefix: str, rest: str) -> str:
    if prefix.startswith("bids:") or not prefix:
        return prefix + rest if rest else (prefix or ".")
    return f"{prefix}/{rest}" if rest else prefix


@overload
def portable(path: str | os.PathLike) -> str: ...


@overload
def portable(path: None) -> None: ...


def portable(path: str | os.PathLike | None) -> str | None:
    """``path`` as a shared file records it (see the module doc); None stays None. Without :func:`shared_paths`, the
    file name only."""
    if path is None:
        return None
    places = _PLACES.get()
    absolute = _absolute(path)
    if places is None:
        return absolute.name
    for folder, text in places.prefixes():
        if absolute == Path(folder) or absolute.is_relative_to(folder):
            return _join(text, absolute.relative_to(folder).as_posix() if absolute != Path(folder) else "")
    if places.base is not None and Path(os.path.commonpath([absolute, places.base])) != Path(absolute.anchor):
        return Path(os.path.relpath(absolute, places.base)).as_posix()
    return absolute.name


def portable_text(text: str) -> str:
    """``text`` with every path under a known folder written as :func:`portable` writes it (and the home folder as
    ``~``)."""
    places = _PLACES.get()
    if places is None or not text:
        return text
    for folder, prefix in [*places.prefixes(), (str(Path.home()), "~")]:
        if folder in text:
            inside = prefix if prefix.startswith("bids:") or not prefix else prefix + "/"
            forms = {"/": inside, "": _join(prefix, "")}  # inside the folder, or the folder itself
            text = re.sub(re.escape(folder) + r"(/|(?![\w.-]))", lambda m, forms=forms: forms[m[1]], text)  # type: ignore[misc]
    return text
