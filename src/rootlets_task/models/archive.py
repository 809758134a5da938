"""Getting a model zip and installing it into a folder, safely: the mechanism under our store and the SCT bridge.

- :func:`fetch`: mirrors in order; HTTP(S) streamed with a byte cap, an overall deadline, a short connect timeout and
  retries of 5xx answers only; size checked against Content-Length, SHA-256 verified (or computed); local paths and
  ``file://`` URLs too. URLs are stored and shown without user info or query (:func:`redact`).
- :func:`validate_release_zip`: refuses anything that is not one clean nnU-Net trainer folder (zip-slip, links,
  several trainer folders, missing files, truncated archives, zip bombs, oversized JSON, Python files unless the
  caller allows release code).
- :func:`install_lock` + :func:`atomic_install`: extract beside the target, inspect every checkpoint
  (:mod:`rootlets_task.models.checkpoints`), then rename into place; the previous model stays until the new one is
  complete, and concurrent installers wait for each other (bounded, naming the holder).
- :func:`install_from`: the whole flow under the lock.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import socket
import stat
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from rootlets_task.core.errors import RootletsError
from rootlets_task.core.files import parse_json, sha256_file, writable_folder
from rootlets_task.core.logs import is_terminal
from rootlets_task.core.urls import is_url, redact, scrub, url_problem
from rootlets_task.models import checkpoints
from rootlets_task.models.plans import plans_problem

log = logging.getLogger(__name__)

CHECKPOINTS = ("checkpoint_final.pth", "checkpoint_best.pth")
DEFAULT_MAX_BYTES = 4 << 30       # cap of a download whose size the registry does not know
DEFAULT_DEADLINE_S = 3600.0       # a whole download, retries included
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0             # silence on an open connection
LOCK_WAIT_S = DEFAULT_DEADLINE_S + 300
MAX_ENTRIES = 10_000              # zip members
MAX_UNCOMPRESSED = 16 << 30       # all members together
MAX_RATIO = 200                   # uncompressed / compressed, for members above 1 MiB (checkpoints hardly compress)
MAX_JSON_BYTES = 16 << 20         # dataset.json, plans.json ...
BESIDE_TRAINER = ("crop_metadata.json",)  # read by SCT from the model folder, next to the nnUNetTrainer* folder
ENV_MAX_BYTES = "ROOTLETS_TASK_MAX_DOWNLOAD"       # bytes, or with a KB/MB/GB suffix
ENV_DEADLINE = "ROOTLETS_TASK_DOWNLOAD_TIMEOUT"    # seconds
CODE_SUFFIXES = (".py", ".pyc", ".pyo", ".so", ".pyd", ".dll", ".dylib")
_CHUNK = 1 << 20
_RETRY_STATUS = (500, 502, 503, 504)


# ---------------------------------------------------------------------------------------------------------- URLs


def _size_setting(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", text.lower())
    if not match:
        raise RootletsError(f"{ENV_MAX_BYTES}={text}: not a size; use bytes or e.g. 800MB, 6GB")
    return int(float(match[1]) * 1024 ** "bkmgt".index(match[2] or "b"))


def download_limits(known_size: int | None = None) -> tuple[int, float]:
    """(byte cap, deadline in s): the registry's size when known, else the default; the environment overrides both."""
    cap = _size_setting(os.environ[ENV_MAX_BYTES]) if os.environ.get(ENV_MAX_BYTES) else (known_size or DEFAULT_MAX_BYTES)
    try:
        deadline = float(os.environ.get(ENV_DEADLINE) or DEFAULT_DEADLINE_S)
    except ValueError:
        raise RootletsError(f"{ENV_DEADLINE}={os.environ[ENV_DEADLINE]}: not a number of seconds") from None
    return cap, deadline


