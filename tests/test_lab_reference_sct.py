"""``-method reference`` against the lab's own scripts run with a real SCT (tests/data/lab_reference/sct, README there).

The lab's 02a_rootlets_to_spinal_levels.py and discs_to_vertebral_levels.py ran unchanged on SCT's code, after
``sct_label_utils -project-centerline`` on the discs, on the phantom cases of :mod:`support.lab_cases` (rebuilt here
bit for bit: tilted, anisotropic, a PMJ above the cord's top, a disc above it, a cropped field of view, PAM50-like
grids) and on SCT's t2 test data. Ours, on the same inputs, must give every number of theirs in the lab's CSV layout
(``*_levels_lab.csv``): the same slices (0 differ) and the same distances and heights within 0.001 mm.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from support import lab_cases
from support.sct_data import T2, needs_t2

from rootlets_task.io.labels import read
from rootlets_task.levels import sctline
from rootlets_task.levels.compute import levels_from_files
from rootlets_task.levels.stats import LAB_TABLE_COLUMNS

DATA = Path(__file__).parent / "data" / "lab_reference" / "sct"
TOLERANCE_MM = 0.001
P = "phantom_T2w_label-"
LAB = {"rootlets": f"{P}rootlets_dseg_pmj_distance.csv",
       "vertebrae": f"{P}discs_dlabel_centerline_pmj_distance_vertebral_disc.csv"}


def _compare(ours_csv: Path, theirs_csv: Path, kind: str) -> pd.DataFrame:
    """Per level: ours and theirs side by side (the lab's columns), and the differences."""
    ours = pd.read_csv(ours_csv)
    assert list(ours.columns) == LAB_TABLE_COLUMNS
    ours = ours[ours.spinal_level_type == kind].set_index("spinal_level")
    theirs = pd.read_csv(theirs_csv).set_index("spinal_level")
    assert set(theirs.index) <= set(ours.index)
    both = ours.loc[theirs.index].add_suffix("_ours").join(theirs.add_suffix("_lab"))
    for column in ("distance_from_pmj_start", "distance_from_pmj_end", "height"):
        both[f"{column}_diff"] = both[f"{column}_ours"] - both[f"{column}_lab"]
    return both


def _assert_equal(both: pd.DataFrame) -> None:
    for column in ("distance_from_pmj_start", "distance_from_pmj_end", "height"):
        worst = both[f"{column}_diff"].abs().max()
        assert worst <= TOLERANCE_MM, (column, worst)
    for column in ("slice_start", "slice_end"):
        assert (both[f"{column}_ours"] == both[f"{column}_lab"]).all(), both[[f"{column}_ours", f"{column}_lab"]]


@pytest.fixture(scope="module", params=sorted(lab_cases.CASES))
def case(request, tmp_path_factory):
    """One case built as run_lab_sct.sh built it, then `rootlets levels -method reference` with the raw discs."""
    work = tmp_path_factory.mktemp(request.param)
    files = lab_cases.build(request.param, work / "inputs")
    outputs, result = levels_from_files(files["rootlets"], files["cord"], files["discs"], files["pmj"],
                                        out_dir=work / "ours", method="reference")
    return request.param, files, outputs, result


def test_spinal_levels_equal_the_labs(case):
    name, _, outputs, _ = case
    both = _compare(outputs["lab"], DATA / "cases" / name / LAB["rootlets"], "rootlets")
    assert list(both.index) == list(range(2, 10))
    _assert_equal(both)
    assert (both["fname_ours"] == both["fname_lab"]).all()  # the rootlets file the levels came from


def test_vertebral_levels_equal_the_labs(case):
    """The discs land on the slices sct_label_utils -project-centerline puts them on (b-spline centerline of the cord
    alone; a disc above the cord's top on its top slice), and each level takes those slices' distances. (The lab
    numbers levels by rank from the top disc; discs 1-9 are all present, so rank and value agree.)"""
    name, _, outputs, _ = case
    both = _compare(outputs["lab"], DATA / "cases" / name / LAB["vertebrae"], "vertebrae")
    assert list(both.index) == list(range(1, 9))
    _assert_equal(both)


def test_extrapolated_centerline_equals_scts(case):
    """SCT's -pmj centerline (cord ∪ PMJ, linear, Hanning 50 mm) point for point, in RPI voxels."""
    name, files, _, _ = case
    img, cord = read(files["cord"], "cord")
    _, pmj = read(files["pmj"], "pmj")
    grid = sctline.rpi(cord.shape, img.affine)
    ours = sctline.pmj_centerline(grid.array(cord), grid.array(pmj), float(grid.zooms[2]))
    theirs = np.genfromtxt(DATA / "cases" / name / f"{P}SC_seg_centerline_extrapolated.csv", delimiter=",")
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() < 1e-9


def test_a_disc_above_the_cord_lands_on_its_top_slice(case):
    """Where disc 1 lies above the cord segmentation's top, the lab puts it on that top slice; so do we."""
    name, files, _, result = case
    if name != "disc_above_cord":
        pytest.skip("only the disc_above_cord case has a disc above the cord")
    img, cord = read(files["cord"], "cord")
    _, discs = read(files["discs"], "discs")
    axis = result.centerline.axis
    up = img.affine[2, axis] > 0
    cord_slices = np.unique(np.argwhere(cord > 0)[:, axis])
    top = cord_slices.max() if up else cord_slices.min()
    disc1 = int(np.argwhere(discs == 1)[0][axis])
    assert (disc1 > top) if up else (disc1 < top)  # the case is what it says
    assert result.levels.set_index(["kind", "value"]).loc[("vertebral", 1), "rostral_slice"] == top


def test_origin_is_recorded(case):
    """The lab's distances start at the top of cord ∪ PMJ; where the cord reaches above the PMJ that is not the PMJ:
    recorded (the lab's distance of the PMJ slice), not hidden."""
    name, _, outputs, result = case
    document = json.loads(outputs["json"].read_text())
    assert result.reference == "centerline top (cord and PMJ)"
    assert document["origin"]["origin_offset_mm"] == pytest.approx(result.origin.offset_mm)
    if lab_cases.CASES[name].get("cord_below_mm") or "crop" in lab_cases.CASES[name]:
        assert result.origin.offset_mm == 0.0 and result.origin.note() is None  # the PMJ is the top
    else:
        assert result.origin.offset_mm > 5 and document["origin"]["note"] in document["warnings"]


@needs_t2
@pytest.mark.parametrize("rootlets", ["t2_seg-deepseg_rootlets-manual", "t2_seg-deepseg_rootlets"])
def test_sct_t2_equals_the_labs(rootlets, tmp_path):
    """SCT's t2 data with the PMJ substitute on the cord's top slice (origin offset 0): manual and model rootlets."""
    outputs, result = levels_from_files(T2 / f"{rootlets}.nii.gz", T2 / "t2_seg-manual.nii.gz",
                                        pmj=DATA / "t2" / "t2_pmj-topcord.nii.gz", out_dir=tmp_path, method="reference")
    assert abs(result.origin.offset_mm) < 0.05 and result.origin.note() is None
    both = _compare(outputs["lab"], DATA / "t2" / f"{rootlets}_pmj_distance.csv", "rootlets")
    _assert_equal(both)


def test_gapfree_keeps_the_anatomical_pmj(tmp_path):
    """The gap-free method measures from the PMJ along its own centerline (Savitzky-Golay smoothing, continuous disc
    projection): the first level's rostral end, which both methods keep at the rootlets, agrees with the reference's
    less the origin offset to within what the two smoothings differ by (a few hundredths of a mm)."""
    files = lab_cases.build("tilt15", tmp_path / "in")
    args = (files["rootlets"], files["cord"], files["discs"], files["pmj"])
    _, reference = levels_from_files(*args, out_dir=tmp_path / "ref", method="reference")
    _, gapfree = levels_from_files(*args, out_dir=tmp_path / "gap")
    assert gapfree.reference == "PMJ" and gapfree.origin.offset_mm == 0.0 and gapfree.origin.note() is None
    ref = reference.levels.set_index(["kind", "value"])
    gap = gapfree.levels.set_index(["kind", "value"])
    offset = reference.origin.offset_mm
    for end, value in (("rostral_mm", 2), ("caudal_mm", 9)):
        assert gap.loc[("spinal", value), end] == pytest.approx(ref.loc[("spinal", value), end] - offset, abs=0.05)


def test_two_discs_above_the_cord_share_its_top_slice(tmp_path):
    """Discs 1 and 2 both above the cord's top land on the same slice (SCT warns "Two labels were projected on the same
    coordinate"): not an order error, a vertebral level of height 0 and a note saying why."""
    files = lab_cases.build("tilt15", tmp_path / "in")
    lab_cases._cut_cord(files, 45.0)
    img, rootlets = read(files["rootlets"], "rootlets")
    nib.save(nib.Nifti1Image(np.where(rootlets == 2, 0, rootlets).astype(np.uint8), img.affine, img.header),
             files["rootlets"])  # C2's rootlets lie above the cut
    _, result = levels_from_files(files["rootlets"], files["cord"], files["discs"], files["pmj"], out_dir=tmp_path / "out",
                                  method="reference")
    c1 = result.levels.set_index(["kind", "value"]).loc[("vertebral", 1)]
    assert c1["height_mm"] == 0 and c1["rostral_slice"] == c1["caudal_slice"]
    assert any("discs 1 and 2 land on the same centerline slice" in w for w in result.warnings)
