"""Writing files safely: atomic single files, all-or-nothing file sets, hashes, writable folders, timestamps.

Every output of the package goes through here, so one set of rules holds everywhere:

* a file appears under its final name complete or not at all (written to a hidden temporary beside it, renamed);
* a set of files (a label file and its sidecar, the levels outputs) appears together or not at all
  (:class:`OutputSet`): all are written to temporaries first, then renamed in one step each, with the ones already
  moved rolled back if a rename fails, and termination signals held back while the renames run;
* temporaries carry the host and process id, so a later run removes those of killed processes
  (:func:`remove_stale_temporaries`) and never touches those of a process still running.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import threading
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from rootlets_task.core.errors import RootletsError

_CHUNK = 1 << 20
_HOST = socket.gethostname().split(".")[0].replace(".", "_") or "host"
_TMP_MARK = ".tmp"
_TMP_NAME = re.compile(r"^\..+\.(?P<host>[^.]+)-(?P<pid>\d+)-[0-9a-f]{8}\.tmp")
_SCRATCH_NAME = re.compile(r"^.+\.(?P<host>[^.]+)-(?P<pid>\d+)-[0-9a-f]{8}$")
_HELD_SIGNALS = {s for s in (getattr(signal, n, None) for n in ("SIGINT", "SIGTERM", "SIGHUP")) if s is not None}


def _file_mode() -> int:
    """0o666 less the process umask: the mode an ordinary ``open(path, "w")`` would give."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


FILE_MODE = _file_mode()


def now() -> str:
    """The current UTC time, ISO 8601 to the second (what every record and sidecar stores)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def writable_folder(folder: str | os.PathLike, label: str = "output folder", flag: str = "-o") -> Path:
    """Create ``folder`` if needed; refuse one that cannot be written, before any work (``flag`` names the fix)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise RootletsError(f"{label} {folder}: exists and is not a folder; choose another {flag}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RootletsError(f"{label} {folder}: cannot be created ({exc.strerror}); choose another {flag}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise RootletsError(f"{label} {folder}: not writable; choose another {flag} or fix its permissions")
    return folder


def relative_to(path: str | os.PathLike, folder: str | os.PathLike) -> str:
    """``path`` relative to ``folder`` when inside it (records and sidecars stay valid when a folder moves), else as
    :func:`rootlets_task.core.places.portable` writes it while paths are shared, else absolute."""
    from rootlets_task.core.places import active, portable

    path, folder = Path(path).absolute(), Path(folder).absolute()
    try:
        return path.relative_to(folder).as_posix()
    except ValueError:
        return portable(path) if active() else str(path)


# ------------------------------------------------------------------------------------------ temporaries
def _suffix(name: str) -> str:
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def _tag() -> str:
    return f"{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def temporary_name(final: Path) -> Path:
    """A hidden name beside ``final`` that says which host and process writes it (same extension, so writers that
    choose the format by extension, such as nibabel, behave the same)."""
    return final.with_name(f".{final.name}.{_tag()}{_TMP_MARK}{_suffix(final.name)}")


def scratch_folder(parent: Path, name: str) -> Path:
    """A new private folder ``<parent>/<name>.<host>-<pid>-<random>`` (removable by :func:`remove_stale_scratch`)."""
    folder = parent / f"{name}.{_tag()}"
    folder.mkdir(parents=True)
    return folder


def remove_stale_scratch(parent: str | os.PathLike) -> list[Path]:
    """Remove the scratch folders in ``parent`` whose process (on this host) is gone."""
    removed = []
    for folder in Path(parent).glob("*.*-*-*") if Path(parent).is_dir() else ():
        match = _SCRATCH_NAME.match(folder.name)
        if match and folder.is_dir() and match["host"] == _HOST and not _alive(int(match["pid"])):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def build_once(folder: Path, build, marker: str = "check.json") -> Path:
    """``folder``, built by ``build(tmp)`` into a private folder and renamed into place unless ``folder/marker`` exists.

    Concurrent processes never see a half-built folder (the first to finish wins, the others discard theirs), and
    folders of killed builds are removed by the next one (:func:`remove_stale_temporaries`).
    """
    if (folder / marker).exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(folder.parent)
    tmp = temporary_name(folder)
    tmp.mkdir()
    try:
        build(tmp)
        os.replace(tmp, folder)
    except OSError:
        if not (folder / marker).exists():  # a failure, not another process that finished first
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporaries that killed processes of this host left in ``folder``; returns what was removed."""
    removed: list[Path] = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for path in folder.glob(f".*{_TMP_MARK}*"):
        match = _TMP_NAME.match(path.name)
        if match and match["host"] == _HOST and not _alive(int(match["pid"])):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds."""
    with OutputSet() as outputs:
        yield outputs.path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, content, indent: int = 2) -> Path:
    return write_text(path, json.dumps(content, indent=indent) + "\n")