# ---------------------------------------------------------------------------------------------------------- fetch
@dataclass(frozen=True)
class Fetched:
    """A release zip on local disk: ``path`` is inside ``workdir`` when downloaded, the source itself when local.
    ``url`` is the redacted source."""

    path: Path
    url: str
    sha256: str
    size: int


class DownloadError(RootletsError):
    """No source gave the zip (network, HTTP error, checksum, limits); the message lists every source's reason."""


class _SourceFailed(Exception):
    """One mirror failed; the reason is collected and the next mirror is tried."""


def _local_path(source: str) -> Path | None:
    """Path of a local source (plain path or file:// URL); None for http(s)."""
    problem = url_problem(source)
    if problem:
        raise _SourceFailed(problem)
    parsed = urlparse(source)
    if parsed.scheme.lower() in ("http", "https"):
        return None
    if is_url(source):  # file://
        if parsed.netloc not in ("", "localhost"):
            raise _SourceFailed(f"file URL with a remote host {parsed.netloc!r} is not supported")
        return Path(unquote(parsed.path))
    return Path(source).expanduser()


def _session():
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    session = requests.Session()
    # one more try of a failed connection; 5xx answers are retried by _stream, within the deadline; a silent server
    # is not (each read would wait READ_TIMEOUT_S again)
    retry = Retry(total=1, connect=1, read=0, status=0, allowed_methods=("GET",), respect_retry_after_header=False)
    for prefix in ("http://", "https://"):
        session.mount(prefix, HTTPAdapter(max_retries=retry))
    return session


def _retry_wait(resp, backoff: float, attempt: int) -> float:
    """Seconds to wait before the next try: the server's ``Retry-After`` (seconds or a date), else exponential."""
    import email.utils

    text = resp.headers.get("Retry-After", "").strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return backoff * 2**attempt


@dataclass
class _Progress:
    """How far a download got (for the messages of a failure)."""

    started: bool = False
    size: int = 0
    total: int | None = None


def _stream(url: str, target: Path, progress: bool, retries: int, backoff: float, cap: int, deadline: float) -> tuple[str, int]:
    """Write the body of ``url`` into ``target``, hashing and counting it; returns (sha256, size).

    5xx answers are tried again up to ``retries`` times, after the server's ``Retry-After`` or an exponential
    back-off, all within ``deadline`` seconds from the first request (connections, waits and the body together).
    Raises _SourceFailed with a short reason: HTTP error, refused connection, silence, size above ``cap``, past the
    deadline, or a body shorter than announced.
    """
    state = _Progress()
    end = time.monotonic() + deadline
    try:
        with _session() as session:
            for attempt in range(retries + 1):
                left = end - time.monotonic()
                if left <= 0:
                    raise _SourceFailed(f"no answer within the {deadline:.0f} s deadline (set {ENV_DEADLINE} to wait "
                                        "longer)")
                with session.get(url, stream=True, timeout=(min(CONNECT_TIMEOUT_S, left), min(READ_TIMEOUT_S, left))) \
                        as resp:
                    if resp.status_code in _RETRY_STATUS and attempt < retries:
                        wait = _retry_wait(resp, backoff, attempt)
                        if time.monotonic() + wait > end:
                            raise _SourceFailed(f"HTTP {resp.status_code} {resp.reason}; the server asks to try again "
                                                f"in {wait:.0f} s, past the {deadline:.0f} s deadline (set {ENV_DEADLINE} "
                                                "to wait longer)")
                        log.info("HTTP %s from %s; trying again in %.1f s", resp.status_code, redact(url), wait)
                    else:
                        digest = _body(resp, url, target, progress, cap, (deadline, end), state, attempt)
                        break
                time.sleep(wait)
    except _SourceFailed:
        raise
    except Exception as exc:  # requests, urllib3 (through read1) and OS errors: one short reason each
        raise _SourceFailed(_failure(exc, urlparse(url).hostname or "?", state, target)) from exc
    if state.total is not None and state.size != state.total:
        raise _SourceFailed(f"download truncated: got {state.size} of {state.total} bytes")
    return digest, state.size


