"""Speed levers keep the result: OpenVINO backend vs PyTorch, spacing snap, float32 logits export, cord crop.

These are agreement tests, not timing tests (timings: benchmarks/bench_inference.py). The random-weight model
checks numerics (backend, export); the trained phantom release checks what cropping around the cord costs.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from support.random_model import write_random_model

import rootlets_task
from rootlets_task.inference import backends
from rootlets_task.inference.cropping import crop_box, cut_note, grow_to_patch, touches_box_side
from rootlets_task.inference.segmenter import Segmenter
from rootlets_task.io import nifti
from rootlets_task.io.metrics import dice_per_level
from rootlets_task.io.phantom import make_phantom
from rootlets_task.io.provenance import rootlets_sidecar
from rootlets_task.pipeline.segment import write_segmentation

COARSE = (2.0, 2.0, 2.0)  # the random model's plan spacing
PHANTOM_ZIP = Path(rootlets_task.__file__).parent / "data" / "model-spinal-rootlets-phantom.zip"
needs_openvino = pytest.mark.skipif(not backends.openvino_available(), reason="openvino extra not installed")


@pytest.fixture(scope="module")
def random_folder(tmp_path_factory):
    return write_random_model(tmp_path_factory.mktemp("random_model"))


@pytest.fixture(scope="module")
def torch_segmenter(random_folder):
    return Segmenter(random_folder, device="cpu", verbose=0, backend="torch")


@pytest.fixture(scope="module")
def coarse_image():
    return make_phantom("LPI", COARSE).nifti("image").slicer[:, :, 20:68]


@pytest.fixture(scope="module")
def phantom_folder(tmp_path_factory):
    if not PHANTOM_ZIP.exists():
        pytest.skip("bundled phantom release not built yet")
    dest = tmp_path_factory.mktemp("phantom_release")
    with zipfile.ZipFile(PHANTOM_ZIP) as zf:
        zf.extractall(dest)
    return next(dest.rglob("nnUNetTrainer*__*"))


def _logits(segmenter: Segmenter, patch: torch.Tensor) -> torch.Tensor:
    net = segmenter.predictor.network
    net.load_state_dict(segmenter.predictor.list_of_parameters[0])
    with torch.no_grad():
        return net(patch)


@needs_openvino
def test_openvino_backend_matches_torch(random_folder, torch_segmenter, coarse_image):
    ov = Segmenter(random_folder, device="cpu", verbose=0)  # auto picks OpenVINO on CPU when installed
    assert ov.backend == "openvino" and ov.settings["Backend"] == "openvino"
    patch = backends.check_patch(tuple(ov.predictor.configuration_manager.patch_size), seed=3)
    assert backends.max_softmax_difference(_logits(ov, patch), _logits(torch_segmenter, patch)) <= backends.TOLERANCE
    a, b = torch_segmenter.segment_image(coarse_image), ov.segment_image(coarse_image)
    assert len(np.unique(a)) > 2 and (a == b).mean() >= 0.999


@needs_openvino
def test_openvino_failing_its_check_falls_back_to_torch(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(backends, "TOLERANCE", -1.0)  # no backend can pass: stands in for a broken OpenVINO build
    seg = Segmenter(write_random_model(tmp_path), device="cpu", verbose=0)
    assert seg.backend == "torch" and any("using PyTorch" in r.getMessage() and r.levelname == "WARNING"
                                          for r in caplog.records)


def test_spacing_within_tolerance_is_not_resampled(torch_segmenter, coarse_image):
    off = nib.Nifti1Image(np.asanyarray(coarse_image.dataobj), coarse_image.affine @ np.diag([1.004, 0.997, 1.003, 1]))
    assert torch_segmenter.prepare(off).spacing == COARSE
    assert np.array_equal(torch_segmenter.segment_image(off), torch_segmenter.segment_image(coarse_image))
    far = nib.Nifti1Image(np.asanyarray(coarse_image.dataobj), coarse_image.affine @ np.diag([1.1, 1, 1, 1]))
    assert torch_segmenter.prepare(far).spacing[2] == pytest.approx(2.2)


def test_float32_logits_export_matches_nnunet_export(torch_segmenter):
    from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape

    s = torch_segmenter
    img = make_phantom("LPI", (1.5, 1.5, 1.5)).nifti("image").slicer[:, :, 30:90]  # resampled to 2 mm and back
    data, properties = s.preprocess(s.prepare(img))
    logits = s.predict_logits(data)
    assert tuple(logits.shape[1:]) != tuple(properties["shape_after_cropping_and_before_resampling"])
    p = s.predictor
    nnunet = convert_predicted_logits_to_segmentation_with_correct_shape(
        logits.clone(), p.plans_manager, p.configuration_manager, p.label_manager, properties)
    ours = s.export(logits, properties)
    assert ours.shape == nnunet.shape and len(np.unique(nnunet)) > 2
    assert (ours == nnunet).mean() >= 0.999


def test_grow_to_patch():
    # smaller than the patch: grown symmetrically; at an edge: shifted inside; larger than the patch or the image: as is
    assert grow_to_patch((slice(40, 50), slice(0, 8), slice(5, 95)), (100, 100, 20), (30, 30, 30)) == (
        slice(30, 60), slice(0, 30), slice(0, 20))
    assert grow_to_patch((slice(0, 80), slice(90, 100), slice(3, 4)), (100, 100, 6), (64, 32, 32)) == (
        slice(0, 80), slice(68, 100), slice(0, 6))


def test_touches_box_side():
    labels = np.zeros((10, 10, 10), np.uint8)
    box = (slice(2, 8), slice(0, 10), slice(3, 10))
    labels[4, 5, 5] = 1
    assert not touches_box_side(labels, box)
    labels[4, 0, 5] = 1  # on the image border, which is a side of the box but cuts nothing
    assert not touches_box_side(labels, box)
    labels[7, 5, 5] = 1  # on the box's last row along axis 0
    assert touches_box_side(labels, box)
    labels[7, 5, 5], labels[7, 5, 1] = 0, 1  # the same row but outside the box along axis 2
    assert not touches_box_side(labels, box)


def _count_tiles(seg: Segmenter, img, box):
    net, calls = seg.predictor.network, []
    forward = net.forward
    net.forward = lambda x: calls.append(1) or forward(x)
    try:
        return seg.segment_image(img, box), len(calls)
    finally:
        del net.forward


def _mean_dice(truth: np.ndarray, labels: np.ndarray) -> float:
    return float(np.nanmean(list(dice_per_level(labels, truth, np.unique(truth)).values())))


def test_crop_to_cord_runs_fewer_tiles_and_keeps_accuracy(phantom_folder, tmp_path):
    seg = Segmenter(phantom_folder, device="cpu", verbose=0)
    ph = make_phantom("LPI", (1.0, 1.0, 1.0), seed=7)
    cut = (slice(None), slice(None), slice(60, 124))  # C4-C6, one tile of the phantom model along S-I
    img, cord, truth = ph.nifti("image").slicer[cut], ph.nifti("cord").slicer[cut], ph.rootlets[cut]
    box = crop_box(img, cord)
    assert truth[box].sum() == truth.sum() > 0  # the default margin keeps every true rootlet voxel
    full, n_full = _count_tiles(seg, img, None)
    cropped, n_crop = _count_tiles(seg, img, box)
    assert cut_note(cropped, box, 10.0) == []  # the default margin keeps the rootlets off the box's sides: no warning
    assert n_crop < n_full / 2  # 40x50 mm in-plane is 2x3 tiles of 32 mm; the crop needs one
    assert cropped[box].sum() == cropped.sum() > 100  # labels only inside the box, and the model finds rootlets
    assert (cropped == full).mean() >= 0.995  # the voxel agreement; per-level Dice differs (README)
    assert _mean_dice(truth, cropped) >= _mean_dice(truth, full) - 0.05  # about as accurate against the truth
    tight = crop_box(img, cord, margin_mm=2.0)  # too tight: rootlets cut by the box are reported
    (note,) = cut_note(seg.segment_image(img, tight), tight, 2.0)
    assert "rootlets reach the side of the crop box (2 mm around the cord)" in note

    out = write_segmentation(nifti.label_image(cropped, img), tmp_path / "out.nii.gz",
                             rootlets_sidecar(seg, None, "-i image", {"CordFile": "cord.nii.gz", "MarginMM": 10.0}))
    assert np.array_equal(np.asarray(nib.load(out).dataobj), cropped)
    crop = json.loads(out.with_name("out.json").read_text())["GeneratedBy"][0]["Settings"]["CropToCord"]
    assert crop == {"CordFile": "cord.nii.gz", "MarginMM": 10.0}


def test_crop_to_cord_on_a_resampled_input(phantom_folder):
    # nnU-Net reorients and resamples this input (0.7 x 0.7 x 1.5 mm, RPI): the box must map onto its grid and back
    seg = Segmenter(phantom_folder, device="cpu", verbose=0)
    ph = make_phantom("RPI", (0.7, 0.7, 1.5), seed=8)
    cut = (slice(None), slice(None), slice(40, 83))
    img, cord = ph.nifti("image").slicer[cut], ph.nifti("cord").slicer[cut]
    box = crop_box(img, cord)
    labels = seg.segment_image(img, box)
    assert labels.shape == img.shape and labels[box].sum() == labels.sum() > 0
