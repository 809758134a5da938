"""``-method reference`` against the lab's own scripts run with a real SCT (tests/data/lab_reference/sct, README there).

The lab's 02a_rootlets_to_spinal_levels.py and discs_to_vertebral_levels.py ran unchanged on the tilted phantom
(``rootlets phantom -tilt 15``, seed 0: rebuilt here bit for bit) and on SCT's t2 test data. Ours, on the same
inputs, must give their numbers: the distances from the lab's origin (the top of the cord + PMJ centerline), the
heights, and the slices (RPI z) of every level, in the lab's own CSV layout (``*_levels_lab.csv``).

Tolerance: 0.02 mm for distances and heights. The two centerlines differ only in their smoothing (SCT: Hanning
window in voxel space; ours: Savitzky-Golay in world mm), which moves the arc length by about 0.01 mm over 170 mm
on these cords; slices are identical.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from support.sct_data import T2, needs_t2

from rootlets_task.io.phantom import write_phantom
from rootlets_task.levels.compute import levels_from_files
from rootlets_task.levels.stats import LAB_TABLE_COLUMNS

DATA = Path(__file__).parent / "data" / "lab_reference" / "sct"
TOLERANCE_MM = 0.02


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


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    """`rootlets phantom -tilt 15` (seed 0), then `rootlets levels -method reference` with the raw discs."""
    work = tmp_path_factory.mktemp("lab_phantom")
    files = write_phantom(work / "phantom", "LPI", (1.0, 1.0, 1.0), 0, 15.0)
    outputs, result = levels_from_files(files["rootlets"], files["cord"], files["discs"], files["pmj"],
                                        out_dir=work / "ours", method="reference")
    return outputs, result


def test_phantom_spinal_levels_equal_the_labs(phantom):
    outputs, _ = phantom
    both = _compare(outputs["lab"], DATA / "phantom" / "phantom_T2w_label-rootlets_dseg_pmj_distance.csv", "rootlets")
    assert list(both.index) == list(range(2, 10))
    _assert_equal(both)
    assert (both["fname_ours"] == both["fname_lab"]).all()  # the rootlets file the levels came from


def test_phantom_vertebral_levels_equal_the_labs(phantom):
    """The lab projects each disc onto the centerline (sct_label_utils -project-centerline) and reads the distance
    of that whole slice; so do we. (The lab numbers levels by rank from the top disc; here discs 1-9 are all present,
    so rank and value agree.)"""
    outputs, _ = phantom
    both = _compare(outputs["lab"], DATA / "phantom" /
                    "phantom_T2w_label-discs_dlabel_centerline_pmj_distance_vertebral_disc.csv", "vertebrae")
    assert list(both.index) == list(range(1, 9))
    _assert_equal(both)


def test_phantom_origin_is_recorded(phantom):
    """The lab's distances start at the cord's top, 9.0 mm above the PMJ in this phantom: recorded, not hidden."""
    outputs, result = phantom
    assert result.reference == "centerline top (cord and PMJ)"
    assert result.origin.offset_mm == pytest.approx(9.0037, abs=0.02)  # the lab's distance of the PMJ slice
    import json

    document = json.loads(outputs["json"].read_text())
    assert document["origin"]["origin_offset_mm"] == pytest.approx(result.origin.offset_mm)
    assert "9.0 mm above the PMJ" in document["origin"]["note"] and document["origin"]["note"] in document["warnings"]


@needs_t2
@pytest.mark.parametrize("rootlets", ["t2_seg-deepseg_rootlets-manual", "t2_seg-deepseg_rootlets"])
def test_sct_t2_equals_the_labs(rootlets, tmp_path):
    """SCT's t2 data with the PMJ substitute on the cord's top slice (origin offset 0): manual and model rootlets."""
    outputs, result = levels_from_files(T2 / f"{rootlets}.nii.gz", T2 / "t2_seg-manual.nii.gz",
                                        pmj=DATA / "t2" / "t2_pmj-topcord.nii.gz", out_dir=tmp_path, method="reference")
    assert abs(result.origin.offset_mm) < 0.05 and result.origin.note() is None
    both = _compare(outputs["lab"], DATA / "t2" / f"{rootlets}_pmj_distance.csv", "rootlets")
    _assert_equal(both)


def test_gapfree_keeps_the_anatomical_pmj(phantom, tmp_path):
    """The gap-free method measures from the PMJ: the same spinal midpoints as the reference, less the origin offset,
    where both methods keep the rootlets' own ends (the first level's rostral end, the last level's caudal end)."""
    outputs, reference = phantom
    folder = Path(outputs["json"]).parent.parent / "phantom"
    names = {k: next(folder.glob(f"*{suffix}*")) for k, suffix in (("rootlets", "rootlets"), ("cord", "SC_seg"),
                                                                    ("discs", "discs"), ("pmj", "PMJ"))}
    _, gapfree = levels_from_files(names["rootlets"], names["cord"], names["discs"], names["pmj"], out_dir=tmp_path)
    assert gapfree.reference == "PMJ" and gapfree.origin.offset_mm == 0.0 and gapfree.origin.note() is None
    ref = reference.levels.set_index(["kind", "value"])
    gap = gapfree.levels.set_index(["kind", "value"])
    offset = reference.origin.offset_mm
    assert gap.loc[("spinal", 2), "rostral_mm"] == pytest.approx(ref.loc[("spinal", 2), "rostral_mm"] - offset, abs=1e-6)
    assert gap.loc[("spinal", 9), "caudal_mm"] == pytest.approx(ref.loc[("spinal", 9), "caudal_mm"] - offset, abs=1e-6)
