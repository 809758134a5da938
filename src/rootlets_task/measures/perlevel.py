"""Measurements per level: cord morphometry and map statistics for every spinal and vertebral level, as SCT makes them.

:func:`measure` takes the image (its grid), label images of levels (``{"spinal": ..., "vertebral": ...}``: any
level image painted on the cord, e.g. ``_spinal_levels.nii.gz``), the cord mask and maps (FA, MTR, T1, tSNR, fMRI
statistics). Levels are given to slices the way ``sct_process_segmentation -vertfile X -perlevel 1`` gives them: a
slice belongs to the level whose value is the rounded mean of the slice's non-zero level voxels. Then, per level:

* morphometry (:mod:`rootlets_task.measures.morphometry`): CSA as the mean (and SD) over the level's slices of SCT's
  angle-corrected area, length along the centerline (the sum of the slices' lengths), the mean diameters,
  eccentricity, solidity and angles;
* per map (:mod:`rootlets_task.measures.metrics`): mean, median, SD and voxel count within the cord (or the mask
  given), ``bin`` or ``wa`` as ``sct_extract_metric -method``.

Maps and masks on another grid are resampled onto the image grid (linear) only when their field of view covers the
measured region (every voxel of the level images); otherwise they are refused, naming the file. A mask with no
voxel in a level gives NaN for that level and a warning, never 0.
"""

from __future__ import annotations

import itertools
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from rootlets_task.core.errors import RootletsError
from rootlets_task.core.names import level_name
from rootlets_task.core.options import MeasureOptions
from rootlets_task.io import labels, nifti
from rootlets_task.measures import metrics, morphometry

log = logging.getLogger(__name__)

RPI = nifti.sct_to_axcodes("RPI")
MORPHOMETRY = {  # column -> (SCT per-slice metric, unit, description)
    "csa_mm2": ("area", "mm^2", "angle-corrected cross-sectional area, mean over the level's slices (SCT MEAN(area))"),
    "csa_sd_mm2": ("area", "mm^2", "SD of the cross-sectional area over the level's slices (SCT STD(area))"),
    "length_mm": ("length", "mm", "cord length along the centerline, sum over the level's slices (SCT SUM(length))"),
    "diameter_ap_ellipse_mm": ("diameter_AP_ellipse", "mm", "antero-posterior diameter of the fitted ellipse, mean"),
    "diameter_rl_mm": ("diameter_RL", "mm", "right-left diameter of the fitted ellipse, mean"),
    "eccentricity": ("eccentricity", "", "eccentricity of the fitted ellipse, mean"),
    "solidity": ("solidity", "", "area / convex area, mean"),
    "angle_ap_deg": ("angle_AP", "degree", "centerline angle about the AP axis, mean"),
    "angle_rl_deg": ("angle_RL", "degree", "centerline angle about the RL axis, mean"),
}
LEVEL_FIELDS = ["kind", "level", "value", "slices", "rostral_slice", "caudal_slice", "cord_voxels"]


@dataclass
class MeasureResult:
    """The per-level table, the per-slice values behind it (for the QC figure) and the notes on the input."""

    table: pd.DataFrame  # one row per (kind, level): LEVEL_FIELDS, MORPHOMETRY columns, <map>_mean/_median/_sd/_voxels
    slices: pd.DataFrame  # one row per slice with cord: slice, position_mm, <kind> level value, area, <map> means
    maps: list[str]
    mask: str
    method: str
    kinds: list[str] = field(default_factory=list)  # the level kinds measured, in the order given
    notes: list[str] = field(default_factory=list)


Source = str | os.PathLike | nib.Nifti1Image


