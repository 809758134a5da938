"""Batch runs over a BIDS dataset: resumable, parallel on one machine (``-jobs N``) or on a Dask cluster.

:func:`run_batch` finds the input images by BIDS entities (``sub-*/[ses-*/]anat/<entities>_<suffix>.nii[.gz]``),
skips those already done with the same inputs and settings, and runs :func:`process_unit` on the rest, the same
function everywhere: in this process (``jobs=1``), in ``jobs`` local Dask worker processes (``distributed.LocalCluster``),
on an existing Dask scheduler (``dask=ADDRESS``) or on a SLURM cluster started with dask-jobqueue (``slurm={...}``).
Every worker process keeps its loaded model in a per-process cache (:func:`segmenter`), so a model is loaded once
per process, not once per image.

One input image = one *unit*. A unit is written into ``<out>/.tmp/<name>.<pid>.<random>/`` and its files are moved into
``<out>/sub-XX/[ses-YY/]anat/`` only when all of them are made; its record ``<name>_batch.json`` (sha256 of every
input, the settings, the package version and model release, the sha256 of every output) is written last. A unit
counts as done only when its record matches, so a killed run never leaves a file that looks finished; leftover
temporary folders are removed by the next run. Logs: ``<out>/logs/<name>.log``, ``err.<name>.log`` after a failure
(the ``sct_run_batch`` convention).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
import shutil
import socket
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rootlets_task import nifti
from rootlets_task._version import __version__
from rootlets_task.errors import RootletsError
from rootlets_task.install import sha256_file as sha256

SKIP_DIRS = {"derivatives", "sourcedata", "code", "stimuli"}
IMAGE_RE = re.compile(r"^(?P<entities>sub-[A-Za-z0-9]+(?:_[A-Za-z0-9]+-[A-Za-z0-9]+)*)_(?P<suffix>[A-Za-z0-9]+)\.nii(?:\.gz)?$")
# manual/corrected files looked up in the labels derivative (NeuroPoly convention, the names the chain writes)
LABELS = {"cord": "_label-SC_seg", "discs": "_label-discs_dlabel", "pmj": "_label-PMJ_dlabel", "rootlets": "_label-rootlets_dseg"}
T1_LIKE = {"T1w", "UNIT1", "MP2RAGE", "T1map"}  # contrast given to sct_detect_pmj (-c t1); every other suffix: t2
RECORD_SUFFIX = "_batch.json"
TMP, LOGS, GROUP = ".tmp", "logs", "group"
SUMMARY = "batch_summary.json"


# ------------------------------------------------------------------------------------------------ what to run


@dataclass(frozen=True)
class Settings:
    """Everything a worker needs besides the unit; ``key()`` is the part that decides the result."""

    model_folder: str
    model: dict  # tag, sha256, url of the installed release
    levels: bool = False
    method: str = "gapfree"
    cord_from: str = "auto"
    discs_from: str = "auto"
    pmj_from: str = "auto"
    crop_to_cord: bool = False
    test_time_aug: bool = False
    device: str = "auto"
    threads: int | None = None  # per worker process; None = the worker's cores divided by its Dask threads
    qc: str | None = None

    def key(self) -> dict:
        return {"version": __version__, "release": self.model.get("tag"), "model_sha256": self.model.get("sha256"),
                "test_time_aug": self.test_time_aug, "levels": self.levels,
                **({"method": self.method, "cord_from": self.cord_from, "discs_from": self.discs_from,
                    "pmj_from": self.pmj_from, "crop_to_cord": self.crop_to_cord} if self.levels else {})}


@dataclass(frozen=True)
class Unit:
    """One input image of the dataset and where its outputs go."""

    name: str  # the image stem, e.g. sub-01_ses-02_T2w
    rel: str  # path of the image inside the BIDS root
    image: str
    subject: str
    session: str | None
    suffix: str
    out_dir: str  # final folder: <out>/sub-XX/[ses-YY/]anat
    labels: dict = field(default_factory=dict)  # kind -> manual file from the labels derivative
    inputs: dict = field(default_factory=dict)  # name inside the BIDS root -> sha256

    def key(self, settings: Settings) -> dict:
        return {**settings.key(), "inputs": self.inputs}


def parse_contrast(spec: str) -> tuple[str, dict[str, str]]:
    """``T2w`` -> ("T2w", {}); ``inv-2`` -> ("MP2RAGE", {"inv": "2"}); ``MP2RAGE`` -> both inversions."""
    match = re.fullmatch(r"inv-([A-Za-z0-9]+)", spec)
    if match:
        return "MP2RAGE", {"inv": match[1]}
    if not re.fullmatch(r"[A-Za-z0-9]+", spec):
        raise RootletsError(f"-contrast {spec}: not a BIDS suffix; use e.g. T2w, T1w, UNIT1, MP2RAGE, inv-1 or inv-2")
    return spec, {}


def _entities(text: str) -> dict[str, str]:
    return dict(part.split("-", 1) for part in text.split("_"))


def find_images(bids_root: str | os.PathLike, contrasts: tuple[str, ...] = ("T2w",), include: str | None = None,
                exclude: str | None = None) -> list[tuple[Path, dict[str, str], str]]:
    """(image, entities, suffix) of every ``anat`` image with a selected contrast, sorted by path.

    ``include``/``exclude`` are regular expressions searched in the path relative to the root
    (``sub-01/ses-02/anat/sub-01_ses-02_T2w.nii.gz``), so they can name subjects, sessions or any entity.
    """
    root = Path(bids_root)
    if not root.is_dir():
        raise RootletsError(f"BIDS folder {root}: not found; give the dataset root (the folder holding sub-*/)")
    wanted = [parse_contrast(c) for c in contrasts]
    try:
        inc = re.compile(include) if include else None
        exc = re.compile(exclude) if exclude else None
    except re.error as err:
        raise RootletsError(f"-include/-exclude: invalid regular expression ({err}); check the pattern") from None
    found = []
    for sub in sorted(p for p in root.glob("sub-*") if p.is_dir() and p.name not in SKIP_DIRS):
        sessions = sorted(p for p in sub.glob("ses-*") if p.is_dir()) or [sub]
        for folder in sessions:
            for path in sorted((folder / "anat").glob("*.nii*")):
                match = IMAGE_RE.match(path.name)
                if not match:
                    continue
                entities, suffix = _entities(match["entities"]), match["suffix"]
                if entities["sub"] != sub.name[4:] or (folder != sub and entities.get("ses") != folder.name[4:]):
                    continue  # a file misplaced in another subject's or session's folder: not BIDS, not ours
                if not any(suffix == s and all(entities.get(k) == v for k, v in f.items()) for s, f in wanted):
                    continue
                rel = path.relative_to(root).as_posix()
                if (inc and not inc.search(rel)) or (exc and exc.search(rel)):
                    continue
                found.append((path, entities, suffix))
    return found


def plan_units(bids_root: str | os.PathLike, out: str | os.PathLike, images: list[tuple[Path, dict[str, str], str]],
               labels_dir: str | os.PathLike | None = None, levels: bool = False) -> list[Unit]:
    """One :class:`Unit` per image, with its manual labels (``-levels``) and the sha256 of every input."""

    root, out = Path(bids_root).absolute(), Path(out).absolute()
    labels_root = Path(labels_dir).absolute() if labels_dir else root / "derivatives" / "labels"
    units = []
    for path, entities, suffix in images:
        path = path.absolute()
        name = nifti.stem(path)
        rel_dir = path.parent.relative_to(root)
        labels = {}
        if levels:
            for kind, tail in LABELS.items():
                candidate = labels_root / rel_dir / f"{name}{tail}.nii.gz"
                if candidate.is_file():
                    labels[kind] = str(candidate)
        inputs = {path.relative_to(root).as_posix(): sha256(path)}
        inputs.update({f"labels:{kind}": sha256(Path(p)) for kind, p in labels.items()})
        units.append(Unit(name=name, rel=path.relative_to(root).as_posix(), image=str(path), subject=f"sub-{entities['sub']}",
                          session=f"ses-{entities['ses']}" if "ses" in entities else None, suffix=suffix,
                          out_dir=str(out / rel_dir), labels=labels, inputs=inputs))
    names = [u.name for u in units]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise RootletsError(f"images with the same name in several folders ({', '.join(duplicates)}); "
                            "rename them or select one with -include/-exclude")
    return units


# ------------------------------------------------------------------------------------------------ one unit

_CACHE: dict[tuple, object] = {}
_CACHE_LOCK = threading.Lock()


def _worker_threads(settings: Settings) -> int | None:
    """Threads for this process's model: as given, else the cores shared among this Dask worker's task threads."""
    if settings.threads:
        return settings.threads
    try:
        from distributed import get_worker

        per_worker = get_worker().state.nthreads
    except (ImportError, ValueError):
        return None
    from rootlets_task.inference import physical_cores

    return max(1, physical_cores() // max(1, per_worker))


def segmenter(settings: Settings):
    """The model of ``settings``, loaded once per process and reused for every later unit (the worker cache)."""
    key = (settings.model_folder, settings.device, settings.test_time_aug, settings.threads)
    with _CACHE_LOCK:
        if key not in _CACHE:
            from rootlets_task.inference import Segmenter

            _CACHE[key] = Segmenter(settings.model_folder, device=settings.device, test_time_aug=settings.test_time_aug,
                                    verbose=0, record=settings.model, threads=_worker_threads(settings))
        return _CACHE[key]


_MODEL_LOCK = threading.Lock()  # nnU-Net's predictor is not thread-safe: one image at a time per process


def _replace_paths(value, old: str, new: str):
    """``value`` (parsed JSON) with every string's ``old`` prefix replaced: temporary folder -> final folder."""
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, list):
        return [_replace_paths(v, old, new) for v in value]
    if isinstance(value, dict):
        return {k: _replace_paths(v, old, new) for k, v in value.items()}
    return value


