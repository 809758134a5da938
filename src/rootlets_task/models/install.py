"""Our model store: ``models_dir()/<tag>/{install.json, nnUNetTrainer*__nnUNetPlans__3d_fullres/}``.

``models_dir()/active.json`` names the release that ``rootlets -install`` installed last: the one every command runs
when no release is named, as SCT runs the model it installed last (SCT keeps one model per task; we keep every release
beside it, and ``-release TAG`` still picks one explicitly). Without that file the default is r20250318.

Releases come from the registry (:mod:`rootlets_task.models.releases`) and are fetched, checked and installed by the
mechanism in :mod:`rootlets_task.models.archive`. ``install.json`` records where a release came from (URL without
secrets), its sha256 and size, when and by which package version it was installed.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from rootlets_task._version import __version__
from rootlets_task.core.errors import RootletsError
from rootlets_task.core.files import now, read_json, write_json
from rootlets_task.core.urls import redact
from rootlets_task.models import archive
from rootlets_task.models.releases import DEFAULT_TAG, ENV_MIRROR, RELEASES, SCT_MODEL, Release, get_release, release_urls

log = logging.getLogger(__name__)

ENV_HOME = "ROOTLETS_TASK_HOME"      # models go to $ROOTLETS_TASK_HOME/models
RECORD = "install.json"
CUSTOM = "custom"  # the tag of a model installed from -custom-url without -release: never an official release's folder
ACTIVE = "active.json"  # models_dir()/active.json: {"tag": the release the last explicit install installed}


def models_dir() -> Path:
    """Where releases are installed: ``$ROOTLETS_TASK_HOME/models``, else the per-user data folder (platformdirs)."""
    home = os.environ.get(ENV_HOME)
    if home:
        return Path(home).expanduser() / "models"
    import platformdirs

    return platformdirs.user_data_path("rootlets_task", appauthor=False) / "models"


@dataclass(frozen=True)
class Installed:
    """A release installed in ``models_dir()``: its folder, trainer folder and install record.

    ``fresh``: installed by the call that returned it (False: it was already installed and current).
    """

    tag: str
    folder: Path
    trainer_folder: Path
    record: dict
    fresh: bool = field(default=False, compare=False)

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

    def message(self) -> str:
        """What the command line says about this install."""
        if not self.fresh:
            return f"model release {self.tag} is already installed and current: {self.folder}"
        rec = self.record
        custom = " (custom)" if rec.get("custom") and self.tag != CUSTOM else ""
        return (f"installed model release {self.tag}{custom} from {rec['url']} "
                f"({rec['size'] / 1e6:.1f} MB, sha256 {rec['sha256'][:12]}) into {self.folder}")


def _read_installed(folder: Path) -> tuple[Installed | None, str | None]:
    """(installed release, None) or (None, reason it is not usable)."""
    if not (folder / RECORD).is_file():
        return None, f"no {RECORD} in {folder}"
    record = read_json(folder / RECORD, limit=1 << 20)
    if not isinstance(record, dict) or not isinstance(record.get("trainer_folder"), str):
        return None, f"unreadable {folder / RECORD}"
    trainer = folder / record["trainer_folder"]
    problem = archive.trainer_folder_problem(trainer)
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


def active_tag() -> str:
    """The release that runs when none is named: the one installed last by ``rootlets -install`` (or
    :func:`install_release`), else r20250318. An unreadable or unknown ``active.json`` is ignored."""
    pointer = read_json(models_dir() / ACTIVE, limit=4096)
    tag = pointer.get("tag") if isinstance(pointer, dict) else None
    return tag if isinstance(tag, str) and (tag == CUSTOM or tag in RELEASES) else DEFAULT_TAG


def set_active(tag: str) -> None:
    """Make ``tag`` the release that runs when none is named (written atomically)."""
    write_json(models_dir() / ACTIVE, {"tag": tag, "set_at": now()})


def model_folder(tag: str | None = None) -> tuple[Path, dict]:
    """(installed ``nnUNetTrainer*__nnUNetPlans__3d_fullres`` folder, install record) of release ``tag``.

    ``tag=None``: the active release (:func:`active_tag`). ``tag="sct"``: the rootlets model installed in SCT (see
    :func:`rootlets_task.models.sct.model_folder`), no download.
    """
    if tag == "sct":
        from rootlets_task.models import sct

        return sct.model_folder()
    release = _release(tag)
    folder = models_dir() / release.tag
    if not folder.exists():
        raise RootletsError("no custom model installed; run `rootlets -install -custom-url URL` (a URL or a zip file), "
                            f"or `rootlets -install` to go back to {DEFAULT_TAG}" if release.tag == CUSTOM else
                            f"no model release {release.tag} installed; run `rootlets -install -release {release.tag}`")
    installed, problem = _read_installed(folder)
    if installed is None:
        raise RootletsError(f"model release {release.tag} is damaged ({problem}); "
                            f"run `rootlets -install -release {release.tag}` to reinstall it")
    return installed.trainer_folder, installed.record


def ready_model_folder(tag: str | None = None, progress: bool = True) -> tuple[Path, dict]:
    """:func:`model_folder` of release ``tag``, installed first when missing or outdated (:func:`ensure_release`, SCT's
    first use): what every path that runs the model calls, so that each says and advises the same."""
    if tag != "sct":
        ensure_release(tag, progress=progress)
    return model_folder(tag)


def install_release(tag: str | None = None, custom_url: str | list[str] | None = None, force: bool = False,
                    progress: bool = True, allow_code: bool = False, make_active: bool = True) -> Installed:
    """Install release ``tag`` (default r20250318) into ``models_dir()/<tag>``; a no-op when it is installed and current.

    ``custom_url``: URL(s), ``file://`` URL(s) or local zip path(s) tried in order instead of the registry's mirrors;
    always installed, recorded as custom (like ``sct_deepseg -custom-url``); without ``tag`` into the ``custom``
    release, so that an official release is replaced only when named. ``force`` reinstalls a current release.
    ``phantom`` installs the zip bundled with the package, with no network. ``allow_code``: accept a release that
    ships Python code (SCT's ``trainer_class.py``), which then runs when the model is used. ``make_active``: the
    release installed (or found current) becomes the one that runs when none is named (:func:`active_tag`), as in SCT.
    """
    custom = bool(custom_url)
    release = _release(CUSTOM if tag is None and custom else tag or DEFAULT_TAG)
    if release.tag == CUSTOM and not custom:
        raise RootletsError("-release custom is your own model: install it with `rootlets -install -custom-url URL` "
                            "(a URL or a zip file)")
    dest = models_dir() / release.tag
    urls = ([custom_url] if isinstance(custom_url, str) else list(custom_url or ())) if custom else release_urls(release)
    if release.bundled and not custom and not Path(urls[0]).is_file():
        raise RootletsError(f"the bundled {release.tag} release is missing ({urls[0]}); reinstall the rootlets_task package")

    def current() -> bool:
        installed = installed_release(release.tag)
        return not (custom or force or installed is None or installed.record.get("custom") or installed.outdated)

    def make_record(fetched: archive.Fetched, layout: archive.ReleaseZip) -> dict:
        return {"tag": release.tag, "url": fetched.url, "asset": Path(unquote(urlparse(fetched.url).path)).name,
                "sha256": fetched.sha256, "size": fetched.size, "installed_at": now(), "package_version": __version__,
                "custom": custom, "trainer_folder": layout.trainer_name, "folds": list(layout.folds),
                "code": list(layout.code), "sct_model": SCT_MODEL}

    try:
        checks = archive.Checks(sha256=None if custom else release.sha256, known_size=None if custom else release.size,
                                allow_code=allow_code)
        trainer = archive.install_from(urls, dest, make_record, RECORD, checks, skip=current, progress=progress)
    except archive.DownloadError as exc:
        asset = _file_name(urls[0]) if custom else release.asset  # the file the user asked for
        raise archive.DownloadError(f"cannot install model release {release.tag}: {exc}; check the network, or download "
                                    f"{asset} elsewhere and run `rootlets -install -release {release.tag} "
                                    f"-custom-url FILE.zip`, or set {ENV_MIRROR} to a folder or server holding it") from None
    installed = installed_release(release.tag)
    assert installed is not None  # just installed
    if make_active:
        set_active(release.tag)
    return Installed(installed.tag, installed.folder, installed.trainer_folder, installed.record, fresh=trainer is not None)


def _file_name(url: str) -> str:
    """The file a URL or path names (a URL that does not parse: ``custom.zip``)."""
    try:
        return Path(unquote(urlparse(url).path)).name or "custom.zip"
    except ValueError:
        return "custom.zip"


def ensure_release(tag: str | None = None, progress: bool = True) -> Installed:
    """Release ``tag`` (default: the active one), installed first when it is missing, damaged or outdated, as
    ``sct_deepseg`` does on first use (without changing which release is current).

    Says so like SCT ("Model ... is not installed. Installing it now...") and then what ``rootlets -install`` says;
    the bundled ``phantom`` release installs silently (no network). A custom install is never outdated (as SCT's
    ``custom: true``). Without network the error says how to install from a file or a mirror.
    """
    release = _release(tag)
    folder = models_dir() / release.tag
    installed, problem = _read_installed(folder) if folder.exists() else (None, None)
    if installed is not None and not installed.outdated:
        return installed
    if installed is not None:
        why = f"Model release {release.tag} is out of date ({installed.outdated}). Re-installing it now..."
    elif problem:
        why = f"Model release {release.tag} is damaged ({problem}). Re-installing it now..."
    else:
        why = f"Model release {release.tag} is not installed. Installing it now..."
    say = log.debug if release.bundled else log.info
    say(why)
    fresh = install_release(release.tag, progress=progress and not release.bundled, make_active=False)
    say(fresh.message())
    return fresh


def _release(tag: str | None) -> Release:
    """The registry's release, or the ``custom`` one (no registry entry: what it holds is the user's); None: the
    active one (:func:`active_tag`)."""
    tag = active_tag() if tag is None else tag
    if tag == CUSTOM:
        return Release(tag=CUSTOM, date="", urls=("custom.zip",), contrasts=(), levels=(), rootlets="",
                       description="your own model, installed with `rootlets -install -custom-url URL`")
    return get_release(tag)


def release_status() -> list[dict]:
    """One row per known release (and per installed folder the registry no longer knows): what it is, and whether it is
    installed, current, custom, outdated or damaged, and which one runs when none is named (``active``). Drives
    ``rootlets releases``."""
    rows = []
    root = models_dir()
    runs = active_tag()
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
            "active": tag == runs,
            "date": release.date if release else "",
            "levels": f"{release.levels[0]}-{release.levels[-1]}" if release else "",
            "rootlets": release.rootlets if release else "",
            "contrasts": list(release.contrasts) if release else [],
            "description": release.description if release else (_release(CUSTOM).description if tag == CUSTOM
                                                                else "not in the release registry"),
            "installed": installed is not None,
            "status": status,
            "installed_at": record.get("installed_at"),
            "url": redact(record["url"]) if record.get("url") else None,
            "sha256": record.get("sha256"),
            "folder": str(folder),
        })
    return rows