def _image(value: Source | np.ndarray, name: str, grid: nib.Nifti1Image | None = None) -> nib.Nifti1Image:
    """A 3D image from a path, an image, or an array on ``grid``'s voxels (NaN voxels allowed: SCT ignores them)."""
    if isinstance(value, np.ndarray):
        if grid is None or value.shape != grid.shape[:3]:
            raise RootletsError(f"{name}: an array must have the image's shape {None if grid is None else grid.shape[:3]}")
        return nib.Nifti1Image(value, grid.affine)
    if isinstance(value, nib.spatialimages.SpatialImage):
        img: nib.spatialimages.SpatialImage = value
    else:
        path = Path(value)
        if not path.is_file():
            raise RootletsError(f"{name} {path}: file not found; check the path")
        try:
            img = cast(nib.Nifti1Image, nib.load(path))
        except Exception as exc:  # nibabel raises many types on a bad file
            raise RootletsError(f"{name} {path}: unreadable NIfTI ({nifti.one_line(exc)}); give a NIfTI file") from None
    shape = tuple(n for i, n in enumerate(img.shape) if i < 3 or n != 1)
    if len(shape) != 3:
        raise RootletsError(f"{name} {_label(img, name)}: a 3D volume is needed, got shape {img.shape}; "
                            "extract one volume first (e.g. sct_image -split t)")
    out = nib.Nifti1Image(np.asanyarray(img.dataobj).reshape(shape), img.affine, img.header if shape == img.shape else None)
    filename = img.get_filename()
    if filename:
        out.set_filename(filename)
    return out


def _label(img: nib.spatialimages.SpatialImage, name: str) -> str:
    return img.get_filename() or f"(in-memory {name})"


def _covers(img: nib.Nifti1Image, grid: nib.Nifti1Image, region: np.ndarray) -> bool:
    """Whether every voxel of ``region`` (on ``grid``) falls inside ``img``'s voxels (half a voxel of margin)."""
    idx = np.argwhere(region)
    corners = np.array(list(itertools.product(*zip(idx.min(0), idx.max(0), strict=True))), dtype=float)
    to_img = np.linalg.inv(img.affine) @ grid.affine
    ijk = corners @ to_img[:3, :3].T + to_img[:3, 3]
    return bool(np.all((ijk >= -0.5) & (ijk <= np.array(img.shape[:3]) - 0.5)))


def on_image_grid(img: nib.Nifti1Image, grid: nib.Nifti1Image, region: np.ndarray, name: str) -> tuple[np.ndarray, list[str]]:
    """A map or mask on the image grid: as is on the same grid, resampled (linear) when it covers ``region``, else refused."""
    data = np.asarray(np.asanyarray(img.dataobj), dtype=np.float64)
    if labels.same_grid(img, grid):
        return data, []
    label = _label(img, name)
    if not _covers(img, grid, region):
        raise RootletsError(f"{name} {label}: on another grid that does not cover the cord's levels of the image; bring "
                            "it into the image's space first (sct_register_multimodal, then sct_apply_transfo)")
    to_img = np.linalg.inv(img.affine) @ grid.affine
    out = ndimage.affine_transform(np.nan_to_num(data), to_img[:3, :3], to_img[:3, 3], output_shape=grid.shape[:3],
                                   order=1, mode="nearest")
    return out, [f"{name} {label}: on another grid than the image; resampled onto it (linear)"]


def _rpi(data: np.ndarray, affine: np.ndarray) -> np.ndarray:
    transform = nib.orientations.ornt_transform(nib.orientations.io_orientation(affine), nib.orientations.axcodes2ornt(RPI))
    return nib.orientations.apply_orientation(data, transform)


def _spacing_and_slices(grid: nib.Nifti1Image) -> tuple[tuple[float, float, float], np.ndarray]:
    """RPI voxel sizes, and for each RPI slice z its index along the image's own superior-inferior axis."""
    current = nib.orientations.io_orientation(grid.affine)
    transform = nib.orientations.ornt_transform(current, nib.orientations.axcodes2ornt(RPI))
    zooms = np.array(grid.header.get_zooms()[:3], dtype=float)
    order = np.argsort(transform[:, 0])
    px, py, pz = (float(zooms[int(i)]) for i in order)
    si = int(order[2])
    n = grid.shape[si]
    native = np.arange(n) if transform[si, 1] > 0 else np.arange(n)[::-1]
    return (px, py, pz), native


