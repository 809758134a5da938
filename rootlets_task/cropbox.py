"""A crop box without a cord segmentation: the spinal cord detected by sc-crop, the detector SCT runs before its cropped models.

SCT HEAD calls ``sc_crop.detect(img, **padding)`` and crops to the inclusive voxel box it returns
(``spinalcordtoolbox/deepseg/inference.py``, padding from the model's ``crop_metadata.json``). Here the detected box
feeds the crop lever of :meth:`rootlets_task.inference.Segmenter.segment_image`: like
:func:`rootlets_task.inference.crop_box` with a cord mask, it is the cord's box plus ``margin_mm`` in the axial plane
and the whole superior-inferior extent. sc-crop (``pip install sc-crop``) downloads its YOLO detector on first use
and runs it with ultralytics, which needs a working torchvision.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io

import nibabel as nib

from rootlets_task import nifti
from rootlets_task.errors import RootletsError

AXIAL_FACES = ("left", "right", "anterior", "posterior")


def sc_crop_available() -> bool:
    """True when the ``sc-crop`` package is installed."""
    return importlib.util.find_spec("sc_crop") is not None


def detect_box(img: nib.Nifti1Image, margin_mm: float, **detect_kwargs) -> tuple[slice, slice, slice]:
    """Voxel box of ``img`` around the cord that sc-crop detects, ``margin_mm`` in the axial plane, full S-I extent.

    ``detect_kwargs`` go to ``sc_crop.detect`` (e.g. ``model_path``, ``conf``, ``regularization``).
    """
    name = img.get_filename() or "image"
    if not sc_crop_available():
        raise RootletsError(f"{name}: no cord mask given and sc-crop is not installed; run `pip install sc-crop` "
                            "or give a cord mask")
    import sc_crop

    padding = {f"pad_{face}": margin_mm for face in AXIAL_FACES} | {"pad_superior": 0.0, "pad_inferior": 0.0}
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # sc-crop prints its progress
            bbox = sc_crop.detect(img, **padding, **detect_kwargs)
    except Exception as exc:  # no cord found, weights not downloadable, ultralytics/torchvision missing or broken
        if isinstance(exc, RuntimeError) and str(exc).startswith("No spinal cord detected"):
            raise RootletsError(f"{name}: sc-crop found no spinal cord; give a cord mask instead") from None
        raise RootletsError(f"{name}: sc-crop cannot run here ({type(exc).__name__}: {exc}); "
                            "give a cord mask instead") from None
    box = [slice(int(bbox[f"{axis}min"]), int(bbox[f"{axis}max"]) + 1) for axis in "xyz"]
    si = nifti.si_axis(img.affine)
    box[si] = slice(0, img.shape[si])
    return tuple(box)
