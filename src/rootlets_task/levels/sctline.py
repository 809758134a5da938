"""The lab's centerline and disc projection, step for step as SCT computes them (for ``-method reference``).

The lab's scripts measure distances along the centerline that ``sct_process_segmentation -pmj`` writes
(``*_centerline_extrapolated.csv``) and put discs on the cord with ``sct_label_utils -project-centerline``. This
module reproduces both in numpy/scipy (SCT is not a dependency), in SCT's own frame: the arrays reoriented to SCT's
"RPI" (nibabel LAS), voxel coordinates, the voxel sizes of the reoriented header. Each function names the SCT
function (spinalcordtoolbox, MIT) whose arithmetic it repeats; the numbers agree with SCT's to rounding
(tests/data/lab_reference/sct).

Where this differs from :mod:`rootlets_task.levels.centerline` (the ``gapfree`` default): SCT smooths the
linearly interpolated centre of mass with a Hanning window padded by central symmetry, which flattens the ends of
a curved cord, and measures in voxel steps scaled by the voxel size; SCT projects discs onto a separate b-spline
centerline of the cord alone and moves each to the nearest point's slice. The default keeps one continuous
centerline for both.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np

PMJ_SMOOTH_MM = 50.0  # csa_pmj.get_slices_for_pmj_distance: param_centerline.smooth = 50, algo_fitting 'linear'
DISC_SMOOTH = 20.0  # centerline.core.ParamCenterline default smooth, algo_fitting 'bspline'
NEAR_ZERO = 1e-6  # csa_pmj.NEAR_ZERO_THRESHOLD


@dataclass(frozen=True)
class Rpi:
    """An image's grid as SCT sees it after ``change_orientation('RPI')``.

    ``transform``: nibabel orientation transform native -> RPI; ``shape``/``affine``/``zooms``: the reoriented grid;
    ``axis``: the native array axis that becomes RPI z; ``flip``: whether RPI z runs against that axis.
    """

    transform: np.ndarray
    shape: tuple[int, int, int]
    affine: np.ndarray
    zooms: np.ndarray
    axis: int
    flip: bool

    def array(self, data: np.ndarray) -> np.ndarray:
        """A native array in RPI (spinalcordtoolbox.image.Image.change_orientation)."""
        return nib.orientations.apply_orientation(data, self.transform)

    def native_slice(self, z: np.ndarray | int) -> np.ndarray:
        """RPI z slice(s) -> slice index along ``axis`` of the native array."""
        z = np.asarray(z)
        return self.shape[2] - 1 - z if self.flip else z


def rpi(shape: tuple[int, ...], affine: np.ndarray) -> Rpi:
    """SCT's RPI frame of a grid (orientation from ``aff2axcodes`` of the affine, as spinalcordtoolbox.image does)."""
    affine = np.asarray(affine, dtype=float)
    transform = nib.orientations.ornt_transform(nib.orientations.io_orientation(affine),
                                                nib.orientations.axcodes2ornt(("L", "A", "S")))
    new_affine = affine @ nib.orientations.inv_ornt_aff(transform, shape[:3])
    order = transform[:, 0].astype(int)
    new_shape = [0, 0, 0]
    for native, (target, _) in enumerate(transform.astype(int)):
        new_shape[target] = int(shape[native])
    axis = int(np.flatnonzero(order == 2)[0])
    zooms = np.linalg.norm(new_affine[:3, :3], axis=0)
    x, y, z = new_shape
    return Rpi(transform, (x, y, z), new_affine, zooms, axis, bool(transform[axis, 1] < 0))


def find_and_sort_coord(mask: np.ndarray) -> np.ndarray:
    """(3, n) mean x, y, z of the non-zero voxels of each RPI z slice, caudal first
    (spinalcordtoolbox.centerline.core.find_and_sort_coord)."""
    x, y, z = np.nonzero(mask)
    slices, inverse, counts = np.unique(z, return_inverse=True, return_counts=True)
    return np.stack([np.bincount(inverse, weights=c) / counts for c in (x, y)] + [slices.astype(float)])


