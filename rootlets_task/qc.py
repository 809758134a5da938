"""Quality control a researcher can trust at a glance: per-subject figures, an HTML page, a dataset index.

Per subject, :func:`qc_subject` draws (:mod:`rootlets_task.qc_figures`, on the views of :mod:`rootlets_task.qc_views`)

* the rootlets over the image in a sagittal and a coronal view through the cord (a thin-slab maximum-intensity
  projection of the rootlets over the image slice that follows the cord), one colour per level, the cord outline
  and the disc labels as numbered points;
* the spinal and vertebral levels side by side along the cord, with the shift between paired levels (the style of
  the RootletSeg paper's correspondence figure);

and writes ``<qc>/<key>/index.html`` with both figures, the levels tables, the provenance and the warnings. The key
is the subject name made folder-safe, with a short hash when that changed the name or when the entry is told its
identity (the input file), so different names and different inputs never share an entry.

Per dataset, ``<qc>/index.html`` lists every subject. Parallel jobs may share one QC folder: each writes its own
record ``<qc>/_records/<key>.json`` atomically, then rebuilds the index from all records under a file lock,
so the last writer's index always holds every subject and a reader never sees a half-written file.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from filelock import FileLock, Timeout

from rootlets_task import __version__, labels
from rootlets_task.colours import level_colour
from rootlets_task.errors import RootletsError
from rootlets_task.files import now, writable_folder, write_text
from rootlets_task.levels import shift_table
from rootlets_task.nifti import load, orientation, stem
from rootlets_task.qc_figures import _pairs, levels_figure, rootlets_figure, thumbnail
from rootlets_task.qc_views import SLAB_MM, display_views

RECORDS = "_records"
LOCK = ".qc.lock"
LOCK_TIMEOUT_S = 600


# ----------------------------------------------------------------------------------------------------------------
# Inputs

ImageLike = str | os.PathLike | nib.Nifti1Image
TableLike = str | os.PathLike | pd.DataFrame

LEVEL_COLUMNS = ("kind", "level", "value", "start_mm", "end_mm", "mid_mm", "status")
WHOLE_NUMBERS = ("value", "start_slice", "end_slice", "mid_slice", "n_voxels")
SHIFT_COLUMNS = ("pairing", "vertebral_level", "spinal_level", "vertebral_mid_mm", "spinal_mid_mm", "shift_mm")


def _image(source: ImageLike, kind: str) -> nib.Nifti1Image:
    return source if isinstance(source, nib.spatialimages.SpatialImage) else load(source, kind)


def _labels(source: ImageLike | None, kind: str, reference: nib.Nifti1Image, notes: list[str]) -> nib.Nifti1Image | None:
    """A label image on the reference grid (:func:`rootlets_task.labels.on_grid`: point labels are never lost)."""
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
        content = json.loads(path.read_text(encoding="utf-8"))
        made = content.get("GeneratedBy", [{}])[0]
    except (OSError, ValueError, AttributeError, IndexError, TypeError):
        return {}
    found = {f"{kind} made by": made.get("Command") or made.get("Name"), f"{kind} source": content.get("Source")}
    if kind == "rootlets":
        found |= {"release": made.get("Release"), "model URL": made.get("ModelURL")}
    return {k: v for k, v in found.items() if v}


def _name(source) -> str:
    return str(source) if isinstance(source, str | os.PathLike) else "(in-memory image)"


def _table(source: TableLike | None, kind: str, columns: tuple[str, ...]) -> pd.DataFrame | None:
    """A levels or shift table from a DataFrame, a CSV or a JSON file (records, or {"levels": [...]})."""
    if source is None:
        return None
    if isinstance(source, pd.DataFrame):
        table = source
    else:
        path = Path(source)
        try:
            if path.suffix == ".json":
                data = json.loads(path.read_text())
                table = pd.DataFrame(data.get(kind, data) if isinstance(data, dict) else data)
            else:
                table = pd.read_csv(path)
        except (OSError, ValueError) as exc:
            raise RootletsError(f"{kind} table {path}: unreadable ({exc}); "
                                "give the CSV or JSON written by `rootlets levels`") from None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise RootletsError(f"{kind} table {_name(source)}: missing columns {', '.join(missing)}; "
                            "give the table written by `rootlets levels`")
    for col in WHOLE_NUMBERS:  # a CSV column with blanks reads as float: 240 would show as 240.0
        if col in table and pd.api.types.is_float_dtype(table[col]) and (table[col].dropna() % 1 == 0).all():
            table = table.assign(**{col: table[col].astype("Int64")})
    return table


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

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "data"),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters["colour"] = level_colour
    env.globals["zip"] = zip
    return env


def _read_records(qc_dir: Path) -> list[dict]:
    records = []
    for path in sorted((qc_dir / RECORDS).glob("*.json")):
        try:
            records.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):  # records are written atomically; anything else is not ours
            continue
    return sorted(records, key=lambda r: r["subject"].lower())


def rebuild_index(qc_dir: str | os.PathLike) -> Path:
    """Regenerate ``<qc_dir>/index.html`` from every subject record, under the folder's lock."""
    qc_dir = writable_folder(qc_dir, "QC folder", "-qc")
    (qc_dir / RECORDS).mkdir(exist_ok=True)
    try:
        with FileLock(qc_dir / LOCK, timeout=LOCK_TIMEOUT_S):
            records = _read_records(qc_dir)
            html = _templates().get_template("qc_index.html").render(
                records=records, version=__version__, created=now(),
                n_warn=sum(bool(r["warnings"]) for r in records))
            index = qc_dir / "index.html"
            write_text(index, html)
    except Timeout:
        raise RootletsError(f"QC folder {qc_dir}: another process held {LOCK} for {LOCK_TIMEOUT_S} s; this subject's "
                            "record is saved, run `rootlets_task.rebuild_index` on the folder later") from None
    return index


