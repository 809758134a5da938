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

Vertebral level v (1 = C1 ... 7 = C7, 8 = T1 ...) spans from disc v to disc v+1 (SCT disc numbering, 3 = C2/C3);
label values are used, not rank order (the lab's ``discs_to_vertebral_levels.py`` ignores them and needs 9 discs).
``gapfree`` projects each disc onto the centerline continuously; ``reference`` puts it on the slice
``sct_label_utils -project-centerline`` puts it on and takes that whole slice's distance, as the lab's pipeline does
(:func:`rootlets_task.levels.sctline.project_discs`).

Distances are mm along a smoothed centerline, positive caudally: ``gapfree`` along its own
(:mod:`rootlets_task.levels.centerline`), ``reference`` along SCT's extrapolated centerline with the lab's arc length
(:mod:`rootlets_task.levels.sctline`), from the origin named in the ``reference`` column:

* ``gapfree``: the anatomical landmark: the PMJ if given, else the C2/C3 disc if given, else the cord's rostral end;
* ``reference``: the lab's origin, the top of the centerline built from the cord and the PMJ (the most rostral
  slice of either: ``02a`` measures from ``centerline[2].argmax()`` of SCT's extrapolated centerline). It is the PMJ
  only when the PMJ lies at or above the cord's top; where the cord reaches higher, every distance is larger by
  ``origin_offset_mm`` (recorded in the JSON with a note), although the lab's columns say ``distance_from_pmj``.

Every result carries the numbering check of :mod:`rootlets_task.levels.numbering` (spinal against vertebral levels);
``renumber="suggested"`` applies its suggestion and records it. Table columns: :mod:`rootlets_task.io.tables`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from rootlets_task._version import __version__
from rootlets_task.core.errors import RootletsError
from rootlets_task.core.files import (
    OutputSet,
    keep_inputs,
    read_json,
    relative_to,
    remove_stale_temporaries,
    sha256_file,
    writable_folder,
)
from rootlets_task.core.names import level_name
from rootlets_task.core.options import METHODS, RENUMBER
from rootlets_task.inference import confidence as conf
from rootlets_task.io import labels, viewers
from rootlets_task.io.nifti import label_image, load, si_axis, stem
from rootlets_task.io.tables import LEVEL_COLUMNS, PAIRING_TEXT, PAIRINGS, SHIFT_COLUMNS, read_levels_table, typed, write_csv
from rootlets_task.levels import numbering, sctline
from rootlets_task.levels.centerline import Centerline, cord_centerline, voxel_to_world
from rootlets_task.levels.numbering import NumberingCheck

log = logging.getLogger(__name__)

__all__ = ["LEVEL_COLUMNS", "SHIFT_COLUMNS", "LevelsOptions", "LevelsResult", "Origin", "compute_levels", "levels_from_files",
           "level_name", "read_levels_table", "shift_table", "write_levels", "output_paths", "add_confidence"]

DILATE_VOXELS = 3
MAX_DILATE_VOXELS = 50
C2C3_DISC = 3
LANDMARK_VALUES = (49, 50, 60)  # SCT: pontomedullary groove, PMJ, conus medullaris — not discs
CENTERLINE_TOP = "centerline top (cord and PMJ)"
OUTPUTS = {"spinal": "_spinal_levels.nii.gz", "vertebral": "_vertebral_levels.nii.gz", "csv": "_levels.csv",
           "json": "_levels.json", "shift": "_shift.csv", "lab": "_levels_lab.csv"}


@dataclass(frozen=True)
class LevelsOptions:
    """How levels are derived from the labels: the settings of ``rootlets levels`` (see the module doc)."""

    method: str = "gapfree"  # or "reference", the published algorithm
    dilate_voxels: int = DILATE_VOXELS  # radius of the ball the cord is dilated by to keep rootlet voxels
    renumber: str = "none"  # "suggested": apply the numbering check's suggestion (recorded), never silently


@dataclass(frozen=True)
class Origin:
    """Where distance 0 is: its name, its arc length from the centerline's rostral end, and the PMJ's (if given)."""

    reference: str
    mm: float
    pmj_mm: float | None = None

    @property
    def offset_mm(self) -> float | None:
        """How far the PMJ lies caudal of the origin: 0 when the origin is the PMJ, None without a PMJ."""
        return None if self.pmj_mm is None else self.pmj_mm - self.mm

    def note(self) -> str | None:
        """The sentence that says where the origin is, when it is not the PMJ although a PMJ was given."""
        if self.offset_mm is None or abs(self.offset_mm) < 0.05:
            return None
        return (f"distances are measured from the {self.reference}, {self.offset_mm:.1f} mm above the PMJ, as the lab's "
                f"scripts measure them (their distance_from_pmj); subtract {self.offset_mm:.1f} mm for distances from "
                "the PMJ (or use -method gapfree)")

    def to_dict(self) -> dict:
        return {"reference": self.reference, "origin_offset_mm": self.offset_mm, "note": self.note()}


@dataclass
class LevelsResult:
    """Everything :func:`compute_levels` derives, on the input grid."""

    spinal: np.ndarray  # uint8, cord voxels labelled by spinal level
    vertebral: np.ndarray | None  # uint8, cord voxels labelled by vertebral level (None without discs)
    levels: pd.DataFrame  # tables.LEVEL_COLUMNS
    shift: pd.DataFrame  # tables.SHIFT_COLUMNS
    reference: str  # what distance 0 is: "PMJ", "C2/C3 disc", "cord rostral end" or CENTERLINE_TOP
    method: str
    centerline: Centerline
    warnings: list[str] = field(default_factory=list)
    origin: Origin | None = None
    numbering: NumberingCheck | None = None
    confidence: dict | None = None  # the rootlets' Confidence (rootlets_task.inference.confidence), when known


@dataclass
class _Span:
    start_mm: float  # rostral end
    end_mm: float  # caudal end


@dataclass
class _Frame:
    """What every step of one computation shares: the cord, its centerline, the origin, every slice's distance."""

    cord: np.ndarray  # bool
    affine: np.ndarray
    line: Centerline
    origin: Origin
    slice_mm: np.ndarray  # distance of every slice of the grid from the origin
    cord_slices: np.ndarray
    names: dict[str, str]
    method: str

    @property
    def axis(self) -> int:
        return self.line.axis


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


# ----------------------------------------------------------------------------------------------- the computation


def compute_levels(rootlets: np.ndarray, cord: np.ndarray, affine: np.ndarray, discs: np.ndarray | None = None,
                   pmj: np.ndarray | None = None, *, options: LevelsOptions = LevelsOptions(),
                   names: dict[str, str] | None = None, **fields: Any) -> LevelsResult:
    """Spinal and vertebral levels, the levels and shift tables and the numbering check, from label arrays on one grid.

    ``rootlets``: integer levels (2 = C2 ... 9 = T1); ``cord``: binary; ``discs``: single voxels, SCT disc numbering;
    ``pmj``: a single voxel of any value. ``names`` ({"rootlets": path, ...}) are used in error messages.
    ``options`` (:class:`LevelsOptions`; any of its fields given by keyword replaces the options' one, e.g.
    ``method="reference"``). ``renumber="suggested"``: when the numbering check finds the spinal levels shifted,
    relabel the rootlets by its offset and compute again (recorded in the result).
    Raises :class:`RootletsError` on bad input; a level with no usable rootlets becomes a "missing" row and a warning.
    """
    options = dataclasses.replace(options, **fields)  # a field that LevelsOptions lacks: TypeError, as any call
    method, dilate_voxels, renumber = options.method, options.dilate_voxels, options.renumber
    names = {k: (names or {}).get(k, k) for k in ("rootlets", "cord", "discs", "pmj")}
    _check_settings(method, dilate_voxels, renumber)
    rootlets, cord_mask, notes = _checked_arrays(rootlets, cord, discs, pmj, names)
    pmj_voxel = _pmj_voxel(pmj, names)
    disc_voxels, disc_notes = _disc_voxels(discs, names)
    frame = _frame(cord_mask, affine, pmj_voxel, disc_voxels, method, names)
    result, spans = _levels(rootlets, frame, disc_voxels, dilate_voxels)
    check = _check_numbering(spans, result.levels)
    if renumber == "suggested" and check.status == "shifted":
        relabelled, problem = _renumbered(rootlets, check.offset)
        if relabelled is None:
            notes.append(f"{names['rootlets']}: not renumbered: {problem}")
        else:
            result, spans = _levels(relabelled, frame, disc_voxels, dilate_voxels)
            check.applied = True
            check.text = check.text.replace("Not renumbered (use -renumber suggested to apply)",
                                            f"Renumbered {check.offset:+d} as suggested (-renumber suggested)")
    result.levels = typed(_mark_numbering(result.levels, check))
    result.warnings = notes + disc_notes + result.warnings + ([check.text] if check.warns else [])
    if note := frame.origin.note():
        result.warnings.append(note)
    result.numbering, result.origin = check, frame.origin
    return result


def _check_settings(method: str, dilate_voxels: int, renumber: str) -> None:
    if method not in METHODS:
        raise RootletsError(f"method {method!r} is unknown; use one of {', '.join(METHODS)}")
    if not 0 <= dilate_voxels <= MAX_DILATE_VOXELS:
        raise RootletsError(f"dilation radius {dilate_voxels}: use 0 to {MAX_DILATE_VOXELS} voxels (published: 3)")
    if renumber not in RENUMBER:
        raise RootletsError(f"renumber {renumber!r} is unknown; use one of {', '.join(RENUMBER)}")


def _checked_arrays(rootlets, cord, discs, pmj, names: dict) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(rootlets labels, cord mask, notes): every array on the rootlets grid, non-empty where it must be."""
    rootlets = labels.as_labels(rootlets, names["rootlets"])
    cord_labels = labels.as_labels(cord, names["cord"])
    for key, arr in (("discs", discs), ("pmj", pmj), ("cord", cord_labels)):
        if arr is not None and np.shape(arr) != rootlets.shape:
            raise RootletsError(f"{names[key]}: grid {np.shape(arr)} differs from the rootlets grid {rootlets.shape}; "
                                "resample it (levels_from_files does this)")
    if not rootlets.any():
        raise RootletsError(f"{names['rootlets']}: no rootlets (all voxels are 0); check the file or the segmentation")
    if rootlets.max() > 255:
        raise RootletsError(f"{names['rootlets']}: level value {rootlets.max()} is too large (max 255); is this a rootlets file?")
    if not cord_labels.any():
        raise RootletsError(f"{names['cord']}: the cord segmentation is empty; segment the cord first (sct_deepseg spinalcord)")
    notes = []
    if len(np.unique(cord_labels[cord_labels > 0])) > 1:
        notes.append(f"{names['cord']}: several non-zero values; every non-zero voxel is taken as cord")
    return rootlets, cord_labels > 0, notes


def _pmj_voxel(pmj: np.ndarray | None, names: dict) -> np.ndarray | None:
    if pmj is None:
        return None
    points = np.argwhere(labels.as_labels(pmj, names["pmj"]) > 0)
    if len(points) != 1:
        raise RootletsError(f"{names['pmj']}: the PMJ label must be exactly one voxel, found {len(points)}; "
                            "keep one voxel (e.g. sct_detect_pmj output)")
    return points[0]


def _disc_voxels(discs: np.ndarray | None, names: dict) -> tuple[dict[int, np.ndarray], list[str]]:
    """{disc value: voxel} without SCT's landmark values, and a note when some were dropped."""
    if discs is None:
        return {}, []
    disc_labels = labels.as_labels(discs, names["discs"])
    if not disc_labels.any():
        raise RootletsError(f"{names['discs']}: no disc labels (all voxels are 0); check the file")
    voxels = labels.single_voxels(disc_labels, names["discs"], "disc")
    landmarks = sorted(v for v in voxels if v in LANDMARK_VALUES)
    notes = [f"{names['discs']}: values {landmarks} are SCT landmarks (49 groove, 50 PMJ, 60 conus), not discs; "
             "ignored"] if landmarks else []
    voxels = {v: p for v, p in voxels.items() if v not in LANDMARK_VALUES}
    not_discs = labels.disc_values_problem(voxels)
    if not_discs:
        raise RootletsError(f"{names['discs']}: {not_discs}")
    return voxels, notes


def _frame(cord: np.ndarray, affine: np.ndarray, pmj_voxel, disc_voxels: dict, method: str, names: dict) -> _Frame:
    """The centerline (through the PMJ when it lies beyond the cord), the origin and every slice's distance from it."""
    affine = np.asarray(affine, dtype=float)
    if method == "reference":
        return _reference_frame(cord, affine, pmj_voxel, names)
    line = cord_centerline(cord, affine, pmj_voxel)
    pmj_mm = float(line.project(voxel_to_world(affine, [pmj_voxel]))[0]) if pmj_voxel is not None else None
    if pmj_mm is not None:
        origin = Origin("PMJ", pmj_mm, pmj_mm)
    elif C2C3_DISC in disc_voxels:
        origin = Origin("C2/C3 disc", float(line.project(voxel_to_world(affine, [disc_voxels[C2C3_DISC]]))[0]))
    else:
        origin = Origin("cord rostral end", 0.0)
    slice_mm = line.slice_mm(np.arange(cord.shape[line.axis])) - origin.mm
    return _Frame(cord, affine, line, origin, slice_mm, _cord_slices(cord, line.axis), names, method)


def _reference_frame(cord: np.ndarray, affine: np.ndarray, pmj_voxel, names: dict) -> _Frame:
    """The lab's frame: SCT's extrapolated centerline of cord ∪ PMJ (:func:`sctline.pmj_centerline`) and the lab's
    distances from its top slice (:func:`sctline.distance_from_top`); slices beyond it extrapolated linearly."""
    grid = sctline.rpi(cord.shape, affine)
    pmj = None
    if pmj_voxel is not None:
        pmj = np.zeros(cord.shape, bool)
        pmj[tuple(pmj_voxel)] = True
    line_rpi = sctline.pmj_centerline(grid.array(cord), None if pmj is None else grid.array(pmj), float(grid.zooms[2]))
    top_first = line_rpi[:, ::-1]
    distance = sctline.distance_from_top(line_rpi, grid.zooms)
    line = Centerline(axis=grid.axis, slices=grid.native_slice(top_first[2].astype(int)),
                      points=voxel_to_world(grid.affine, top_first.T), arc=np.array([distance[int(z)] for z in top_first[2]]),
                      slice_step_mm=float(grid.zooms[2]), index_up_is_superior=not grid.flip)
    slice_mm = line.slice_mm(np.arange(cord.shape[line.axis]))
    pmj_mm = None if pmj_voxel is None else float(slice_mm[int(pmj_voxel[line.axis])])
    origin = Origin(CENTERLINE_TOP if pmj_voxel is not None else "cord rostral end", 0.0, pmj_mm)
    return _Frame(cord, affine, line, origin, slice_mm, _cord_slices(cord, line.axis), names, "reference")


def _cord_slices(cord: np.ndarray, axis: int) -> np.ndarray:
    return np.flatnonzero(np.moveaxis(cord, axis, 0).reshape(cord.shape[axis], -1).any(1))


def slice_distances(cord: np.ndarray, affine: np.ndarray, pmj: np.ndarray | None = None, discs: np.ndarray | None = None,
                    method: str = "gapfree") -> tuple[np.ndarray, int, str]:
    """(mm of every slice from the origin, the superior-inferior array axis, the origin's name), exactly as
    :func:`compute_levels` measures its levels with these labels: other level images can be placed in the same frame."""
    names = {k: k for k in ("rootlets", "cord", "discs", "pmj")}
    disc_voxels, _ = _disc_voxels(discs, names)
    frame = _frame(labels.as_labels(cord, "cord") > 0, affine, _pmj_voxel(pmj, names), disc_voxels, method, names)
    return frame.slice_mm, frame.axis, frame.origin.reference


def _levels(rootlets: np.ndarray, frame: _Frame, disc_voxels: dict, radius: int) -> tuple[LevelsResult, dict[int, _Span]]:
    """Spinal levels (painted and tabled) and, with discs, vertebral levels and the shift table; and the rootlet spans."""
    spans, rows, notes = _spinal_spans(rootlets, frame, radius)
    voxel_mm3 = float(abs(np.linalg.det(frame.affine[:3, :3])))
    spinal = np.zeros(rootlets.shape, np.uint8)
    intervals = _reference_intervals(spans) if frame.method == "reference" else _gapfree_intervals(spans)
    for value, (lo, hi, closed) in sorted(intervals.items()):
        _paint(spinal, frame, lo, hi, closed, value)
    counts = np.bincount(rootlets.ravel(), minlength=max(rows, default=0) + 1)
    for value, row in rows.items():
        row["n_voxels"] = int(counts[value])
        row["volume_mm3"] = row["n_voxels"] * voxel_mm3
        if value in intervals:
            row.update(_extent(frame.slice_mm, *intervals[value]))
    vertebral: np.ndarray | None = None
    vertebral_rows: dict[int, dict] = {}
    if disc_voxels:
        vertebral, vertebral_rows, vertebral_notes = _vertebral(disc_voxels, frame)
        notes += vertebral_notes
    table = _table([*(("spinal", v, r) for v, r in sorted(rows.items())),
                    *(("vertebral", v, r) for v, r in sorted(vertebral_rows.items()))], frame.origin.reference)
    result = LevelsResult(spinal=spinal, vertebral=vertebral, levels=table, shift=shift_table(table),
                          reference=frame.origin.reference, method=frame.method, centerline=frame.line, warnings=notes)
    return result, spans


def _spinal_spans(rootlets: np.ndarray, frame: _Frame, radius: int) -> tuple[dict[int, _Span], dict[int, dict], list[str]]:
    """Published steps 1-3: dilate, intersect, per-level slice range (mm from the origin)."""
    names, axis = frame.names, frame.axis
    kept = np.where(dilate(frame.cord, radius), rootlets, 0)
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
        if not np.isin(level_slices, frame.cord_slices).any():
            raise RootletsError(f"{names['cord']}: the cord is missing on slices {level_slices.min()}-{level_slices.max()} "
                                f"(axis {axis}) where the rootlets of level {name} are; segment the cord over the whole "
                                "rootlets extent")
        if not np.isin(level_slices, frame.cord_slices).all():
            notes.append(f"{names['cord']}: the cord does not cover every slice of level {name}'s rootlets; "
                         "its extent may be cut short")
        slices = np.unique(np.argwhere(kept == value)[:, axis])
        if len(slices) == 0:
            notes.append(f"{names['rootlets']}: rootlets of level {name} do not touch the cord "
                         f"(dilated by {radius} voxels); reported as missing")
            continue
        a, b = frame.slice_mm[slices.min()], frame.slice_mm[slices.max()]
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


def _paint(out: np.ndarray, frame: _Frame, lo: float, hi: float, closed: bool, value: int) -> None:
    """Cord voxels of the slices whose distance is in [lo, hi] get ``value`` (later, higher values overwrite)."""
    slices = np.flatnonzero(_in_interval(frame.slice_mm, lo, hi, closed))
    view = np.moveaxis(out, frame.axis, 0)
    view[slices] = np.where(np.moveaxis(frame.cord, frame.axis, 0)[slices], value, view[slices])


def _extent(slice_mm: np.ndarray, lo: float, hi: float, closed: bool) -> dict:
    """Table fields of a level spanning [lo, hi] mm: slices inside it, and the midpoint slice."""
    slices = np.flatnonzero(_in_interval(slice_mm, lo, hi, closed))
    mid = (lo + hi) / 2
    row = {"rostral_mm": lo, "caudal_mm": hi, "mid_mm": mid, "height_mm": hi - lo, "status": "ok",
           "mid_slice": int(np.argmin(np.abs(slice_mm - mid)))}
    if len(slices):
        rostral_first = slices[np.argsort(slice_mm[slices])]
        row.update(rostral_slice=int(rostral_first[0]), caudal_slice=int(rostral_first[-1]))
    return row


def _disc_positions(discs: dict[int, np.ndarray], frame: _Frame) -> dict[int, tuple[float, int | None]]:
    """{disc value: (mm from the origin, slice)}: ``reference`` puts each disc on a slice as ``sct_label_utils
    -project-centerline`` does (:func:`sctline.project_discs`) and takes that slice's distance; ``gapfree`` projects
    continuously onto its own centerline (no slice)."""
    values = sorted(discs)
    world = voxel_to_world(frame.affine, np.array([discs[v] for v in values]))
    if frame.method == "reference":
        grid = sctline.rpi(frame.cord.shape, frame.affine)
        z = sctline.project_discs(grid.array(frame.cord), grid, dict(zip(values, world, strict=True)))
        slices = {v: int(grid.native_slice(z[v])) for v in values}
        return {v: (float(frame.slice_mm[slices[v]]), slices[v]) for v in values}
    mm = frame.line.project(world) - frame.origin.mm
    return {v: (float(m), None) for v, m in zip(values, mm, strict=True)}


def _vertebral(discs: dict[int, np.ndarray], frame: _Frame) -> tuple[np.ndarray, dict[int, dict], list[str]]:
    """Vertebral level v between discs v and v+1, painted on the cord slice by slice."""
    names = frame.names
    values = sorted(discs)
    positions = _disc_positions(discs, frame)
    mm = {v: p[0] for v, p in positions.items()}
    notes = [] if len(values) > 1 else [f"{names['discs']}: only disc {values[0]}; a vertebral level needs two discs"]
    for upper, lower in zip(values, values[1:], strict=False):
        if mm[lower] == mm[upper] and frame.method == "reference":
            notes.append(f"{names['discs']}: discs {upper} and {lower} land on the same centerline slice (as with "
                         "sct_label_utils -project-centerline); vertebral level "
                         f"{level_name(upper, 'vertebral')} has height 0")
        elif mm[lower] <= mm[upper]:
            raise RootletsError(f"{names['discs']}: discs out of rostro-caudal order (disc {lower} is not caudal to disc "
                                f"{upper}); check the disc numbering (SCT: 3 = C2/C3)")
    out = np.zeros(frame.cord.shape, np.uint8)
    rows: dict[int, dict] = {}
    for v in range(values[0], values[-1]):
        if v in mm and v + 1 in mm:
            _paint(out, frame, mm[v], mm[v + 1], False, v)
            rows[v] = _extent(frame.slice_mm, mm[v], mm[v + 1], False)
            if positions[v][1] is not None:  # the lab's ends: the two discs' slices
                rows[v].update(rostral_slice=positions[v][1], caudal_slice=positions[v + 1][1])
        else:
            rows[v] = {"status": "missing"}
            gone = v if v not in mm else v + 1
            notes.append(f"{names['discs']}: disc {gone} is missing, so vertebral level {level_name(v, 'vertebral')} "
                         "is reported as missing")
    return out, rows, notes


def _table(rows: list[tuple[str, int, dict]], reference: str) -> pd.DataFrame:
    records = [{"kind": kind, "level": level_name(value, kind), "value": value, "reference": reference, **row}
               for kind, value, row in rows]
    return typed(pd.DataFrame.from_records(records, columns=LEVEL_COLUMNS))


def shift_table(levels: pd.DataFrame) -> pd.DataFrame:
    """Vertebral minus spinal midpoint (mm) under the RootletSeg paper's two pairings (:data:`tables.PAIRINGS`).

    ``unshifted``: vertebral v with spinal v (VL C2-SL C2 ... VL C7-SL C7, VL T1-SL C8); ``shifted``: vertebral v with
    spinal v+1 (VL C2-SL C3 ... VL C7-SL C8, VL T1-SL T1, and on down the spine VL Tn-SL Tn, VL Ln-SL Ln). Only pairs
    present (status ok) in both kinds.
    """
    ok = levels[levels["status"] == "ok"]
    spinal = {int(r.value): r for r in ok[ok["kind"] == "spinal"].itertuples()}
    vertebral = {int(r.value): r for r in ok[ok["kind"] == "vertebral"].itertuples()}
    records = []
    for pairing, step in PAIRINGS.items():
        for v, vr in sorted(vertebral.items()):
            if v + step in spinal:
                sr = spinal[v + step]
                records.append({"pairing": pairing, "vertebral_level": vr.level, "spinal_level": sr.level,
                                "vertebral_mid_mm": vr.mid_mm, "spinal_mid_mm": sr.mid_mm,
                                "shift_mm": vr.mid_mm - sr.mid_mm})
    return pd.DataFrame.from_records(records, columns=SHIFT_COLUMNS)


# ----------------------------------------------------------------------------------------------- numbering


def _check_numbering(spans: dict[int, _Span], levels: pd.DataFrame) -> NumberingCheck:
    """The numbering check on the rootlets' own spans (the paper's midpoints, whatever the method) and the vertebrae."""
    ok = levels[(levels["status"] == "ok") & (levels["kind"] == "vertebral")]
    vertebral = {int(r.value): float(r.mid_mm) for r in ok.itertuples()}
    return numbering.check({v: (s.start_mm + s.end_mm) / 2 for v, s in spans.items()}, vertebral)


def _renumbered(rootlets: np.ndarray, offset: int) -> tuple[np.ndarray | None, str]:
    """The rootlet labels + ``offset`` (background stays 0), or None and why not."""
    lo, hi = int(rootlets[rootlets > 0].min()), int(rootlets.max())
    if lo + offset < 1 or hi + offset > 255:
        return None, f"labels {lo}-{hi} {offset:+d} fall outside 1-255"
    return np.where(rootlets > 0, rootlets.astype(np.int32) + offset, 0), ""


def _mark_numbering(table: pd.DataFrame, check: NumberingCheck) -> pd.DataFrame:
    """The check's outcome on every row; spinal rows get the suggested (or, when applied, the original) name."""
    table["numbering"] = "renumbered" if check.applied else check.status
    spinal = table["kind"] == "spinal"
    if check.status == "shifted":
        column, sign = ("original_level", -1) if check.applied else ("suggested_level", 1)
        table.loc[spinal, column] = [level_name(int(v) + sign * check.offset, "spinal") for v in table.loc[spinal, "value"]]
    return table


def add_confidence(result: LevelsResult, confidence: dict | None) -> None:
    """Per-level mean probability and fraction below 0.5 (:mod:`rootlets_task.inference.confidence`) on the spinal rows.

    ``confidence`` is the rootlets' ``Confidence`` (keyed by rootlet label value); a renumbered result maps each row
    back to the label it came from.
    """
    stats = conf.per_level(confidence)
    if not stats:
        return
    offset = result.numbering.offset if result.numbering is not None and result.numbering.applied else 0
    table = result.levels
    for i in table.index[table["kind"] == "spinal"]:
        found = stats.get(int(table.at[i, "value"]) - offset)
        if found:
            table.at[i, "mean_probability"], table.at[i, "fraction_below_half"] = found
    result.confidence = confidence


# ----------------------------------------------------------------------------------------------- file layer


def output_paths(out_dir: str | os.PathLike, prefix: str, with_discs: bool = True,
                 method: str | None = None) -> dict[str, Path]:
    """The files :func:`write_levels` writes: spinal, csv, json; with discs vertebral and shift; with the reference
    method the levels in the lab's CSV layout (lab). ``method`` None: every file either method may write. ``prefix``
    is a file name: one with a folder part (``../x``, ``/abs/x``) would write outside ``out_dir`` and is refused."""
    if not prefix or prefix in (".", "..") or "/" in prefix or os.sep in prefix or (os.altsep and os.altsep in prefix) \
            or "\0" in prefix:
        raise RootletsError(f"-prefix {prefix!r}: give a file name prefix without a folder (the folder is -o)")
    paths = {k: Path(out_dir) / f"{prefix}{suffix}" for k, suffix in OUTPUTS.items()}
    if not with_discs:
        del paths["vertebral"], paths["shift"]
    if method not in (None, "reference"):
        del paths["lab"]
    return paths


def _document(result: LevelsResult, inputs: dict[str, str], outputs: dict[str, str]) -> dict:
    """The ``_levels.json``: provenance, origin, numbering check, confidence, the tables and the files written."""
    return {"version": __version__, "method": result.method, "reference": result.reference,
            "origin": result.origin.to_dict() if result.origin else None,
            "numbering": result.numbering.to_dict() if result.numbering else None,
            "confidence": conf.summary(result.confidence), "warnings": result.warnings, "inputs": inputs,
            "levels": json.loads(result.levels.to_json(orient="records")),
            "shift_pairings": PAIRING_TEXT, "shift": json.loads(result.shift.to_json(orient="records")), "outputs": outputs}


def _lab_rows(path: Path, result: LevelsResult, grid: nib.Nifti1Image, document: dict) -> pd.DataFrame:
    """The levels in the lab's ``spinal_vs_vertebral_levels.csv`` layout (:func:`rootlets_task.levels.stats.lab_table`)."""
    from rootlets_task.levels import stats  # imported on use: matplotlib and scipy.stats are slow to import

    axis = si_axis(grid.affine)
    table = stats.our_table(path, result.levels, document, grid=(int(grid.shape[axis]), bool(grid.affine[2, axis] > 0)))
    return stats.lab_table([table])


def write_levels(result: LevelsResult, grid: nib.Nifti1Image, out_dir: str | os.PathLike, prefix: str,
                 inputs: dict[str, str | os.PathLike] | None = None) -> dict[str, Path]:
    """Write the result's file set into ``out_dir``, all or nothing; returns {"spinal", "csv", ...: path}.

    ``<prefix>_spinal_levels.nii.gz``, ``<prefix>_levels.csv``, ``<prefix>_levels.json``; with discs
    ``<prefix>_vertebral_levels.nii.gz`` and ``<prefix>_shift.csv``; with the reference method
    ``<prefix>_levels_lab.csv`` (the lab's layout, for merging with the lab's tables). uint8 images on ``grid``. Files
    an earlier run wrote under these names that this run does not make (e.g. no discs now) go away in the same step,
    when they are still what that run wrote (the earlier ``_levels.json`` lists them with their sha256). ``inputs``
    (name -> path) are recorded in the JSON, relative to ``out_dir`` when inside it.
    """
    out_dir = writable_folder(out_dir)
    remove_stale_temporaries(out_dir)
    outputs = output_paths(out_dir, prefix, result.vertebral is not None, result.method)
    previous = read_json(outputs["json"]) or {}
    earlier = previous.get("outputs", {}) if isinstance(previous, dict) else {}
    stale = [out_dir / name for name, digest in earlier.items() if isinstance(name, str) and "/" not in name
             and (out_dir / name) not in outputs.values() and (out_dir / name).is_file()
             and sha256_file(out_dir / name) == digest]
    recorded = {k: relative_to(v, out_dir) for k, v in (inputs or {}).items()}
    with OutputSet(remove=stale) as files:
        tmp = {k: files.path(p) for k, p in outputs.items()}
        nib.save(label_image(result.spinal, grid), tmp["spinal"])
        if result.vertebral is not None:
            nib.save(label_image(result.vertebral, grid), tmp["vertebral"])
            write_csv(result.shift, tmp["shift"])
        write_csv(result.levels, tmp["csv"])
        if "lab" in tmp:
            write_csv(_lab_rows(outputs["csv"], result, grid, _document(result, recorded, {})), tmp["lab"])
        written = {outputs[k].name: sha256_file(t) for k, t in tmp.items() if k != "json"}
        tmp["json"].write_text(json.dumps(_document(result, recorded, written), indent=2))
    return outputs


def _rootlets_confidence(path: Path, data: np.ndarray) -> dict | None:
    """The ``Confidence`` of the rootlets file's sidecar, when it was computed on exactly this file's labels."""
    from rootlets_task.io.provenance import sidecar_path

    content = read_json(sidecar_path(path))
    return conf.matching(content.get("Confidence") if isinstance(content, dict) else None, data)


def levels_from_files(rootlets: str | os.PathLike, cord: str | os.PathLike, discs: str | os.PathLike | None = None,
                      pmj: str | os.PathLike | None = None, image: str | os.PathLike | None = None,
                      out_dir: str | os.PathLike | None = None, *, prefix: str | None = None,
                      options: LevelsOptions = LevelsOptions(), **fields: Any) -> tuple[dict[str, Path], LevelsResult]:
    """Compute levels from NIfTI files and write them (:func:`write_levels`); returns (paths, result).

    Labels on another grid than the image (else the rootlets) are resampled (:func:`rootlets_task.io.labels.on_grid`,
    with a note). ``<prefix>`` defaults to the rootlets file's stem, the folder to the rootlets file's folder. The
    confidence per level comes from the rootlets sidecar when it matches the file. ``options``: as in
    :func:`compute_levels` (fields by keyword too). Everything is computed and checked before anything is written.
    """
    options = dataclasses.replace(options, **fields)
    method, dilate_voxels, renumber = options.method, options.dilate_voxels, options.renumber
    paths = {"rootlets": Path(rootlets), "cord": Path(cord)}
    paths.update({k: Path(v) for k, v in (("discs", discs), ("pmj", pmj), ("image", image)) if v is not None})
    names = {k: f"{k} {p}" for k, p in paths.items()}
    _check_settings(method, dilate_voxels, renumber)
    out_dir = Path(out_dir) if out_dir is not None else paths["rootlets"].parent
    prefix = prefix or stem(paths["rootlets"])
    keep_inputs(output_paths(out_dir, prefix).values(), {f"the {k} file {p}": p for k, p in paths.items()},
                "-o or -prefix")
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
                            options=options, names=names)
    add_confidence(result, _rootlets_confidence(paths["rootlets"], loaded["rootlets"][1]))
    result.warnings[:0] = notes
    for text in result.warnings:
        log.warning("%s", text)
    written = write_levels(result, grid, out_dir, prefix, {k: p for k, p in paths.items()})
    viewers.describe({k: written[k] for k in ("spinal", "vertebral") if k in written})
    return written, result


def origin_text(reference: str, note: str | None = None) -> str:
    """The first line of a printed levels table: where distances are measured from (``note``: :meth:`Origin.note`)."""
    return f"distances in mm along the cord centerline from the {reference}" + (f" ({note})" if note else "")
