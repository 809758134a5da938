"""Display geometry of the QC figures, on arrays: sagittal and coronal views that follow the cord.

Display geometry never assumes an array axis: every volume is reoriented to SCT ``SAL`` (rows run superior ->
inferior, then anterior -> posterior, then left -> right; the neurological convention of SCT's QC) and each view
is resampled to square pixels in mm. Labels are only ever *upsampled* with nearest neighbour (the display pixel is
the finest voxel spacing), so thin rootlets are never lost or relabelled (SCT issues #4461, #4716).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import nibabel as nib
import numpy as np
from scipy.ndimage import gaussian_filter1d, map_coordinates

from rootlets_task.core.errors import RootletsError
from rootlets_task.io.nifti import reorient

# SCT "SAL" as nibabel axcodes (where each axis ends): rows S->I, then A->P, then L->R.
DISPLAY_AXCODES = ("I", "P", "R")
# Half-thickness (mm) of the rootlets projection: sagittal view across the canal (left-right), coronal view around
# the cord (front-back), so each view shows every level's rostro-caudal extent.
SLAB_MM = (12.0, 6.0)
MAX_SLAB_MM = 100.0


def check_slab(slab_mm) -> tuple[float, float]:
    """``slab_mm`` as two half-thicknesses in (0, :data:`MAX_SLAB_MM`] mm, else a one-line error (the one bound of
    ``rootlets qc -slab`` and of the Python API)."""
    try:
        sag, cor = (float(s) for s in slab_mm)
    except (TypeError, ValueError):
        raise RootletsError(f"-slab {slab_mm!r}: give two half-thicknesses in mm (sagittal, coronal)") from None
    if not all(0 < s <= MAX_SLAB_MM for s in (sag, cor)):  # NaN fails too
        raise RootletsError(f"-slab {sag:g} {cor:g}: give half-thicknesses between 0 and {MAX_SLAB_MM:g} mm")
    return sag, cor


@dataclass
class View:
    """One 2D view with square pixels of ``pixel_mm``; row 0 is the rostral (superior) end."""

    name: str  # "sagittal" or "coronal"
    image: np.ndarray  # float background (the slice through the cord centre, following the cord)
    rootlets: np.ndarray  # int labels: maximum-intensity projection of the rootlets over the slab
    cord: np.ndarray | None  # bool cord mask on the same slice, or None
    pixel_mm: float
    sides: tuple[str, str]  # anatomical direction of the first and last column, e.g. ("A", "P")
    discs: list[tuple[int, float, float]] = field(default_factory=list)  # (value, row_mm, col_mm)
    window: tuple[float, float] = (0.0, 1.0)  # grey window of the background
    slab_mm: float = 0.0  # half-thickness of the rootlets projection

    @property
    def extent_mm(self) -> tuple[float, float]:
        """(width, height) in mm."""
        return self.image.shape[1] * self.pixel_mm, self.image.shape[0] * self.pixel_mm


def _centre_curve(mask: np.ndarray | None, axis: int, n_rows: int, fallback: float, sigma: float) -> np.ndarray:
    """Per-row centre (float index along ``axis`` of a (rows, a1, a2) mask), smoothed, and interpolated (or held
    constant beyond the ends) where a row has no voxel; ``fallback`` everywhere without a mask."""
    if mask is None:
        return np.full(n_rows, fallback)
    profile = mask.sum(axis=2 if axis == 1 else 1)  # (rows, n_axis)
    counts = profile.sum(axis=1)
    rows = np.flatnonzero(counts)
    centres = (profile[rows] * np.arange(profile.shape[1])).sum(axis=1) / counts[rows]
    return gaussian_filter1d(np.interp(np.arange(n_rows), rows, centres), sigma, mode="nearest")


def _square(a: np.ndarray, spacing: tuple[float, float], pixel: float, order: int) -> np.ndarray:
    """Resample a 2D array to square pixels of ``pixel`` mm (order 0 for labels, 1 for images)."""
    shape = [max(1, int(round(n * s / pixel))) for n, s in zip(a.shape, spacing, strict=True)]
    coords = np.meshgrid(*[(np.arange(m) + 0.5) * pixel / s - 0.5 for m, s in zip(shape, spacing, strict=True)], indexing="ij")
    return map_coordinates(a, coords, order=order, mode="nearest")


def display_views(image: nib.Nifti1Image, rootlets: nib.Nifti1Image, cord: nib.Nifti1Image | None = None,
                  discs: nib.Nifti1Image | None = None, slab_mm: tuple[float, float] = SLAB_MM, half_width_mm: float = 25.0,
                  margin_mm: float = 12.0) -> dict[str, View]:
    """Sagittal and coronal views of images that share one grid, in any orientation and spacing.

    Each row (an axial level) is sampled at the cord's centre in that row, so the views follow a curved cord;
    the rootlets are projected (maximum) over ``±slab_mm`` around that centre: (left-right half-thickness of the
    sagittal view, anterior-posterior half-thickness of the coronal view). Without a cord the views are
    centred on the rootlets.
    """
    slab_mm = check_slab(slab_mm)
    img, spacing, _ = reorient(image, DISPLAY_AXCODES)
    roots = reorient(rootlets, DISPLAY_AXCODES)[0]
    roots = roots.astype(np.uint8 if roots.max() < 256 else np.int32)  # small: projected over whole volumes
    cord_d = reorient(cord, DISPLAY_AXCODES)[0] > 0 if cord is not None else None
    disc_d = reorient(discs, DISPLAY_AXCODES)[0].astype(np.int32) if discs is not None else None
    sz, sy, sx = spacing
    nz, ny, nx = img.shape
    centre_mask = cord_d if cord_d is not None and cord_d.any() else (roots > 0 if roots.any() else None)
    cy = _centre_curve(centre_mask, 1, nz, (ny - 1) / 2, max(1.0, 3.0 / sz))
    cx = _centre_curve(centre_mask, 2, nz, (nx - 1) / 2, max(1.0, 3.0 / sz))
    if centre_mask is not None and centre_mask is not cord_d:  # rootlets lie on both sides: centre on their middle
        cx = np.full(nz, np.median(np.argwhere(centre_mask)[:, 2]))

    rows = np.arange(nz)
    iy = np.clip(np.round(cy).astype(int), 0, ny - 1)
    ix = np.clip(np.round(cx).astype(int), 0, nx - 1)
    in_x = np.abs(np.arange(nx)[None, :] - cx[:, None]) <= slab_mm[0] / sx  # (nz, nx): sagittal slab
    in_y = np.abs(np.arange(ny)[None, :] - cy[:, None]) <= slab_mm[1] / sy  # (nz, ny): coronal slab

    # Rows worth showing: the rootlets (else the cord, else everything) plus a margin; a long cord or a whole-spine
    # field of view would otherwise shrink the rootlets to nothing.
    present = next((np.flatnonzero(a.any(axis=(1, 2))) for a in (roots > 0, cord_d) if a is not None and a.any()), rows)
    margin = max(margin_mm, 0.15 * np.ptp(present) * sz) / sz
    r0 = max(0, int(present.min() - margin))
    r1 = min(nz, int(present.max() + margin) + 1)

    def crop_cols(centre: np.ndarray, step: float, n: int) -> slice:
        span = np.ptp(centre[r0:r1]) / 2
        mid = (centre[r0:r1].max() + centre[r0:r1].min()) / 2
        half = half_width_mm / step + span
        return slice(max(0, int(mid - half)), min(n, int(np.ceil(mid + half)) + 1))

    pixel = max(min(spacing), 0.2)
    views = {}
    for name, bg, mip, cord2d, step, cols, sides, disc_col, slab in (
        ("sagittal", img[rows, :, ix], (roots * in_x[:, None, :]).max(axis=2),
         cord_d[rows, :, ix] if cord_d is not None else None, sy, crop_cols(cy, sy, ny), ("A", "P"), 1, slab_mm[0]),
        ("coronal", img[rows, iy, :], (roots * in_y[:, :, None]).max(axis=1),
         cord_d[rows, iy, :] if cord_d is not None else None, sx, crop_cols(cx, sx, nx), ("L", "R"), 2, slab_mm[1]),
    ):
        crop = (slice(r0, r1), cols)
        spacing2 = (sz, step)
        bg_sq = _square(bg[crop].astype(np.float32), spacing2, pixel, order=1)
        core = bg_sq[bg_sq > np.percentile(bg_sq, 5)] if bg_sq.size else bg_sq
        lo, hi = (np.percentile(core, [0.5, 99.5]) if core.size else (0.0, 1.0))
        view = View(name=name, image=bg_sq, rootlets=_square(mip[crop], spacing2, pixel, order=0),
                    cord=_square(cord2d[crop].astype(np.uint8), spacing2, pixel, order=0) > 0 if cord2d is not None else None,
                    pixel_mm=pixel, sides=sides, window=(float(lo), float(hi if hi > lo else lo + 1)), slab_mm=slab)
        if disc_d is not None:
            for z, y, x in np.argwhere(disc_d[r0:r1] > 0) + (r0, 0, 0):
                col = (y, x)[disc_col - 1]
                if cols.start <= col < cols.stop:
                    view.discs.append((int(disc_d[z, y, x]), (z - r0 + 0.5) * sz, (col - cols.start + 0.5) * step))
        views[name] = view
    return views


# ---------------------------------------------------------------------------------------------------------------
# Axial mosaic (the two images of an entry in SCT's QC report)

MOSAIC_HALF_MM = 13.8        # half-width of each axial tile (SCT: 23 voxels of 0.6 mm)
MOSAIC_COLUMNS = 9
MOSAIC_MARGIN_MM = 10.0      # slices shown beyond the rostral and caudal ends of the rootlets


@dataclass
class Mosaic:
    """Axial slices side by side, rows of ``columns`` tiles of ``tile`` pixels (square pixels of ``pixel_mm``).

    ``image``: float background (NaN where no tile); ``rootlets``: int labels on the same pixels; ``tiles``: the
    (row, col) pixel origin of each tile and the slice index it shows (in the SAL-reoriented volume). In every tile
    the top is anterior, the left is the subject's left (SCT's axial view).
    """

    image: np.ndarray
    rootlets: np.ndarray
    tile: tuple[int, int]
    pixel_mm: float
    tiles: list[tuple[int, int, int]]


def _slice_centres(roots: np.ndarray, ny: int, nx: int, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Per axial slice (axis 0) the tile centre: antero-posterior centre of the rootlets in that slice (smoothed,
    interpolated between slices), left-right the median of all rootlets (they lie on both sides of the cord)."""
    mask = roots > 0
    if not mask.any():
        return np.full(len(roots), (ny - 1) / 2), np.full(len(roots), (nx - 1) / 2)
    cy = _centre_curve(mask, 1, len(roots), (ny - 1) / 2, sigma)
    return cy, np.full(len(roots), float(np.median(np.argwhere(mask)[:, 2])))


