"""Download, check and install model releases, safely.

The building blocks are reusable for any destination folder (the SCT bridge installs into SCT's model folder with
them):

- ``fetch(urls, workdir, sha256)``: mirrors in order; HTTP(S) streamed with a progress bar and retries with backoff on
  5xx, size checked against Content-Length, SHA-256 verified (or computed); local paths and ``file://`` URLs too.
- ``validate_release_zip(path)``: refuses anything that is not one clean nnU-Net trainer folder (zip-slip, links,
  several trainer folders, missing files, truncated archives).
- ``install_lock(dest)`` + ``atomic_install(zip, dest, record)``: extract beside the target, then rename into place;
  the previous model stays until the new one is complete, and concurrent installers wait for each other.
- ``install_from(urls, dest, make_record, ...)``: the whole flow under the lock.

Our own store: ``models_dir()/<tag>/{install.json, nnUNetTrainer*__nnUNetPlans__3d_fullres/}``.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import shutil
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

from rootlets_task import checkpoints
from rootlets_task._version import __version__
from rootlets_task.errors import RootletsError
from rootlets_task.releases import RELEASES, SCT_MODEL, Release, get_release

ENV_HOME = "ROOTLETS_TASK_HOME"      # models go to $ROOTLETS_TASK_HOME/models
ENV_MIRROR = "ROOTLETS_TASK_MIRROR"  # base URL(s) or folder(s) holding release zips, replacing GitHub
RECORD = "install.json"
CHECKPOINTS = ("checkpoint_final.pth", "checkpoint_best.pth")
_CHUNK = 1 << 20
_RETRY_STATUS = (500, 502, 503, 504)


# ---------------------------------------------------------------------------------------------------------- store
def models_dir() -> Path:
    """Where releases are installed: ``$ROOTLETS_TASK_HOME/models``, else the per-user data folder (platformdirs)."""
    home = os.environ.get(ENV_HOME)
    if home:
        return Path(home).expanduser() / "models"
    import platformdirs

    return platformdirs.user_data_path("rootlets_task", appauthor=False) / "models"


def release_urls(release: Release) -> list[str]:
    """Mirrors of a release; ``$ROOTLETS_TASK_MIRROR`` (whitespace-separated URLs or folders) replaces the registry's."""
    mirrors = os.environ.get(ENV_MIRROR, "").split()
    if release.bundled or not mirrors:
        return list(release.urls)
    return [m.rstrip("/") + "/" + release.asset if _is_url(m) else str(Path(m) / release.asset) for m in mirrors]


# ---------------------------------------------------------------------------------------------------------- fetch
@dataclass(frozen=True)
class Fetched:
    """A release zip on local disk: ``path`` is inside ``workdir`` when downloaded, the source itself when local."""

    path: Path
    url: str
    sha256: str
    size: int


class DownloadError(RootletsError):
    """No source gave the zip (network, HTTP error, checksum); the message lists every source's reason."""


class _SourceFailed(Exception):
    """One mirror failed; the reason is collected and the next mirror is tried."""


def _is_url(source: str) -> bool:
    return urlparse(source).scheme.lower() in ("http", "https", "file")


def _local_path(source: str) -> Path | None:
    """Path of a local source (plain path or file:// URL); None for http(s)."""
    parsed = urlparse(source)
    if parsed.scheme.lower() in ("http", "https"):
        return None
    if parsed.scheme.lower() == "file":
        if parsed.netloc not in ("", "localhost"):
            raise _SourceFailed(f"file URL with a remote host {parsed.netloc!r} is not supported")
        return Path(unquote(parsed.path))
    return Path(source).expanduser()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _session(retries: int, backoff: float):
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    session = requests.Session()
    retry = Retry(total=retries, connect=1, backoff_factor=backoff, status_forcelist=_RETRY_STATUS,
                  allowed_methods=("GET",))
    for prefix in ("http://", "https://"):
        session.mount(prefix, HTTPAdapter(max_retries=retry))
    return session


