"""Spinal levels from rootlets, vertebral levels from disc labels, and the table that compares them.

Pure-array core (:func:`compute_levels`), the writer of its file set (:func:`write_levels`) and a thin file layer
(:func:`levels_from_files`). Notes on the input (a missing level, a resampled file) travel as a list in the result.

Spinal levels, two methods:

* ``reference`` — the published algorithm (``ivadomed/model-spinal-rootlets``,
  ``inter-rater_variability/02a_rootlets_to_spinal_levels.py``): dilate the cord by a ball of radius 3 voxels, keep
  the rootlet voxels inside it, and give each level the slices from the lowest to the highest slice of its kept
  rootlets along the cord's superior-inferior array axis; cord voxels of those slices get the level, the higher level
  wins where two ranges overlap, and slices covered by no level stay 0. Fixed side effects of the script: level
  value 1 is kept (the script erased it), the output is on the input grid (the script wrote it reoriented to RPI),
  and slices beyond the centerline get extrapolated distances (the script failed on them).
* ``gapfree`` (default) — the same spans, then every boundary between two neighbouring levels n and n+1 is moved to
  halfway, in mm along the cord centerline, between the caudal end of n and the rostral end of n+1 (this closes
  gaps and splits overlaps). The rostral end of the first level and the caudal end of the last one stay where the
  rootlets are. Where a level is missing in between, its neighbours keep their own ends and the gap stays 0, since
  where the missing level lies is unknown.

Vertebral level v (1 = C1 ... 7 = C7, 8 = T1 ...) spans from disc v to disc v+1 (SCT disc numbering, 3 = C2/C3),
discs projected onto the cord centerline; label values are used, not rank order.

Distances are mm along the smoothed centerline (:mod:`rootlets_task.centerline`), positive caudally, from the
reference: the PMJ if given, else the C2/C3 disc if given, else the rostral end of the cord.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from rootlets_task import labels
from rootlets_task.centerline import Centerline, cord_centerline, voxel_to_world
from rootlets_task.errors import RootletsError
from rootlets_task.files import OutputSet, read_json, relative_to, remove_stale_temporaries, sha256_file, writable_folder
from rootlets_task.nifti import label_image, load, stem
from rootlets_task.options import METHODS

DILATE_VOXELS = 3
MAX_DILATE_VOXELS = 50
C2C3_DISC = 3
LANDMARK_VALUES = (49, 50, 60)  # SCT: pontomedullary groove, PMJ, conus medullaris — not discs
LEVEL_COLUMNS = ["kind", "level", "value", "start_slice", "end_slice", "mid_slice", "start_mm", "end_mm", "mid_mm",
                 "height_mm", "reference", "n_voxels", "volume_mm3", "status"]
SHIFT_COLUMNS = ["pairing", "vertebral_level", "spinal_level", "vertebral_mid_mm", "spinal_mid_mm", "shift_mm"]
OUTPUTS = {"spinal": "_spinal_levels.nii.gz", "vertebral": "_vertebral_levels.nii.gz", "csv": "_levels.csv",
           "json": "_levels.json", "shift": "_shift.csv"}


def level_name(value: int, kind: str) -> str:
    """Level value -> name. Spinal 1..8 = C1..C8, 9.. = T1..; vertebral 1..7 = C1..C7, 8.. = T1.."""
    cervical = 8 if kind == "spinal" else 7
    return f"C{value}" if value <= cervical else f"T{value - cervical}"


@dataclass
class LevelsResult:
    """Everything :func:`compute_levels` derives, on the input grid."""

    spinal: np.ndarray  # uint8, cord voxels labelled by spinal level
    vertebral: np.ndarray | None  # uint8, cord voxels labelled by vertebral level (None without discs)
    levels: pd.DataFrame  # LEVEL_COLUMNS
    shift: pd.DataFrame  # SHIFT_COLUMNS
    reference: str  # "PMJ", "C2/C3 disc" or "cord rostral end"
    method: str
    centerline: Centerline
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Span:
    start_mm: float  # rostral end
    end_mm: float  # caudal end


def ball(radius: int) -> np.ndarray:
    """SCT's ``sct_maths -dilate`` ball: voxels with x² + y² + z² <= r² (123 voxels for r = 3)."""
    r = np.arange(-radius, radius + 1)
    x, y, z = np.meshgrid(r, r, r, indexing="ij")
    return x**2 + y**2 + z**2 <= radius**2


