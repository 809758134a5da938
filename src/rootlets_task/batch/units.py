"""One image of a batch: its settings, whether it is done, and :func:`process_unit`, which makes all its outputs.

:func:`process_unit` is the same function on every engine (in this process, local worker processes, Dask, SLURM,
the tasks of a SLURM job array). A unit is written into ``<out>/.tmp/<name>.<host>-<pid>-<random>/`` and its files are
moved into ``<out>/sub-XX/[ses-YY/]anat/`` only when all of them are made; its record ``<name>_batch.json`` (a
:class:`rootlets_task.io.records.Record`: sha256 of every input, the settings, the package version and model release,
the sha256 of every output) is written last. A unit counts as done only when its record matches, so a killed run never
leaves a file that looks finished. Logs: ``<out>/logs/<name>.log``, ``err.<name>.log`` after a failure.
"""


from __future__ import annotations

import logging
import os
import shutil
import socket
import time
from dataclasses import dataclass, replace
from pathlib import Path

from rootlets_task._version import __version__
from rootlets_task.batch import bids, engines
from rootlets_task.batch import levers as batch_levers
from rootlets_task.core import logs
from rootlets_task.core.errors import RootletsError
from rootlets_task.core.files import now, read_json, scratch_folder
from rootlets_task.core.options import ChainOptions, ModelOptions
from rootlets_task.core.places import portable, portable_text, shared_paths
from rootlets_task.io import nifti, provenance, viewers
from rootlets_task.io.records import Record

log = logging.getLogger(__name__)

RECORD_SUFFIX = "_batch.json"
TMP, LOGS, GROUP = ".tmp", "logs", "group"
SUMMARY = "batch_summary.json"
UNIT_STEP = "unit"


@dataclass(frozen=True)
class Settings:
    """Everything a worker needs besides the unit; ``key()`` is the part that decides the result."""

    model_folder: str
    model: dict  # tag, sha256, url of the installed release
    options: ModelOptions
    chain: ChainOptions | None  # None: rootlets only
    qc: str | None = None
    levers: batch_levers.BatchLevers = batch_levers.BatchLevers()
    bids_strict: bool = False
    run: str | None = None  # this batch run's id: a unit its record says this run finished is never redone

    def key(self, rel: str | None = None) -> dict:
        """The key of the image ``rel`` (its levers included) without its inputs."""
        chain = self.chain
        return {"version": __version__, "release": self.model.get("tag"), "model_sha256": self.model.get("sha256"),
                "test_time_aug": self.options.test_time_aug, "levels": chain is not None,
                **({"method": chain.method, "cord_from": chain.cord_from, "discs_from": chain.discs_from,
                    "pmj_from": chain.pmj_from, "crop_to_cord": chain.crop_to_cord, "renumber": chain.renumber}
                   if chain else {}),
                **({"measure": list(chain.measure), "measure_mask": chain.measure_mask,
                    "measure_method": chain.measure_method} if chain and chain.measure is not None else {}),
                **({"template": True} if chain and chain.template else {}),
                **({"bids_strict": True} if self.bids_strict else {}), **self.levers.key(rel)}

    def unit_key(self, unit: bids.Unit) -> dict:
        return {**self.key(unit.rel), "inputs": unit.inputs}


# ------------------------------------------------------------------------------------------------ one unit


def is_done(unit: bids.Unit, settings: Settings) -> bool:
    """Whether ``unit``'s record matches its inputs and settings, every output it lists is intact, and (with ``qc``)
    its QC went into that folder. A QC folder alone does not change the outputs, so it is not part of the key."""
    record = _record(unit)
    with unit_places(unit):
        qc = portable(settings.qc)
    return record.up_to_date(UNIT_STEP, settings.unit_key(unit)) and (not settings.qc or record.step(UNIT_STEP).get("qc") == qc)


def describe_unit(unit: bids.Unit) -> dict:
    return {"name": unit.name, "rel": unit.rel}


