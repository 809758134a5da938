"""Quality control a researcher can trust at a glance: per-subject figures, an HTML page, a dataset index.

Per subject, :func:`qc_subject` draws (:mod:`rootlets_task.qc.figures`, on the views of :mod:`rootlets_task.qc.views`)

* the rootlets over the image in a sagittal and a coronal view through the cord (a thin-slab maximum-intensity
  projection of the rootlets over the image slice that follows the cord), one colour per level, the cord outline
  and the disc labels as numbered points;
* the spinal and vertebral levels side by side along the cord, with the shift between paired levels (the style of
  the RootletSeg paper's correspondence figure);

and writes ``<qc>/rootlets_task/<key>/index.html`` with both figures, the levels tables, the provenance and the warnings. The key
is the subject name made folder-safe, with a short hash when that changed the name or when the entry is told its
identity (the input file), so different names and different inputs never share an entry.

Per dataset, ``<qc>/rootlets_task/index.html`` lists every subject. Parallel jobs may share one QC folder: each
writes its own record ``<qc>/rootlets_task/_records/<key>.json`` atomically, then rebuilds the index from all records
under a file lock, so the last writer's index always holds every subject and a reader never sees a half-written file.

Everything lives under ``<qc>/rootlets_task/`` so that a QC folder shared with SCT's report (``<qc>/index.html``,
``js/``, ``_json/``, ... see :mod:`rootlets_task.qc.sct_report`) keeps SCT's files: neither report ever replaces the other's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import platform
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import nibabel as nib
import numpy as np
import pandas as pd
from filelock import FileLock, Timeout

from rootlets_task._version import __version__
from rootlets_task.core.colours import level_colour
from rootlets_task.core.errors import RootletsError
from rootlets_task.core.files import (
    OutputSet,
    check_size,
    keep_inputs,
    load_json,
    now,
    printable,
    read_bounded,
    read_json,
    writable_folder,
    write_text,
)
from rootlets_task.core.places import portable, portable_text, shared_paths
from rootlets_task.inference import confidence as conf
from rootlets_task.io import labels
from rootlets_task.io.nifti import load, orientation, stem
from rootlets_task.io.tables import REQUIRED_COLUMNS, is_levels_table, upgrade, upgrade_shift
from rootlets_task.levels.compute import shift_table
from rootlets_task.qc.figures import _pairs, levels_figure, rootlets_figure, strip, thumbnail
from rootlets_task.qc.views import SLAB_MM, check_slab, display_views

REPORT = "rootlets_task"  # our report's folder inside the QC folder (the QC folder's root is SCT's report)
log = logging.getLogger(__name__)

RECORDS = "_records"
RECORD_FIELDS = {"subject": str, "key": str, "page": str, "thumbnail": str, "created": str, "vertebral_text": str,
                 "warnings": list, "spinal_levels": list, "vertebral_levels": list, "shifts": list, "figures": dict}
SIDECAR_BYTES = 16 << 20  # a QC record, a levels document or a label file's sidecar
FIGURE_BYTES = 64 << 20  # a figure copied into a page (the measure step's PNG)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LOCK = ".qc.lock"
LOCK_TIMEOUT_S = 600


# ----------------------------------------------------------------------------------------------------------------
# Inputs

ImageLike = str | os.PathLike | nib.Nifti1Image
TableLike: TypeAlias = str | os.PathLike | pd.DataFrame


@dataclass(frozen=True)
class QcOptions:
    """How a subject's QC page is named and annotated (:func:`qc_subject`); the images and tables are its arguments.

    ``subject``: the page's name (default: the image file's stem); ``identity`` (e.g. the input file's path) keeps
    entries of different inputs with the same subject name apart. ``provenance`` (release, sources of cord and discs,
    settings ...) is shown as given; ``warnings`` are shown on the page and in the index. ``slab_mm``: half-thicknesses
    (mm) of the sagittal and coronal projections. ``confidence``: the network's confidence (the rootlets sidecar's
    ``Confidence``; default: read from the rootlets file's sidecar, else the levels table's columns). ``measure``:
    the PNG of the measure step (``<prefix>_measure.png``), shown on the page beside the other figures.
    """

    subject: str | None = None
    identity: str | None = None
    provenance: Mapping | None = None
    warnings: Iterable[str] = ()
    slab_mm: tuple[float, float] = SLAB_MM
    confidence: Mapping | None = None
    measure: str | os.PathLike | None = None

PAGE_LEVEL_COLUMNS = ("kind", "level", "value", "rostral_mm", "caudal_mm", "mid_mm", "height_mm", "n_voxels", "volume_mm3",
                      "mean_probability", "fraction_below_half", "suggested_level", "original_level", "reference", "status")
NUMBERING_WARNS = ("shifted", "unclear")
WHOLE_NUMBERS = ("value", "rostral_slice", "caudal_slice", "mid_slice", "n_voxels")
SHIFT_COLUMNS = ("pairing", "vertebral_level", "spinal_level", "vertebral_mid_mm", "spinal_mid_mm", "shift_mm")


def _image(source: ImageLike, kind: str) -> nib.Nifti1Image:
    return source if isinstance(source, nib.spatialimages.SpatialImage) else load(source, kind)


def _labels(source: ImageLike | None, kind: str, reference: nib.Nifti1Image, notes: list[str]) -> nib.Nifti1Image | None:
    """A label image on the reference grid (:func:`rootlets_task.io.labels.on_grid`: point labels are never lost)."""
    if source is None:
        return None
    if isinstance(source, nib.spatialimages.SpatialImage):
        img, data = source, labels.as_labels(np.asanyarray(source.dataobj), kind)
    else:
        img, data = labels.read(source, kind)
    try:
        data, grid_notes = labels.on_grid(img, data, reference, points=kind in labels.POINT_KINDS)
    except ValueError as exc:
        raise RootletsError(f"{kind} {_name(source)}: {exc}; give the {kind} of this image") from None
    if grid_notes:
        notes.append(f"{kind} came on another grid and was resampled to the image grid (nearest neighbour) for display")
    return nib.Nifti1Image(data, reference.affine, reference.header)


def _sidecar_provenance(kind: str, source) -> dict:
    """What a label file's JSON sidecar (SCT style, as our segmentation and chain write them) says made it."""
    if not isinstance(source, str | os.PathLike):
        return {}
    path = Path(source).with_name(stem(source) + ".json")
    try:
        content = read_json(path, limit=SIDECAR_BYTES)
        made = content.get("GeneratedBy", [{}])[0]
        made.get("Command")
    except (AttributeError, IndexError, TypeError, KeyError):
        return {}
    found = {f"{kind} made by": made.get("Command") or made.get("Name"), f"{kind} source": content.get("Source")}
    if kind == "rootlets":
        found |= {"release": made.get("Release"), "model URL": made.get("ModelURL")}
    return {k: v for k, v in found.items() if v}