# ----------------------------------------------------------------------------------------------------------------
# The per-subject entry point


def _levels_summary(levels: pd.DataFrame | None, shift: pd.DataFrame | None) -> dict:
    """What the index shows of a subject's levels: names found per kind and the shift per linked pair."""
    ok = levels[levels["status"] == "ok"] if levels is not None else pd.DataFrame(columns=LEVEL_COLUMNS)
    spinal = ok[ok["kind"] == "spinal"].sort_values("value")["level"].tolist()
    vertebral = ok[ok["kind"] == "vertebral"].sort_values("value")["level"].tolist()
    return {"spinal_levels": spinal, "vertebral_levels": vertebral,
            "spinal_text": _span_text(spinal), "vertebral_text": _span_text(vertebral),
            "shifts": [{"pairing": p.pairing, "vertebral_level": p.vertebral_level, "spinal_level": p.spinal_level,
                        "shift_mm": round(float(p.shift_mm), 2)} for p in _pairs(shift).itertuples()]}


def _page_tables(levels: pd.DataFrame | None, shift: pd.DataFrame | None) -> dict[str, tuple[list, list]]:
    """Levels and shift tables as (columns, rows) for the subject page, rounded, blanks for missing values."""
    tables = {}
    if levels is not None:
        tables["levels"] = levels[[c for c in ("kind", "level", "value", "start_mm", "end_mm", "mid_mm", "height_mm",
                                               "n_voxels", "volume_mm3", "reference", "status") if c in levels]]
    if shift is not None:
        tables["shift"] = shift[list(SHIFT_COLUMNS)]
    return {name: (list(t.columns), t.round(2).astype(object).where(t.notna(), "").values.tolist())
            for name, t in tables.items()}