def slice_levels(levels_rpi: np.ndarray) -> np.ndarray:
    """The level of every RPI slice (0: none): the rounded mean of its non-zero values, as SCT's
    ``get_slices_from_vertebral_levels`` (``round`` of ``numpy``: halves go to the even value)."""
    values = np.zeros(levels_rpi.shape[2], dtype=int)
    for z in range(levels_rpi.shape[2]):
        found = levels_rpi[:, :, z]
        found = found[(found != 0) & np.isfinite(found)]
        if found.size:
            values[z] = int(np.round(np.mean(found)))
    return values


def _morphometry(shape: pd.DataFrame, zs: np.ndarray) -> dict[str, float]:
    """SCT's per-level aggregation of the per-slice shape: mean and SD of finite slices, length summed (NaN as 0)."""
    rows = shape.loc[zs]
    out = {}
    for column, (metric, _, _) in MORPHOMETRY.items():
        values = rows[metric].to_numpy(dtype=float)
        finite = values[np.isfinite(values)]
        if metric == "length":
            out[column] = float(finite.sum()) if finite.size else np.nan
        elif column == "csa_sd_mm2":
            out[column] = float(np.std(finite)) if finite.size else np.nan
        else:
            out[column] = float(np.mean(finite)) if finite.size else np.nan
    return out


def measure_levels(image: Source, levels: dict[str, Source | np.ndarray], maps: dict[str, Source] | None = None, *,
                   cord: Source | np.ndarray | None = None, mask: Source | np.ndarray | None = None,
                   options: MeasureOptions = MeasureOptions()) -> MeasureResult:
    """Per-level morphometry and map statistics (see the module's docstring); returns a :class:`MeasureResult`.

    ``image``: the image whose grid the levels and cord lie on; ``levels``: {kind: level image} (kinds ``spinal``,
    ``vertebral``, ``spinal_pam50`` ... name the levels); ``maps``: {name: map}; ``cord``: the cord mask (default: every
    voxel of the level images); ``mask``: the mask for the maps (default: the cord).
    """
    options.check()
    grid = image if isinstance(image, nib.spatialimages.SpatialImage) else nifti.load(image, "image")
    if not levels:
        raise RootletsError("no level image given; give a spinal or vertebral levels file (e.g. X_spinal_levels.nii.gz)")
    notes: list[str] = []
    level_arrays = {}
    for kind, value in levels.items():
        img = _image(value, f"{kind} levels", grid)
        if not labels.same_grid(img, grid):
            raise RootletsError(f"{kind} levels {_label(img, kind)}: not on the image's grid; the levels are written on "
                                "the image's grid (rootlets -levels): give the file made for this image")
        level_arrays[kind] = labels.as_labels(np.asanyarray(img.dataobj), f"{kind} levels {_label(img, kind)}")
    region = np.any([a > 0 for a in level_arrays.values()], axis=0)
    if not region.any():
        raise RootletsError("the level images are empty (no level voxel); compute the levels first (rootlets -levels)")
    if cord is None:
        cord_data = region.astype(np.float64)
        notes.append("no cord mask given: the cord is the union of the level images")
    else:
        cord_img = _image(cord, "cord", grid)
        if not labels.same_grid(cord_img, grid):
            raise RootletsError(f"cord {_label(cord_img, 'cord')}: not on the image's grid; give the cord of this image")
        cord_data = np.asarray(np.asanyarray(cord_img.dataobj), dtype=np.float64)
        if not (cord_data > morphometry.NEAR_ZERO).any():
            raise RootletsError(f"cord {_label(cord_img, 'cord')}: the cord mask is empty; segment the cord first")
    weights, mask_name = cord_data, "cord"
    if mask is not None:
        mask_img = _image(mask, "mask", grid)
        weights, grid_notes = on_image_grid(mask_img, grid, region, "mask")
        notes += grid_notes
        mask_file = mask_img.get_filename()
        mask_name = nifti.stem(mask_file) if mask_file else "mask"
    map_arrays = {}
    for name, value in (maps or {}).items():
        data, grid_notes = on_image_grid(_image(value, "map", grid), grid, region, f"map {name}")
        map_arrays[name] = _rpi(data, grid.affine)
        notes += grid_notes
    spacing, native = _spacing_and_slices(grid)
    cord_rpi, weights_rpi = _rpi(cord_data, grid.affine), _rpi(weights, grid.affine)
    shape = morphometry.cord_shape(cord_rpi, spacing, options.angle_correction)
    per_slice = {kind: slice_levels(_rpi(a, grid.affine)) for kind, a in level_arrays.items()}
    rows = []
    for kind, by_slice in per_slice.items():
        for value in sorted(set(by_slice[by_slice > 0].tolist())):
            zs = np.flatnonzero(by_slice == value)
            name = level_name(value, "vertebral" if kind.startswith("vertebral") else "spinal")
            row = {"kind": kind, "level": name, "value": value, "slices": len(zs),
                   "rostral_slice": int(native[zs.max()]), "caudal_slice": int(native[zs.min()]),
                   "cord_voxels": float((cord_rpi[:, :, zs] > morphometry.NEAR_ZERO).sum()),
                   **_morphometry(shape, zs)}
            for map_name, data in map_arrays.items():
                stats = metrics.map_statistics(data[:, :, zs], weights_rpi[:, :, zs], options.method)
                if np.isnan(stats["mean"]):
                    notes.append(f"{mask_name}: no voxel (or no finite value of {map_name}) in {kind} level {name}; its "
                                 f"{map_name} statistics are NaN")
                row.update({f"{map_name}_{k}": v for k, v in stats.items()})
            rows.append(row)
    for text in notes:
        log.warning("%s", text)
    table = pd.DataFrame.from_records(rows, columns=LEVEL_FIELDS + list(MORPHOMETRY) +
                                      [f"{m}_{s}" for m in map_arrays for s in metrics.STATISTICS])
    return MeasureResult(table, _slices(shape, per_slice, native, map_arrays, weights_rpi), list(map_arrays), mask_name,
                         options.method, list(per_slice), notes)