def unit_places(unit: bids.Unit, tmp: Path | None = None):
    """How the unit's shared files write paths (:func:`rootlets_task.core.places.shared_paths`): the raw dataset as
    ``bids:raw:``, the derivative's own files relative to its root, ``tmp`` (the unit's scratch folder) as the folder
    its files are moved to, the model store and network cache by their variables."""
    from rootlets_task.inference.backends import cache_dir
    from rootlets_task.models.install import ENV_HOME, models_dir

    rel_folder = Path(unit.rel).parent
    out_root = Path(unit.out_dir).parents[len(rel_folder.parts) - 1]
    aliases = {models_dir(): f"${ENV_HOME}/models", cache_dir(): "$ROOTLETS_TASK_CACHE",
               **({tmp: rel_folder.as_posix()} if tmp is not None else {})}
    return shared_paths(out_root, {"raw": unit.dataset_root}, aliases)


def process_unit(unit: bids.Unit, settings: Settings, out_root: str) -> dict:
    """Make every output of one image, atomically; never raises for a problem of this image (returns it instead).

    The same function runs in the driver, in local worker processes, on Dask workers and in SLURM array tasks.
    Returns a dict with ``name``, ``rel``, ``status`` (done | failed), ``error`` (one line), ``log``, ``seconds``,
    ``host``, ``pid``, ``slurm_job`` (the process's ``SLURM_JOB_ID``, if any), ``retried`` (an earlier attempt of
    this unit was interrupted, e.g. its worker was killed) and, when done, ``numbering`` (the numbering check:
    status, offset, applied, text; with levels) and ``confidence`` (per image). A unit that is already done (Dask runs
    a task again when the worker holding its result dies before the driver fetched it) is not redone: its result is
    read back from its record (``recovered``).
    """
    earlier = _record(unit).step(UNIT_STEP)
    if settings.run and earlier.get("run") == settings.run and is_done(unit, settings):
        return _recovered(unit, earlier, out_root)
    t0 = time.perf_counter()
    tmp_root = Path(out_root) / TMP
    tmp_root.mkdir(parents=True, exist_ok=True)
    stale = list(tmp_root.glob(f"{unit.name}.*"))
    for old in stale:  # an earlier attempt of this unit that died (killed worker or driver)
        shutil.rmtree(old, ignore_errors=True)
    tmp = scratch_folder(tmp_root, unit.name)
    (Path(out_root) / LOGS).mkdir(exist_ok=True)
    result = {**describe_unit(unit), "status": "failed", "error": None, "host": socket.gethostname(), "pid": os.getpid(),
              "slurm_job": os.environ.get("SLURM_JOB_ID"), "retried": bool(stale)}
    log_path = tmp / f"{unit.name}.log"
    try:
        with unit_places(unit, tmp), logs.unit_log(log_path, portable_text):
            _run_unit(unit, settings, tmp, result, stale, t0)
        result["log"] = str(_keep_log(log_path, Path(out_root) / LOGS, unit.name, result["status"] == "done"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["seconds"] = round(time.perf_counter() - t0, 3)
    return result


def _record(unit: bids.Unit) -> Record:
    return Record(Path(unit.out_dir) / f"{unit.name}{RECORD_SUFFIX}")


def checks_of(unit: bids.Unit) -> dict:
    """The numbering check and confidence of a unit done earlier, from its levels JSON / rootlets sidecar."""
    from rootlets_task.inference.confidence import summary

    document = read_json(Path(unit.out_dir) / f"{unit.name}_levels.json")
    if isinstance(document, dict):
        return {"numbering": numbering_summary(document.get("numbering")), "confidence": document.get("confidence")}
    sidecar = read_json(Path(unit.out_dir) / f"{unit.name}_rootlets.json")
    return {"confidence": summary(sidecar.get("Confidence")) if isinstance(sidecar, dict) else None}


def _recovered(unit: bids.Unit, step: dict, out_root: str) -> dict:
    """The result of a unit this batch run finished earlier, as that attempt reported it (its record's ``step``, its
    files)."""
    log.info("%s: finished earlier in this batch (its result was lost with its worker); read back, not redone", unit.rel)
    return {**describe_unit(unit), "status": "done", "error": None, "retried": False, "recovered": True,
            **{k: step.get(k) for k in ("host", "pid", "slurm_job")}, "seconds": step.get("seconds"),
            "log": str(Path(out_root) / LOGS / f"{unit.name}.log"), **checks_of(unit)}


def _run_unit(unit: bids.Unit, settings: Settings, tmp: Path, result: dict, stale: list, t0: float) -> None:
    job = f", SLURM job {result['slurm_job']}" if result["slurm_job"] else ""
    log.info("rootlets batch %s: %s on %s (pid %s%s), %s", __version__, unit.rel, result["host"], result["pid"], job, now())
    if stale:
        log.info("an earlier attempt of this image was interrupted; its temporary folder was removed: %s", stale)
    log.info("settings: %s", settings.unit_key(unit))
    try:
        with engines.MODEL_LOCK:
            seg = None
            if settings.chain is None or "rootlets" not in unit.labels:  # given rootlets: the levels need no model
                levers = settings.levers.segmenter_kwargs(unit.rel)  # int8: precision, calibration, int8_options
                model = replace(settings.options, precision=levers.pop("precision", "float32"))
                seg = engines.worker_segmenter(settings.model_folder, settings.model, model, **levers)
                log.info("model %s (%s, %s threads, %s, %s; levers: %s)", settings.model.get("tag"), seg.backend,
                         seg.threads, seg.device.type, seg.precision, ", ".join(settings.levers.used(unit.rel)) or "none")
            else:
                log.info("rootlets from the labels derivative (%s): no model", unit.labels["rootlets"])
            notes, made, checks = _make_outputs(unit, settings, seg, tmp)
        _finish(unit, settings, tmp, made, notes, time.perf_counter() - t0, result)
        result.update(checks)
        result["status"] = "done"
        log.info("done in %.1f s: %s", time.perf_counter() - t0, ", ".join(sorted(made)))
    except Exception as exc:  # one image's failure is reported, never raised: the others go on
        text = nifti.one_line(exc)
        result["error"] = text if isinstance(exc, RootletsError) else f"{type(exc).__name__}: {text}"
        log.error("FAILED: %s", result["error"], exc_info=not isinstance(exc, RootletsError))


def _keep_log(log_path: Path, logs_dir: Path, name: str, done: bool) -> Path:
    target = logs_dir / (f"{name}.log" if done else f"err.{name}.log")
    other = logs_dir / (f"err.{name}.log" if done else f"{name}.log")
    os.replace(log_path, target)
    other.unlink(missing_ok=True)
    return target


def _make_outputs(unit: bids.Unit, settings: Settings, seg, tmp: Path) -> tuple[list[str], dict[str, Path], dict]:
    """Segment (and with the chain derive levels) into ``tmp``; returns (notes, {kind: file}, {numbering,
    confidence: what the summary reports})."""
    from rootlets_task.inference.confidence import summary
    from rootlets_task.io.phantom import release_warnings
    from rootlets_task.pipeline.segment import write_segmentation

    image = Path(unit.image)
    crop = "crop" in settings.levers.used(unit.rel)
    if settings.chain is None:
        from rootlets_task.inference import cropping

        img = nifti.load(image)
        out = tmp / f"{unit.name}_rootlets.nii.gz"
        command = batch_command(unit, settings)
        box, crop_info = cropping.lever_box(img, unit.labels.get("cord")) if crop else (None, None)
        prediction = seg.predict(img, box)
        sidecar = provenance.rootlets_sidecar(seg, image, command, crop_info, confidence=prediction.confidence)
        notes = release_warnings(settings.model.get("tag"), img, unit.rel)
        for text in notes:
            log.warning("%s", text)
            sidecar.setdefault("Warnings", []).append(text)
        write_segmentation(nifti.label_image(prediction.labels, img), out, sidecar)
        viewers.describe({"rootlets": out}, {"rootlets": prediction.labels})
        notes += cropping.cut_note(prediction.labels, box, cropping.CROP_MARGIN_MM) if box is not None else []  # crop
        return notes, {"rootlets": out}, {"confidence": summary(prediction.confidence)}
    from rootlets_task.pipeline.chain import ChainInputs, run_chain

    labels = unit.labels
    inputs = ChainInputs(cord=labels.get("cord"), discs=labels.get("discs"), pmj=labels.get("pmj"),
                         rootlets=labels.get("rootlets"))
    chain = replace(settings.chain, contrast=unit.contrast, crop_to_cord=settings.chain.crop_to_cord or crop,
                    command=batch_command(unit, settings))
    if chain.measure is not None:
        chain = replace(chain, measure=tuple(unit_path(m, unit) for m in chain.measure),
                        measure_mask=unit_path(chain.measure_mask, unit) if chain.measure_mask else None)
    result = run_chain(image, out_dir=tmp, inputs=inputs, segmenter=seg, options=chain)
    log.info("cord from %s, discs from %s, PMJ from %s", result.sources["cord"], result.sources["discs"],
             result.sources["pmj"])
    log.info("%s", result.table())
    return list(result.notes), dict(result.outputs), {"numbering": numbering_summary(result.numbering),
                                                      "confidence": summary(result.confidence)}


def batch_command(unit: bids.Unit, settings: Settings) -> str:
    """What a unit's sidecars say ran (after ``rootlets``): the batch, for this image of the raw dataset."""
    return (f"batch bids:raw:{Path(unit.rel).as_posix()} -release {settings.model.get('tag')}"
            + (" -levels" if settings.chain is not None else ""))
def unit_path(pattern: str, unit: bids.Unit) -> str:
    """A ``-measure`` map or mask of one image: ``{subject}``, ``{session}``, ``{name}`` filled in, relative paths
    taken from the BIDS folder (``NAME=`` kept in front)."""
    name, sep, path = pattern.partition("=")
    if not sep or "/" in name:
        name, path = "", pattern
    root = Path(unit.image[: -len(unit.rel)]) if unit.image.endswith(unit.rel) else Path(unit.image).parent
    filled = Path(path.format(subject=unit.subject, session=unit.session or "", name=unit.name))
    return f"{name}={root / filled}" if name else str(root / filled)


def numbering_summary(numbering: dict | None) -> dict | None:
    """The part of a numbering check (levels JSON, chain result) a batch summary reports."""
    return {k: numbering.get(k) for k in ("status", "offset", "applied", "text")} if isinstance(numbering, dict) else None


def _finish(unit: bids.Unit, settings: Settings, tmp: Path, made: dict[str, Path], notes: list[str],
            seconds: float, result: dict) -> None:
    """Move the outputs into place (with ``bids_strict`` under their BIDS names first), QC, then the record last (it
    names files relative to its folder: no rewriting; with the run, process and SLURM job that made them)."""
    final = Path(unit.out_dir)
    if settings.bids_strict:
        from rootlets_task.batch import bids_strict

        made = bids_strict.apply(tmp, unit, made)
    files = sorted(p for p in tmp.iterdir() if p.is_file() and p.suffix != ".log")
    final.mkdir(parents=True, exist_ok=True)
    record = _record(unit)
    record.path.unlink(missing_ok=True)  # from here until the new record exists the unit is not done
    for path in files:
        os.replace(path, final / path.name)
    where = {kind: final / Path(p).name for kind, p in made.items() if Path(p).parent == tmp}
    log.info("view: %s", viewers.fsleyes_command(unit.image, [(k, where[k]) for k in viewers.NUMBERING if k in where]))
    if settings.qc:
        _qc(unit, settings, where, notes)
    record.data.update({"image": portable(unit.image), "rel": unit.rel, "subject": unit.subject, "session": unit.session,
                        "release": settings.model.get("tag")})
    record.done(UNIT_STEP, settings.unit_key(unit), [final / p.name for p in files],
                {"notes": notes, "seconds": round(seconds, 3), "host": result["host"], "pid": result["pid"],
                 "slurm_job": result["slurm_job"], "run": settings.run, "qc": portable(settings.qc),
                 **settings.levers.record(unit.rel)})


def _qc(unit: bids.Unit, settings: Settings, where: dict[str, Path], notes: list[str]) -> None:
    from rootlets_task.qc.report import QcOptions, qc_subject

    provenance = {"release": settings.model.get("tag"), "batch": unit.rel, "levels": settings.chain is not None}
    options = QcOptions(subject=unit.name, warnings=notes, provenance=provenance, measure=where.get("measure_figure"))
    rootlets = where.get("rootlets", unit.labels.get("rootlets"))
    assert settings.qc is not None and rootlets is not None  # QC runs when asked for, after the rootlets exist
    qc_subject(settings.qc, unit.image, rootlets, cord=where.get("cord"),
               discs=where.get("discs"), levels=where.get("csv"), shift=where.get("shift"), options=options)