def _read_record(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def is_done(unit: Unit, settings: Settings) -> bool:
    """Whether ``unit``'s record matches its inputs and settings, every output it lists is intact, and (with ``qc``)
    its QC went into that folder. A QC folder alone does not change the outputs, so it is not part of the key."""

    out_dir = Path(unit.out_dir)
    record = _read_record(out_dir / f"{unit.name}{RECORD_SUFFIX}")
    if not record or record.get("key") != unit.key(settings) or (settings.qc and record.get("qc") != settings.qc):
        return False
    return all((out_dir / name).is_file() and sha256(out_dir / name) == digest for name, digest in record["outputs"].items())


def process_unit(unit: Unit, settings: Settings, out_root: str) -> dict:
    """Make every output of one image, atomically; never raises for a problem of this image (returns it instead).

    The same function runs in the driver, in local worker processes and on Dask workers. Returns a dict with
    ``name``, ``status`` (done | failed), ``error`` (one line), ``log``, ``seconds``, ``host``, ``pid`` and ``retried``
    (an earlier attempt of this unit was interrupted, e.g. its worker was killed).
    """
    t0 = time.perf_counter()
    out_root_p = Path(out_root)
    tmp_root = out_root_p / TMP
    tmp_root.mkdir(parents=True, exist_ok=True)
    stale = list(tmp_root.glob(f"{unit.name}.*"))
    for old in stale:  # an earlier attempt of this unit that died (killed worker or driver)
        shutil.rmtree(old, ignore_errors=True)
    tmp = tmp_root / f"{unit.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    logs = out_root_p / LOGS
    logs.mkdir(exist_ok=True)
    log_path = tmp / f"{unit.name}.log"
    result = {"name": unit.name, "rel": unit.rel, "status": "failed", "error": None, "host": socket.gethostname(),
              "pid": os.getpid(), "retried": bool(stale)}
    final = Path(unit.out_dir)
    try:
        with open(log_path, "w", buffering=1) as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            print(f"rootlets batch {__version__}: {unit.rel} on {result['host']} (pid {result['pid']}), {_now()}")
            if stale:
                print(f"an earlier attempt of this image was interrupted; its temporary folder was removed: {stale}")
            print(f"settings: {json.dumps(unit.key(settings))}")
            try:
                with _MODEL_LOCK:
                    seg = segmenter(settings)
                    print(f"model {settings.model.get('tag')} ({seg.backend}, {seg.threads} threads, {seg.device.type})")
                    notes, made = _make_outputs(unit, settings, seg, tmp)
                _finish(unit, settings, tmp, final, made, notes, time.perf_counter() - t0)
                result["status"] = "done"
                print(f"done in {time.perf_counter() - t0:.1f} s: {', '.join(sorted(made))}")
            except Exception as exc:  # one image's failure is reported, never raised: the others go on
                result["error"] = _one_line(exc)
                print(f"FAILED: {result['error']}")
                traceback.print_exc(file=log)
        target = logs / (f"{unit.name}.log" if result["status"] == "done" else f"err.{unit.name}.log")
        other = logs / (f"err.{unit.name}.log" if result["status"] == "done" else f"{unit.name}.log")
        os.replace(log_path, target)
        other.unlink(missing_ok=True)
        result["log"] = str(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["seconds"] = round(time.perf_counter() - t0, 3)
    return result


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text if isinstance(exc, RootletsError) else f"{type(exc).__name__}: {text}"


def _make_outputs(unit: Unit, settings: Settings, seg, tmp: Path) -> tuple[list[str], dict[str, Path]]:
    """Segment (and with ``levels`` run the chain) into ``tmp``; returns (notes, {kind: file})."""
    image = Path(unit.image)
    if not settings.levels:
        out = tmp / f"{unit.name}_rootlets.nii.gz"
        seg.segment_file(image, out, command=f"batch {unit.rel} -release {settings.model.get('tag')}")
        return [], {"rootlets": out}
    from rootlets_task.chain import run_chain

    labels = unit.labels
    result = run_chain(image, out_dir=tmp, cord=labels.get("cord"), discs=labels.get("discs"), pmj=labels.get("pmj"),
                       rootlets=labels.get("rootlets"), cord_from=settings.cord_from, discs_from=settings.discs_from,
                       pmj_from=settings.pmj_from, method=settings.method, segmenter=seg, crop_to_cord=settings.crop_to_cord,
                       contrast="t1" if unit.suffix in T1_LIKE else "t2", verbose=1)
    print(f"cord from {result.sources['cord']}, discs from {result.sources['discs']}, PMJ from {result.sources['pmj']}")
    print(result.table())
    return list(result.notes), dict(result.outputs)


def _finish(unit: Unit, settings: Settings, tmp: Path, final: Path, made: dict[str, Path], notes: list[str],
            seconds: float) -> None:
    """Move the outputs into place (paths in JSON files rewritten), QC, then the record last."""

    files = sorted(p for p in tmp.iterdir() if p.is_file() and p.suffix != ".log")
    for path in files:
        if path.suffix == ".json":
            content = _replace_paths(json.loads(path.read_text()), str(tmp), str(final))
            with nifti.atomic_path(path) as t:
                t.write_text(json.dumps(content, indent=2) + "\n")
    final.mkdir(parents=True, exist_ok=True)
    record_path = final / f"{unit.name}{RECORD_SUFFIX}"
    previous = _read_record(record_path) or {}
    record_path.unlink(missing_ok=True)  # from here until the new record exists the unit is not done
    for path in files:
        os.replace(path, final / path.name)
    outputs = {p.name: sha256(final / p.name) for p in files}
    for name, digest in previous.get("outputs", {}).items():  # files of an earlier run that this run no longer makes
        old = final / name
        if name not in outputs and old.is_file() and sha256(old) == digest:
            old.unlink()
    where = {kind: final / Path(p).name for kind, p in made.items() if Path(p).parent == tmp}
    if settings.qc:
        _qc(unit, settings, where, notes)
    record = {"key": unit.key(settings), "image": unit.image, "rel": unit.rel, "subject": unit.subject,
              "session": unit.session, "outputs": outputs, "notes": notes, "finished": _now(),
              "seconds": round(seconds, 3), "host": socket.gethostname(), "version": __version__,
              "release": settings.model.get("tag"), "qc": settings.qc}
    with nifti.atomic_path(record_path) as t:
        t.write_text(json.dumps(record, indent=2) + "\n")


def _qc(unit: Unit, settings: Settings, where: dict[str, Path], notes: list[str]) -> None:
    from rootlets_task.qc import qc_subject

    qc_subject(settings.qc, unit.image, where.get("rootlets", unit.labels.get("rootlets")), cord=where.get("cord"),
               discs=where.get("discs"), levels=where.get("csv"), shift=where.get("shift"), subject=unit.name,
               provenance={"release": settings.model.get("tag"), "batch": unit.rel, "levels": settings.levels},
               warnings=notes)


# ------------------------------------------------------------------------------------------------ engines


def _sequential(units: list[Unit], settings: Settings, out: str) -> Iterator[dict]:
    for unit in units:
        yield process_unit(unit, settings, out)


def _on_dask(client, units: list[Unit], settings: Settings, out: str, stop) -> Iterator[dict]:
    """Submit every unit to ``client``; yield results as they complete.

    A worker that dies while processing a unit gets it rescheduled by Dask, up to
    ``distributed.scheduler.allowed-failures`` times (default 3); after that the unit is reported as failed. When
    ``stop()`` turns true the units not finished are cancelled (and reported by the caller as not run).
    """
    from distributed import as_completed

    token = uuid.uuid4().hex[:8]
    futures = {client.submit(process_unit, u, settings, out, key=f"rootlets-{u.name}-{token}", pure=False): u
               for u in units}
    for future in as_completed(list(futures)):
        unit = futures[future]
        try:
            result = future.result()
        except Exception as exc:  # KilledWorker (its workers died too often), or the worker could not run it at all
            died = type(exc).__name__ == "KilledWorker"
            result = {"name": unit.name, "rel": unit.rel, "status": "failed", "seconds": None, "retried": died, "log": None,
                      "error": f"worker process died while processing it ({_one_line(exc)})" if died else _one_line(exc)}
        yield result
        if stop():
            client.cancel([f for f in futures if not f.done()])
            return


def _slurm_cluster_class():
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise RootletsError("-slurm needs dask-jobqueue; run `pip install 'rootlets_task[slurm]'`") from None
    return SLURMCluster


def slurm_cluster(options: dict):
    """A ``dask_jobqueue.SLURMCluster`` (no job submitted yet): our defaults, then ``options``.

    Each SLURM job runs one worker process with one task thread (``--nthreads 1`` is appended: a process segments one
    image at a time), and its model uses every core the job was given (``cores``).
    """
    options = {"cores": 2, "processes": 1, "memory": "8GB", "walltime": "02:00:00", **options}
    options["worker_extra_args"] = [*options.get("worker_extra_args", []), "--nthreads", "1"]
    return _slurm_cluster_class()(**options)


@contextlib.contextmanager
def _client(jobs: int, dask: str | None, slurm: dict | None):
    """A Dask client: on ``dask`` (address), on a new SLURM cluster, or on ``jobs`` local worker processes."""
    from distributed import Client, LocalCluster

    if dask:
        try:
            client = Client(dask, timeout=30)
        except (OSError, TimeoutError) as exc:
            raise RootletsError(f"-dask {dask}: cannot reach the Dask scheduler ({exc}); check the address "
                                "(tcp://HOST:8786) and that `dask scheduler` runs") from None
        with client:
            yield client
        return
    if slurm is not None:
        with slurm_cluster(slurm) as cluster, Client(cluster) as client:
            cluster.scale(jobs=jobs)
            yield client
        return
    with LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None,
                      silence_logs=40) as cluster, Client(cluster) as client:
        yield client


def parse_slurm(options: list[str]) -> dict:
    """``["cores=4", "memory=16GB", "job_extra_directives=--gres=gpu:1"]`` -> SLURMCluster keyword arguments."""
    parsed: dict = {}
    for item in options:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise RootletsError(f"-slurm {item}: expected KEY=VALUE (e.g. cores=4 memory=16GB walltime=04:00:00 "
                                "queue=NAME account=NAME)")
        key = key.replace("-", "_")
        if key in ("cores", "processes"):
            value = int(value)
        if key in ("job_extra_directives", "job_script_prologue", "worker_extra_args"):
            parsed.setdefault(key, []).append(value)
        else:
            parsed[key] = value
    return parsed


# ------------------------------------------------------------------------------------------------ the dataset


@dataclass
class BatchSummary:
    """What a :func:`run_batch` call did, per image: done, skipped (up to date), failed (with the reason), not run."""

    out: Path
    results: list[dict]
    seconds: float
    tables: dict[str, Path] = field(default_factory=dict)

    def by_status(self, status: str) -> list[dict]:
        return [r for r in self.results if r["status"] == status]

    @property
    def failed(self) -> list[dict]:
        return self.by_status("failed") + self.by_status("not run")

    def text(self) -> str:
        counts = {s: len(self.by_status(s)) for s in ("done", "skipped", "failed", "not run")}
        retried = sum(bool(r.get("retried")) for r in self.results)
        lines = [f"rootlets batch: {len(self.results)} image(s) in {self.seconds:.0f} s: "
                 + ", ".join(f"{n} {s}" for s, n in counts.items() if n or s != "not run")
                 + (f" ({retried} retried after an interrupted attempt)" if retried else "")]
        lines += [f"  {r['status']}: {r['rel']}: {r['error']}" + (f" (log: {r['log']})" if r.get("log") else "")
                  for r in self.failed]
        lines += [f"  {name}: {path}" for name, path in self.tables.items()]
        return "\n".join(lines)


def dataset_description(settings: Settings, bids_root: Path) -> dict:
    """The derivative dataset's ``dataset_description.json`` (BIDS 1.10: DatasetType derivative, GeneratedBy)."""
    from rootlets_task.inference import code_url

    return {
        "Name": "rootlets_task: spinal nerve rootlets" + (" and spinal/vertebral levels" if settings.levels else ""),
        "BIDSVersion": "1.10.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "rootlets_task", "Version": __version__, "Release": settings.model.get("tag"),
                         "Description": "RootletSeg nnU-Net rootlets segmentation (rootlets batch)",
                         "CodeURL": code_url(), "ModelURL": settings.model.get("url"),
                         "ModelSHA256": settings.model.get("sha256")}],
        "SourceDatasets": [{"URL": bids_root.absolute().as_uri()}],
    }