def dilate(mask: np.ndarray, radius: int = DILATE_VOXELS) -> np.ndarray:
    """Binary dilation by a voxel-unit ball, computed on the mask's bounding box (fast on large grids)."""
    out = np.zeros(mask.shape, bool)
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(0) - radius, 0)
    hi = np.minimum(idx.max(0) + radius + 1, mask.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    out[box] = ndimage.binary_dilation(mask[box], structure=ball(radius))
    return out


def compute_levels(rootlets: np.ndarray, cord: np.ndarray, affine: np.ndarray, discs: np.ndarray | None = None,
                   pmj: np.ndarray | None = None, method: str = "gapfree", dilate_voxels: int = DILATE_VOXELS,
                   names: dict[str, str] | None = None) -> LevelsResult:
    """Spinal and vertebral levels, the levels table and the shift table from label arrays on one grid.

    ``rootlets``: integer levels (2 = C2 ... 9 = T1); ``cord``: binary; ``discs``: single voxels, SCT disc numbering;
    ``pmj``: a single voxel of any value. ``names`` ({"rootlets": path, ...}) are used in error messages.
    Raises :class:`RootletsError` on bad input; a level with no usable rootlets becomes a "missing" row and a warning.
    """
    names = {k: (names or {}).get(k, k) for k in ("rootlets", "cord", "discs", "pmj")}
    if method not in METHODS:
        raise RootletsError(f"method {method!r} is unknown; use one of {', '.join(METHODS)}")
    if not 0 <= dilate_voxels <= MAX_DILATE_VOXELS:
        raise RootletsError(f"dilation radius {dilate_voxels}: use 0 to {MAX_DILATE_VOXELS} voxels (published: 3)")
    affine = np.asarray(affine, dtype=float)
    rootlets = labels.as_labels(rootlets, names["rootlets"])
    cord_labels = labels.as_labels(cord, names["cord"])
    for key, arr in (("discs", discs), ("pmj", pmj)):
        if arr is not None and np.shape(arr) != rootlets.shape:
            raise RootletsError(f"{names[key]}: grid {np.shape(arr)} differs from the rootlets grid {rootlets.shape}; "
                                "resample it (levels_from_files does this)")
    if cord_labels.shape != rootlets.shape:
        raise RootletsError(f"{names['cord']}: grid {cord_labels.shape} differs from the rootlets grid {rootlets.shape}; "
                            "resample it (levels_from_files does this)")
    if not rootlets.any():
        raise RootletsError(f"{names['rootlets']}: no rootlets (all voxels are 0); check the file or the segmentation")
    if rootlets.max() > 255:
        raise RootletsError(f"{names['rootlets']}: level value {rootlets.max()} is too large (max 255); is this a rootlets file?")
    if not cord_labels.any():
        raise RootletsError(f"{names['cord']}: the cord segmentation is empty; segment the cord first (sct_deepseg spinalcord)")
    notes: list[str] = []
    if len(np.unique(cord_labels[cord_labels > 0])) > 1:
        notes.append(f"{names['cord']}: several non-zero values; every non-zero voxel is taken as cord")
    cord_mask = cord_labels > 0

    pmj_voxel = None
    if pmj is not None:
        pmj_points = np.argwhere(labels.as_labels(pmj, names["pmj"]) > 0)
        if len(pmj_points) != 1:
            raise RootletsError(f"{names['pmj']}: the PMJ label must be exactly one voxel, found {len(pmj_points)}; "
                                "keep one voxel (e.g. sct_detect_pmj output)")
        pmj_voxel = pmj_points[0]
    disc_voxels: dict[int, np.ndarray] = {}
    if discs is not None:
        disc_labels = labels.as_labels(discs, names["discs"])
        if not disc_labels.any():
            raise RootletsError(f"{names['discs']}: no disc labels (all voxels are 0); check the file")
        disc_voxels = labels.single_voxels(disc_labels, names["discs"], "disc")
        landmarks = sorted(v for v in disc_voxels if v in LANDMARK_VALUES)
        if landmarks:
            notes.append(f"{names['discs']}: values {landmarks} are SCT landmarks (49 groove, 50 PMJ, 60 conus), "
                         "not discs; ignored")
            disc_voxels = {v: p for v, p in disc_voxels.items() if v not in LANDMARK_VALUES}
        not_discs = labels.disc_values_problem(disc_voxels)
        if not_discs:
            raise RootletsError(f"{names['discs']}: {not_discs}")

    line = cord_centerline(cord_mask, affine, pmj_voxel)
    if pmj_voxel is not None:
        reference, ref_mm = "PMJ", float(line.project(voxel_to_world(affine, [pmj_voxel]))[0])
    elif C2C3_DISC in disc_voxels:
        reference, ref_mm = "C2/C3 disc", float(line.project(voxel_to_world(affine, [disc_voxels[C2C3_DISC]]))[0])
    else:
        reference, ref_mm = "cord rostral end", 0.0
    n_slices = rootlets.shape[line.axis]
    slice_mm = line.slice_mm(np.arange(n_slices)) - ref_mm  # distance of every slice from the reference
    cord_slices = np.flatnonzero(np.moveaxis(cord_mask, line.axis, 0).reshape(n_slices, -1).any(1))

    spans, rows, spinal_notes = _spinal_spans(rootlets, cord_mask, line.axis, slice_mm, cord_slices, dilate_voxels, names)
    notes += spinal_notes
    voxel_mm3 = float(abs(np.linalg.det(affine[:3, :3])))
    spinal = np.zeros(rootlets.shape, np.uint8)
    intervals = _reference_intervals(spans) if method == "reference" else _gapfree_intervals(spans)
    for value, (lo, hi, closed) in sorted(intervals.items()):
        _paint(spinal, cord_mask, line.axis, slice_mm, lo, hi, closed, value)
    for value, row in rows.items():
        row["n_voxels"] = int((rootlets == value).sum())
        row["volume_mm3"] = row["n_voxels"] * voxel_mm3
        if value in intervals:
            row.update(_extent(slice_mm, *intervals[value]))

    vertebral = None
    vertebral_rows: dict[int, dict] = {}
    if disc_voxels:
        vertebral, vertebral_rows, vertebral_notes = _vertebral(disc_voxels, line, affine, ref_mm, cord_mask, slice_mm, names)
        notes += vertebral_notes

    table = _table([*(("spinal", v, r) for v, r in sorted(rows.items())),
                    *(("vertebral", v, r) for v, r in sorted(vertebral_rows.items()))], reference)
    return LevelsResult(spinal=spinal, vertebral=vertebral, levels=table, shift=shift_table(table), reference=reference,
                        method=method, centerline=line, warnings=notes)


def _spinal_spans(rootlets: np.ndarray, cord: np.ndarray, axis: int, slice_mm: np.ndarray, cord_slices: np.ndarray,
                  radius: int, names: dict) -> tuple[dict[int, _Span], dict[int, dict], list[str]]:
    """Published steps 1-3: dilate, intersect, per-level slice range (mm from the reference)."""
    kept = np.where(dilate(cord, radius), rootlets, 0)
    values = np.unique(rootlets[rootlets > 0])
    spans: dict[int, _Span] = {}
    rows: dict[int, dict] = {}
    notes = []
    for value in range(int(values.min()), int(values.max()) + 1):
        rows[value] = {"status": "missing"}
        name = level_name(value, "spinal")
        if value not in values:
            notes.append(f"{names['rootlets']}: no rootlets of spinal level {name} ({value}); reported as missing")
            continue
        level_slices = np.unique(np.argwhere(rootlets == value)[:, axis])
        if not np.isin(level_slices, cord_slices).any():
            raise RootletsError(f"{names['cord']}: the cord is missing on slices {level_slices.min()}-{level_slices.max()} "
                                f"(axis {axis}) where the rootlets of level {name} are; segment the cord over the whole "
                                "rootlets extent")
        if not np.isin(level_slices, cord_slices).all():
            notes.append(f"{names['cord']}: the cord does not cover every slice of level {name}'s rootlets; "
                         "its extent may be cut short")
        slices = np.unique(np.argwhere(kept == value)[:, axis])
        if len(slices) == 0:
            notes.append(f"{names['rootlets']}: rootlets of level {name} do not touch the cord "
                         f"(dilated by {radius} voxels); reported as missing")
            continue
        a, b = slice_mm[slices.min()], slice_mm[slices.max()]
        spans[value] = _Span(min(a, b), max(a, b))
        rows[value]["status"] = "ok"
    mids = [(s.start_mm + s.end_mm) / 2 for _, s in sorted(spans.items())]
    if np.any(np.diff(mids) < 0):
        notes.append(f"{names['rootlets']}: spinal levels are not in rostro-caudal order; check the rootlet labels")
    return spans, rows, notes


def _reference_intervals(spans: dict[int, _Span]) -> dict[int, tuple[float, float, bool]]:
    """(rostral mm, caudal mm, caudal end inclusive) per level: the rootlets' own extent."""
    return {v: (s.start_mm, s.end_mm, True) for v, s in spans.items()}


def _gapfree_intervals(spans: dict[int, _Span]) -> dict[int, tuple[float, float, bool]]:
    """Boundaries between neighbouring levels n, n+1 moved halfway (mm) between n's caudal and n+1's rostral end."""
    out = {}
    for v, s in spans.items():
        lo, hi, closed = s.start_mm, s.end_mm, True
        if v - 1 in spans:
            lo = (spans[v - 1].end_mm + s.start_mm) / 2
        if v + 1 in spans:
            hi, closed = (s.end_mm + spans[v + 1].start_mm) / 2, False  # the boundary slice goes to the caudal level
        out[v] = (lo, hi, closed)
    return out


def _in_interval(slice_mm: np.ndarray, lo: float, hi: float, closed: bool) -> np.ndarray:
    tol = 1e-6  # slice distances equal to a span's end (up to rounding) belong to it
    return (slice_mm >= lo - tol) & ((slice_mm <= hi + tol) if closed else (slice_mm < hi - tol))


def _paint(out: np.ndarray, cord: np.ndarray, axis: int, slice_mm: np.ndarray, lo: float, hi: float, closed: bool,
           value: int) -> None:
    """Cord voxels of the slices whose distance is in [lo, hi] get ``value`` (later, higher values overwrite)."""
    slices = np.flatnonzero(_in_interval(slice_mm, lo, hi, closed))
    view = np.moveaxis(out, axis, 0)
    view[slices] = np.where(np.moveaxis(cord, axis, 0)[slices], value, view[slices])


def _extent(slice_mm: np.ndarray, lo: float, hi: float, closed: bool) -> dict:
    """Table fields of a level spanning [lo, hi] mm: slices inside it, and the midpoint slice."""
    slices = np.flatnonzero(_in_interval(slice_mm, lo, hi, closed))
    mid = (lo + hi) / 2
    row = {"start_mm": lo, "end_mm": hi, "mid_mm": mid, "height_mm": hi - lo, "status": "ok",
           "mid_slice": int(np.argmin(np.abs(slice_mm - mid)))}
    if len(slices):
        rostral_first = slices[np.argsort(slice_mm[slices])]
        row.update(start_slice=int(rostral_first[0]), end_slice=int(rostral_first[-1]))
    return row


def _vertebral(discs: dict[int, np.ndarray], line: Centerline, affine: np.ndarray, ref_mm: float, cord: np.ndarray,
               slice_mm: np.ndarray, names: dict) -> tuple[np.ndarray, dict[int, dict], list[str]]:
    """Vertebral level v between projected discs v and v+1, painted on the cord slice by slice."""
    values = sorted(discs)
    mm = dict(zip(values, line.project(voxel_to_world(affine, np.array([discs[v] for v in values]))) - ref_mm, strict=True))
    for upper, lower in zip(values, values[1:], strict=False):
        if mm[lower] <= mm[upper]:
            raise RootletsError(f"{names['discs']}: discs out of rostro-caudal order (disc {lower} is not caudal to disc "
                                f"{upper}); check the disc numbering (SCT: 3 = C2/C3)")
    out = np.zeros(cord.shape, np.uint8)
    rows: dict[int, dict] = {}
    notes = [] if len(values) > 1 else [f"{names['discs']}: only disc {values[0]}; a vertebral level needs two discs"]
    for v in range(values[0], values[-1]):
        if v in mm and v + 1 in mm:
            _paint(out, cord, line.axis, slice_mm, mm[v], mm[v + 1], False, v)
            rows[v] = _extent(slice_mm, mm[v], mm[v + 1], False)
        else:
            rows[v] = {"status": "missing"}
            gone = v if v not in mm else v + 1
            notes.append(f"{names['discs']}: disc {gone} is missing, so vertebral level {level_name(v, 'vertebral')} "
                         "is reported as missing")
    return out, rows, notes


def _table(rows: list[tuple[str, int, dict]], reference: str) -> pd.DataFrame:
    records = [{"kind": kind, "level": level_name(value, kind), "value": value, "reference": reference, **row}
               for kind, value, row in rows]
    return _typed(pd.DataFrame.from_records(records, columns=LEVEL_COLUMNS))


def _typed(table: pd.DataFrame) -> pd.DataFrame:
    """The levels table's column types: whole numbers nullable (missing levels have no slices), distances float."""
    for col in ("value", "start_slice", "end_slice", "mid_slice", "n_voxels"):
        table[col] = table[col].astype("Int64")
    for col in ("start_mm", "end_mm", "mid_mm", "height_mm", "volume_mm3"):
        table[col] = table[col].astype(float)
    return table


def read_levels_table(path: str | os.PathLike) -> pd.DataFrame:
    """A ``*_levels.csv`` written by :func:`write_levels`, with the types :func:`compute_levels` gives."""
    return _typed(pd.read_csv(path))


def shift_table(levels: pd.DataFrame) -> pd.DataFrame:
    """Vertebral minus spinal midpoint (mm) for the unshifted (same name) and shifted (paper) pairings.

    Unshifted: VL Cn with SL Cn, VL T1 with SL T1. Shifted (RootletSeg paper): VL Cn with SL C(n+1) (VL C7 with
    SL C8) and VL T1 with SL T1 — in values, vertebral v with spinal v+1. Only pairs present (status ok) in both.
    """
    ok = levels[levels["status"] == "ok"]
    spinal = {int(r.value): r for r in ok[ok["kind"] == "spinal"].itertuples()}
    vertebral = {int(r.value): r for r in ok[ok["kind"] == "vertebral"].itertuples()}
    records = []
    for pairing in ("unshifted", "shifted"):
        for v, vr in sorted(vertebral.items()):
            k = v + 1 if pairing == "shifted" or v >= 8 else v
            if k in spinal:
                sr = spinal[k]
                records.append({"pairing": pairing, "vertebral_level": vr.level, "spinal_level": sr.level,
                                "vertebral_mid_mm": vr.mid_mm, "spinal_mid_mm": sr.mid_mm,
                                "shift_mm": vr.mid_mm - sr.mid_mm})
    return pd.DataFrame.from_records(records, columns=SHIFT_COLUMNS)


# ----------------------------------------------------------------------------------------------- file layer


def output_paths(out_dir: str | os.PathLike, prefix: str, with_discs: bool = True) -> dict[str, Path]:
    """The files :func:`write_levels` writes: spinal, csv, json and, with discs, vertebral and shift."""
    paths = {k: Path(out_dir) / f"{prefix}{suffix}" for k, suffix in OUTPUTS.items()}
    if not with_discs:
        del paths["vertebral"], paths["shift"]
    return paths


def write_levels(result: LevelsResult, grid: nib.Nifti1Image, out_dir: str | os.PathLike, prefix: str,
                 inputs: dict[str, str | os.PathLike] | None = None) -> dict[str, Path]:
    """Write the result's file set into ``out_dir``, all or nothing; returns {"spinal", "csv", ...: path}.

    ``<prefix>_spinal_levels.nii.gz``, ``<prefix>_levels.csv``, ``<prefix>_levels.json`` and, with discs,
    ``<prefix>_vertebral_levels.nii.gz`` and ``<prefix>_shift.csv``; uint8 images on ``grid``. Files an earlier run
    wrote under these names that this run does not make (e.g. no discs now) go away in the same step, when they are
    still what that run wrote (the earlier ``_levels.json`` lists them with their sha256). ``inputs`` (name ->
    path) are recorded in the JSON, relative to ``out_dir`` when inside it.
    """
    out_dir = writable_folder(out_dir)
    remove_stale_temporaries(out_dir)
    outputs = output_paths(out_dir, prefix, result.vertebral is not None)
    previous = read_json(outputs["json"]) or {}
    earlier = previous.get("outputs", {}) if isinstance(previous, dict) else {}
    stale = [out_dir / name for name, digest in earlier.items() if isinstance(name, str) and "/" not in name
             and (out_dir / name) not in outputs.values() and (out_dir / name).is_file()
             and sha256_file(out_dir / name) == digest]
    with OutputSet(remove=stale) as files:
        tmp = {k: files.path(p) for k, p in outputs.items()}
        nib.save(label_image(result.spinal, grid), tmp["spinal"])
        if result.vertebral is not None:
            nib.save(label_image(result.vertebral, grid), tmp["vertebral"])
            result.shift.to_csv(tmp["shift"], index=False)
        result.levels.to_csv(tmp["csv"], index=False)
        written = {outputs[k].name: sha256_file(t) for k, t in tmp.items() if k != "json"}
        document = {"method": result.method, "reference": result.reference, "warnings": result.warnings,
                    "inputs": {k: relative_to(v, out_dir) for k, v in (inputs or {}).items()},
                    "levels": json.loads(result.levels.to_json(orient="records")),
                    "shift": json.loads(result.shift.to_json(orient="records")), "outputs": written}
        tmp["json"].write_text(json.dumps(document, indent=2))
    return outputs


def levels_from_files(rootlets: str | os.PathLike, cord: str | os.PathLike, discs: str | os.PathLike | None = None,
                      pmj: str | os.PathLike | None = None, image: str | os.PathLike | None = None,
                      out_dir: str | os.PathLike | None = None, method: str = "gapfree", prefix: str | None = None,
                      dilate_voxels: int = DILATE_VOXELS) -> tuple[dict[str, Path], LevelsResult]:
    """Compute levels from NIfTI files and write them (:func:`write_levels`); returns (paths, result).

    Labels on another grid than the image (else the rootlets) are resampled (:func:`rootlets_task.labels.on_grid`,
    with a note). ``<prefix>`` defaults to the rootlets file's stem, the folder to the rootlets file's folder.
    Everything is computed and checked before anything is written. Nine arguments: the five files, where to write
    and the two method settings are all the user's choices of ``rootlets levels``.
    """
    paths = {"rootlets": Path(rootlets), "cord": Path(cord)}
    paths.update({k: Path(v) for k, v in (("discs", discs), ("pmj", pmj), ("image", image)) if v is not None})
    names = {k: f"{k} {p}" for k, p in paths.items()}
    if method not in METHODS:
        raise RootletsError(f"method {method!r} is unknown; use one of {', '.join(METHODS)}")
    loaded = {k: labels.read(p, k) for k, p in paths.items() if k != "image"}
    grid = load(paths["image"], "image") if "image" in paths else loaded["rootlets"][0]
    grid_name = names["image" if "image" in paths else "rootlets"]
    notes: list[str] = []
    arrays = {}
    for kind, (img, data) in loaded.items():
        try:
            arrays[kind], grid_notes = labels.on_grid(img, data, grid, points=kind in labels.POINT_KINDS)
        except ValueError as exc:
            raise RootletsError(f"{names[kind]}: {exc}; is it from the same subject and session as {grid_name}?") from None
        notes += [f"{names[kind]}: {n}" for n in grid_notes]
    result = compute_levels(arrays["rootlets"], arrays["cord"], grid.affine, arrays.get("discs"), arrays.get("pmj"),
                            method, dilate_voxels, names)
    result.warnings[:0] = notes
    out_dir = Path(out_dir) if out_dir is not None else paths["rootlets"].parent
    prefix = prefix or stem(paths["rootlets"])
    inputs = {p.absolute().resolve() for p in paths.values()}
    for out in output_paths(out_dir, prefix).values():
        if out.absolute().resolve() in inputs:
            raise RootletsError(f"output {out} is an input file; choose another -o or prefix so the input is kept")
    written = write_levels(result, grid, out_dir, prefix, {k: p for k, p in paths.items()})
    from rootlets_task import viewers  # lookup tables beside the level images (viewers imports this module)

    viewers.describe({k: written[k] for k in ("spinal", "vertebral") if k in written})
    return written, result