def _slices(shape: pd.DataFrame, per_slice: dict[str, np.ndarray], native: np.ndarray, maps: dict[str, np.ndarray],
            weights: np.ndarray) -> pd.DataFrame:
    """Per-slice values from the rostral end down: position along the cord (mm), levels, area, map means (wa)."""
    zs = np.flatnonzero(np.isfinite(shape["area"].to_numpy()))[::-1]
    if not len(zs):
        return pd.DataFrame(columns=["slice", "position_mm", "area"])
    length = shape["length"].to_numpy()[zs]
    out = pd.DataFrame({"slice": native[zs], "position_mm": np.cumsum(length) - length / 2,
                        **{kind: values[zs] for kind, values in per_slice.items()}, "area": shape["area"].to_numpy()[zs]})
    for name, data in maps.items():
        w = np.where(np.isfinite(data), weights, 0.0)
        total = w.sum(axis=(0, 1))[zs]
        sums = (np.nan_to_num(data) * w).sum(axis=(0, 1))[zs]
        out[name] = np.where(total > 0, sums / np.where(total > 0, total, 1), np.nan)
    return out


def measure(image: Source, levels: dict[str, Source | np.ndarray], maps: dict[str, Source] | None = None, *,
            cord: Source | np.ndarray | None = None, mask: Source | np.ndarray | None = None,
            options: MeasureOptions = MeasureOptions()) -> pd.DataFrame:
    """The per-level table of :func:`measure_levels` (one row per level and kind), in memory."""
    return measure_levels(image, levels, maps, cord=cord, mask=mask, options=options).table