def _download(url: str, workdir: Path, progress: bool, retries: int, backoff: float,
              timeout: tuple[float, float]) -> tuple[Path, str, int]:
    """Stream ``url`` into a new file in ``workdir`` (removed on failure); return (path, sha256, size).

    Raises _SourceFailed with a short reason.
    """
    name = Path(unquote(urlparse(url).path)).name or "release.zip"
    fd, name_tmp = tempfile.mkstemp(prefix="download-", suffix=".zip", dir=workdir)
    os.close(fd)
    target = Path(name_tmp)
    try:
        return _stream(url, target, name, progress, retries, backoff, timeout)
    except BaseException:
        target.unlink(missing_ok=True)
        raise


def _stream(url: str, target: Path, name: str, progress: bool, retries: int, backoff: float,
            timeout: tuple[float, float]) -> tuple[Path, str, int]:
    """Write the body of ``url`` into ``target``, hashing and counting it on the way (tqdm bar on stderr)."""
    import requests
    from tqdm import tqdm

    digest, size, total, started = hashlib.sha256(), 0, None, False
    try:
        with _session(retries, backoff) as session, session.get(url, stream=True, timeout=timeout) as resp:
            if resp.status_code >= 400:
                raise _SourceFailed(f"HTTP {resp.status_code} {resp.reason}")
            started = True
            if resp.headers.get("Content-Length", "").isdigit() and not resp.headers.get("Content-Encoding"):
                total = int(resp.headers["Content-Length"])
            with open(target, "wb") as out, tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
                                                 disable=not progress, file=sys.stderr, leave=True) as bar:
                for chunk in resp.iter_content(64 * 1024):
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    bar.update(len(chunk))
    except requests.exceptions.RetryError as exc:
        raise _SourceFailed(f"gave up after {retries} retries ({getattr(exc.args[0], 'reason', exc)})") from exc
    except requests.exceptions.RequestException as exc:
        if started:
            raise _SourceFailed(f"download interrupted: the connection broke before the end of the file "
                                f"({size} of {total or '?'} bytes saved)") from exc
        if isinstance(exc, requests.exceptions.Timeout):
            raise _SourceFailed("timed out (slow network, or the server does not answer)") from exc
        if isinstance(exc, requests.exceptions.ConnectionError):
            raise _SourceFailed(f"cannot connect to {urlparse(url).netloc} (no network, or the server is down)") from exc
        raise _SourceFailed(f"{type(exc).__name__}: {exc}") from exc
    except OSError as exc:
        raise _SourceFailed(f"cannot write {target}: {exc.strerror or exc}") from exc
    if total is not None and size != total:
        raise _SourceFailed(f"download truncated: got {size} of {total} bytes")
    return target, digest.hexdigest(), size


def fetch(urls: list[str] | tuple[str, ...] | str, workdir: str | Path, sha256: str | None = None, progress: bool = True,
          retries: int = 3, backoff: float = 0.5, timeout: tuple[float, float] = (10.0, 60.0)) -> Fetched:
    """Get a release zip from the first source that works: http(s) URL, ``file://`` URL or local path.

    HTTP downloads stream into ``workdir`` (pick one on the target's filesystem) with a tqdm bar on stderr, retry 5xx
    answers with exponential backoff, and must match Content-Length. A known ``sha256`` must match, otherwise the
    computed digest is returned for the record. All sources failing -> RootletsError listing each reason.
    """
    sources = [urls] if isinstance(urls, str) else list(urls)
    failures = []
    for url in sources:
        downloaded = None
        try:
            local = _local_path(url)
            if local is None:
                downloaded = _download(url, Path(workdir), progress, retries, backoff, timeout)
                path, digest, size = downloaded
            elif not local.is_file():
                raise _SourceFailed("no such file")
            else:
                path, digest, size = local, sha256_file(local), local.stat().st_size
                url = url if _is_url(url) else str(local.absolute())
            if sha256 and digest != sha256.lower():
                raise _SourceFailed(f"checksum mismatch: expected sha256 {sha256[:16]}..., got {digest[:16]}... "
                                    "(corrupt download or a changed file)")
            return Fetched(path, url, digest, size)
        except _SourceFailed as exc:
            failures.append(f"{url}: {exc}")
            if downloaded is not None:
                downloaded[0].unlink(missing_ok=True)
    raise DownloadError("could not get the model zip: " + "; ".join(failures))


# ------------------------------------------------------------------------------------------------------- validate
@dataclass(frozen=True)
class ReleaseZip:
    """A checked release zip: its single trainer folder and the members to extract (zip name, path inside it)."""

    path: Path
    source: str  # what error messages name (the URL it came from)
    trainer_name: str
    folds: tuple[str, ...]
    members: tuple[tuple[str, str], ...]
    size: int  # uncompressed bytes of the trainer folder