def _body(resp, url: str, target: Path, progress: bool, cap: int, deadline: tuple[float, float], state: _Progress,
          attempt: int) -> str:
    """The sha256 of the body of an answer, saved in ``target`` (an HTTP error refused in one line)."""
    if resp.status_code >= 400:
        raise _SourceFailed(f"HTTP {resp.status_code} {resp.reason}" + (f" (after {attempt} retries)" if attempt else ""))
    state.started = True
    if resp.headers.get("Content-Length", "").isdigit() and not resp.headers.get("Content-Encoding"):
        state.total = int(resp.headers["Content-Length"])
        if state.total > cap:
            raise _SourceFailed(f"the server announces {state.total} bytes, above the {cap}-byte limit "
                                f"(set {ENV_MAX_BYTES} to allow more)")
    return _copy_body(resp, target, Path(unquote(urlparse(url).path)).name or "release.zip", progress, cap, deadline,
                      state)


def _copy_body(resp, target: Path, name: str, progress: bool, cap: int, deadline: tuple[float, float],
               state: _Progress) -> str:
    """Copy the response body into ``target`` within the byte cap and the deadline ((seconds, monotonic end); tqdm
    bar on stderr)."""
    from tqdm import tqdm

    digest, (seconds, end) = hashlib.sha256(), deadline
    with open(target, "wb") as out, tqdm(total=state.total, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
                                         disable=not (progress and is_terminal()), file=sys.stderr, leave=True) as bar:
        while chunk := resp.raw.read1(64 * 1024, decode_content=True):  # returns as soon as some data came
            state.size += len(chunk)
            if state.size > cap:
                raise _SourceFailed(f"more than {cap} bytes; stopped (set {ENV_MAX_BYTES} to allow more)")
            if time.monotonic() > end:
                raise _SourceFailed(f"still downloading after {seconds:.0f} s ({state.size} bytes so far); stopped "
                                    f"(a very slow network? set {ENV_DEADLINE} to wait longer)")
            out.write(chunk)
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def _failure(exc: Exception, host: str, state: _Progress, target: Path) -> str:
    """The one-line reason of a failed download."""
    import requests

    silent = f"the server at {host} accepted the connection but sent nothing for {READ_TIMEOUT_S:.0f} s; timed out"
    if isinstance(exc, requests.exceptions.ReadTimeout | TimeoutError):
        return silent
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return f"cannot connect to {host} within {CONNECT_TIMEOUT_S:.0f} s (no network, or the server is down)"
    if isinstance(exc, requests.exceptions.RequestException):
        if state.started:
            return (f"download interrupted: the connection broke before the end of the file ({state.size} of "
                    f"{state.total or '?'} bytes saved)")
        if isinstance(exc, requests.exceptions.ConnectionError):  # urllib3 reports a silent server this way too
            return silent if _read_timed_out(exc) else f"cannot connect to {host} (no network, or the server is down)"
        return f"{type(exc).__name__}: {scrub(str(exc))}"
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"cannot write {target}: {exc.strerror or exc}"
    return f"download interrupted ({type(exc).__name__}; {state.size} of {state.total or '?'} bytes saved)"


def _read_timed_out(exc: BaseException) -> bool:
    from urllib3.exceptions import ReadTimeoutError

    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, ReadTimeoutError | socket.timeout | TimeoutError)