def _shared_name(source) -> str:
    """A file as the QC page shows it (:func:`rootlets_task.core.places.portable`: no local folders)."""
    return portable(source) if isinstance(source, str | os.PathLike) else "(in-memory image)"


def _name(source) -> str:
    return str(source) if isinstance(source, str | os.PathLike) else "(in-memory image)"


def _table(source: TableLike | None, kind: str, columns: tuple[str, ...]) -> pd.DataFrame | None:
    """A levels or shift table from a DataFrame, a CSV or a JSON file (records, or {"levels": [...]}); a levels table
    of any version comes in today's layout (:func:`rootlets_task.io.tables.upgrade`, ``upgrade_shift``)."""
    if source is None:
        return None
    if isinstance(source, pd.DataFrame):
        table = source
    else:
        path = Path(source)
        try:
            if path.suffix == ".json":
                data = load_json(path, f"{kind} table", fix="give the CSV or JSON written by `rootlets levels`")
                table = pd.DataFrame(data.get(kind, data) if isinstance(data, dict) else data)
            else:
                table = pd.read_csv(check_size(path, f"{kind} table"))
        except (OSError, ValueError, TypeError) as exc:
            raise RootletsError(f"{kind} table {path}: unreadable ({exc}); "
                                "give the CSV or JSON written by `rootlets levels`") from None
    if kind == "levels" and is_levels_table(table.columns):
        return upgrade(table)
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise RootletsError(f"{kind} table {_name(source)}: missing columns {', '.join(missing)}; "
                            "give the table written by `rootlets levels`")
    if kind == "shift":
        table = upgrade_shift(table)  # earlier versions' "unshifted" VL T1-SL T1 is the paper's shifted pair
    for col in WHOLE_NUMBERS:  # a CSV column with blanks reads as float: 240 would show as 240.0
        if col in table and pd.api.types.is_float_dtype(table[col]) and (table[col].dropna() % 1 == 0).all():
            table = table.assign(**{col: table[col].astype("Int64")})
    return table


