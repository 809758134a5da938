"""Confidence per level: from the same logits as the labels (labels byte-identical), equal to nnU-Net's own
probabilities, carried by the rootlets sidecar into the levels table and the QC index (sortable, lowest first)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from support.chromium import MISSING, Chromium, chromium_path
from support.random_model import write_random_model
from support.required import needs

from rootlets_task.cli.rootlets import main
from rootlets_task.inference import confidence
from rootlets_task.inference.cropping import crop_box
from rootlets_task.inference.segmenter import Segmenter
from rootlets_task.io import nifti
from rootlets_task.io.phantom import make_phantom, write_phantom
from rootlets_task.levels.compute import compute_levels
from rootlets_task.qc.report import qc_subject

# grids of the random model (plans spacing 2 mm): no resampling, isotropic resampling (our torch path) and an
# anisotropic one that nnU-Net resamples itself (separate z), in three orientations
GRIDS = {"LPI 2 mm": ("LPI", (2.0, 2.0, 2.0)), "AIL 1.5x2x2.5": ("AIL", (1.5, 2.0, 2.5)), "PSR 2x2x6": ("PSR", (2.0, 2.0, 6.0))}


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory):
    return Segmenter(write_random_model(tmp_path_factory.mktemp("random")), device="cpu", verbose=0)


@pytest.mark.parametrize("grid", GRIDS)
def test_labels_byte_identical_with_and_without_confidence(segmenter, grid):
    orient, spacing = GRIDS[grid]
    ph = make_phantom(orient, spacing)
    img = ph.nifti("image")
    plain = segmenter.segment_image(img)
    prediction = segmenter.predict(img)
    assert prediction.labels.dtype == plain.dtype and prediction.labels.tobytes() == plain.tobytes()
    assert prediction.confidence["LabelsSHA256"] == confidence.digest(plain)
    box = crop_box(img, ph.nifti("cord"))
    assert segmenter.predict(img, box).labels.tobytes() == segmenter.segment_image(img, box).tobytes()


@pytest.mark.parametrize("grid", GRIDS)
def test_probabilities_equal_nnunets_own(segmenter, grid):
    """Our probability of each voxel's label equals the largest class probability nnU-Net's export returns with
    return_probabilities=True (the second output of the same function), voxel for voxel on the prepared grid. Both get
    the logits after the Segmenter's own (faster, torch) resampling, where it applies, as the labels do."""
    from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape

    orient, spacing = GRIDS[grid]
    img = make_phantom(orient, spacing).nifti("image")
    prepared = segmenter.prepare(img)
    data, properties = segmenter.preprocess(prepared)
    logits = segmenter.predict_logits(data)
    labels, probability = segmenter.export_with_probability(logits, properties)
    p = segmenter.predictor
    nn_labels, nn_probs = convert_predicted_logits_to_segmentation_with_correct_shape(
        segmenter.resample_logits(logits, properties), p.plans_manager, p.configuration_manager, p.label_manager,
        properties, return_probabilities=True)
    assert np.array_equal(labels, nn_labels)
    inside = nn_labels > 0
    np.testing.assert_allclose(probability[inside], nn_probs.max(0)[inside], rtol=0, atol=2e-6)


def test_summary_by_hand():
    labels = np.zeros((2, 2, 3), np.uint8)
    labels[0, 0, :] = 3
    labels[1, 1, :2] = 5
    probability = np.full(labels.shape, 0.9, np.float32)
    probability[0, 0, :] = (0.4, 0.8, 0.9)
    probability[1, 1, :2] = (0.3, 0.35)
    found = confidence.summarise(labels, probability)
    assert set(found["Levels"]) == {"3", "5"}
    c3, c5 = found["Levels"]["3"], found["Levels"]["5"]
    assert (c3["Level"], c3["Voxels"]) == ("C3", 3) and c3["MeanProbability"] == pytest.approx(0.7, abs=1e-6)
    assert c3["FractionBelowHalf"] == pytest.approx(1 / 3)
    assert c5["MeanProbability"] == pytest.approx(0.325, abs=1e-6) and c5["FractionBelowHalf"] == 1.0
    assert found["Voxels"] == 5 and found["MeanProbability"] == pytest.approx((2.1 + 0.65) / 5, abs=1e-6)
    assert found["FractionBelowHalf"] == pytest.approx(3 / 5)
    assert (found["LowestLevel"], found["LowestMeanProbability"]) == ("C5", pytest.approx(0.325, abs=1e-6))
    assert confidence.matching(found, labels) is found and confidence.matching(found, labels[::-1]) is None