def validate_release_zip(path: str | Path, source: str | None = None) -> ReleaseZip:
    """Check that ``path`` is a complete, safe nnU-Net release zip, without extracting it.

    Exactly one ``nnUNetTrainer*`` folder (at the root or under one wrapper folder) holding dataset.json, plans.json
    and ``fold_*/checkpoint_final.pth`` (or checkpoint_best.pth). Refused: absolute paths, ``..``, symbolic links or
    other special files, several trainer folders, truncated or non-zip files. Errors name ``source`` (default: path).
    """
    path = Path(path)
    source = source or str(path)

    def _bad(what: str) -> RootletsError:
        return RootletsError(f"refusing model zip {source}: {what}")

    if not path.is_file():
        raise RootletsError(f"model zip {path} does not exist")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            files, dirs = {}, set()
            for info in infos:
                name = info.filename
                parts = tuple(p for p in name.replace("\\", "/").split("/") if p not in ("", "."))
                if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
                    raise _bad(f"member {name!r} has an absolute path (zip-slip)")
                if ".." in parts:
                    raise _bad(f"member {name!r} contains '..' (zip-slip)")
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode) or (stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))):
                    raise _bad(f"member {name!r} is a link or special file")
                if not parts or parts[0] == "__MACOSX":
                    continue
                dirs.update(parts[:i] for i in range(1, len(parts)))
                if info.is_dir():
                    dirs.add(parts)
                else:
                    files[parts] = info
            trainers = sorted(d for d in dirs if d[-1].startswith("nnUNetTrainer")
                              and not any(p.startswith("nnUNetTrainer") for p in d[:-1]))
            if not trainers:
                raise _bad("no nnUNetTrainer* folder; not an nnU-Net model release")
            if len(trainers) > 1:
                raise _bad(f"{len(trainers)} nnUNetTrainer* folders ({', '.join('/'.join(t) for t in trainers)}); "
                           "a release has exactly one")
            trainer = trainers[0]
            inside = {parts[len(trainer):]: info for parts, info in files.items() if parts[:len(trainer)] == trainer}
            folds = sorted({p[0] for p in inside if len(p) == 2 and p[0].startswith("fold_") and p[1] in CHECKPOINTS})
            missing = [n for n in ("dataset.json", "plans.json") if (n,) not in inside]
            if not folds:
                missing.append("fold_*/checkpoint_final.pth")
            if missing:
                raise _bad(f"incomplete nnU-Net release, missing {', '.join(missing)} in {'/'.join(trainer)}/")
            for name in ("dataset.json", "plans.json"):
                try:
                    json.loads(zf.read(inside[(name,)]))
                except ValueError as exc:
                    raise _bad(f"{'/'.join(trainer)}/{name} is not valid JSON ({exc})") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as exc:
        raise RootletsError(f"model zip {source} is not a zip archive or is truncated ({exc}); download it again") from None
    members = tuple((info.filename, "/".join(rel)) for rel, info in sorted(inside.items()))
    return ReleaseZip(path, source, trainer[-1], tuple(folds), members, sum(info.file_size for info in inside.values()))


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