def _levels_document(source: TableLike | None) -> dict:
    """The ``_levels.json`` of a levels table given as a file (the file itself, or the JSON beside the CSV), else {}."""
    if not isinstance(source, str | os.PathLike):
        return {}
    given = Path(source)
    path = given if given.suffix == ".json" else (
        given.with_name(given.name[: -len(".csv")] + ".json") if given.name.endswith("_levels.csv") else None)
    content = read_json(path, limit=SIDECAR_BYTES) if path is not None else None
    return content if isinstance(content, dict) else {}


def _numbering(levels: pd.DataFrame | None, document: dict, warnings: list[str]) -> dict:
    """What the index shows of the numbering check: status, the renames it suggests (or applied) and its sentence."""
    if levels is None or "numbering" not in levels or not levels["numbering"].notna().any():
        return {"status": "not checked", "renames": {}, "text": ""}
    status = str(levels["numbering"].dropna().iloc[0])
    spinal = levels[levels["kind"] == "spinal"]
    old, new = ("original_level", "level") if status == "renumbered" else ("level", "suggested_level")
    renames = {a: b for a, b in zip(spinal[old], spinal[new], strict=True) if isinstance(a, str) and isinstance(b, str)}
    found = (document.get("numbering") or {}).get("text") if isinstance(document.get("numbering"), dict) else None
    text = next((w for w in warnings if w.startswith("numbering check")), found or "")
    return {"status": status, "renames": renames, "text": text}


def _confidence(given: Mapping | None, rootlets, levels: pd.DataFrame | None, roots: nib.Nifti1Image) -> dict | None:
    """Per-image confidence: the caller's, else the rootlets sidecar's (if it matches the labels), else the table's."""
    if given is None and isinstance(rootlets, str | os.PathLike):
        content = read_json(Path(rootlets).with_name(stem(rootlets) + ".json"), limit=SIDECAR_BYTES)
        given = conf.matching(content.get("Confidence") if isinstance(content, dict) else None,
                              np.asanyarray(roots.dataobj))
    return conf.summary(dict(given)) if given is not None else conf.from_levels_table(levels)


def subject_key(name: str, identity: str | None = None) -> str:
    """A folder-safe key for a subject (letters, digits, '.', '_', '-'), unique and stable for any name.

    The name as it is when it is folder-safe and no ``identity`` is given; otherwise the safe name and a short hash
    of the exact name and identity, so ``sub 01``, ``sub_01`` and ``sub/01`` (or two inputs with one stem) differ.
    """
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:80] or "subject"
    if safe == name and identity is None:
        return safe
    digest = hashlib.blake2b(f"{name}\0{identity or ''}".encode(), digest_size=4).hexdigest()
    return f"{safe}-{digest}"


def _span_text(names: list[str]) -> str:
    return f"{names[0]}–{names[-1]} ({len(names)})" if len(names) > 2 else ", ".join(names) or "none"


def _jsonable(value):
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if isinstance(value, os.PathLike):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


# ----------------------------------------------------------------------------------------------------------------
# HTML


def _templates():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parents[1] / "data"),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters["colour"] = level_colour
    env.globals["zip"] = zip
    return env


def _numbering_of(record: dict) -> dict:
    """A record's numbering check (records of earlier versions have none)."""
    found = record.get("numbering")
    ok = isinstance(found, dict) and isinstance(found.get("status"), str) and isinstance(found.get("renames"), dict) \
        and isinstance(found.get("text"), str)
    return found if ok and isinstance(found, dict) else {"status": "not checked", "renames": {}, "text": ""}