def test_sidecar_levels_table_and_hand_edits(phantom_home, tmp_path, capsys):
    """`rootlets -i` writes Confidence into the sidecar; `rootlets levels` puts it on the spinal rows; a file edited
    by hand afterwards (one voxel) is not credited with the network's confidence."""
    files = write_phantom(tmp_path / "ph", "LPI", seed=3)
    out = tmp_path / "sub_rootlets.nii.gz"
    assert main(["-i", str(files["image"]), "-o", str(out), "-release", "phantom"]) == 0
    sidecar = json.loads(out.with_name("sub_rootlets.json").read_text())["Confidence"]
    labels = np.asarray(nib.load(out).dataobj)
    assert sidecar["LabelsSHA256"] == confidence.digest(labels) and sidecar["Voxels"] == int((labels > 0).sum())
    assert 0 < sidecar["LowestMeanProbability"] <= sidecar["MeanProbability"] <= 1
    capsys.readouterr()
    args = ["levels", "-r", str(out), "-s", str(files["cord"]), "-pmj", str(files["pmj"]), "-o"]
    assert main([*args, str(tmp_path / "lv")]) == 0
    assert "mean_probability" in capsys.readouterr().out
    table = pd.read_csv(tmp_path / "lv" / "sub_rootlets_levels.csv")
    spinal = table[table.kind == "spinal"]
    for row in spinal.itertuples():
        level = sidecar["Levels"][str(row.value)]
        assert row.mean_probability == pytest.approx(level["MeanProbability"])
        assert row.fraction_below_half == pytest.approx(level["FractionBelowHalf"])
    assert json.loads((tmp_path / "lv" / "sub_rootlets_levels.json").read_text())["confidence"]["Voxels"] == sidecar["Voxels"]
    edited = labels.copy()
    edited[tuple(np.argwhere(labels > 0)[0])] = 0
    nib.save(nifti.label_image(edited, nib.load(out)), out)
    assert main([*args, str(tmp_path / "edited")]) == 0
    table = pd.read_csv(tmp_path / "edited" / "sub_rootlets_levels.csv")
    assert table["mean_probability"].isna().all()


@needs("chromium", chromium_path(), MISSING)
def test_qc_index_sorts_by_confidence_and_filters_numbering(tmp_path):
    """Three subjects: the index sorts them lowest confidence first, and the numbering filter keeps the one whose
    levels are named one off."""
    qc_dir = tmp_path / "qc"
    ph = make_phantom("LPI", (1.0, 1.0, 1.0), seed=2)
    means = {"sub-a": 0.91, "sub-b": 0.42, "sub-c": 0.77}
    for subject, mean in means.items():
        rootlets = np.where(ph.rootlets > 0, ph.rootlets.astype(np.int32) + (subject == "sub-c"), 0)
        result = compute_levels(rootlets, ph.cord, ph.affine, ph.discs, ph.pmj)
        probability = np.where(rootlets > 0, mean, 0.0)
        qc_subject(qc_dir, ph.nifti("image"), nib.Nifti1Image(rootlets.astype(np.uint8), ph.affine), ph.nifti("cord"),
                   levels=result.levels, shift=result.shift, subject=subject, warnings=result.warnings,
                   confidence=confidence.summarise(rootlets, probability))
    report = qc_dir / "rootlets_task"
    page = (report / "sub-c" / "index.html").read_text()
    assert "Numbering check: shifted" in page and "C3 → C2" in page and "Network confidence" in page
    record = json.loads((report / "_records" / "sub-b.json").read_text())
    assert record["confidence"]["LowestMeanProbability"] == pytest.approx(0.42)
    with Chromium(tmp_path / "profile") as browser:
        browser.open((report / "index.html").as_uri())
        order = "Array.from(document.querySelectorAll('#subjects tbody tr')).map(r => r.dataset.subject)"
        assert browser.evaluate(order) == ["sub-a", "sub-b", "sub-c"]
        browser.evaluate("document.querySelector('th[data-key=\"confidence\"]').click()")
        assert browser.evaluate(order) == ["sub-b", "sub-c", "sub-a"]  # lowest first
        browser.evaluate("document.querySelector('th[data-key=\"confidence\"]').click()")
        assert browser.evaluate(order) == ["sub-a", "sub-c", "sub-b"]
        shown = """(() => { const c = document.getElementById("only-numbering"); c.checked = true;
            c.dispatchEvent(new Event("change"));
            return Array.from(document.querySelectorAll("#subjects tbody tr")).filter(r => !r.hidden)
                .map(r => r.dataset.subject); })()"""
        assert browser.evaluate(shown) == ["sub-c"]
        assert browser.errors == []

