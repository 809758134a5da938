"""Helpers the benchmark scripts share: the bundled phantom release unpacked, our file job, a tile counter."""

from __future__ import annotations

import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np

from rootlets_task.inference.cropping import CROP_MARGIN_MM, crop_box
from rootlets_task.io import nifti, provenance
from rootlets_task.models.releases import PHANTOM_ZIP
from rootlets_task.pipeline.segment import write_segmentation


def phantom_release(work: Path) -> Path:
    """The bundled phantom release unpacked under ``work``; returns its trainer folder."""
    dest = work / "phantom_release"
    with zipfile.ZipFile(PHANTOM_ZIP) as zf:
        zf.extractall(dest)
    return next(dest.rglob("nnUNetTrainer*__*")).resolve()


def segment_to_file(segmenter, path: Path, out: Path, cord: Path | None = None, margin_mm: float = CROP_MARGIN_MM) -> Path:
    """What ``rootlets`` does for one file (with ``cord``: cropped around it, as ``-levels -crop-to-cord`` does)."""
    img = nifti.load(path)
    box = None if cord is None else crop_box(img, nib.load(cord), margin_mm)
    labels = nifti.label_image(segmenter.segment_image(img, box), img)
    return write_segmentation(labels, out, provenance.rootlets_sidecar(segmenter, path, f"-i {path.name}"))


def count_tiles(segmenter, img, box) -> tuple[np.ndarray, int]:
    """Segment ``img`` (in ``box``) and count the network calls (one per tile without test-time augmentation)."""
    net, calls = segmenter.predictor.network, []
    forward = net.forward
    net.forward = lambda x: calls.append(1) or forward(x)
    try:
        return segmenter.segment_image(img, box), len(calls)
    finally:
        del net.forward