def _record_problem(record) -> str | None:
    """What in a subject record the index page could not show (a field missing or of another type), or None."""
    if not isinstance(record, dict):
        return "not an object"
    for name, kind in RECORD_FIELDS.items():
        if not isinstance(record.get(name), kind):
            return f"field {name} is not {kind.__name__}"
    if not all(isinstance(s, dict) and isinstance(s.get("shift_mm"), int | float) and
               all(k in s for k in ("pairing", "vertebral_level", "spinal_level")) for s in record["shifts"]):
        return "field shifts is malformed"
    if not all(isinstance(f, dict) and isinstance(f.get("file"), str) for f in record["figures"].values()):
        return "field figures is malformed"
    confidence = record.get("confidence")
    if confidence is not None and not (isinstance(confidence, dict) and "LowestLevel" in confidence and all(
            isinstance(confidence.get(k), int | float) for k in ("LowestMeanProbability", "MeanProbability",
                                                                 "FractionBelowHalf"))):
        return "field confidence is malformed"
    return None


def _read_records(qc_dir: Path) -> list[dict]:
    """Every subject record of the report; a file that is not one (too large, too deep, not JSON, fields of other
    types: records are written atomically, so it is not ours) is skipped with a warning."""
    records = []
    for path in sorted((qc_dir / RECORDS).glob("*.json")):
        try:
            record = load_json(path, "QC record", limit=SIDECAR_BYTES, fix="it is not listed; move it out of the folder")
            if _record_problem(record):
                raise RootletsError(f"QC record {path}: {_record_problem(record)}, not a record of rootlets_task; it is "
                                    "not listed; move it out of the folder")
        except RootletsError as exc:
            log.warning("%s", printable(exc))
            continue
        records.append({**record, "numbering": _numbering_of(record), "confidence": record.get("confidence")})
    return sorted(records, key=lambda r: r["subject"].lower())


def _write_subject(out: Path, subject: str, key: str, img, roots, cord_img, disc_img, levels_df, shift_df, slab_mm,
                   measure_png: bytes | None, extra: dict) -> Path:
    """A subject's figures, page and record, all or none (an earlier run's files stay until all are written)."""
    report = out.parent
    views = display_views(img, roots, cord_img, disc_img, slab_mm=slab_mm)
    zooms = "×".join(f"{z:g}" for z in img.header.get_zooms()[:3])
    caption = (f"image {orientation(img)} {zooms} mm, shown at {views['coronal'].pixel_mm:g} mm pixels; "
               f"rootlets_task {__version__}")
    page = out / "index.html"
    (report / RECORDS).mkdir(parents=True, exist_ok=True)
    stale = [out / "levels.png"] * (levels_df is None) + [out / "measure.png"] * (measure_png is None)  # earlier runs'
    with OutputSet(remove=stale) as files:
        panels = rootlets_figure(views, files.path(out / "rootlets.png"), f"{subject}: rootlets by spinal level", caption)
        thumbnail(views, files.path(out / "thumbnail.png"))
        strip(views, files.path(out / "strip.png"))
        figures = {"rootlets": {"file": "rootlets.png", "panels": panels}}
        if levels_df is not None:
            levels_figure(levels_df, shift_df, files.path(out / "levels.png"), f"{subject}: spinal vs vertebral levels")
            figures["levels"] = {"file": "levels.png"}
        if measure_png is not None:
            files.path(out / "measure.png").write_bytes(measure_png)
            figures["measure"] = {"file": "measure.png"}
        record = {"subject": subject, "key": key, "created": now(), "page": f"{key}/index.html",
                  "thumbnail": f"{key}/thumbnail.png", "strip": f"{key}/strip.png", "figures": figures,
                  **_levels_summary(levels_df, shift_df), **extra}
        files.path(page).write_text(_templates().get_template("qc_subject.html").render(
            r=record, tables=_page_tables(levels_df, shift_df)), encoding="utf-8")
        files.path(report / RECORDS / f"{key}.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
    return page


def _png(path: str | os.PathLike, kind: str) -> bytes:
    """A PNG file's bytes, read before anything is written (a page never links a figure that is not there)."""
    fix = "give the *_measure.png the measure step wrote"
    data = read_bounded(path, kind, FIGURE_BYTES, fix)
    if not data.startswith(PNG_SIGNATURE):
        raise RootletsError(f"{kind} {path}: not a PNG image; {fix}")
    return data


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):
        folder.rmdir()


