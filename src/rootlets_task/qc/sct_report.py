"""Entries in SCT's own QC report, so ``rootlets -i IMG -qc DIR`` lists beside SCT's other steps in SCT's index.

SCT (7.0 to HEAD, ``reports/qc2.py`` ``create_qc_entry``) keeps one report per QC folder:

* per entry, ``DIR/<dataset>/<subject>/<contrast>/<command>/<timestamp>/background_img.png`` and ``overlay_img.png``
  (one size; the page shows the overlay over the background) and ``DIR/_json/qc_<timestamp>.json`` (14 keys);
* ``index.html`` and its assets, copied by SCT, and ``js/datasets.js``: every ``_json/*.json``, sorted by file name,
  under the report's UUID (``assets/py/refresh_qc_entries.py``);
* a lock shared by every writer: portalocker's ``BoundedSemaphore`` named ``sct_qc-<folder name>-<md5 of its path>``.

We write our entries exactly so, with ``command: "sct_deepseg"`` (SCT's "save fails/artifacts" export then files
them as segmentations) and our own command line in ``cmdline``, under SCT's lock; when the folder already holds
SCT's report (``js/datasets.js``) we rebuild that file as SCT does, keeping its UUID. We never write ``index.html``
or any other SCT asset, and never remove or replace an entry. The images are drawn by our own code
(:func:`rootlets_task.qc.views.axial_mosaic`, :func:`rootlets_task.qc.figures.sct_entry_images`).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import re
import shlex
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rootlets_task._version import __version__
from rootlets_task.core.errors import RootletsError

if TYPE_CHECKING:
    import nibabel as nib

log = logging.getLogger(__name__)

COMMAND = "sct_deepseg"             # what SCT's page and its fail/artifact export know rootlets entries by
PLANES = ("Axial", "Sagittal")      # -qc-plane; recorded only: the rootlets entry is always the axial mosaic
LOCK_TIMEOUT_S = 60                 # as SCT (utils/fs.py mutex)
KEYS = ("path", "cmdline", "command", "sctVersion", "dataset", "subject", "contrast", "inputFile", "plane",
        "backgroundImage", "overlayImage", "date", "rank", "qc")
_UUID = re.compile(r"window.SCT_QC_UUID = '([0-9A-Za-z-]{1,64})';")  # nothing that could close the JS string
ENTRY_BYTES, ENTRY_DEPTH = 1 << 20, 8  # an entry of SCT's _json/: a flat object of a few strings


@dataclass(frozen=True)
class QcNames:
    """``-qc-dataset``, ``-qc-subject``, ``-qc-plane`` (None: derived from the input's folders, as SCT does)."""

    dataset: str | None = None
    subject: str | None = None
    plane: str = "Axial"

    def check(self) -> QcNames:
        if self.plane not in PLANES:
            raise RootletsError(f"argument -qc-plane: invalid choice: {self.plane!r} (choose from 'Axial', 'Sagittal')")
        return self


def entry_names(image_path: str | os.PathLike, names: QcNames = QcNames()) -> tuple[str, str, str, str]:
    """(dataset, subject, contrast, input file name) of an entry: SCT reads ``.../<dataset>/<subject>/<contrast>/<file>``
    of the resolved input path unless ``-qc-dataset``/``-qc-subject`` are given (the contrast is always derived)."""
    path = Path(image_path).resolve()
    dataset = names.dataset if names.dataset is not None else path.parent.parent.parent.name
    subject = names.subject if names.subject is not None else path.parent.parent.name
    return dataset, subject, path.parent.name, path.name


def command_line(program: str, argv: Sequence[str]) -> str:
    """``cmdline`` of an entry: the program and its arguments as typed, shell-quoted (SCT's ``list2cmdline``)."""
    return " ".join(shlex.quote(str(a)) for a in [program, *argv])


def lock_name(qc_dir: str | os.PathLike) -> str:
    """Name of SCT's QC semaphore for this folder (``reports/qc2.py``): the same for SCT and us, so both exclude
    each other."""
    real = Path(qc_dir).resolve()
    return f"sct_qc-{real.name}-{hashlib.md5(str(real).encode('utf-8')).hexdigest()}"


@contextmanager
def qc_lock(qc_dir: str | os.PathLike, timeout: float | None = None) -> Iterator[None]:
    """Hold SCT's QC lock of ``qc_dir`` (portalocker BoundedSemaphore, maximum 1, in the temp folder); ``timeout``
    defaults to :data:`LOCK_TIMEOUT_S`, read at call time."""
    import portalocker

    timeout = LOCK_TIMEOUT_S if timeout is None else timeout

    semaphore = portalocker.BoundedSemaphore(maximum=1, name=lock_name(qc_dir), timeout=timeout, check_interval=0.1)
    try:
        semaphore.acquire()
    except portalocker.AlreadyLocked:
        raise RootletsError(f"QC folder {qc_dir}: another process (SCT or rootlets) held its QC lock "
                            f"{lock_name(qc_dir)} for {timeout:g} s; this entry's images are saved, run again "
                            "later") from None
    try:
        yield
    finally:
        semaphore.release()


def refresh_datasets(qc_dir: str | os.PathLike) -> Path | None:
    """Rebuild SCT's ``js/datasets.js`` from every ``_json/*.json`` (sorted by name), keeping the report's UUID, as
    SCT's ``refresh_qc_entries.py`` does; nothing when the folder holds no SCT report. Call it under :func:`qc_lock`."""
    from rootlets_task.core.files import load_json, printable, write_text

    qc_dir = Path(qc_dir)
    target = qc_dir / "js" / "datasets.js"
    if not target.is_file():
        return None
    try:
        with open(target, "rb") as fh:  # the UUID is on its second line: the head is enough, whatever the file holds
            head = fh.read(64 << 10).decode("utf-8", errors="replace")
    except OSError:
        head = ""
    report_uuid = next((m.group(1) for line in head.splitlines() if (m := _UUID.match(line))), None) or str(uuid.uuid4())
    entries = []
    for path in sorted((qc_dir / "_json").glob("*.json")):
        try:  # SCT's own refresh would stop at a bad entry; the page must keep working
            entry = load_json(path, "QC entry", limit=ENTRY_BYTES, depth=ENTRY_DEPTH,
                              fix="not listed in SCT's index; fix or move that file")
            if not isinstance(entry, dict):
                raise RootletsError(f"QC entry {path}: not an object; not listed in SCT's index; fix or move that file")
        except RootletsError as exc:
            log.warning("%s", printable(exc))
            continue
        entries.append(entry)
    write_text(target, f"\nwindow.SCT_QC_UUID = '{report_uuid}';\nwindow.SCT_QC_DATASETS = {json.dumps(entries)};\n")
    return target


def _new_entry_folder(qc_dir: Path, dataset: str, subject: str, contrast: str) -> tuple[datetime.datetime, Path]:
    """A fresh timestamped image folder (never one that exists: no entry is ever replaced)."""
    for _ in range(100):
        stamp = datetime.datetime.now()
        folder = qc_dir / dataset / subject / contrast / COMMAND / stamp.strftime("%Y_%m_%d_%H%M%S.%f")
        json_path = qc_dir / "_json" / f"qc_{stamp.strftime('%Y_%m_%d_%H%M%S.%f')}.json"
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        if not json_path.exists():
            return stamp, folder
    raise RootletsError(f"QC folder {qc_dir}: no free entry name after 100 tries; check the clock and the folder")


def _create(path: Path, text: str) -> None:
    """Write a new file atomically, never replacing one: a hidden temp (not ``*.json``, so SCT's ``_json/*.json``
    never reads it half-written) hard-linked into place (an exclusive create where hard links are not supported)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        tmp.write_text(text, encoding="utf-8")
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise
        except OSError:  # e.g. a file system without hard links
            with open(path, "x", encoding="utf-8") as out:
                out.write(text)
    except FileExistsError:
        raise RootletsError(f"QC entry {path} appeared while drawing; run again (no entry was replaced)") from None
    except OSError as exc:
        raise RootletsError(f"QC folder {path.parent}: cannot write {path.name} ({exc.strerror or exc})") from None
    finally:
        tmp.unlink(missing_ok=True)


def add_entry(qc_dir: str | os.PathLike, image_path: str | os.PathLike, image: nib.Nifti1Image,
              rootlets: nib.Nifti1Image, cmdline: str, names: QcNames = QcNames()) -> Path:
    """One entry of SCT's QC report for a rootlets segmentation; returns its ``_json`` record.

    The timestamp is taken before the images are drawn (as SCT); the images go to a folder no other entry uses;
    the record is written and ``js/datasets.js`` refreshed under SCT's lock.
    """
    from rootlets_task.qc.figures import sct_entry_images
    from rootlets_task.qc.views import axial_mosaic

    qc_dir = Path(qc_dir).absolute()
    names.check()
    dataset, subject, contrast, input_file = entry_names(image_path, names)
    stamp, folder = _new_entry_folder(qc_dir, dataset, subject, contrast)
    background, overlay = folder / "background_img.png", folder / "overlay_img.png"
    sct_entry_images(axial_mosaic(image, rootlets), background, overlay)
    record = dict(zip(KEYS, (str(Path.cwd()), cmdline, COMMAND, f"rootlets_task {__version__}", dataset, subject,
                             contrast, input_file, names.plane, background.relative_to(qc_dir).as_posix(),
                             overlay.relative_to(qc_dir).as_posix(), stamp.strftime("%Y-%m-%d %H:%M:%S.%f"), "", ""),
                      strict=True))
    path = qc_dir / "_json" / f"qc_{stamp.strftime('%Y_%m_%d_%H%M%S.%f')}.json"
    with qc_lock(qc_dir):
        _create(path, json.dumps(record, indent=1))
        refreshed = refresh_datasets(qc_dir)
    log.info("QC entry %s%s", path, f" (listed in {qc_dir / 'index.html'})" if refreshed else
             " (SCT's index.html lists it once SCT writes a QC entry into this folder)")
    return path
