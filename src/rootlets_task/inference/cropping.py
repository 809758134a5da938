"""Where to run the network when it need not see the whole image: a box around the spinal cord (pure geometry).

The crop lever (``-crop-to-cord``) runs the sliding window on the cord's box plus a margin in the axial plane (the
whole superior-inferior extent), grown to at least one network patch per axis. Real T2w rootlets lie up to 6 mm
outside the cord's box, hence the 10 mm default margin (docs: segmentation and speed).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

import nibabel as nib
import numpy as np

from rootlets_task.core.errors import RootletsError
from rootlets_task.io import nifti

CROP_MARGIN_MM = 10.0
Box = tuple[slice, slice, slice]


def crop_box(img: nib.Nifti1Image, cord: nib.Nifti1Image | np.ndarray, margin_mm: float = CROP_MARGIN_MM) -> Box:
    """Voxel box of ``img`` holding the cord mask plus ``margin_mm`` in the axial plane and the full S-I extent."""
    mask = np.asarray(cord.dataobj if isinstance(cord, nib.Nifti1Image) else cord) > 0
    name = cord.get_filename() if isinstance(cord, nib.Nifti1Image) else None
    if mask.shape != img.shape[:3] or (isinstance(cord, nib.Nifti1Image) and not np.allclose(cord.affine, img.affine, atol=1e-3)):
        raise RootletsError(f"cord mask {name or ''}: not on the image grid {img.shape[:3]}; resample it onto the image first")
    if not mask.any():
        raise RootletsError(f"cord mask {name or ''}: empty; segment the cord first (or segment without a cord mask)")
    si = nifti.si_axis(img.affine)
    zooms = img.header.get_zooms()[:3]
    box = []
    for axis in range(3):
        if axis == si:
            box.append(slice(0, img.shape[axis]))
            continue
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        pad = int(np.ceil(margin_mm / zooms[axis]))
        box.append(slice(max(0, hits[0] - pad), min(img.shape[axis], hits[-1] + 1 + pad)))
    return cast(Box, tuple(box))


def lever_box(img: nib.Nifti1Image, cord: str | os.PathLike | np.ndarray | None = None,
              margin_mm: float = CROP_MARGIN_MM) -> tuple[Box, dict]:
    """The crop lever's box and what a sidecar records about it (``Settings.CropToCord``).

    From the cord mask when given (a file, resampled onto ``img`` like the chain's label files, or an array on its
    grid), else from the cord sc-crop detects (:func:`detected_box`; a one-line error when sc-crop cannot run).
    """
    if cord is None:
        box, info = detected_box(img, margin_mm), {"Source": "sc-crop"}
    elif isinstance(cord, str | os.PathLike):
        from rootlets_task.io import labels

        try:
            mask, _ = labels.load(cord, "cord", img)
        except ValueError as exc:
            raise RootletsError(f"cord {cord}: {exc}; give the cord mask of this image with -s") from None
        box, info = crop_box(img, mask, margin_mm), {"Source": "cord mask", "CordFile": str(Path(cord).absolute())}
    else:
        box, info = crop_box(img, cord, margin_mm), {"Source": "cord mask"}
    return box, {**info, "MarginMM": float(margin_mm), "Box": [[int(b.start), int(b.stop)] for b in box]}


def touches_box_side(labels: np.ndarray, box: Box) -> bool:
    """True when a label voxel lies on a face of ``box`` that is not the image's own border (labels cut by the box)."""
    for axis, b in enumerate(box):
        for index in {b.start, b.stop - 1} - {0, labels.shape[axis] - 1}:
            if np.take(labels, index, axis=axis)[tuple(box[a] for a in range(3) if a != axis)].any():
                return True
    return False


def cut_note(labels: np.ndarray, box: Box, margin_mm: float) -> list[str]:
    """The warning a cropped segmentation deserves when its labels reach the side of the box."""
    if not touches_box_side(labels, box):
        return []
    return [f"rootlets reach the side of the crop box ({margin_mm:g} mm around the cord): some may lie outside it; "
            "segment without -crop-to-cord to keep them"]


