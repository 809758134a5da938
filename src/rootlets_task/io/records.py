"""Resume records: what a step was computed from and what it wrote, so a rerun redoes only what changed.

One JSON file per job (``<stem>_chain.json`` of the chain, ``<stem>_batch.json`` of a batch unit) holds, per step,
the *key* (sha256 of the inputs, the settings, the package version) and the sha256 of every file the step wrote,
named relative to the record's folder (a moved output folder stays valid). A step is up to date when its key
matches and every file it wrote is still intact; a file is *owned* by a step when it is byte for byte what the step
wrote, and only owned files are ever replaced or removed without ``overwrite``.
"""

from __future__ import annotations

import os
from pathlib import Path

from rootlets_task._version import __version__
from rootlets_task.core.errors import RootletsError
from rootlets_task.core.files import now, read_json, sha256_file, write_json


class Record:
    """A resume record at ``path`` (loaded when present; an unreadable one counts as empty)."""

    def __init__(self, path: str | os.PathLike, overwrite: bool = False, owner: str = "this chain"):
        self.path = Path(path)
        self.overwrite = overwrite
        self.owner = owner  # what error messages call the job that writes the files
        loaded = read_json(self.path)
        self.data = loaded if isinstance(loaded, dict) and isinstance(loaded.get("steps"), dict) else {"steps": {}}

    @property
    def folder(self) -> Path:
        return self.path.parent

    def step(self, name: str) -> dict:
        return self.data["steps"].get(name) or {}

    def _intact(self, name: str, digest: str) -> bool:
        path = self.folder / name
        return path.is_file() and sha256_file(path) == digest

    def up_to_date(self, step: str, key: dict) -> bool:
        done = self.step(step)
        if self.overwrite or not done or done.get("key") != key:
            return False
        return all(self._intact(name, digest) for name, digest in done.get("outputs", {}).items())

    def owned(self, step: str, path: Path) -> bool:
        """Whether ``path`` is, byte for byte, what ``step`` wrote last time."""
        digest = self.step(step).get("outputs", {}).get(self.name(path))
        return digest is not None and self._intact(self.name(path), digest)

    def name(self, path: str | os.PathLike) -> str:
        """How the record names ``path``: relative to its folder."""
        return Path(os.path.relpath(Path(path).absolute(), self.folder.absolute())).as_posix()

    def check_writable(self, step: str, outputs: list[Path], flag: str = "-ofolder") -> None:
        """Refuse to replace a file this step did not write (or that was changed since), unless ``overwrite``."""
        for out in outputs:
            if out.exists() and not self.overwrite and not self.owned(step, out):
                raise RootletsError(f"output {out} exists and was not written by {self.owner} (or was changed since); "
                                    f"use -overwrite to replace it, or choose another {flag}")

    def stale(self, step: str, outputs: list[Path], keep: tuple[Path, ...] = ()) -> list[Path]:
        """Files ``step`` wrote last time, still intact, that this run does not write again (to be removed)."""
        written = {self.name(p) for p in (*outputs, *keep)}
        return [self.folder / name for name, digest in self.step(step).get("outputs", {}).items()
                if name not in written and self._intact(name, digest)]

    def done(self, step: str, key: dict, outputs: list[Path], extra: dict | None = None,
             keep: tuple[Path, ...] = ()) -> None:
        """Record a finished step and remove its stale files of an earlier run (e.g. discs now none), except ``keep``."""
        for old in self.stale(step, outputs, keep):
            old.unlink(missing_ok=True)
        self.data["steps"][step] = {"key": key, "outputs": {self.name(p): sha256_file(p) for p in outputs},
                                    "finished": now(), **(extra or {})}
        self.save()

    def save(self) -> None:
        self.data["version"] = __version__
        write_json(self.path, self.data)