@contextmanager
def install_lock(dest: str | Path, verbose: int = 1) -> Iterator[None]:
    """Hold the per-destination lock ``.<name>.lock`` beside ``dest``; waits (saying so) while another process installs.

    On entry it cleans what a killed installer of ``dest`` left behind. Not re-entrant: take it once per install.
    """
    from filelock import FileLock, Timeout

    dest = Path(dest).absolute()
    dest.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(dest.parent / f".{dest.name}.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if verbose:
            print(f"waiting for another install into {dest} to finish (lock {lock.lock_file})", file=sys.stderr)
        lock.acquire()
    try:
        _recover(dest)
        yield
    finally:
        lock.release()


def _extract(layout: ReleaseZip, target: Path) -> None:
    try:
        with zipfile.ZipFile(layout.path) as zf:
            for name, rel in layout.members:
                out = target.joinpath(*rel.split("/"))
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(name) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst, _CHUNK)
    except (zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise RootletsError(f"model zip {layout.source} is corrupt ({exc}); download it again") from None
    except OSError as exc:
        raise RootletsError(f"cannot extract model zip into {target}: {exc.strerror or exc}") from None


def atomic_install(zip_path: str | Path, dest: str | Path, record: dict | str, record_name: str = RECORD,
                   layout: ReleaseZip | None = None) -> Path:
    """Replace folder ``dest`` by ``<trainer folder>/`` from the zip plus ``record_name`` (JSON of ``record``; a str
    is written verbatim, e.g. SCT's ``source.json`` byte-for-byte).

    Call it inside ``install_lock(dest)``. Everything is built in a temp folder beside ``dest`` (same filesystem) and
    renamed into place; the previous ``dest`` is moved aside just before and deleted just after, so a failure at any
    point leaves it untouched (a killed process is repaired by the next ``install_lock``). Returns the trainer folder.
    """
    dest = Path(dest).absolute()
    layout = layout or validate_release_zip(zip_path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(dest.parent).free
    if layout.size > free:
        raise RootletsError(f"not enough disk space in {dest.parent}: the model needs {layout.size >> 20} MB, "
                            f"{free >> 20} MB free")
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
        if old is not None:
            old.unlink() if old.is_symlink() else shutil.rmtree(old)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest / layout.trainer_name


def install_from(urls: list[str] | str, dest: str | Path, make_record: Callable[[Fetched, ReleaseZip], dict | str],
                 sha256: str | None = None, record_name: str = RECORD, skip: Callable[[], bool] | None = None,
                 progress: bool = True, verbose: int = 1) -> Path | None:
    """Lock ``dest``, return None if ``skip()`` (already installed), else fetch, validate and atomically install.

    The download goes to a temp folder beside ``dest`` that is always removed. Returns the installed trainer folder.
    """
    dest = Path(dest).absolute()
    with install_lock(dest, verbose):
        if skip is not None and skip():
            return None
        workdir = Path(tempfile.mkdtemp(prefix=_tmp_prefix(dest), dir=dest.parent))
        try:
            fetched = fetch(urls, workdir, sha256=sha256, progress=progress)
            layout = validate_release_zip(fetched.path, fetched.url)
            return atomic_install(fetched.path, dest, make_record(fetched, layout), record_name, layout)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


# --------------------------------------------------------------------------------------------- our releases
@dataclass(frozen=True)
class Installed:
    """A release installed in ``models_dir()``: its folder, trainer folder and install record."""

    tag: str
    folder: Path
    trainer_folder: Path
    record: dict

    @property
    def outdated(self) -> str | None:
        """Why the installed files are not the registry's current release, or None (custom installs never are)."""
        if self.record.get("custom"):
            return None
        release = RELEASES.get(self.tag)
        if release is None:
            return "no longer in the release registry"
        if release.sha256 and self.record.get("sha256") != release.sha256:
            return "installed zip differs from the release (sha256)"
        if self.record.get("asset") != release.asset:
            return f"the release is now {release.asset}"
        return None


def _read_installed(folder: Path) -> tuple[Installed | None, str | None]:
    """(installed release, None) or (None, reason it is not usable)."""
    try:
        record = json.loads((folder / RECORD).read_text())
        trainer = folder / record["trainer_folder"]
    except FileNotFoundError:
        return None, f"no {RECORD} in {folder}"
    except (ValueError, KeyError, TypeError) as exc:
        return None, f"unreadable {folder / RECORD} ({exc})"
    problem = trainer_folder_problem(trainer)
    if problem:
        return None, problem
    return Installed(folder.name, folder, trainer, record), None


def installed_release(tag: str) -> Installed | None:
    """The installed release ``tag``, or None when absent or incomplete."""
    return _read_installed(models_dir() / tag)[0]


def installed_releases() -> list[Installed]:
    """Every complete release in ``models_dir()``, by tag."""
    root = models_dir()
    found = (_read_installed(d)[0] for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")) \
        if root.is_dir() else ()
    return [inst for inst in found if inst is not None]


def model_folder(tag: str | None = None) -> tuple[Path, dict]:
    """(installed ``nnUNetTrainer*__nnUNetPlans__3d_fullres`` folder, install record) of release ``tag``.

    ``tag="sct"``: the rootlets model installed in SCT (see :func:`rootlets_task.sct.model_folder`), no download.
    """
    if tag == "sct":
        from rootlets_task import sct

        return sct.model_folder()
    release = get_release(tag)
    folder = models_dir() / release.tag
    if not folder.exists():
        raise RootletsError(f"no model release {release.tag} installed; run `rootlets -install -release {release.tag}`")
    installed, problem = _read_installed(folder)
    if installed is None:
        raise RootletsError(f"model release {release.tag} is damaged ({problem}); "
                            f"run `rootlets -install -release {release.tag}` to reinstall it")
    return installed.trainer_folder, installed.record


def install_release(tag: str | None = None, custom_url: str | list[str] | None = None, force: bool = False,
                    progress: bool = True, verbose: int = 1) -> Installed:
    """Install release ``tag`` (default r20250318) into ``models_dir()/<tag>``; a no-op when it is installed and current.

    ``custom_url``: URL(s), ``file://`` URL(s) or local zip path(s) tried in order instead of the registry's mirrors;
    always installed, recorded as custom (like ``sct_deepseg -custom-url``). ``force`` reinstalls a current release.
    ``phantom`` installs the zip bundled with the package, with no network.
    """
    release = get_release(tag)
    dest = models_dir() / release.tag
    custom = bool(custom_url)
    urls = ([custom_url] if isinstance(custom_url, str) else list(custom_url)) if custom else release_urls(release)
    if release.bundled and not custom and not Path(urls[0]).is_file():
        raise RootletsError(f"the bundled {release.tag} release is missing ({urls[0]}); reinstall the rootlets_task package")

    def current() -> bool:
        installed = installed_release(release.tag)
        return not (custom or force or installed is None or installed.record.get("custom") or installed.outdated)

    def make_record(fetched: Fetched, layout: ReleaseZip) -> dict:
        return {
            "tag": release.tag,
            "url": fetched.url,
            "asset": Path(unquote(urlparse(fetched.url).path)).name,
            "sha256": fetched.sha256,
            "size": fetched.size,
            "installed_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "package_version": __version__,
            "custom": custom,
            "trainer_folder": layout.trainer_name,
            "folds": list(layout.folds),
            "sct_model": SCT_MODEL,
        }

    try:
        trainer = install_from(urls, dest, make_record, sha256=None if custom else release.sha256,
                               skip=current, progress=progress, verbose=verbose)
    except DownloadError as exc:
        raise DownloadError(f"cannot install model release {release.tag}: {exc}; check the network, or download the "
                            f"zip elsewhere and run `rootlets -install -release {release.tag} -custom-url FILE.zip`") from None
    installed = installed_release(release.tag)
    if verbose:
        if trainer is None:
            print(f"model release {release.tag} is already installed and current: {installed.folder}")
        else:
            rec = installed.record
            print(f"installed model release {release.tag}{' (custom)' if custom else ''} from {rec['url']} "
                  f"({rec['size'] / 1e6:.1f} MB, sha256 {rec['sha256'][:12]}) into {installed.folder}")
    return installed


def release_status() -> list[dict]:
    """One row per known release (and per installed folder the registry no longer knows): what it is, and whether it is
    installed, current, custom, outdated or damaged. Drives ``rootlets releases``."""
    rows = []
    root = models_dir()
    extra = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") and d.name not in RELEASES) \
        if root.is_dir() else []
    for tag in [*RELEASES, *extra]:
        release = RELEASES.get(tag)
        folder = root / tag
        installed, problem = _read_installed(folder) if folder.exists() else (None, None)
        if installed is not None:
            status = "custom" if installed.record.get("custom") else (
                f"outdated: {installed.outdated}" if installed.outdated else "current")
        else:
            status = f"damaged: {problem}" if problem else "not installed"
        record = installed.record if installed else {}
        rows.append({
            "tag": tag,
            "default": bool(release and release.default),
            "date": release.date if release else "",
            "levels": f"{release.levels[0]}-{release.levels[-1]}" if release else "",
            "rootlets": release.rootlets if release else "",
            "contrasts": list(release.contrasts) if release else [],
            "description": release.description if release else "not in the release registry",
            "installed": installed is not None,
            "status": status,
            "installed_at": record.get("installed_at"),
            "url": record.get("url"),
            "sha256": record.get("sha256"),
            "folder": str(folder),
        })
    return rows