def fetch(urls: list[str] | tuple[str, ...] | str, workdir: str | Path, sha256: str | None = None, progress: bool = True,
          retries: int = 3, backoff: float = 0.5, known_size: int | None = None) -> Fetched:
    """Get a release zip from the first source that works: http(s) URL, ``file://`` URL or local path.

    HTTP downloads stream into ``workdir`` (pick one on the target's filesystem) with a tqdm bar on stderr, within
    the limits of :func:`download_limits`. A known ``sha256`` must match, otherwise the computed digest is returned
    for the record. All sources failing -> :class:`DownloadError` listing each (redacted) source and its reason.
    """
    sources = [urls] if isinstance(urls, str) else list(urls)
    cap, deadline = download_limits(known_size)
    failures = []
    for url in sources:
        shown = redact(url)
        target = None
        try:
            local = _local_path(url)
            if local is None:
                fd, name = tempfile.mkstemp(prefix="download-", suffix=".zip", dir=workdir)
                os.close(fd)
                target = Path(name)
                digest, size = _stream(url, target, progress, retries, backoff, cap, deadline)
                path = target
            elif not local.is_file():
                raise _SourceFailed("no such file")
            else:
                path, digest, size = local, sha256_file(local), local.stat().st_size
                shown = shown if is_url(url) else str(local.absolute())
            if sha256 and digest != sha256.lower():
                raise _SourceFailed(f"checksum mismatch: expected sha256 {sha256[:16]}..., got {digest[:16]}... "
                                    "(corrupt download or a changed file)")
            return Fetched(path, shown, digest, size)
        except _SourceFailed as exc:
            failures.append(f"{shown}: {exc}")
            if target is not None:
                target.unlink(missing_ok=True)
        except BaseException:
            if target is not None:
                target.unlink(missing_ok=True)
            raise
    raise DownloadError("could not get the model zip: " + "; ".join(failures))


# ------------------------------------------------------------------------------------------------------- validate
@dataclass(frozen=True)
class ReleaseZip:
    """A checked release zip: its single trainer folder and the members to extract (zip name, path inside it)."""

    path: Path
    source: str  # what error messages name (the redacted URL it came from)
    trainer_name: str
    folds: tuple[str, ...]
    members: tuple[tuple[str, str], ...]
    size: int  # uncompressed bytes of the trainer folder
    code: tuple[str, ...] = ()  # Python files and other code inside the trainer folder (with allow_code only)
    beside: tuple[tuple[str, str], ...] = ()  # files kept next to the trainer folder (crop_metadata.json)


def _members(zf: zipfile.ZipFile, bad: Callable[[str], RootletsError]) -> tuple[dict, set]:
    """(files, folders) of the archive as path tuples, with every unsafe or oversized member refused."""
    infos = zf.infolist()
    if len(infos) > MAX_ENTRIES:
        raise bad(f"{len(infos)} members, more than a model release has ({MAX_ENTRIES})")
    if sum(i.file_size for i in infos) > MAX_UNCOMPRESSED:
        raise bad(f"expands to {sum(i.file_size for i in infos) >> 20} MiB, above the {MAX_UNCOMPRESSED >> 30} GiB "
                  "limit (a zip bomb?)")
    files: dict[tuple[str, ...], zipfile.ZipInfo] = {}
    dirs: set[tuple[str, ...]] = set()
    for info in infos:
        name = info.filename
        parts = tuple(p for p in name.replace("\\", "/").split("/") if p not in ("", "."))
        if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
            raise bad(f"member {name!r} has an absolute path (zip-slip)")
        if ".." in parts:
            raise bad(f"member {name!r} contains '..' (zip-slip)")
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode) or (stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))):
            raise bad(f"member {name!r} is a link or special file")
        if info.flag_bits & 0x1:
            raise bad(f"member {name!r} is encrypted; a model release is not")
        if info.file_size > (1 << 20) and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise bad(f"member {name!r} expands {info.file_size // max(info.compress_size, 1)}-fold (a zip bomb?)")
        if not parts or parts[0] == "__MACOSX":
            continue
        dirs.update(parts[:i] for i in range(1, len(parts)))
        if info.is_dir():
            dirs.add(parts)
        else:
            files[parts] = info
    return files, dirs