def round_up_to_odd(f: float) -> int:
    """spinalcordtoolbox.centerline.curve_fitting.round_up_to_odd."""
    return int(np.ceil(f) // 2 * 2 + 1)


def smooth1d(x: np.ndarray, window_len: int) -> np.ndarray:
    """Hanning-window smoothing with central-symmetry padding (spinalcordtoolbox.centerline.curve_fitting.smooth1d)."""
    if x.size < window_len:
        window_len = x.size
    if window_len < 3:
        return x
    s = np.r_[2 * x[0] - x[window_len - 1:0:-1], x, 2 * x[-1] - x[-2:-window_len - 1:-1]]
    w = np.hanning(window_len)
    y = np.convolve(w / w.sum(), s, mode="valid")
    return y[int(np.ceil(window_len / 2 - 1)):-int(np.floor(window_len / 2))]


def linear_fit(z_mean: np.ndarray, values: np.ndarray, z_ref: np.ndarray, smooth: float, pz: float) -> np.ndarray:
    """Linear interpolation, then Hanning smoothing over ``smooth`` mm (spinalcordtoolbox.centerline.curve_fitting.linear)."""
    fit = np.interp(z_ref, z_mean, values)
    return smooth1d(fit, round_up_to_odd(smooth / float(pz))) if smooth else fit


def bspline_fit(z_mean: np.ndarray, values: np.ndarray, z_ref: np.ndarray, smooth: float, pz: float) -> np.ndarray:
    """Smoothing spline (spinalcordtoolbox.centerline.curve_fitting.bspline): s = (n / n_ref)² · smooth · pz / 3."""
    from scipy import interpolate

    degree = 3 if len(z_mean) > 3 else 1
    s = (float(len(z_mean)) / len(z_ref)) ** 2 * smooth * pz / 3.0
    return interpolate.splev(z_ref, interpolate.splrep(z_mean, values, s=s, k=degree), der=0)


def centerline(mask_rpi: np.ndarray, pz: float, algo: str, smooth: float) -> np.ndarray:
    """(3, n) RPI voxel centerline, one point per z slice from the lowest to the highest slice of the mask
    (spinalcordtoolbox.centerline.core.get_centerline with minmax=True; ``algo`` 'linear' or 'bspline')."""
    x_mean, y_mean, z_mean = find_and_sort_coord(mask_rpi)
    z_ref = np.arange(int(z_mean.min()), int(z_mean.max()) + 1)
    fit = linear_fit if algo == "linear" else bspline_fit
    return np.stack([fit(z_mean, x_mean, z_ref, smooth, pz), fit(z_mean, y_mean, z_ref, smooth, pz), z_ref.astype(float)])


def pmj_centerline(cord_rpi: np.ndarray, pmj_rpi: np.ndarray | None, pz: float) -> np.ndarray:
    """The extrapolated centerline of ``sct_process_segmentation -pmj`` (``*_centerline_extrapolated.csv``): the
    centre of mass of cord ∪ PMJ voxel per slice, linear between slices, Hanning window of 50 mm
    (spinalcordtoolbox.csa_pmj.get_slices_for_pmj_distance). Without a PMJ: the cord alone."""
    mask = cord_rpi > NEAR_ZERO
    if pmj_rpi is not None:
        mask = mask | (pmj_rpi > NEAR_ZERO)
    return centerline(mask, pz, "linear", PMJ_SMOOTH_MM)


def distance_from_top(line: np.ndarray, zooms: np.ndarray) -> dict[int, float]:
    """{RPI z: mm along the line from its highest point}, voxel steps scaled by the voxel sizes (the lab's
    ``get_distance_from_pmj`` in 02a_rootlets_to_spinal_levels.py / discs_to_vertebral_levels.py)."""
    top = int(np.argmax(line[2]))
    steps = np.sqrt(((np.diff(line[:, : top + 1], axis=1).T * np.asarray(zooms, dtype=float)) ** 2).sum(1))
    arc = np.concatenate([np.cumsum(steps[::-1])[::-1], [0.0]])
    return dict(zip(line[2, : top + 1].astype(int).tolist(), arc.tolist(), strict=True))


def project_discs(cord_rpi: np.ndarray, frame: Rpi, discs: dict[int, np.ndarray]) -> dict[int, int]:
    """{disc value: RPI z slice} as ``sct_label_utils -project-centerline`` puts each disc: onto the nearest point (in
    world mm) of the cord's b-spline centerline (smooth 20), one point per cord slice
    (spinalcordtoolbox.labels.project_centerline). A disc above the cord's top lands
    on the top slice, one below its bottom on the bottom slice. Where two discs land on one slice, the later value
    overwrites the earlier in SCT's label image; both are kept here. ``discs``: {value: world mm (3,)}."""
    from scipy.spatial import KDTree

    line = centerline(cord_rpi > 0, float(frame.zooms[2]), "bspline", DISC_SMOOTH)
    world = line.T @ frame.affine[:3, :3].T + frame.affine[:3, 3]
    values = sorted(discs)
    points = np.array([discs[v] for v in values], dtype=float)
    _, nearest = KDTree(world).query(points)
    return {v: int(round(line[2, i])) for v, i in zip(values, np.atleast_1d(nearest), strict=True)}