def _write_description(out: Path, content: dict) -> None:
    path = out / "dataset_description.json"
    old = _read_record(path)
    if old == content:
        return
    with nifti.atomic_path(path) as tmp:
        tmp.write_text(json.dumps(content, indent=2) + "\n")


def run_batch(bids_root: str | os.PathLike, out: str | os.PathLike, contrasts: tuple[str, ...] | list[str] = ("T2w",),
              include: str | None = None, exclude: str | None = None, jobs: int = 1, dask: str | None = None,
              slurm: dict | None = None, levels: bool = False, qc: str | os.PathLike | None = None,
              continue_on_error: bool = True, release: str | None = None, overwrite: bool = False,
              labels: str | os.PathLike | None = None, method: str = "gapfree", cord_from: str = "auto",
              discs_from: str = "auto", pmj_from: str = "auto", test_time_aug: bool = False, device: str = "auto",
              threads: int | None = None, crop_to_cord: bool = False, progress: bool = True) -> BatchSummary:
    """Run rootlets (and with ``levels`` the whole chain to levels) on every selected image of a BIDS dataset.

    Writes a BIDS derivative dataset into ``out`` (see the module doc and README 'Batch runs'); returns a
    :class:`BatchSummary`. ``jobs``: local worker processes (with ``slurm``: the number of SLURM jobs). ``dask``: the
    address of an existing Dask scheduler. ``slurm``: SLURMCluster options (see :func:`parse_slurm`).
    ``continue_on_error=False`` starts no new image after the first failure (the running ones finish). ``threads``:
    CPU threads per worker process (default: the cores divided among the local jobs / the Dask worker's threads).
    ``crop_to_cord`` (with ``levels``): segment a sub-image around each cord (see :func:`rootlets_task.chain.run_chain`).
    """
    from rootlets_task import install

    t0 = time.perf_counter()
    bids_root, out = Path(bids_root), Path(out)
    if jobs < 1:
        raise RootletsError(f"-jobs {jobs}: give a number of worker processes >= 1")
    if crop_to_cord and not levels:
        raise RootletsError("-crop-to-cord needs the cord, which only -levels computes: add -levels")
    if dask and slurm is not None:
        raise RootletsError("-dask and -slurm exclude each other: use an existing scheduler or start one on SLURM")
    if slurm is not None:
        _slurm_cluster_class()  # a missing extra is reported before anything is written
    labels_root = Path(labels) if labels else bids_root / "derivatives" / "labels"
    for kept, what in ((bids_root, "the BIDS root"), (labels_root, "the manual labels folder")):
        if out.absolute().resolve() == kept.absolute().resolve():
            raise RootletsError(f"-o {out}: is {what}, whose files must be kept; give a folder of its own "
                                f"(e.g. {bids_root}/derivatives/rootlets)")
    images = find_images(bids_root, tuple(contrasts), include, exclude)
    if not images:
        raise RootletsError(f"BIDS folder {bids_root}: no sub-*/[ses-*/]anat/*_{'|'.join(contrasts)}.nii.gz image "
                            "matches; check -contrast, -include and -exclude")
    folder, record = install.model_folder(release)
    if threads is None and not dask and slurm is None:
        from rootlets_task.inference import physical_cores

        threads = max(1, physical_cores() // jobs)
    settings = Settings(model_folder=str(folder.absolute()), model={k: record.get(k) for k in ("tag", "sha256", "url")},
                        levels=levels, method=method, cord_from=cord_from, discs_from=discs_from, pmj_from=pmj_from,
                        crop_to_cord=crop_to_cord,
                        test_time_aug=test_time_aug, device=device, threads=threads,
                        qc=str(Path(qc).absolute()) if qc else None)
    nifti.writable_folder(out)
    units = plan_units(bids_root, out, images, labels, levels)
    _write_description(out, dataset_description(settings, bids_root))
    results = [{"name": u.name, "rel": u.rel, "status": "skipped", "error": None, "seconds": 0.0}
               for u in units if not overwrite and is_done(u, settings)]
    skipped = {r["name"] for r in results}
    todo = [u for u in units if u.name not in skipped]
    results += _run(todo, len(results), settings, out, jobs, dask, slurm, continue_on_error, progress)
    with contextlib.suppress(OSError):
        (out / TMP).rmdir()  # only when empty: another run may be writing into the same folder
    summary = BatchSummary(out=out, results=sorted(results, key=lambda r: r["rel"]), seconds=time.perf_counter() - t0)
    if levels:
        summary.tables = dataset_tables(out, settings)
    summary_file = out / LOGS / SUMMARY
    summary_file.parent.mkdir(exist_ok=True)
    with nifti.atomic_path(summary_file) as tmp:
        tmp.write_text(json.dumps({"finished": _now(), "seconds": round(summary.seconds, 1), "version": __version__,
                                   "release": settings.model.get("tag"), "results": summary.results,
                                   "tables": {k: str(v) for k, v in summary.tables.items()}}, indent=2) + "\n")
    return summary


def _run(todo: list[Unit], skipped: int, settings: Settings, out: Path, jobs: int, dask: str | None, slurm: dict | None,
         continue_on_error: bool, progress: bool) -> list[dict]:
    """Run ``todo`` on the chosen engine with a progress bar over the dataset (``skipped`` images already counted);
    with ``continue_on_error`` False, start nothing new after a failure."""
    from tqdm import tqdm

    if not todo:
        return []
    results: list[dict] = []
    failed = threading.Event()
    bar = tqdm(total=len(todo) + skipped, initial=skipped, desc="rootlets batch", unit="image", disable=not progress,
               file=sys.stderr)
    out_s = str(out.absolute())

    def stop() -> bool:
        return not continue_on_error and failed.is_set()

    with bar, (_client(jobs, dask, slurm) if dask or slurm is not None or jobs > 1 else contextlib.nullcontext()) as client:
        stream = _sequential(todo, settings, out_s) if client is None else _on_dask(client, todo, settings, out_s, stop)
        for result in stream:
            results.append(result)
            if result["status"] != "done" and result["status"] != "not run":
                failed.set()
                bar.write(f"rootlets batch: FAILED {result['rel']}: {result['error']}", file=sys.stderr)
            if result["status"] != "not run":
                bar.update(1)
            if client is None and stop():
                break
    ran = {r["name"] for r in results}
    results += [{"name": u.name, "rel": u.rel, "status": "not run", "seconds": None,
                 "error": "stopped after an earlier failure (-continue-on-error 0)"} for u in todo if u.name not in ran]
    return results


def dataset_tables(out: Path, settings: Settings) -> dict[str, Path]:
    """``levels.csv`` and ``shift.csv`` of the whole derivative dataset (one row per image, level and kind) and the
    group statistics of :func:`rootlets_task.stats.group_stats` (in ``group/``).

    They cover every image in ``out`` whose record was made with the current settings, including images of earlier
    runs (e.g. other ``-include`` selections or other jobs of an ``sct_run_batch`` script).
    """
    import pandas as pd

    from rootlets_task.stats import group_stats

    wanted = settings.key()
    records = []
    for path in sorted(out.rglob(f"*{RECORD_SUFFIX}")):
        record = _read_record(path)
        if record and {k: v for k, v in record.get("key", {}).items() if k != "inputs"} == wanted:
            records.append((path.parent, path.name[: -len(RECORD_SUFFIX)], record))
    tables: dict[str, Path] = {}
    files = []
    for kind in ("levels", "shift"):
        frames = []
        for folder, name, record in records:
            path = folder / f"{name}_{kind}.csv"
            if path.is_file() and f"{name}_{kind}.csv" in record.get("outputs", {}):
                files.append(path)
                frame = pd.read_csv(path)
                frame.insert(0, "image", name)
                frame.insert(1, "session", record.get("session") or "")
                frame.insert(1, "subject", record.get("subject"))
                frames.append(frame)
        if frames:
            tables[kind] = out / f"{kind}.csv"
            with nifti.atomic_path(tables[kind]) as tmp:
                pd.concat(frames, ignore_index=True).to_csv(tmp, index=False)
    if files:
        try:
            tables.update({f"group_{k}": v for k, v in group_stats(files, out / GROUP).items()})
        except RootletsError as exc:
            print(f"rootlets batch: no group statistics: {exc}", file=sys.stderr)
    return tables