MAX_JSON_BYTES = 64 << 20
MAX_JSON_DEPTH = 64  # nesting levels; the package's own files use fewer than 10
TAIL_BYTES = 1 << 20  # what is read of a log file (its end)


def json_depth(content) -> int:
    """Nesting depth of parsed JSON (a scalar is 0), counted without recursion."""
    deepest, stack = 0, [(content, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            depth += 1
            deepest = max(deepest, depth)
            stack.extend((v, depth) for v in (value.values() if isinstance(value, dict) else value))
    return deepest


def parse_json(data: bytes, depth: int = MAX_JSON_DEPTH):
    """Parsed JSON of ``data`` at most ``depth`` levels deep; ``ValueError`` with the reason otherwise (too deep,
    not JSON), for the caller to name the file."""
    try:
        content = json.loads(data.decode("utf-8"))
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not valid JSON ({str(exc)[:120]})") from None
    if json_depth(content) > depth:
        raise ValueError(f"JSON nested more than {depth} levels deep")
    return content


def load_json(path: str | os.PathLike, what: str = "file", limit: int = MAX_JSON_BYTES, depth: int = MAX_JSON_DEPTH,
              fix: str = "fix or remove it"):
    """Parsed JSON of ``path``, at most ``limit`` bytes and ``depth`` levels deep; anything else (missing, unreadable,
    too large, too deep, not JSON) is one :class:`RootletsError` line naming ``what``, the file and ``fix``.

    Every JSON file the package reads goes through here (or :func:`read_json`), so a hostile file cannot exhaust the
    memory or the stack.
    """
    data = read_bounded(path, what, limit, fix)
    try:
        return parse_json(data, depth)
    except ValueError as exc:
        raise RootletsError(f"{what} {path}: {exc}; {fix}") from None


def read_bounded(path: str | os.PathLike, what: str = "file", limit: int = MAX_JSON_BYTES,
                 fix: str = "fix or remove it") -> bytes:
    """The bytes of ``path``, never more than ``limit`` read; missing, unreadable or larger is one
    :class:`RootletsError` line naming ``what``, the file and ``fix``."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise RootletsError(f"{what} {path}: cannot be read ({exc.strerror or exc}); {fix}") from None
    if len(data) > limit:
        raise RootletsError(f"{what} {path}: larger than {limit >> 10} KiB, not a file this package writes; {fix}")
    return data


MAX_TABLE_BYTES = 64 << 20  # a CSV/TSV table given as input (a levels table is a few KB, participants.tsv a few MB)


def check_size(path: str | os.PathLike, what: str = "file", limit: int = MAX_TABLE_BYTES) -> Path:
    """``path``, refused in one line when it is larger than ``limit`` bytes (read whole by pandas next)."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError:
        return path  # the reader says what is wrong with it
    if size > limit:
        raise RootletsError(f"{what} {path}: {size >> 20} MiB, larger than the {limit >> 20} MiB such a file can be; "
                            "check that it is the right file")
    return path


def read_json(path: str | os.PathLike, limit: int = MAX_JSON_BYTES, depth: int = MAX_JSON_DEPTH):
    """Parsed JSON of a file, or None when it is missing, unreadable, larger than ``limit`` bytes, nested more than
    ``depth`` levels or not JSON (:func:`load_json` says why)."""
    try:
        return load_json(path, limit=limit, depth=depth)
    except RootletsError:
        return None


def read_tail(path: str | os.PathLike, limit: int = TAIL_BYTES) -> str:
    """The last ``limit`` bytes of a text file (a log), decoded with replacement: a huge log costs ``limit`` bytes."""
    with open(path, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        fh.seek(max(0, size - limit))
        return fh.read(limit).decode("utf-8", errors="replace")


def printable(text: object, limit: int = 500) -> str:
    """Foreign text made safe to print on one terminal line: control characters (escape sequences, carriage
    returns, line breaks) shown as ``?``, and at most ``limit`` characters."""
    text = re.sub(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]", "?", str(text))
    return text if len(text) <= limit else text[:limit] + "..."


# ------------------------------------------------------------------------------------------- inputs kept
def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two names reach the same file: after symbolic links and ``..`` are resolved, or (both existing) by
    device and inode (hard links, bind mounts, a case-insensitive file system)."""
    if os.path.realpath(os.path.abspath(a)) == os.path.realpath(os.path.abspath(b)):
        return True
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def keep_inputs(outputs: Iterable[str | os.PathLike], inputs: dict[str, str | os.PathLike | None] |
                Iterable[str | os.PathLike | None], flag: str = "-o") -> None:
    """The one rule every command that writes follows: refuse, before any work, an output that is one of its inputs
    (under any name: :func:`same_file`). ``inputs``: paths, or {what it is: path} for the message; None is skipped."""
    pairs = inputs.items() if isinstance(inputs, dict) else ((f"input {p}", p) for p in inputs)
    named = [(what, p) for what, p in pairs if isinstance(p, str | os.PathLike)]
    for out in outputs:
        for what, source in named:
            if same_file(out, source):
                raise RootletsError(f"output {out} would overwrite {what}; choose another {flag} so "
                                    "the input is kept")


# ------------------------------------------------------------------------------------------- file sets
@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP back while a commit runs (they arrive right after), on the main thread."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class OutputSet:
    """Files that appear together or not at all, and files that go away in the same step.

    ``with OutputSet(remove=[old]) as out: write(out.path(final_a)); write(out.path(final_b))`` leaves either the
    previous state untouched (any error, a signal, a full disk) or ``final_a`` and ``final_b`` complete and ``old``
    gone. Previous files under the final names are kept aside until every rename has succeeded.
    """

    def __init__(self, remove: Iterable[str | os.PathLike] = ()):
        self._temps: dict[Path, Path] = {}
        self._remove = [Path(p) for p in remove]

    def path(self, final: str | os.PathLike) -> Path:
        """The temporary path to write ``final`` to (an empty file exists there already)."""
        final = Path(final)
        if final.is_dir():
            raise RootletsError(f"output {final}: is a folder; choose another output name")
        tmp = temporary_name(final)
        try:
            tmp.touch(mode=0o600)
        except OSError as exc:
            raise RootletsError(f"cannot write in {final.parent} ({exc.strerror}); choose another output folder") from None
        self._temps[final] = tmp
        return tmp

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.commit()
        finally:
            for tmp in self._temps.values():
                tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):  # a full disk or a vanished folder while writing: nothing was kept
            where = next(iter(self._temps), None)
            raise RootletsError(f"cannot write {where.parent if where else 'the outputs'} ({exc.strerror or exc}); "
                                "nothing was changed; free disk space or choose another output folder") from None

    def commit(self) -> None:
        moved: list[tuple[Path, Path | None]] = []  # (final, where its previous version was kept)
        with _signals_held():
            try:
                for final, tmp in self._temps.items():
                    os.chmod(tmp, FILE_MODE)
                    moved.append((final, self._set_aside(final)))
                    os.replace(tmp, final)
                for old in self._remove:
                    if old.exists() and old not in self._temps:
                        moved.append((old, self._set_aside(old)))
            except OSError as exc:
                self._roll_back(moved)
                raise RootletsError(f"cannot write {moved[-1][0] if moved else 'the outputs'} ({exc.strerror or exc}); "
                                    "nothing was changed; free disk space or fix the folder's permissions") from None
            for _, aside in moved:
                if aside is not None:
                    aside.unlink(missing_ok=True)
        self._temps.clear()

    @staticmethod
    def _set_aside(final: Path) -> Path | None:
        if not final.exists() and not final.is_symlink():
            return None
        aside = temporary_name(final)
        os.replace(final, aside)
        return aside

    def _roll_back(self, moved: list[tuple[Path, Path | None]]) -> None:
        for final, aside in reversed(moved):
            with contextlib.suppress(OSError):
                if final in self._temps and final.exists():
                    os.replace(final, self._temps[final])
                if aside is not None:
                    os.replace(aside, final)