def validate_release_zip(path: str | Path, source: str | None = None, allow_code: bool = False) -> ReleaseZip:
    """Check that ``path`` is a complete, safe nnU-Net release zip, without extracting it.

    Exactly one ``nnUNetTrainer*`` folder (at the root or under one wrapper folder) holding dataset.json, plans.json
    and ``fold_*/checkpoint_final.pth`` (or checkpoint_best.pth). Refused: absolute paths, ``..``, symbolic links or
    other special files, several trainer folders, too many or too large members, JSON above
    :data:`MAX_JSON_BYTES`, truncated or non-zip files, and Python or other code files unless ``allow_code``
    (SCT's ``trainer_class.py``: it runs with the user's rights). Errors name ``source`` (default: path).
    """
    path = Path(path)
    source = source or str(path)

    def bad(what: str) -> RootletsError:
        return RootletsError(f"refusing model zip {source}: {what}")

    if not path.is_file():
        raise RootletsError(f"model zip {path} does not exist")
    try:
        with zipfile.ZipFile(path) as zf:
            files, dirs = _members(zf, bad)
            trainers = sorted(d for d in dirs if d[-1].startswith("nnUNetTrainer")
                              and not any(p.startswith("nnUNetTrainer") for p in d[:-1]))
            if not trainers:
                raise bad("no nnUNetTrainer* folder; not an nnU-Net model release")
            if len(trainers) > 1:
                raise bad(f"{len(trainers)} nnUNetTrainer* folders ({', '.join('/'.join(t) for t in trainers)}); "
                          "a release has exactly one")
            trainer = trainers[0]
            inside = {parts[len(trainer):]: info for parts, info in files.items() if parts[:len(trainer)] == trainer}
            _check_contents(zf, inside, trainer, bad)
            beside = tuple((files[trainer[:-1] + (n,)].filename, n) for n in BESIDE_TRAINER if trainer[:-1] + (n,) in files)
            for name, _ in beside:
                _check_json(zf, zf.getinfo(name), name, bad)
            code = tuple(sorted("/".join(p) for p in inside if p[-1].lower().endswith(CODE_SUFFIXES)))
            if code and not allow_code:
                raise bad(f"it contains code ({', '.join(code[:3])}) that would run on this machine; install it only "
                          "if you trust its source, with -allow-release-code")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as exc:
        raise RootletsError(f"model zip {source} is not a zip archive or is truncated ({exc}); download it again") from None
    folds = sorted({p[0] for p in inside if len(p) == 2 and p[0].startswith("fold_") and p[1] in CHECKPOINTS})
    members = tuple((info.filename, "/".join(rel)) for rel, info in sorted(inside.items()))
    return ReleaseZip(path, source, trainer[-1], tuple(folds), members, sum(i.file_size for i in inside.values()), code,
                      beside)


def _check_contents(zf: zipfile.ZipFile, inside: dict, trainer: tuple, bad: Callable[[str], RootletsError]) -> None:
    folds = {p[0] for p in inside if len(p) == 2 and p[0].startswith("fold_") and p[1] in CHECKPOINTS}
    missing = [n for n in ("dataset.json", "plans.json") if (n,) not in inside]
    if not folds:
        missing.append("fold_*/checkpoint_final.pth")
    if missing:
        raise bad(f"incomplete nnU-Net release, missing {', '.join(missing)} in {'/'.join(trainer)}/")
    for parts, info in inside.items():
        if parts[-1].endswith(".json"):
            content = _check_json(zf, info, "/".join(trainer + parts), bad)
            problem = plans_problem(content) if parts == ("plans.json",) else None
            if problem:
                raise bad(f"{'/'.join(trainer)}/plans.json: {problem}")


def _check_json(zf: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, bad: Callable[[str], RootletsError]):
    """The parsed JSON member ``name``, refused when too large, too deeply nested or not JSON."""
    if info.file_size > MAX_JSON_BYTES:
        raise bad(f"{name} is {info.file_size >> 20} MiB, too large for a model's JSON")
    try:
        return parse_json(zf.read(info))
    except ValueError as exc:
        raise bad(f"{name}: {exc}") from None