def report_folder(qc_dir: str | os.PathLike) -> Path:
    """``<qc_dir>/rootlets_task``: where our report lives in a QC folder (created; the QC folder must be writable)."""
    folder = writable_folder(qc_dir, "QC folder", "-qc") / REPORT
    if folder.exists() and not folder.is_dir():
        raise RootletsError(f"QC folder {qc_dir}: {folder} is a file, where the rootlets_task report goes; move it")
    folder.mkdir(exist_ok=True)
    return folder


def rebuild_index(qc_dir: str | os.PathLike) -> Path:
    """Regenerate ``<qc_dir>/rootlets_task/index.html`` from every subject record, under the report's lock."""
    report = report_folder(qc_dir)
    (report / RECORDS).mkdir(exist_ok=True)
    try:
        with FileLock(report / LOCK, timeout=LOCK_TIMEOUT_S):
            records = _read_records(report)
            html = _templates().get_template("qc_index.html").render(
                records=records, version=__version__, created=now(),
                n_warn=sum(bool(r["warnings"]) for r in records),
                n_numbering=sum(_numbering_of(r)["status"] in NUMBERING_WARNS for r in records))
            index = report / "index.html"
            write_text(index, html)
    except Timeout:
        raise RootletsError(f"QC folder {report}: another process held {LOCK} for {LOCK_TIMEOUT_S} s; this subject's "
                            "record is saved, run `rootlets_task.rebuild_index` on the folder later") from None
    return index


# ----------------------------------------------------------------------------------------------------------------
# The per-subject entry point


def _levels_summary(levels: pd.DataFrame | None, shift: pd.DataFrame | None) -> dict:
    """What the index shows of a subject's levels: names found per kind and the shift per linked pair."""
    ok = levels[levels["status"] == "ok"] if levels is not None else pd.DataFrame(columns=REQUIRED_COLUMNS)
    spinal = ok[ok["kind"] == "spinal"].sort_values("value")["level"].tolist()
    vertebral = ok[ok["kind"] == "vertebral"].sort_values("value")["level"].tolist()
    return {"spinal_levels": spinal, "vertebral_levels": vertebral,
            "spinal_text": _span_text(spinal), "vertebral_text": _span_text(vertebral),
            "shifts": [{"pairing": p.pairing, "vertebral_level": p.vertebral_level, "spinal_level": p.spinal_level,
                        "shift_mm": round(float(p.shift_mm), 2)} for p in _pairs(shift).itertuples()]}


def _page_tables(levels: pd.DataFrame | None, shift: pd.DataFrame | None) -> dict[str, tuple[list, list]]:
    """Levels and shift tables as (columns, rows) for the subject page, rounded, blanks for missing values."""
    tables = {}
    if levels is not None:  # today's columns that hold something (an empty suggestion column is left out)
        tables["levels"] = levels[[c for c in PAGE_LEVEL_COLUMNS if c in levels and levels[c].notna().any()]]
    if shift is not None:
        tables["shift"] = shift[list(SHIFT_COLUMNS)]
    return {name: (list(t.columns), t.round(2).astype(object).where(t.notna(), "").values.tolist())
            for name, t in tables.items()}


def _subject_warnings(warnings: list[str], roots: nib.Nifti1Image, levels: pd.DataFrame | None,
                      document: dict) -> tuple[list[str], dict]:
    """The page's warnings (no rootlets, missing levels, a numbering warning first) and the numbering check."""
    if not np.asanyarray(roots.dataobj).any():
        warnings.append("no rootlets in the segmentation")
    if levels is not None and "status" in levels:
        for row in levels[levels["status"] != "ok"].itertuples():
            warnings.append(f"{row.kind} level {row.level}: {row.status}")
    numbering = _numbering(levels, document, warnings)
    if numbering["status"] in NUMBERING_WARNS and numbering["text"] and numbering["text"] not in warnings:
        warnings.insert(0, numbering["text"])
    return warnings, numbering


def _shared_provenance(qc_dir, image, rootlets, cord, discs, given: Mapping | None) -> dict:
    """:func:`_provenance` with paths relative to the QC folder, unless the caller shares paths its own way (a batch)."""
    with shared_paths(qc_dir, keep=True):
        return _provenance(image, rootlets, cord, discs, given)


