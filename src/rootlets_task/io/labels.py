"""Label maps: what each kind must hold, the one way a label map is put on an image's grid, and label file names.

Kinds: ``cord`` (binary mask), ``discs`` (single voxels, SCT disc numbering 1 = top of C1, 3 = C2/C3 ... 25 = L5/S1
... 30 = S5/Co), ``pmj`` (one voxel), ``rootlets`` (value = spinal level, 2 = C2 ... 9 = T1 ... 31 = Co). Every module
that reads a label map (the chain, the levels, the tools' outputs, QC) uses :func:`problem` and :func:`on_grid` from
here, so a file is judged and resampled the same way everywhere.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from rootlets_task.core.errors import RootletsError
from rootlets_task.io import nifti

KINDS = ("cord", "discs", "pmj", "rootlets")
POINT_KINDS = ("discs", "pmj")
DISC_VALUES = range(1, 32)  # SCT disc numbering: 1 = top of C1, 3 = C2/C3 ... 25 = L5/S1 ... 30 = S5/Co, 31 = Co's end
PMJ_VALUE = 50
GRID_ATOL_MM = 1e-3  # two affines closer than this are the same grid
# File names of manual/corrected labels (NeuroPoly convention) and of the labels the chain writes: <stem><suffix>.nii.gz
SUFFIX = {"cord": "_label-SC_seg", "discs": "_label-discs_dlabel", "pmj": "_label-PMJ_dlabel",
          "rootlets": "_label-rootlets_dseg"}


# ----------------------------------------------------------------------------------------------- values
def as_labels(data: np.ndarray, name: str) -> np.ndarray:
    """``data`` as an integer label array: 3D, whole and non-negative values (int32 unless already integer)."""
    data = np.asarray(data)
    if data.ndim != 3:
        raise RootletsError(f"{name}: expected a 3D label array, got shape {data.shape}; extract one 3D volume first")
    if np.issubdtype(data.dtype, np.floating):
        if not np.isfinite(data).all() or not np.array_equal(data, np.round(data)):
            raise RootletsError(f"{name}: has non-integer values; a label file must hold whole numbers")
    elif not np.issubdtype(data.dtype, np.integer) and data.dtype != bool:
        raise RootletsError(f"{name}: {data.dtype} values are not labels; a label file must hold whole numbers")
    if data.size and data.min() < 0:
        raise RootletsError(f"{name}: has negative values; a label file must hold values >= 0")
    if data.size and data.max() > np.iinfo(np.int32).max:
        raise RootletsError(f"{name}: values up to {data.max()} are not labels; give a label file")
    return data if np.issubdtype(data.dtype, np.integer) else data.astype(np.int32)


def read(path: str | os.PathLike, kind: str) -> tuple[nib.Nifti1Image, np.ndarray]:
    """A label file (:func:`rootlets_task.io.nifti.load` checks, then :func:`as_labels`): the image and an int32 array."""
    img = nifti.load(path, kind)
    return img, as_labels(np.asanyarray(img.dataobj), f"{kind} {path}").astype(np.int32)


def cord_problem(data: np.ndarray) -> str | None:
    values = set(np.unique(data).tolist())
    if not values <= {0, 1}:
        return f"values {sorted(values)[:6]} are not a binary mask (expected 0 and 1)"
    if 1 not in values:
        return "the cord mask is empty"
    return None


LABELLED_CORD_VOXELS = 20  # a "disc" this large is a labelled cord (every cord voxel carrying its level)
LABELLED_CORD = ("this looks like a labelled cord (e.g. sct_label_vertebrae's *_labeled.nii.gz), not disc labels; give "
                 "the disc labels (*_labeled_discs.nii.gz, sct_deepseg spine)")


def disc_values_problem(values) -> str | None:
    """Why these label values cannot be disc labels, or None. Two or more labels with no two consecutive values
    hold no vertebral level between them: vertebral-body labels (SCT's ``labels.nii.gz`` for
    ``sct_register_to_template -l``: 3 and 5 at the C3 and C5 body centres) look like that, and taken as discs they
    would move every distance "from the C2/C3 disc" by half a vertebra."""
    values = sorted({int(v) for v in values})
    if len(values) < 2 or any(b - a == 1 for a, b in zip(values, values[1:], strict=False)):
        return None
    return (f"labels {', '.join(map(str, values))} hold no two consecutive disc values, so no vertebral level lies "
            "between them: these look like vertebral-body labels (e.g. SCT's labels.nii.gz for sct_register_to_template "
            "-l), not disc labels (SCT numbering: 3 = C2/C3 disc); give disc labels (sct_label_vertebrae's "
            "*_labeled_discs.nii.gz, sct_deepseg spine) or leave -discs out")


def discs_problem(data: np.ndarray) -> str | None:
    values, counts = np.unique(data[data > 0], return_counts=True)
    if values.size == 0:
        return "holds no disc label"
    if counts.max() > LABELLED_CORD_VOXELS:
        return LABELLED_CORD
    bad = [int(v) for v in values if int(v) not in DISC_VALUES]
    if bad:
        return f"values {bad} are not SCT disc labels (1 = top of C1, 3 = C2/C3 ... 25 = L5/S1 ... 30 = S5/Co)"
    multi = [int(v) for v, c in zip(values, counts, strict=True) if c > 1]
    if multi:
        return f"disc labels {multi} span several voxels; each disc must be a single voxel"
    return disc_values_problem(values)


def pmj_problem(data: np.ndarray) -> str | None:
    n = int(np.count_nonzero(data))
    return None if n == 1 else f"holds {n} labelled voxels; the PMJ must be a single voxel"


def rootlets_problem(data: np.ndarray) -> str | None:
    if not data.any():
        return "holds no rootlets (all voxels are 0)"
    if data.max() > 255:
        return f"value {int(data.max())} is not a spinal level (2 = C2 ... 9 = T1 ... 31 = Co)"
    return None


PROBLEMS: dict[str, Callable[[np.ndarray], str | None]] = {
    "cord": cord_problem, "discs": discs_problem, "pmj": pmj_problem, "rootlets": rootlets_problem}


def problem(kind: str, data: np.ndarray) -> str | None:
    """Why ``data`` is not a valid label map of ``kind``, or None."""
    return PROBLEMS[kind](data)


def single_voxels(data: np.ndarray, name: str, what: str) -> dict[int, np.ndarray]:
    """{value: voxel index} of a point-label array; a value on several voxels is an error naming how many places."""
    points = {}
    for value in np.unique(data[data > 0]):
        where = np.argwhere(data == value)
        if len(where) > LABELLED_CORD_VOXELS and what == "disc":
            raise RootletsError(f"{name}: {LABELLED_CORD}")
        if len(where) > 1:
            n = ndimage.label(data == value)[1]
            kind = "one blob" if n == 1 else f"{n} separate places"
            raise RootletsError(f"{name}: {what} label {value} occurs in {len(where)} voxels ({kind}); "
                                "keep exactly one voxel per label (e.g. sct_label_utils -cubic-to-point)")
        points[int(value)] = where[0]
    return points


# ----------------------------------------------------------------------------------------------- grids
def same_grid(a: nib.Nifti1Image, b: nib.Nifti1Image) -> bool:
    return a.shape[:3] == b.shape[:3] and np.allclose(a.affine, b.affine, atol=GRID_ATOL_MM)


def _world_box(img: nib.Nifti1Image) -> tuple[np.ndarray, np.ndarray]:
    corners = np.array(np.meshgrid(*[(-0.5, n - 0.5) for n in img.shape[:3]], indexing="ij")).reshape(3, -1).T
    world = corners @ img.affine[:3, :3].T + img.affine[:3, 3]
    return world.min(0), world.max(0)


def overlap(a: nib.Nifti1Image, b: nib.Nifti1Image) -> bool:
    """Whether the two fields of view share some volume in world space."""
    (lo1, hi1), (lo2, hi2) = _world_box(a), _world_box(b)
    return bool(np.all(np.minimum(hi1, hi2) > np.maximum(lo1, lo2)))


def on_grid(img: nib.Nifti1Image, data: np.ndarray, grid: nib.Nifti1Image, points: bool,
            outside: str = "drop") -> tuple[np.ndarray, list[str]]:
    """Labels of ``img`` (array ``data``) on ``grid``; returns them and notes on what was done.

    Same grid (shape, affine to :data:`GRID_ATOL_MM`): unchanged, no note. Another grid in the same space: nearest
    neighbour. Point labels (discs, PMJ) move voxel by voxel so that none is lost on a coarser grid or duplicated on a
    finer one; a point falling outside ``grid`` is dropped with a note (``outside="drop"``) or is an error
    (``"raise"``), and two points landing on one voxel are an error. Fields of view that do not overlap, or labels
    that all fall outside, are errors (``ValueError`` with the reason; callers add the file and the fix).
    """
    if same_grid(img, grid):
        return data, []
    if not overlap(img, grid):
        raise ValueError("its field of view does not overlap the image (another space, not the image's)")
    to_grid = np.linalg.inv(grid.affine) @ img.affine
    shape = grid.shape[:3]
    notes = ["on another grid than the image: resampled onto the image grid (nearest neighbour)"]
    if points:
        out = np.zeros(shape, data.dtype)
        ijk = np.argwhere(data > 0)
        target = np.round(ijk @ to_grid[:3, :3].T + to_grid[:3, 3]).astype(int)
        inside = np.all((target >= 0) & (target < shape), axis=1)
        if not inside.all():
            if outside == "raise":
                raise ValueError(f"label {data[tuple(ijk[~inside][0])]} lies outside the image")
            notes.append(f"{int((~inside).sum())} label voxel(s) lie outside the image grid; ignored")
        for t, src in zip(target[inside], ijk[inside], strict=True):
            if out[tuple(t)]:
                raise ValueError(f"labels {out[tuple(t)]} and {data[tuple(src)]} fall on the same image voxel")
            out[tuple(t)] = data[tuple(src)]
    else:
        from_grid = np.linalg.inv(to_grid)
        out = ndimage.affine_transform(data, from_grid[:3, :3], from_grid[:3, 3], output_shape=shape, order=0,
                                       mode="constant", cval=0)
    if data.any() and not out.any():
        raise ValueError("its labels fall outside the image after resampling; the files do not overlap")
    return out, notes


def load(path: str | os.PathLike, kind: str, grid: nib.Nifti1Image, outside: str = "drop") -> tuple[np.ndarray, list[str]]:
    """A label file of ``kind`` on ``grid``, checked: (array, notes). Raises ``ValueError`` with the problem (the
    caller adds who made the file and the flag that gives another)."""
    try:
        img, data = read(Path(path), kind)
    except RootletsError as exc:
        raise ValueError(str(exc)) from None
    data, notes = on_grid(img, data, grid, points=kind in POINT_KINDS, outside=outside)
    found = problem(kind, data)
    if found:
        raise ValueError(found)
    return data, notes
