"""SCT's post-processing of ``sct_deepseg`` outputs, on the label map in the input's grid (pure array functions).

``sct_deepseg rootlets`` applies, per output image and in this order (SCT 7.0 to HEAD, ``deepseg/inference.py``
``segment_non_ivadomed``): ``-thr`` -> ``-largest`` -> ``-fill-holes`` -> ``-remove-small``. These flags were made
for binary masks; on the multi-class rootlets map (value = spinal level) SCT does the following, and so do we:

* ``-thr T`` (any T that is not 0): ``data > T``, so every level becomes 1 (``-thr 0`` does nothing, as in SCT);
* ``-largest 1``: values below 0.001 set to 0, then only the largest 6-connected component of all nonzero voxels is
  kept, whatever their levels (one blob of mixed levels survives, every other rootlet is removed);
* ``-fill-holes 1``: refused unless the map is binary (SCT asserts it and stops with a traceback): use ``-thr``;
* ``-remove-small N[vox|mm3]``: 18-connected components of nonzero voxels (levels mixed) with fewer than N voxels
  (or ``round(N / voxel volume)`` for ``mm3``) set to 0; one value only, as the rootlets map is one class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from rootlets_task.core.errors import RootletsError

FILL_HOLES_REFUSAL = ("fill_holes expects a binary segmentation as input. Use `-thr` to binarize the prediction before "
                      "using fill_holes.")


@dataclass(frozen=True)
class PostOptions:
    """SCT's post-processing flags, as ``sct_deepseg`` parses them (None / 0 = off)."""

    thr: float | None = None
    largest: int = 0
    fill_holes: int = 0
    remove_small: tuple[str, ...] | None = None

    def check(self) -> PostOptions:
        """Refuse what SCT refuses before any voxel is read: ``-remove-small`` values, ``-largest``/``-fill-holes`` not 0/1."""
        for flag, value in (("-largest", self.largest), ("-fill-holes", self.fill_holes)):
            if value not in (0, 1):
                raise RootletsError(f"argument {flag}: invalid choice: {value!r} (choose from 0, 1)")
        if self.remove_small is not None:
            remove_small_sizes(self.remove_small)
        return self

    @property
    def binarizes(self) -> bool:
        """Whether ``-thr`` turns the map into 0/1 (SCT: ``if threshold:``)."""
        return bool(self.thr)

    @property
    def active(self) -> bool:
        return self.binarizes or bool(self.largest) or bool(self.fill_holes) or self.remove_small is not None


def remove_small_sizes(tokens: tuple[str, ...] | list[str], n_classes: int = 1) -> tuple[str, list[int]]:
    """SCT's reading of ``-remove-small``: (unit, sizes). The unit is ``mm3`` when the *last* token contains ``mm3``,
    else ``vox``; every token must be an integer once that unit is removed; one size per class (1 for rootlets)."""
    tokens = list(tokens)
    if not tokens:
        raise RootletsError("argument -remove-small: expected at least one argument")
    unit = "mm3" if "mm3" in tokens[-1] else "vox"
    sizes = []
    for token in tokens:
        try:
            sizes.append(int(token.replace(unit, "")))
        except ValueError:
            raise RootletsError(f"-remove-small {' '.join(tokens)}: invalid literal for int() with base 10: "
                                f"{token.replace(unit, '')!r} (SCT's ValueError); give one size such as 5vox or 10mm3"
                                ) from None
    if len(sizes) != n_classes:
        raise RootletsError(f"-remove-small {' '.join(tokens)}: Length mismatch for remove small object postprocessing "
                            f"step: threshold length of {len(sizes)} while the number of predicted class is {n_classes}. "
                            "(SCT's ValueError); give one size, e.g. -remove-small 5vox")
    return unit, sizes


def threshold(data: np.ndarray, thr: float | None) -> np.ndarray:
    """``-thr``: ``data > thr`` as 0/1 when ``thr`` is set and not 0, else ``data`` unchanged."""
    return (data > thr).astype(np.uint8) if thr else data


def keep_largest(data: np.ndarray) -> np.ndarray:
    """``-largest 1``: values < 0.001 zeroed, then only the largest 6-connected nonzero component kept (first on ties)."""
    data = data.copy()
    data[data < 0.001] = 0
    components, n = ndimage.label(data)
    if n > 1:
        largest = np.bincount(components.ravel())[1:].argmax() + 1
        data[components != largest] = 0
    return data


def fill_holes(data: np.ndarray) -> np.ndarray:
    """``-fill-holes 1``: holes of a binary map filled (3x3x3 structure); a map with other values is refused, as SCT
    refuses it (its AssertionError, here a one-line error)."""
    if not np.array_equal(data, data.astype(bool)):
        raise RootletsError(f"-fill-holes 1: {FILL_HOLES_REFUSAL} (the rootlets map holds one value per spinal level)")
    return ndimage.binary_fill_holes(data, structure=np.ones((3,) * data.ndim)).astype(data.dtype)


def remove_small(data: np.ndarray, tokens: tuple[str, ...] | list[str], zooms: tuple[float, float, float]) -> np.ndarray:
    """``-remove-small``: 18-connected nonzero components smaller than the size removed (``mm3``: divided by the voxel
    volume of ``zooms`` and rounded half to even, as numpy rounds)."""
    unit, (size,) = remove_small_sizes(tokens)
    size_min = size if unit == "vox" else np.round(size / float(np.prod(zooms[:3])))
    components, n = ndimage.label(data, structure=ndimage.generate_binary_structure(3, 2))
    counts = np.bincount(components.ravel(), minlength=n + 1)
    small = np.flatnonzero(counts < size_min)
    small = small[small > 0]
    data = data.copy()
    data[np.isin(components, small)] = 0
    return data


def apply(data: np.ndarray, options: PostOptions, zooms: tuple[float, float, float]) -> np.ndarray:
    """SCT's post-processing of one label map (3D, in the input's grid, voxel size ``zooms`` in mm), in SCT's order."""
    if not options.active:
        return data
    data = threshold(data, options.thr)
    if options.largest:
        data = keep_largest(data)
    if options.fill_holes:
        data = fill_holes(data)
    if options.remove_small is not None:
        data = remove_small(data, options.remove_small, zooms)
    return data