def _provenance(image, rootlets, cord, discs, given: Mapping | None) -> dict:
    """The input files, what their JSON sidecars say made them (release, sources) and the caller's (which wins)."""
    files = {"image file": _shared_name(image), "rootlets file": _shared_name(rootlets),
             "cord file": _shared_name(cord) if cord is not None else "none",
             "discs file": _shared_name(discs) if discs is not None else "none"}
    sidecars = {}
    for kind, source in (("rootlets", rootlets), ("cord", cord), ("discs", discs)):
        sidecars.update(_sidecar_provenance(kind, source))
    return _jsonable({"rootlets_task": __version__, "python": platform.python_version(), **files, **sidecars,
                      **{k: portable_text(v) if isinstance(v, str) else v for k, v in (given or {}).items()}})


def qc_subject(qc_dir: str | os.PathLike, image: ImageLike, rootlets: ImageLike, cord: ImageLike | None = None,
               discs: ImageLike | None = None, levels: TableLike | None = None, shift: TableLike | None = None, *,
               options: QcOptions = QcOptions(), **fields: Any) -> Path:
    """Write one subject's QC (figures, page, record) into ``qc_dir/rootlets_task`` and refresh its dataset index.

    Images are NIfTI paths or nibabel images (labels on another grid are resampled with nearest neighbour);
    ``levels``/``shift`` are the tables of :mod:`rootlets_task.levels.compute` (DataFrame, CSV or JSON). ``options``
    (:class:`QcOptions`) names and annotates the page; any of its fields given by keyword replaces the options' one
    (``qc_subject(qc, image, rootlets, subject="sub-01")``). The numbering check comes from the levels table (and its
    JSON). Running again for the same subject and identity replaces its entry. Returns the subject page.
    """
    options = dataclasses.replace(options, **fields)  # a field that QcOptions lacks: TypeError, as any call
    subject, identity, provenance = options.subject, options.identity, options.provenance
    warnings, confidence = options.warnings, options.confidence
    slab_mm = check_slab(options.slab_mm)  # before anything is read or written
    notes: list[str] = []
    img = _image(image, "image")
    roots = _labels(rootlets, "rootlets", img, notes)
    assert roots is not None  # rootlets are required
    cord_img = _labels(cord, "cord", img, notes)
    disc_img = _labels(discs, "discs", img, notes)
    levels_df = _table(levels, "levels", tuple(REQUIRED_COLUMNS))
    shift_df = _table(shift, "shift", SHIFT_COLUMNS)
    if shift_df is None and levels_df is not None:
        shift_df = shift_table(levels_df)
    subject = subject or (stem(image) if isinstance(image, str | os.PathLike) else "subject")
    key = subject_key(subject, identity)

    warnings, numbering = _subject_warnings(list(warnings), roots, levels_df, _levels_document(levels))
    if cord_img is None:
        notes.append("no cord segmentation given: views are centred on the rootlets")
    measure_png = _png(options.measure, "measure figure") if options.measure is not None else None

    created = [p for p in (Path(qc_dir), Path(qc_dir) / REPORT, Path(qc_dir) / REPORT / RECORDS,
                           Path(qc_dir) / REPORT / key) if not p.exists()]
    report = report_folder(qc_dir)
    out = report / key
    keep_inputs([out / "rootlets.png", out / "thumbnail.png", out / "strip.png", out / "levels.png", out / "measure.png",
                 out / "index.html", report / RECORDS / f"{key}.json", report / "index.html"],
                {f"the {kind} file {p}": p for kind, p in (("image", image), ("rootlets", rootlets), ("cord", cord),
                                                          ("discs", discs), ("levels", levels), ("shift", shift),
                                                          ("measure figure", options.measure))},
                "-qc")
    out.mkdir(exist_ok=True)
    try:
        page = _write_subject(out, subject, key, img, roots, cord_img, disc_img, levels_df, shift_df, slab_mm,
                              measure_png,
                              {"numbering": numbering, "confidence": _confidence(confidence, rootlets, levels_df, roots),
                               "warnings": warnings, "notes": notes,
                               "provenance": _shared_provenance(qc_dir, image, rootlets, cord, discs, provenance)})
    except BaseException:  # a full disk, an interrupt: the folders this call made go too (the files never appeared)
        for folder in reversed(created):
            shutil.rmtree(folder, ignore_errors=True) if folder == out else _remove_if_empty(folder)
        raise
    rebuild_index(qc_dir)
    return page
