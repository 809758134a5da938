"""Cord morphometry per slice, computed as SCT's ``sct_process_segmentation`` computes it (SCT 7.3 and later).

Read from SCT's ``spinalcordtoolbox/process_seg.py`` (``compute_shape``, ``_properties2d``) and
``centerline/core.py`` / ``curve_fitting.py`` (``get_centerline`` with its defaults for this command:
``bspline``, smoothing 30, ``minmax``). Every step runs on the cord in SCT's ``RPI`` orientation (nibabel ``LAS``)
with the header's voxel sizes, as SCT does:

1. the centerline: the centre of mass of each slice, fitted by a smoothing B-spline of x and y against z
   (``scipy.interpolate.splrep`` with ``s = (n_points / n_slices)^2 * 30 * pz / 3``), and its derivative;
2. per slice, the angles between the centerline tangent ``(dx*px, dy*py, pz)`` and the slice normal about the AP
   axis and about the RL axis; the slice is scaled by ``(cos RL-angle, cos AP-angle)`` (``skimage``'s bilinear
   ``warp``), which is the angle correction;
3. the corrected slice is cropped around the cord, resampled to 0.1 mm pixels (``scipy.ndimage.zoom``, linear) and
   the area is the sum of its values times 0.01 mm²; diameters, eccentricity and solidity come from ``regionprops`` of
   the resampled slice above 0.5; the slice's length along the cord is ``pz / (cos AP * cos RL)``.

Slices without cord are NaN. Per-level aggregation (mean and SD over the level's slices, length summed) lives in
:mod:`rootlets_task.measures.table`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import interpolate, ndimage

SMOOTH = 30  # sct_process_segmentation -centerline-smooth default
PIXEL_MM = 0.1  # SCT's fixed in-plane resampling ("pr")
NEAR_ZERO = 1e-6  # SCT's NEAR_ZERO_THRESHOLD
PAD = 3  # voxels kept around the cord's bounding box before resampling
SHAPE_COLUMNS = ["area", "angle_AP", "angle_RL", "length", "diameter_AP_ellipse", "diameter_RL", "eccentricity", "solidity"]


@dataclass(frozen=True)
class Centerline:
    """SCT's fitted centerline in RPI voxel coordinates: for each slice z of the cord's extent, x, y and dx/dz, dy/dz."""

    z: np.ndarray
    x: np.ndarray
    y: np.ndarray
    dx: np.ndarray
    dy: np.ndarray


def _bspline(z: np.ndarray, v: np.ndarray, z_ref: np.ndarray, smooth: float, pz: float) -> tuple[np.ndarray, np.ndarray]:
    """SCT's ``curve_fitting.bspline``: a smoothing spline whose smoothing grows with the density of points."""
    degree = 3 if len(z) > 3 else 1
    s = (len(z) / len(z_ref)) ** 2 * smooth * pz / 3.0
    tck = interpolate.splrep(z, v, s=s, k=degree)
    return interpolate.splev(z_ref, tck, der=0), interpolate.splev(z_ref, tck, der=1)


def centerline(cord: np.ndarray, pz: float, smooth: float = SMOOTH) -> Centerline:
    """SCT's ``get_centerline`` (``bspline``, ``minmax``) of a mask in RPI: centre of mass per slice, then the fit."""
    x_all, y_all, z_all = np.nonzero(cord)
    slices = np.unique(z_all)
    x_mean = np.array([x_all[z_all == z].mean() for z in slices])
    y_mean = np.array([y_all[z_all == z].mean() for z in slices])
    z_ref = np.arange(int(slices.min()), int(slices.max()) + 1)
    x, dx = _bspline(slices.astype(float), x_mean, z_ref, smooth, pz)
    y, dy = _bspline(slices.astype(float), y_mean, z_ref, smooth, pz)
    return Centerline(z_ref, np.asarray(x), np.asarray(y), np.asarray(dx), np.asarray(dy))


def _fix_orientation(orientation: float) -> float:
    """SCT's ``fix_orientation``: regionprops' orientation (radians) as degrees in [0, 90]."""
    degrees = abs(orientation * 180.0 / math.pi)
    for low, high, total in ((360, 540, 540), (180, 360, 360), (90, 180, 180)):
        if low <= degrees <= high:
            degrees = abs(total - degrees)
    return degrees


def slice_shape(patch: np.ndarray, px: float, py: float) -> dict | None:
    """SCT's ``_properties2d`` on one (angle-corrected) slice: area, diameters, eccentricity, solidity; None if empty."""
    from skimage import measure

    if np.all(patch < NEAR_ZERO):
        return None
    norm = ((patch - patch.min()) / (patch.max() - patch.min())).astype(np.float64)
    rows, cols = np.nonzero(norm > NEAR_ZERO)
    crop = norm[max(rows.min() - PAD, 0): rows.max() + 1 + PAD, max(cols.min() - PAD, 0): cols.max() + 1 + PAD]
    fine = ndimage.zoom(crop, zoom=(px / PIXEL_MM, py / PIXEL_MM), order=1, mode="grid-constant", grid_mode=True)
    region = measure.regionprops((fine > 0.5).astype(np.uint8), intensity_image=fine)
    if not region:
        return None
    region = region[0]
    major, minor = region.axis_major_length * PIXEL_MM, region.axis_minor_length * PIXEL_MM
    ap, rl = (minor, major) if _fix_orientation(region.orientation) < 45.0 else (major, minor)
    return {"area": float(np.sum(fine)) * PIXEL_MM * PIXEL_MM, "diameter_AP_ellipse": ap, "diameter_RL": rl,
            "eccentricity": float(region.eccentricity), "solidity": float(region.solidity)}


def cord_shape(cord_rpi: np.ndarray, spacing: tuple[float, float, float], angle_correction: bool = True,
               smooth: float = SMOOTH) -> pd.DataFrame:
    """Shape of the cord on every RPI slice z (rows 0..nz-1, NaN where there is no cord): :data:`SHAPE_COLUMNS`.

    ``cord_rpi``: the cord mask (binary or soft, 0-1) in SCT's RPI orientation; ``spacing``: its voxel sizes (mm).
    """
    from skimage import transform

    px, py, pz = (float(s) for s in spacing)
    nz = cord_rpi.shape[2]
    table = pd.DataFrame(np.nan, index=pd.RangeIndex(nz, name="z"), columns=SHAPE_COLUMNS)
    z_cord = np.flatnonzero((cord_rpi > NEAR_ZERO).any(axis=(0, 1)))
    if not len(z_cord):
        return table
    line = centerline(cord_rpi, pz, smooth) if angle_correction else None
    slope = {int(z): (dx, dy) for z, dx, dy in zip(line.z, line.dx, line.dy, strict=True)} if line else {}
    for z in range(int(z_cord.min()), int(z_cord.max()) + 1):
        patch = cord_rpi[:, :, z].astype(np.float64)
        angle_ap = angle_rl = 0.0
        if line is not None:
            dx, dy = slope[z]
            angle_ap, angle_rl = math.atan2(dx * px, pz), math.atan2(dy * py, pz)
            scale = transform.AffineTransform(scale=(math.cos(angle_rl), math.cos(angle_ap)))
            patch = transform.warp(patch, scale.inverse, output_shape=patch.shape, order=1)
        shape = slice_shape(patch, px, py)
        if shape is not None:
            shape.update(angle_AP=math.degrees(angle_ap), angle_RL=math.degrees(angle_rl),
                         length=pz / (math.cos(angle_ap) * math.cos(angle_rl)))
            table.loc[z, list(shape)] = list(shape.values())
    return table