def trainer_folder_problem(folder: Path) -> str | None:
    """Why an installed trainer folder is unusable (missing files), or None when it is complete."""
    missing = [n for n in ("dataset.json", "plans.json") if not (folder / n).is_file()]
    if not any((fold / c).is_file() for fold in folder.glob("fold_*") for c in CHECKPOINTS):
        missing.append("fold_*/checkpoint_final.pth")
    return f"missing {', '.join(missing)} in {folder}" if missing else None


# -------------------------------------------------------------------------------------------- atomic, locked install
def _tmp_prefix(dest: Path) -> str:
    return f".{dest.name}.tmp-"


def _old_prefix(dest: Path) -> str:
    return f".{dest.name}.old-"


def _recover(dest: Path) -> None:
    """Undo what a killed installer left: restore the previous model if it was moved away, delete temp folders."""
    olds = sorted(dest.parent.glob(_old_prefix(dest) + "*"))
    if olds and not dest.exists():
        os.rename(olds.pop(), dest)
    for leftover in olds + sorted(dest.parent.glob(_tmp_prefix(dest) + "*")):
        shutil.rmtree(leftover, ignore_errors=True)


def _holder(owner: Path) -> str:
    """Who holds an install lock, from the note its holder wrote beside it."""
    try:
        info = json.loads(owner.read_text())
        return f"process {info['pid']} on {info['host']}, since {info['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextmanager
def install_lock(dest: str | Path, wait_s: float | None = None) -> Iterator[None]:
    """Hold the per-destination lock ``.<name>.lock`` beside ``dest``; wait at most ``wait_s`` while another process
    installs (saying who), then give up with the lock's path.

    On entry it cleans what a killed installer of ``dest`` left behind. Not re-entrant: take it once per install.
    """
    from filelock import FileLock, Timeout

    from rootlets_task.core.files import now

    wait_s = LOCK_WAIT_S if wait_s is None else wait_s
    dest = Path(dest).absolute()
    writable_folder(dest.parent, "model folder", "place for the models (ROOTLETS_TASK_HOME for rootlets_task's own)")
    lock = FileLock(dest.parent / f".{dest.name}.lock")
    owner = dest.parent / f".{dest.name}.lock.owner"
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.warning("waiting for another install into %s to finish: %s (lock %s)", dest, _holder(owner), lock.lock_file)
        try:
            lock.acquire(timeout=wait_s)
        except Timeout:
            raise RootletsError(f"another install into {dest} ({_holder(owner)}) still holds {lock.lock_file} after "
                                f"{wait_s:.0f} s; wait for it to finish, or if no install is running, delete that "
                                "file") from None
    try:
        owner.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": now()}))
        _recover(dest)
        yield
    finally:
        owner.unlink(missing_ok=True)
        lock.release()


def _extract(layout: ReleaseZip, target: Path) -> None:
    """The trainer folder's members into ``target``, the files kept beside it into its parent."""
    try:
        with zipfile.ZipFile(layout.path) as zf:
            for name, out in [*((n, target.joinpath(*r.split("/"))) for n, r in layout.members),
                              *((n, target.parent / r) for n, r in layout.beside)]:
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(name) as src, open(out, "wb") as dst:  # zipfile stops at each member's declared size
                    shutil.copyfileobj(src, dst, _CHUNK)
    except (zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise RootletsError(f"model zip {layout.source} is corrupt ({exc}); download it again") from None
    except OSError as exc:
        raise RootletsError(f"cannot extract model zip into {target}: {exc.strerror or exc}") from None


def _size(n: int) -> str:
    """A size for people: MB with one decimal, kB below 0.1 MB (a small model is not "0 MB")."""
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.0f} kB"


