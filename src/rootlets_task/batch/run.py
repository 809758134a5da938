"""Batch runs over a BIDS dataset: resumable, parallel on one machine (``-jobs N``) or on a Dask cluster.

:func:`run_batch` finds the input images (:mod:`rootlets_task.batch.bids`), skips those already done with the same inputs
and settings, and runs :func:`process_unit` on the rest, the same function on every engine
(:mod:`rootlets_task.batch.engines`): in this process, in local worker processes, on a Dask scheduler or on SLURM; or in
the tasks of one SLURM job array that this call only submits (:mod:`rootlets_task.batch.slurm_array`).

One input image = one *unit*. A unit is written into ``<out>/.tmp/<name>.<host>-<pid>-<random>/`` and its files are moved into
``<out>/sub-XX/[ses-YY/]anat/`` only when all of them are made; its record ``<name>_batch.json`` (a
:class:`rootlets_task.io.records.Record`: sha256 of every input, the settings, the package version and model release,
the sha256 of every output) is written last. A unit counts as done only when its record matches, so a killed run never
leaves a file that looks finished; leftover temporary folders are removed by the next run. Logs:
``<out>/logs/<name>.log``, ``err.<name>.log`` after a failure (the ``sct_run_batch`` convention).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rootlets_task._version import __version__
from rootlets_task.batch import bids, engines
from rootlets_task.batch import levers as batch_levers
from rootlets_task.batch.units import (
    GROUP,
    LOGS,
    RECORD_SUFFIX,
    SUMMARY,
    TMP,
    UNIT_STEP,
    Settings,
    checks_of,
    describe_unit,
    is_done,
    process_unit,
)
from rootlets_task.core.errors import RootletsError
from rootlets_task.core.files import now, read_json, remove_stale_scratch, same_file, writable_folder, write_json
from rootlets_task.core.options import ChainOptions, ModelOptions
from rootlets_task.core.places import portable, shared_paths
from rootlets_task.io import provenance
from rootlets_task.io.records import Record
from rootlets_task.io.tables import write_csv

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchOptions:
    """What to run on and how: the selection, the engine and the run's policy (see :func:`run_batch`)."""

    contrasts: tuple[str, ...] = ("T2w",)
    include: str | None = None
    exclude: str | None = None
    subjects: tuple[str, ...] = ()  # only these subject labels ("01", not "sub-01"); () = all
    sessions: tuple[str, ...] = ()  # only these session labels; () = all
    labels: str | os.PathLike | None = None  # manual labels derivative (default BIDS_ROOT/derivatives/labels)
    jobs: int | None = None  # local worker processes (None: 1); slurm: SLURM jobs; slurm_array: tasks (None: 1 per image)
    dask: str | None = None  # address of an existing Dask scheduler
    slurm: dict | None = None  # SLURMCluster options (engines.parse_slurm)
    slurm_array: tuple[str, ...] | None = None  # sbatch options of one job array (rootlets_task.batch.slurm_array)
    collect: bool = False  # submit nothing: merge the tables, report what is missing and why
    bids_strict: bool = False  # BIDS-strict output names (rootlets_task.batch.bids_strict)
    qc: str | os.PathLike | None = None
    continue_on_error: bool = True
    overwrite: bool = False
    progress: bool = True
    levers: str = "none"  # none | auto | crop,int8 (batch_levers.plan_batch_levers)
    speedcheck: str | os.PathLike | None = None  # with levers auto: the report of `rootlets speedcheck` to follow
    levers_check: int = 2  # with levers auto and no report: images of the dataset checked first


# ------------------------------------------------------------------------------------------------ the dataset


