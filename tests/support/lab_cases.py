"""The phantom cases of the lab reference (tests/data/lab_reference/sct): built here, bit for bit, for the tests and
for run_lab_sct.sh (``python -m support.lab_cases FOLDER`` writes every case into FOLDER/<case>/).

Each case is ``rootlets phantom`` (seed 0) on a grid, with at most one edit of the labels:

* ``cord_below_mm``: the cord segmentation is cut above the slice this many mm caudal of the PMJ slice (a PMJ above
  the cord's top; past disc 1, also a disc above the cord's top);
* ``crop``: the field of view is cut to the PMJ slice at the top, ``bottom_mm`` below disc 9 at the bottom and
  ``half_width_mm`` either side of the cord's centre left-right (the cord touches the top and bottom of the image).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from rootlets_task.io.nifti import si_axis
from rootlets_task.io.phantom import write_phantom

KINDS = ("image", "rootlets", "cord", "discs", "pmj")
CASES: dict[str, dict] = {
    "tilt15": {"orient": "LPI", "spacing": (1.0, 1.0, 1.0), "tilt": 15.0},
    "tilt25_rpi": {"orient": "RPI", "spacing": (1.0, 1.0, 1.0), "tilt": 25.0},
    "anisotropic": {"orient": "LPI", "spacing": (0.5, 0.9, 1.6), "tilt": 10.0},
    "pmj_above_cord": {"orient": "LPI", "spacing": (1.0, 1.0, 1.0), "tilt": 10.0, "cord_below_mm": 8.0},
    "disc_above_cord": {"orient": "RPI", "spacing": (0.8, 0.8, 0.8), "tilt": 5.0, "cord_below_mm": 34.0},
    "cropped_fov": {"orient": "LPI", "spacing": (1.0, 1.0, 1.0), "tilt": 20.0,
                    "crop": {"bottom_mm": 3.0, "half_width_mm": 9.0}},
    "pam50_psr": {"orient": "PSR", "spacing": (0.5, 0.5, 0.5), "tilt": 0.0},
    "pam50_ail": {"orient": "AIL", "spacing": (0.8, 0.8, 0.8), "tilt": 0.0},
}


def _si(img: nib.Nifti1Image) -> tuple[int, int]:
    """(superior-inferior array axis, +1 if the index grows towards superior else -1)."""
    axis = si_axis(img.affine)
    return axis, 1 if img.affine[2, axis] > 0 else -1


def _slice_of(img: nib.Nifti1Image, axis: int) -> int:
    return int(np.argwhere(np.asarray(img.dataobj) > 0)[0][axis])


def _cut_cord(paths: dict[str, Path], below_mm: float) -> None:
    """Cord voxels on slices less than ``below_mm`` caudal of the PMJ slice removed."""
    cord = nib.load(paths["cord"])
    axis, up = _si(cord)
    step = float(np.linalg.norm(cord.affine[:3, axis]))
    top = _slice_of(nib.load(paths["pmj"]), axis) - up * int(round(below_mm / step))
    data = np.asarray(cord.dataobj).copy()
    index = np.arange(data.shape[axis]).reshape([-1 if a == axis else 1 for a in range(3)])
    data[np.broadcast_to((index - top) * up > 0, data.shape)] = 0
    nib.save(nib.Nifti1Image(data, cord.affine, cord.header), paths["cord"])


def _crop(paths: dict[str, Path], bottom_mm: float, half_width_mm: float) -> None:
    """Every file cut to the same smaller box (the grid's affine moves with it)."""
    ref = nib.load(paths["cord"])
    axis, up = _si(ref)
    step = float(np.linalg.norm(ref.affine[:3, axis]))
    pmj = _slice_of(nib.load(paths["pmj"]), axis)
    disc9 = int(np.argwhere(np.asarray(nib.load(paths["discs"]).dataobj) == 9)[0][axis])
    bottom = disc9 - up * int(round(bottom_mm / step))
    box = [slice(None)] * 3
    box[axis] = slice(min(pmj, bottom), max(pmj, bottom) + 1)
    lr = int(np.argmax(np.abs(ref.affine[0, :3])))
    centre = int(round(np.argwhere(np.asarray(ref.dataobj) > 0)[:, lr].mean()))
    half = int(round(half_width_mm / float(np.linalg.norm(ref.affine[:3, lr]))))
    box[lr] = slice(centre - half, centre + half + 1)
    for kind in KINDS:
        img = nib.load(paths[kind])
        cut = img.slicer[tuple(box)]
        nib.save(nib.Nifti1Image(np.asarray(cut.dataobj), cut.affine, img.header), paths[kind])


def build(name: str, folder: str | Path) -> dict[str, Path]:
    """Write case ``name`` into ``folder``; returns {kind: path} (image, rootlets, cord, discs, pmj)."""
    case = CASES[name]
    paths = write_phantom(folder, case["orient"], case["spacing"], 0, case["tilt"])
    paths = {k: paths[k] for k in KINDS}
    if "cord_below_mm" in case:
        _cut_cord(paths, case["cord_below_mm"])
    if "crop" in case:
        _crop(paths, **case["crop"])
    for extra in Path(folder).glob("phantom_*"):
        if extra not in paths.values():
            extra.unlink()
    return paths


if __name__ == "__main__":
    for case_name in CASES:
        build(case_name, Path(sys.argv[1]) / case_name)
        print(case_name)
