"""A smoothed spinal cord centerline in world millimetres, its arc length, and projection of points onto it.

Distances between levels are measured along the cord, not along an array axis, so curved, oblique and
anisotropic images in any orientation give the same answer. The construction follows SCT's extrapolated
centerline (``sct_process_segmentation -pmj``): per-slice centre of mass of the cord along its
superior-inferior array axis (read from the affine), the PMJ voxel added as an extra point when it lies beyond
the cord, linear interpolation across slices without cord, then smoothing over about 50 mm. SCT smooths with a
Hanning window and central-symmetry padding, which flattens the ends of a curved cord; this centerline (the
``gapfree`` method's) uses a Savitzky-Golay filter (local cubic fit, same window), which keeps the ends' slope.
``-method reference`` uses SCT's own steps instead (:mod:`rootlets_task.levels.sctline`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from rootlets_task.io.nifti import si_axis

SMOOTH_MM = 50.0
POLYORDER = 3


@dataclass(frozen=True)
class Centerline:
    """Cord centerline sampled once per slice along ``axis``, rostral end first.

    ``slices``: slice indices along ``axis``; ``points``: (n, 3) world RAS mm; ``arc``: mm along the line from
    its rostral end (increasing caudally).
    """

    axis: int
    slices: np.ndarray
    points: np.ndarray
    arc: np.ndarray
    slice_step_mm: float
    index_up_is_superior: bool

    @property
    def length_mm(self) -> float:
        return float(self.arc[-1])

    def slice_mm(self, index: np.ndarray | float) -> np.ndarray:
        """Arc length (mm from the rostral end) of slice ``index``; linear extrapolation beyond the line's ends."""
        index = np.asarray(index, dtype=float)
        order = np.argsort(self.slices)
        s, a = self.slices[order].astype(float), self.arc[order]
        if len(s) == 1:
            # one slice: distance grows caudally, i.e. against the index if the index runs towards superior
            slope_lo = slope_hi = -self.slice_step_mm if self.index_up_is_superior else self.slice_step_mm
        else:
            slope_lo, slope_hi = (a[1] - a[0]) / (s[1] - s[0]), (a[-1] - a[-2]) / (s[-1] - s[-2])
        out = np.interp(index, s, a)
        out = np.where(index < s[0], a[0] + (index - s[0]) * slope_lo, out)
        return np.where(index > s[-1], a[-1] + (index - s[-1]) * slope_hi, out)

    def project(self, world: np.ndarray) -> np.ndarray:
        """Arc length (mm) of the nearest point on the line for each world point (n, 3).

        The first and last segments are extended as rays, so points beyond the cord's ends get extrapolated
        (negative, or longer than the line) distances instead of being clamped to an end.
        """
        world = np.atleast_2d(np.asarray(world, dtype=float))
        if len(self.points) == 1:
            return np.full(len(world), self.arc[0])
        a, b = self.points[:-1], self.points[1:]
        ab = b - a
        length2 = np.maximum((ab**2).sum(1), 1e-12)
        t = np.einsum("pnk,nk->pn", world[:, None, :] - a[None], ab) / length2
        lo = np.zeros(len(a))
        hi = np.ones(len(a))
        lo[0], hi[-1] = -np.inf, np.inf
        t = np.clip(t, lo, hi)
        nearest = a[None] + t[..., None] * ab[None]
        dist = np.linalg.norm(world[:, None, :] - nearest, axis=2)
        best = np.argmin(dist, axis=1)
        rows = np.arange(len(world))
        return self.arc[best] + t[rows, best] * np.sqrt(length2[best])


def voxel_to_world(affine: np.ndarray, ijk: ArrayLike) -> np.ndarray:
    """Voxel indices (n, 3) -> world mm (n, 3)."""
    return np.asarray(ijk, dtype=float) @ affine[:3, :3].T + affine[:3, 3]


def cord_centerline(cord: np.ndarray, affine: np.ndarray, pmj: np.ndarray | None = None,
                    smooth_mm: float = SMOOTH_MM) -> Centerline:
    """Centerline of a binary cord mask (any orientation), extended to the PMJ voxel (i, j, k) when it lies beyond the cord."""
    axis = si_axis(affine)
    ijk = np.argwhere(cord)
    if len(ijk) == 0:
        raise ValueError("empty cord mask")
    along = ijk[:, axis]
    lo = along.min()
    counts = np.bincount(along - lo)
    present = np.flatnonzero(counts) + lo
    com = np.stack([np.bincount(along - lo, weights=ijk[:, c])[present - lo] / counts[present - lo] for c in range(3)], 1)
    if pmj is not None and int(pmj[axis]) not in set(present.tolist()):
        present = np.append(present, int(pmj[axis]))
        com = np.vstack([com, np.asarray(pmj, dtype=float)])
        order = np.argsort(present)
        present, com = present[order], com[order]
    slices = np.arange(present.min(), present.max() + 1)
    voxels = np.stack([np.interp(slices, present, com[:, c]) for c in range(3)], 1)
    points = voxel_to_world(affine, voxels)
    step = float(np.linalg.norm(affine[:3, axis]))
    points = _smooth(points, step, smooth_mm)
    up = bool(affine[2, axis] > 0)
    if up:  # index grows towards superior: rostral end is the last slice
        slices, points = slices[::-1], points[::-1]
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])
    return Centerline(axis=axis, slices=slices, points=points, arc=arc, slice_step_mm=step, index_up_is_superior=up)


def _smooth(points: np.ndarray, step_mm: float, smooth_mm: float) -> np.ndarray:
    """Savitzky-Golay smoothing over ``smooth_mm`` (odd window in slices, shrunk to the line's length)."""
    window = int(round(smooth_mm / step_mm)) | 1
    window = min(window, len(points) if len(points) % 2 else len(points) - 1)
    if window <= POLYORDER + 1:
        return points
    from scipy.signal import savgol_filter  # imported on use: scipy.signal is slow to import

    return savgol_filter(points, window, POLYORDER, axis=0, mode="interp")