def atomic_install(zip_path: str | Path, dest: str | Path, record: dict | str, record_name: str,
                   layout: ReleaseZip | None = None, keep_previous: Path | None = None) -> Path:
    """Replace folder ``dest`` by ``<trainer folder>/`` from the zip plus ``record_name`` (JSON of ``record``; a str
    is written verbatim, e.g. SCT's ``source.json`` byte-for-byte).

    Call it inside ``install_lock(dest)``. Everything is built in a temp folder beside ``dest`` (same filesystem), every
    checkpoint is inspected (:func:`rootlets_task.models.checkpoints.check`), then it is renamed into place; the previous
    ``dest`` is moved aside just before and deleted just after, so a failure at any point leaves it untouched (a
    killed process is repaired by the next ``install_lock``). ``keep_previous`` (a path beside ``dest``): the previous
    ``dest`` is renamed there instead of deleted. Returns the trainer folder.
    """
    dest = Path(dest).absolute()
    layout = layout or validate_release_zip(zip_path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(dest.parent).free
    if layout.size > free:
        raise RootletsError(f"not enough disk space in {dest.parent}: the model needs {_size(layout.size)}, "
                            f"{_size(free)} free; free disk space or set ROOTLETS_TASK_HOME to another disk")
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(dest), dir=dest.parent))
    try:
        staging = tmp / dest.name
        _extract(layout, staging / layout.trainer_name)
        for path in sorted((staging / layout.trainer_name).rglob("*.pth")):
            checkpoints.check(path)  # a checkpoint that would run code never reaches the model folder
        (staging / record_name).write_text(record if isinstance(record, str) else json.dumps(record, indent=4) + "\n")
        old = None
        if dest.exists() or dest.is_symlink():
            old = dest.parent / f"{_old_prefix(dest)}{time.time_ns()}"
            os.rename(dest, old)
        os.rename(staging, dest)
        if old is not None and keep_previous is not None:
            os.rename(old, keep_previous)
        elif old is not None:
            old.unlink() if old.is_symlink() else shutil.rmtree(old)
    except OSError as exc:
        raise RootletsError(f"cannot install into {dest}: {exc.strerror or exc}; the previous model is unchanged") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest / layout.trainer_name


@dataclass(frozen=True)
class Checks:
    """What an archive to install must be: its sha256 and size when the registry knows them (a custom URL: None),
    and whether it may hold the release's own code (``trainer_class.py``)."""

    sha256: str | None = None
    known_size: int | None = None
    allow_code: bool = False


def install_from(urls: list[str] | str, dest: str | Path, make_record: Callable[[Fetched, ReleaseZip], dict | str],
                 record_name: str, checks: Checks = Checks(), skip: Callable[[], bool] | None = None,
                 progress: bool = True, keep_previous: Path | None = None) -> Path | None:
    """Lock ``dest``, return None if ``skip()`` (already installed), else fetch, validate (``checks``) and atomically
    install, with ``make_record(fetched, layout)`` written as ``record_name`` beside the model.

    The download goes to a temp folder beside ``dest`` that is always removed. Returns the installed trainer folder.
    ``keep_previous``: where a replaced ``dest`` is kept (:func:`atomic_install`).
    """
    dest = Path(dest).absolute()
    with install_lock(dest):
        if skip is not None and skip():
            return None
        workdir = Path(tempfile.mkdtemp(prefix=_tmp_prefix(dest), dir=dest.parent))
        try:
            fetched = fetch(urls, workdir, sha256=checks.sha256, progress=progress, known_size=checks.known_size)
            if os.path.realpath(fetched.path).startswith(os.path.realpath(dest) + os.sep):
                raise RootletsError(f"model zip {fetched.url}: inside {dest}, which the install replaces (the zip would "
                                    "be deleted with it); move the zip elsewhere first")
            layout = validate_release_zip(fetched.path, fetched.url, allow_code=checks.allow_code)
            return atomic_install(fetched.path, dest, make_record(fetched, layout), record_name, layout, keep_previous)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
