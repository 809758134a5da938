"""Inference: real nnU-Net v2 predictions through :class:`Segmenter`, on any orientation and spacing.

Orientation and I/O tests use a structurally real model with untrained weights (``random_model.py``): its labels
are arbitrary but deterministic, which is exactly what is needed to check that the same anatomy in different voxel
orders gives the same labels in world space. Accuracy is checked in ``test_segment_cli.py`` with the trained phantom
release.
"""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest
import torch
from support.random_model import write_random_model

from rootlets_task.core.errors import RootletsError
from rootlets_task.inference.segmenter import Segmenter, find_checkpoints, physical_cores, resolve_device
from rootlets_task.io import nifti
from rootlets_task.io.phantom import make_phantom
from rootlets_task.io.provenance import rootlets_sidecar
from rootlets_task.pipeline.segment import plan_outputs, segment, write_segmentation

COARSE = (2.0, 2.0, 2.0)  # keeps each random-model prediction to a few tiles


@pytest.fixture(scope="session")
def random_folder(tmp_path_factory):
    return write_random_model(tmp_path_factory.mktemp("random_model"))


@pytest.fixture(scope="session")
def segmenter(random_folder):
    return Segmenter(random_folder, device="cpu", verbose=0)


def _ras(data: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Array in RAS voxel order (same world sampling for grids that differ only by axis order/flips)."""
    return nib.as_closest_canonical(nib.Nifti1Image(data, affine)).get_fdata().astype(np.uint8)


def test_segmenter_loads_all_folds_on_cpu_with_physical_cores(tmp_path):
    folder = write_random_model(tmp_path, folds=(0, 1), checkpoint="checkpoint_best.pth")
    seg = Segmenter(folder, device="cpu", verbose=0)
    assert seg.folds == (0, 1) and seg.checkpoint == "checkpoint_best.pth"
    assert len(seg.predictor.list_of_parameters) == 2
    assert seg.device.type == "cpu" and seg.threads == physical_cores()
    assert 1 <= seg.threads <= len(os.sched_getaffinity(0))
    assert seg.predictor.use_mirroring is False and seg.predictor.tile_step_size == 0.5
    assert seg.predictor.perform_everything_on_device is False


def test_device_auto_falls_back_to_cpu_and_missing_devices_are_refused():
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(RootletsError, match="device cuda: not available"):
            resolve_device("cuda")
    with pytest.raises(RootletsError, match="unknown"):
        resolve_device("tpu")


def test_checkpoint_final_is_preferred_and_fold_all_is_all(tmp_path):
    folder = write_random_model(tmp_path, folds=("all",))
    write_random_model(tmp_path, folds=("all",), checkpoint="checkpoint_best.pth")
    assert find_checkpoints(folder) == (("all",), "checkpoint_final.pth")


@pytest.fixture(scope="session")
def lpi_labels(segmenter):
    img = make_phantom("LPI", COARSE).nifti("image").slicer[:, :, 20:68]  # 2 tiles of the random model
    return img, segmenter.segment_image(img)


@pytest.mark.parametrize("orient", ["RPI", "AIL", "PSR", "SAL"])
def test_same_image_in_any_orientation_gives_same_world_labels(segmenter, lpi_labels, orient):
    reference, expected = lpi_labels
    target = nib.orientations.axcodes2ornt(nifti.sct_to_axcodes(orient))
    img = reference.as_reoriented(nib.orientations.ornt_transform(nib.io_orientation(reference.affine), target))
    assert nifti.orientation(img) == orient
    out = segmenter.segment_image(img)
    assert out.dtype == np.uint8 and out.shape == img.shape
    np.testing.assert_array_equal(_ras(out, img.affine), _ras(expected, reference.affine))
    assert len(np.unique(expected)) > 2  # the random network is not constant, so the comparison means something


def test_anisotropic_axial_output_keeps_grid_affine_and_header(segmenter, tmp_path):
    path = tmp_path / "aniso.nii.gz"
    nib.save(make_phantom("RPI", (0.8, 0.8, 4.0)).nifti("image").slicer[:, :, 12:24], path)  # 12 thick axial slices
    out = write_segmentation(segment(path, segmenter=segmenter), tmp_path / "aniso_rootlets.nii.gz",
                             rootlets_sidecar(segmenter, path, "-i aniso.nii.gz"))
    src, res = nib.load(path), nib.load(out)
    assert res.shape == src.shape and res.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(res.affine, src.affine)
    for get in ("get_qform", "get_sform"):
        (a1, c1), (a2, c2) = getattr(src, get)(coded=True), getattr(res, get)(coded=True)
        np.testing.assert_array_equal(a1, a2)
        assert int(c1) == int(c2)
    assert res.header.get_zooms() == src.header.get_zooms()
    assert res.header.get_xyzt_units() == src.header.get_xyzt_units()
    assert nifti.orientation(res) == "RPI"
    assert (tmp_path / "aniso_rootlets.json").is_file()


def test_model_orientation_from_dataset_json(tmp_path):
    folder = write_random_model(tmp_path, orientation="AIL")
    seg = Segmenter(folder, device="cpu", verbose=0)
    img = make_phantom("LPI", (2.0, 2.5, 3.0)).nifti("image")  # anisotropic: every axis has its own voxel size
    prepared = seg.prepare(img)
    # SCT's AIL is nibabel's PSR: axis 0 runs to posterior (the LPI image's y, reversed), axis 1 to superior (its z),
    # axis 2 to the right (its x); nnU-Net gets (1, z, y, x) of that frame, i.e. [x, z, -y] of the LPI array
    lpi = np.asarray(img.dataobj)
    expected = lpi.transpose(1, 2, 0)[::-1].transpose(2, 1, 0)
    np.testing.assert_array_equal(prepared.data[0], expected)
    assert prepared.spacing == (2.0, 3.0, 2.5)  # (x, z, y) voxel sizes of the LPI image, in that order


def test_plan_outputs_default_exact_and_folder(tmp_path):
    a, b = tmp_path / "x" / "a.nii.gz", tmp_path / "y" / "b.nii"
    assert plan_outputs([a, b]) == [tmp_path / "x" / "a_rootlets.nii.gz", tmp_path / "y" / "b_rootlets.nii.gz"]
    assert plan_outputs([a], tmp_path / "o.nii.gz") == [tmp_path / "o.nii.gz"]
    assert plan_outputs([a, b], tmp_path / "out") == [tmp_path / "out" / "a_rootlets.nii.gz",
                                                      tmp_path / "out" / "b_rootlets.nii.gz"]


@pytest.mark.parametrize("inputs, output, message", [
    (["x/a.nii.gz", "y/a.nii.gz"], "out", "would be written for both"),
    (["x/a.nii.gz", "x/a.nii"], None, "would be written for both"),
    (["x/a.nii.gz", "x/a.nii.gz"], None, "would be written for both"),
    (["x/a.nii.gz", "x/b.nii.gz"], "o.nii.gz", "one file cannot hold 2 inputs"),
    (["x/a.nii.gz"], "x/a.nii.gz", "would overwrite the input file"),
    (["x/a.nii.gz", "x/a_rootlets.nii.gz"], None, "would overwrite the input file"),
    (["x/a.nii.gz"], "x/a.nii", "would overwrite the sidecar of input"),
])
def test_plan_outputs_refuses_collisions(tmp_path, inputs, output, message):
    with pytest.raises(RootletsError, match=message):
        plan_outputs([tmp_path / p for p in inputs], None if output is None else tmp_path / output)