def grow_to_patch(box: tuple[slice, ...], shape: tuple[int, ...], patch: tuple[int, ...]) -> tuple[slice, ...]:
    """``box`` grown symmetrically to at least ``patch`` voxels per axis (as far as ``shape`` allows).

    A sub-image smaller than the patch would be zero-padded by nnU-Net; the image around it is better context.
    """
    grown = []
    for b, n, k in zip(box, shape, patch, strict=True):
        size = min(max(b.stop - b.start, k), n)
        start = min(max(0, (b.start + b.stop - size) // 2), n - size)
        grown.append(slice(start, start + size))
    return tuple(grown)


CROP_PADS = ("pad_superior", "pad_inferior", "pad_left", "pad_right", "pad_anterior", "pad_posterior")
CROP_METADATA = "crop_metadata.json"


def read_crop_metadata(model_root: Path) -> dict[str, float] | None:
    """The padding (mm) of a model trained on sc-crop crops (SCT HEAD's ``crop_metadata.json`` beside the trainer
    folder), or None for a model that sees whole images. All six ``pad_*`` keys are required, as SCT requires them."""
    from rootlets_task.core.files import read_json

    path = Path(model_root) / CROP_METADATA
    if not path.exists():
        return None
    content = read_json(path, limit=1 << 20)
    if not isinstance(content, dict):
        raise RootletsError(f"{path}: unreadable; reinstall the release")
    missing = [k for k in CROP_PADS if k not in content]
    bad = [k for k in CROP_PADS if k in content and not (isinstance(content[k], int | float) and 0 <= content[k] <= 500)]
    if missing or bad:
        raise RootletsError(f"{path}: {'missing ' + ', '.join(missing) if missing else 'invalid ' + ', '.join(bad)} "
                            "(six paddings in mm are needed); reinstall the release")
    return {k: float(content[k]) for k in CROP_PADS}


def _sc_crop(img: nib.Nifti1Image, pads: dict[str, float], why: str, **detect_kwargs) -> list[slice]:
    """The padded cord box of the ``sc-crop`` package (inclusive indices turned into slices), or a one-line error."""
    import contextlib
    import io

    name = img.get_filename() or "image"
    try:
        import sc_crop
    except ImportError:
        raise RootletsError(f"{name}: {why} and sc-crop is not installed; run `pip install sc-crop`") from None
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # sc-crop prints its progress
            found = sc_crop.detect(img, **pads, **detect_kwargs)
    except Exception as exc:  # no cord found, weights not downloadable, ultralytics/torchvision missing or broken
        if isinstance(exc, RuntimeError) and str(exc).startswith("No spinal cord detected"):
            raise RootletsError(f"{name}: sc-crop found no spinal cord; check the image (or give a cord mask)") from None
        raise RootletsError(f"{name}: sc-crop cannot run here ({type(exc).__name__}: {exc})") from None
    box = [slice(int(found[f"{a}min"]), int(found[f"{a}max"]) + 1) for a in "xyz"]
    if any(b.start < 0 or b.stop > n or b.stop - b.start < 2 for b, n in zip(box, img.shape[:3], strict=True)):
        raise RootletsError(f"{name}: sc-crop gave the box {found} outside the image {img.shape[:3]}; check the image")
    return box


def sc_crop_box(img: nib.Nifti1Image, pads: dict[str, float]) -> Box:
    """The crop a model trained on sc-crop crops sees: sc-crop's cord box with the model's ``pads`` (mm, per face)."""
    return cast(Box, tuple(_sc_crop(img, pads, "this model was trained on images cropped around the cord (crop_metadata.json)")))


def detected_box(img: nib.Nifti1Image, margin_mm: float = CROP_MARGIN_MM, **detect_kwargs) -> Box:
    """The crop lever's box without a cord mask: the cord sc-crop detects (the detector SCT HEAD runs before its
    cropped models) plus ``margin_mm`` in the axial plane, the whole superior-inferior extent, like :func:`crop_box`.

    ``detect_kwargs`` go to ``sc_crop.detect`` (e.g. ``model_path``, ``conf``, ``regularization``). sc-crop downloads
    its YOLO detector on first use and runs it with ultralytics, which needs a working torchvision.
    """
    pads = {f"pad_{face}": margin_mm for face in ("left", "right", "anterior", "posterior")}
    box = _sc_crop(img, pads | {"pad_superior": 0.0, "pad_inferior": 0.0}, "no cord mask was given", **detect_kwargs)
    si = nifti.si_axis(img.affine)
    box[si] = slice(0, img.shape[si])
    return cast(Box, tuple(box))