def _tile(a: np.ndarray, centre: tuple[float, float], half: tuple[int, int], fill) -> np.ndarray:
    """The ``2*half+1`` crop of 2D ``a`` around ``centre`` (padded with ``fill`` beyond the edges)."""
    out = np.full((2 * half[0] + 1, 2 * half[1] + 1), fill, dtype=a.dtype)
    c0, c1 = (int(round(c)) for c in centre)
    src = [slice(max(0, c - h), min(n, c + h + 1)) for c, h, n in zip((c0, c1), half, a.shape, strict=True)]
    dst = [slice(s.start - (c - h), s.stop - (c - h)) for s, c, h in zip(src, (c0, c1), half, strict=True)]
    out[tuple(dst)] = a[tuple(src)]
    return out


def axial_mosaic(image: nib.Nifti1Image, rootlets: nib.Nifti1Image, half_mm: float = MOSAIC_HALF_MM,
                 columns: int = MOSAIC_COLUMNS, margin_mm: float = MOSAIC_MARGIN_MM) -> Mosaic:
    """Axial tiles through the rootlets (rostral first) of an image and its rootlets on one grid, any orientation.

    Slices span the rootlets plus ``margin_mm`` (all slices when there are none); each tile is ``±half_mm`` around
    the rootlets' centre in that slice and is resampled to square pixels of the finest in-plane spacing: labels
    are only upsampled (nearest neighbour), never moved or dropped.
    """
    img, spacing, _ = reorient(image, DISPLAY_AXCODES)
    roots = reorient(rootlets, DISPLAY_AXCODES)[0].astype(np.int32)
    sz, sy, sx = spacing
    nz, ny, nx = img.shape
    present = np.flatnonzero(roots.any(axis=(1, 2)))
    if present.size:
        margin = int(round(margin_mm / sz))
        slices = np.arange(max(0, present.min() - margin), min(nz, present.max() + margin + 1))
    else:
        slices = np.arange(nz)
    cy, cx = _slice_centres(roots, ny, nx, max(1.0, 3.0 / sz))
    half = (max(1, int(half_mm / sy)), max(1, int(half_mm / sx)))
    pixel = max(min(sy, sx), 0.2)
    sample = [(np.arange(max(1, int(round((2 * h + 1) * s / pixel)))) + 0.5) * pixel / s - 0.5
              for h, s in zip(half, (sy, sx), strict=True)]
    th, tw = len(sample[0]), len(sample[1])
    rows = -(-len(slices) // columns)
    cols = min(columns, len(slices))
    mosaic = np.full((rows * th, cols * tw), np.nan, dtype=np.float32)
    labels = np.zeros((rows * th, cols * tw), dtype=np.int32)
    tiles = []
    grid = np.meshgrid(*sample, indexing="ij")
    for i, z in enumerate(slices):
        r0, c0 = (i // columns) * th, (i % columns) * tw
        centre = (cy[z], cx[z])
        bg = _tile(img[z].astype(np.float32), centre, half, np.nan)
        mosaic[r0:r0 + th, c0:c0 + tw] = map_coordinates(np.nan_to_num(bg, nan=0.0), grid, order=1, mode="nearest")
        labels[r0:r0 + th, c0:c0 + tw] = map_coordinates(_tile(roots[z], centre, half, 0), grid, order=0, mode="nearest")
        tiles.append((r0, c0, int(z)))
    return Mosaic(image=mosaic, rootlets=labels, tile=(th, tw), pixel_mm=pixel, tiles=tiles)