def qc_subject(qc_dir: str | os.PathLike, image: ImageLike, rootlets: ImageLike, cord: ImageLike | None = None,
               discs: ImageLike | None = None, levels: TableLike | None = None, shift: TableLike | None = None, *,
               subject: str | None = None, identity: str | None = None, provenance: Mapping | None = None,
               warnings: Iterable[str] = (), slab_mm: tuple[float, float] = SLAB_MM) -> Path:
    """Write one subject's QC (figures, page, record) into ``qc_dir`` and refresh the dataset index.

    Images are NIfTI paths or nibabel images (labels on another grid are resampled with nearest neighbour);
    ``levels``/``shift`` are the tables of :mod:`rootlets_task.levels` (DataFrame, CSV or JSON). ``provenance``
    (release, sources of cord and discs, settings ...) is shown as given; ``warnings`` are shown on the page and
    in the index. ``identity`` (e.g. the input file's path) keeps entries of different inputs with the same subject
    name apart. Running again for the same subject and identity replaces its entry. Returns the subject page.
    """
    qc_dir = Path(qc_dir)
    notes: list[str] = []
    img = _image(image, "image")
    roots = _labels(rootlets, "rootlets", img, notes)
    cord_img = _labels(cord, "cord", img, notes)
    disc_img = _labels(discs, "discs", img, notes)
    levels_df = _table(levels, "levels", LEVEL_COLUMNS)
    shift_df = _table(shift, "shift", SHIFT_COLUMNS)
    if shift_df is None and levels_df is not None:
        shift_df = shift_table(levels_df)
    subject = subject or (stem(image) if isinstance(image, str | os.PathLike) else "subject")
    key = subject_key(subject, identity)

    warnings = list(warnings)
    if not np.asanyarray(roots.dataobj).any():
        warnings.append("no rootlets in the segmentation")
    if cord_img is None:
        notes.append("no cord segmentation given: views are centred on the rootlets")
    if levels_df is not None and "status" in levels_df:
        for row in levels_df[levels_df["status"] != "ok"].itertuples():
            warnings.append(f"{row.kind} level {row.level}: {row.status}")

    out = writable_folder(qc_dir, "QC folder", "-qc") / key
    out.mkdir(exist_ok=True)
    views = display_views(img, roots, cord_img, disc_img, slab_mm=slab_mm)
    zooms = "×".join(f"{z:g}" for z in img.header.get_zooms()[:3])
    caption = (f"image {orientation(img)} {zooms} mm, shown at {views['coronal'].pixel_mm:g} mm pixels; "
               f"rootlets_task {__version__}")
    panels = rootlets_figure(views, out / "rootlets.png", f"{subject}: rootlets by spinal level", caption)
    thumbnail(views, out / "thumbnail.png")
    figures = {"rootlets": {"file": "rootlets.png", "panels": panels}}
    if levels_df is not None:
        levels_figure(levels_df, shift_df, out / "levels.png", f"{subject}: spinal vs vertebral levels")
        figures["levels"] = {"file": "levels.png"}
    else:
        (out / "levels.png").unlink(missing_ok=True)  # from an earlier run of this subject

    files = {"image file": _name(image), "rootlets file": _name(rootlets),
             "cord file": _name(cord) if cord is not None else "none",
             "discs file": _name(discs) if discs is not None else "none"}
    sidecars = {}  # release and sources, read from the label files' JSON sidecars; the caller's provenance wins
    for kind, source in (("rootlets", rootlets), ("cord", cord), ("discs", discs)):
        sidecars.update(_sidecar_provenance(kind, source))
    record = {"subject": subject, "key": key, "created": now(), "page": f"{key}/index.html",
              "thumbnail": f"{key}/thumbnail.png", "figures": figures, **_levels_summary(levels_df, shift_df),
              "warnings": warnings, "notes": notes,
              "provenance": _jsonable({"rootlets_task": __version__, "python": platform.python_version(), **files,
                                       **sidecars, **(provenance or {})})}
    page = out / "index.html"
    write_text(page, _templates().get_template("qc_subject.html").render(r=record, tables=_page_tables(levels_df, shift_df)))
    (qc_dir / RECORDS).mkdir(parents=True, exist_ok=True)
    write_text(qc_dir / RECORDS / f"{key}.json", json.dumps(record, indent=1))
    rebuild_index(qc_dir)
    return page