@dataclass
class BatchSummary:
    """What a :func:`run_batch` call did, per image: done, skipped (up to date), failed (with the reason), not run;
    and the files it passed over (``ignored``: relative path, reason)."""

    out: Path
    results: list[dict]
    seconds: float
    tables: dict[str, Path] = field(default_factory=dict)
    ignored: list[tuple[str, str]] = field(default_factory=list)
    qc: Path | None = None  # the QC folder of the run, when one was asked for

    def by_status(self, status: str) -> list[dict]:
        return [r for r in self.results if r["status"] == status]

    @property
    def failed(self) -> list[dict]:
        return self.by_status("failed") + self.by_status("not run")

    @property
    def numbering_warnings(self) -> list[dict]:
        """Images whose spinal levels do not sit where their names say (numbering check shifted or unclear)."""
        return [r for r in self.results if (r.get("numbering") or {}).get("status") in ("shifted", "unclear")]

    def text(self) -> str:
        counts = {s: len(self.by_status(s)) for s in ("done", "skipped", "failed", "not run", "submitted", "pending")}
        retried = sum(bool(r.get("retried")) for r in self.results)
        lines = [f"rootlets batch: {len(self.results)} image(s) in {self.seconds:.0f} s: "
                 + ", ".join(f"{n} {s}" for s, n in counts.items() if n or s in ("done", "skipped", "failed"))
                 + (f" ({retried} retried after an interrupted attempt)" if retried else "")]
        jobs = sorted({(r["status"], r["job"]) for r in self.results if r.get("job")})
        lines += [f"  {status}: {sum(r.get('job') == job for r in self.results)} image(s) in SLURM array job {job}; when it "
                  "has ended, run the same command again (or add -collect) to merge the tables and see what is missing"
                  for status, job in jobs]
        lines += [f"  {r['status']}: {r['rel']}: {r['error']}" + (f" (log: {os.path.normpath(r['log'])})"
                                                                  if r.get("log") else "") for r in self.failed]
        lines += [f"  not a candidate: {rel}: {why}" for rel, why in self.ignored]
        flagged = self.numbering_warnings
        if flagged:
            lines.append(f"  {len(flagged)} image(s) with a numbering warning (levels named one or more levels off; "
                         "check before use, or rerun with -renumber suggested):")
            lines += [f"  numbering {r['numbering']['status']}: {r['rel']}: {r['numbering']['text']}" for r in flagged]
        lines += [f"  {name}: {os.path.normpath(path)}" for name, path in self.tables.items()]
        if self.qc is not None:
            lines.append(f"  QC report: {os.path.normpath(self.qc / 'rootlets_task' / 'index.html')}")
        return "\n".join(lines)


def _check_out(bids_root: Path, out: Path, labels_root: Path) -> None:
    """Refuse an output folder that is the dataset, inside the raw dataset, or a derivative another tool made."""
    resolved, root = out.absolute().resolve(), bids_root.absolute().resolve()
    for kept, what in ((root, "the BIDS root"), (labels_root, "the manual labels folder")):
        if same_file(out, kept):
            raise RootletsError(f"-o {out}: is {what}, whose files must be kept; give a folder of its own "
                                f"(e.g. {bids_root}/derivatives/rootlets)")
    inside = resolved.is_relative_to(root)
    if inside and not resolved.is_relative_to(root / "derivatives"):
        raise RootletsError(f"-o {out}: is inside the raw dataset {bids_root}; give a derivatives folder "
                            f"(e.g. {bids_root}/derivatives/rootlets) or a folder outside it")
    description = out / "dataset_description.json"
    if description.exists():
        content = read_json(description)
        generated = (content or {}).get("GeneratedBy") if isinstance(content, dict) else None
        ours = isinstance(generated, list) and generated and isinstance(generated[0], dict) \
            and generated[0].get("Name") == "rootlets_task"
        if not ours:
            raise RootletsError(f"-o {out}: holds another derivative dataset ({description} was not written by "
                                "rootlets_task); give a folder of its own so its files are kept")


