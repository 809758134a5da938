"""What the package stored for this user outside the repository, and removing it (``rootlets clean``).

Two places: the model store (:func:`rootlets_task.models.install.models_dir`: ``$ROOTLETS_TASK_HOME/models`` or the user
data folder) and the cache of converted networks (:func:`rootlets_task.inference.backends.cache_dir`: ``$ROOTLETS_TASK_CACHE``
or the user cache folder). Only what the package made there is removed: release folders that hold an
``install.json`` and the lock files beside them, the ``openvino`` cache folder; other files in those folders (a
``ROOTLETS_TASK_CACHE`` pointed at a shared folder, say) stay. Models installed into SCT are SCT's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from rootlets_task.core.errors import RootletsError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stored:
    """One thing the package stored: what it is, where, and its size in bytes."""

    what: str
    path: Path
    size: int


def _size(path: Path) -> int:
    if path.is_file() or path.is_symlink():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() or p.is_symlink())


def stored() -> list[Stored]:
    """Everything :func:`clean` would remove, with its size."""
    from rootlets_task.inference.backends import cache_dir
    from rootlets_task.models.install import ACTIVE, RECORD, models_dir

    found = []
    models = models_dir()
    if models.is_dir():
        for entry in sorted(models.iterdir()):
            if entry.is_dir() and not entry.is_symlink() and (entry / RECORD).is_file():
                found.append(Stored(f"model release {entry.name}", entry, _size(entry)))
            elif entry.is_file() and entry.name.startswith(".") and entry.name.endswith(".lock"):
                found.append(Stored("install lock", entry, _size(entry)))
            elif entry.is_file() and not entry.is_symlink() and entry.name == ACTIVE:
                found.append(Stored("which release runs by default", entry, _size(entry)))
    networks = cache_dir() / "openvino"
    if networks.is_dir():
        found.append(Stored("converted networks (OpenVINO)", networks, _size(networks)))
    return found


def clean(dry_run: bool = False) -> list[Stored]:
    """Remove what :func:`stored` lists (nothing with ``dry_run``); empty parent folders go too. Returns the list."""
    from rootlets_task.inference.backends import ENV_CACHE, cache_dir
    from rootlets_task.models.install import ENV_HOME, models_dir

    items = stored()
    if dry_run:
        return items
    for item in items:
        try:
            if item.path.is_dir() and not item.path.is_symlink():
                shutil.rmtree(item.path)
            else:
                item.path.unlink(missing_ok=True)
        except OSError as exc:
            raise RootletsError(f"cannot remove {item.path}: {exc.strerror}; check its permissions and run "
                                "`rootlets clean` again") from None
        log.info("removed %s: %s", item.what, item.path)
    own = [models_dir()] + ([] if os.environ.get(ENV_HOME) else [models_dir().parent])  # the package's own folders
    own += [] if os.environ.get(ENV_CACHE) else [cache_dir()]
    for folder in own:
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty
    return items