def _settings(bids_root: Path, options: BatchOptions, model: ModelOptions, chain: ChainOptions | None,
              units: list[bids.Unit]) -> Settings:
    """The batch's settings; the model's install is looked up only when an image needs it: every image of a
    rootlets-only batch, and with ``chain`` the images without a rootlets file in the labels derivative."""
    from rootlets_task.inference.segmenter import physical_cores
    from rootlets_task.models import install

    need = [u for u in units if chain is None or "rootlets" not in u.labels]
    if model.threads is None and not _engine(options):  # elsewhere a worker takes the cores of its node or job
        model = replace(model, threads=max(1, physical_cores() // (options.jobs or 1)))
    common: dict[str, Any] = {"options": model, "chain": chain, "qc": str(Path(options.qc).absolute()) if options.qc else None,
              "bids_strict": options.bids_strict}
    if not need:
        log.info("batch: every image has its rootlets file in the labels derivative; no model is used")
        return Settings(model_folder="", model={}, **common)
    listed = ", ".join(u.rel for u in need[:5]) + (f" and {len(need) - 5} more" if len(need) > 5 else "")
    try:
        folder, record = install.ready_model_folder(model.release)  # first use installs it once, before any worker starts
    except RootletsError as exc:
        if chain is None:
            raise
        raise RootletsError(f"{exc}; the model is needed only for the {len(need)} of {len(units)} image(s) without a "
                            f"rootlets file in the labels derivative: {listed} (or add their *_label-rootlets_dseg "
                            "files)") from None
    if chain is not None and len(need) < len(units):
        log.info("batch: %d of %d image(s) have a rootlets file; the model segments the others: %s", len(units) - len(need),
                 len(units), listed)
    return Settings(model_folder=str(folder.absolute()), model={k: record.get(k) for k in ("tag", "sha256", "url")},
                    **common)


def _engine(options: BatchOptions) -> str | None:
    """The engine other than local processes (-dask, -slurm, -slurm-array, -collect), if any; refused when several."""
    chosen = [name for name, on in (("-dask", options.dask), ("-slurm", options.slurm is not None),
                                    ("-slurm-array", options.slurm_array is not None), ("-collect", options.collect)) if on]
    if len(chosen) > 1:
        raise RootletsError(f"{' and '.join(chosen)} exclude each other: choose one way to run the images")
    return chosen[0] if chosen else None


def _describe_dataset(bids_root: Path, out: Path, units: list[bids.Unit], settings: Settings,
                      levers: dict | None = None) -> None:
    """``dataset_description.json`` (and with ``bids_strict`` the ``.bidsignore``; colliding names refused first);
    ``levers``: how the speed levers were chosen (``SpeedLevers``)."""
    description = provenance.dataset_description(settings.model, settings.chain is not None, bids_root, out)
    if levers:
        description["GeneratedBy"][0]["SpeedLevers"] = levers
    if settings.bids_strict:
        from rootlets_task.batch import bids_strict

        bids_strict.check_unique(units)
        bids_strict.write_dataset_files(out)
    if read_json(out / "dataset_description.json") != description:
        write_json(out / "dataset_description.json", description)


def run_batch(bids_root: str | os.PathLike, out: str | os.PathLike, options: BatchOptions = BatchOptions(),
              model: ModelOptions = ModelOptions(), chain: ChainOptions | None = None) -> BatchSummary:
    """Run rootlets (and with ``chain`` the whole chain to levels) on every selected image of a BIDS dataset.

    Writes a BIDS derivative dataset into ``out`` (see the module doc and docs: batch and clusters); returns a
    :class:`BatchSummary`. Everything is checked (the folders, the selection, the model, the engine) before the
    first image runs. ``model.threads``: CPU threads per worker process (default: the cores divided among the local
    jobs / the Dask worker's threads / the CPUs of the array task). ``options.slurm_array`` submits one SLURM job array
    and returns; ``options.collect`` submits nothing and reports what is missing (:mod:`rootlets_task.batch.slurm_array`).
    ``options.bids_strict``: BIDS-strict names (:mod:`rootlets_task.batch.bids_strict`).
    """
    t0 = time.perf_counter()
    bids_root, out = Path(bids_root), Path(out)
    model.check()
    if chain is not None:
        chain.check()
    if options.jobs is not None and not 1 <= options.jobs <= 4096:
        raise RootletsError(f"-jobs {options.jobs}: give a number of worker processes from 1 to 4096")
    engine = _engine(options)
    if engine == "-slurm":
        engines.require_slurm()  # a missing extra is reported before anything is written
    batch_levers.check_batch_options(options, model, chain)
    if engine == "-slurm-array":
        from rootlets_task.batch.slurm_array import check_sbatch

        check_sbatch()
    _check_out(bids_root, out, bids.labels_root(bids_root, options.labels))
    found = bids.find_images(bids_root, tuple(options.contrasts), options.include, options.exclude,
                             tuple(options.subjects), tuple(options.sessions))
    if not found.images:
        raise RootletsError(f"BIDS folder {bids_root}: no sub-*/[ses-*/]anat/*_{'|'.join(options.contrasts)}.nii.gz "
                            "image matches; check -contrast, -include and -exclude"
                            + (" and the participant/session labels" if options.subjects or options.sessions else ""))
    units = bids.plan_units(bids_root, out, found.images, options.labels, chain is not None or options.levers != "none")
    settings = _settings(bids_root, options, model, chain, units)
    writable_folder(out)
    if options.qc:
        writable_folder(options.qc, "QC folder", "-qc")
    with _only_batch(out):  # two batches into one folder would remove each other's temporary folders
        levers, levers_note, check = batch_levers.plan_batch_levers(options, settings, units, out)
        settings = replace(settings, levers=levers, run=uuid.uuid4().hex)
        _describe_dataset(bids_root, out, units, settings, levers_note)
        remove_stale_scratch(out / TMP)  # left by killed runs, also of images that are done since
        results = [{**describe_unit(u), "status": "skipped", "error": None, "seconds": 0.0, **checks_of(u)}
                   for u in units if not options.overwrite and is_done(u, settings)]
        skipped = {r["name"] for r in results}
        todo = [u for u in units if u.name not in skipped]
        checked = [u for u in todo if u.rel in levers.checked]  # written from the lever check's exact path, here
        with batch_levers.replaying(check, settings):
            results += _run(checked, len(results), settings, out, replace(options, jobs=1, dask=None, slurm=None))
        todo = [u for u in todo if u not in checked]
        if engine in ("-slurm-array", "-collect"):
            from rootlets_task.batch.slurm_array import run_array

            results += run_array(todo, settings, out, options.jobs, options.slurm_array, options.collect)
        else:
            results += _run(todo, len(results), settings, out, options)
        with contextlib.suppress(OSError):
            (out / TMP).rmdir()  # only when empty: another run may be writing into the same folder
        summary = BatchSummary(out=out, results=sorted(results, key=lambda r: r["rel"]), seconds=time.perf_counter() - t0,
                               ignored=found.ignored, qc=Path(options.qc) if options.qc else None)
        if chain is not None:
            with shared_paths(out, {"raw": bids_root}):  # the group tables name their sources by BIDS URI
                summary.tables = dataset_tables(out, settings, participants_file(bids_root))
        with shared_paths(out, {"raw": bids_root}):  # the summary is part of the derivative: no local paths
            write_json(out / LOGS / SUMMARY, {"finished": now(), "seconds": round(summary.seconds, 1), "version": __version__,
                                              "release": settings.model.get("tag"),
                                              "results": [r | {"log": portable(r.get("log"))} for r in summary.results],
                                              "ignored": [list(i) for i in summary.ignored],
                                              "tables": {k: portable(v) for k, v in summary.tables.items()}})
    return summary


@contextlib.contextmanager
def _only_batch(out: Path):
    """Hold ``out/logs/.batch.lock`` while a batch writes into ``out``: a second batch into the same folder stops at
    once with one line naming the first (SLURM array tasks and Dask workers of one batch do not take it)."""
    import json
    import socket

    from filelock import FileLock, Timeout

    (out / LOGS).mkdir(parents=True, exist_ok=True)
    lock, owner = FileLock(out / LOGS / ".batch.lock"), out / LOGS / ".batch.lock.owner"
    try:
        lock.acquire(timeout=0)
    except Timeout:
        holder = read_json(owner, limit=4096)
        who = (f"process {holder.get('pid')} on {holder.get('host')}, since {holder.get('since')}"
               if isinstance(holder, dict) else "another process")
        raise RootletsError(f"output folder {out}: another rootlets batch is writing into it ({who}); wait for it to "
                            "end, or give this one another -o") from None
    try:
        owner.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": now()}))
        yield
    finally:
        owner.unlink(missing_ok=True)
        lock.release()


def _run(todo: list[bids.Unit], skipped: int, settings: Settings, out: Path, options: BatchOptions) -> list[dict]:
    """Run ``todo`` on the chosen engine, one log line per image as it finishes (``skipped`` images already counted);
    without ``continue_on_error``, start nothing new after a failure."""
    if not todo:
        return []
    results: list[dict] = []
    failed = threading.Event()
    total = len(todo) + skipped
    if options.progress and skipped:
        log.info("batch: %d of %d image(s) already done, skipped; running %d", skipped, total, len(todo))
    run = functools.partial(process_unit, settings=settings, out_root=str(out.absolute()))

    def stop() -> bool:
        return not options.continue_on_error and failed.is_set()

    jobs = options.jobs or 1
    parallel = options.dask or options.slurm is not None or jobs > 1
    with (engines.client(jobs, options.dask, options.slurm) if parallel
          else contextlib.nullcontext()) as connected:
        stream = (engines.sequential(run, todo) if connected is None
                  else engines.on_dask(connected, run, todo, stop, describe_unit))
        for result in stream:
            results.append(result)
            done = skipped + len(results)
            if result["status"] == "failed":
                failed.set()
                log.warning("batch %d/%d: FAILED %s: %s", done, total, result["rel"], result["error"])
            elif options.progress:
                log.info("batch %d/%d: %s %s (%.0f s)", done, total, result["status"], result["rel"], result["seconds"])
            if connected is None and stop():
                break
    ran = {r["name"] for r in results}
    results += [{**describe_unit(u), "status": "not run", "seconds": None,
                 "error": "stopped after an earlier failure (-continue-on-error 0)"} for u in todo if u.name not in ran]
    return results


def group_level(bids_root: str | os.PathLike, out: str | os.PathLike, options: BatchOptions = BatchOptions(),
                model: ModelOptions = ModelOptions(), chain: ChainOptions = ChainOptions()) -> dict[str, Path]:
    """The group level of a BIDS App: the dataset tables and group statistics of :func:`dataset_tables` over the
    images already done in ``out`` with these settings (``options.subjects``/``sessions``: only those), after the
    participant level ran them with ``chain``, e.g. as one job per participant. Runs no image."""
    bids_root, out = Path(bids_root), Path(out)
    if not (out / "dataset_description.json").is_file():
        raise RootletsError(f"{out}: no rootlets_task derivative here; run the participant level (with levels) first")
    found = bids.find_images(bids_root, tuple(options.contrasts), options.include, options.exclude,
                             tuple(options.subjects), tuple(options.sessions))
    settings = _settings(bids_root, options, model, chain, bids.plan_units(bids_root, out, found.images, options.labels, True))
    tables = dataset_tables(out, settings, participants_file(bids_root), options.subjects, options.sessions)
    if not tables:
        raise RootletsError(f"{out}: no image done with levels and these settings (release {settings.model.get('tag')})"
                            "; run the participant level with levels first")
    return tables


def participants_file(bids_root: Path) -> Path | None:
    """The dataset's ``participants.tsv`` when it has a ``height`` column (the paper normalises by body height)."""
    path = bids_root / "participants.tsv"
    try:
        with path.open(encoding="utf-8") as f:
            header = f.readline(64 << 10).rstrip("\n").split("\t")  # a header line, however long the file
    except (OSError, UnicodeDecodeError):
        return None
    return path if "height" in header else None


def dataset_tables(out: Path, settings: Settings, participants: Path | None = None, subjects: tuple[str, ...] = (),
                   sessions: tuple[str, ...] = ()) -> dict[str, Path]:
    """``levels.csv``, ``shift.csv``, with ``-measure`` ``measure.csv``, with ``-template`` ``levels_pam50.csv`` (PAM50's
    spinal levels in each image) and ``levels_space-PAM50.csv`` (each image's levels in template coordinates) of the
    whole derivative dataset (one row per image, level and kind) and the
    group statistics of :func:`rootlets_task.levels.stats.group_stats` (in ``group/``), normalised by body height as the
    paper does when ``participants`` (the dataset's ``participants.tsv`` with ``height``) is given and usable.

    They cover every image in ``out`` whose record was made with the current settings, including images of earlier
    runs (e.g. other ``-include`` selections or other jobs of an ``sct_run_batch`` script); ``subjects``/``sessions``
    (labels without ``sub-``/``ses-``): only those.
    """
    import pandas as pd

    from rootlets_task.core.files import atomic_path
    from rootlets_task.io.tables import read_shift_table

    records = []
    for path in sorted(out.rglob(f"*{RECORD_SUFFIX}")):
        record = Record(path)
        step, data = record.step(UNIT_STEP), record.data
        if (subjects and data.get("subject") not in {f"sub-{s}" for s in subjects}) or (
                sessions and data.get("session") not in {f"ses-{s}" for s in sessions}):
            continue
        if step and {k: v for k, v in step.get("key", {}).items() if k != "inputs"} == settings.key(data.get("rel")):
            records.append((path.parent, path.name[: -len(RECORD_SUFFIX)], record))
    tables: dict[str, Path] = {}
    files = []
    for kind in ("levels", "shift", "measure", "levels_pam50", "levels_space-PAM50"):
        frames = []
        for folder, name, record in records:
            path = folder / f"{name}_{kind}.csv"
            if path.is_file() and record.name(path) in record.step(UNIT_STEP).get("outputs", {}):
                if kind in ("levels", "shift"):  # the group statistics are those of the levels
                    files.append(path)
                frame = read_shift_table(path) if kind == "shift" else pd.read_csv(path)
                frame.insert(0, "image", name)
                frame.insert(1, "session", record.data.get("session") or "")
                frame.insert(1, "subject", record.data.get("subject"))
                frames.append(frame)
        if frames:
            tables[kind] = out / f"{kind}.csv"
            with atomic_path(tables[kind]) as tmp:
                write_csv(pd.concat(frames, ignore_index=True), tmp)
    if files:
        tables.update(_group(files, out / GROUP, participants))
    return tables


def _group(files: list[Path], folder: Path, participants: Path | None) -> dict[str, Path]:
    """Group statistics, by height when the participants file allows it, else (with a warning) without."""
    from rootlets_task.levels.stats import group_stats

    if participants is not None:
        try:
            return {f"group_{k}": v for k, v in group_stats(files, folder, participants).items()}
        except RootletsError as exc:
            log.warning("group statistics not normalised by height: %s", exc)
    try:
        return {f"group_{k}": v for k, v in group_stats(files, folder, normalise=False).items()}
    except RootletsError as exc:
        log.warning("no group statistics: %s", exc)
        return {}
