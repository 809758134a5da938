"""Levels down the whole spine: SCT's vertebral names C1 ... Co, spinal levels and rootlets beyond T1 (T2 ... S5).

A synthetic straight cord 640 mm long (2 mm voxels) with SCT disc labels 1 ... 31 every 20 mm (the whole-spine disc
labels of TotalSpineSeg or SPINEPS reach 25 = L5/S1; 26 ... 31 close the sacral and coccygeal levels) and rootlets of
spinal levels C2 ... S5 beside the cord, each beside the vertebra the shifted pairing gives it (SL n beside VL n-1).
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from rootlets_task.cli.rootlets import main
from rootlets_task.core.colours import LEVEL_COLOURS, level_colour
from rootlets_task.core.names import level_name, level_value
from rootlets_task.io import viewers

STEP_MM, DISC_SLICES, TOP = 2.0, 10, 325
SCT_VERTEBRAL = {1: "C1", 7: "C7", 8: "T1", 19: "T12", 20: "L1", 24: "L5", 25: "S1", 29: "S5", 30: "Co"}
SPINAL = {1: "C1", 8: "C8", 9: "T1", 20: "T12", 21: "L1", 25: "L5", 26: "S1", 30: "S5", 31: "Co"}


def test_names_follow_scts_table():
    """spinalcordtoolbox/types.py: 20 = L1 ... 24 = L5, 25 = S1 ... 29 = S5, 30 = Co (was T13 ... T23)."""
    assert {v: level_name(v, "vertebral") for v in SCT_VERTEBRAL} == SCT_VERTEBRAL
    assert {v: level_name(v, "spinal") for v in SPINAL} == SPINAL
    assert all(level_value(n, "vertebral") == v for v, n in SCT_VERTEBRAL.items())
    assert level_name(32, "spinal") == "32"  # beyond the spine: the number, not an invented name
    colours = [level_colour(level_name(v, "spinal")) for v in range(1, 32)]
    assert len(set(colours)) == 31 and set(colours) <= set(LEVEL_COLOURS.values())


def _disc_slice(v: int) -> int:
    return TOP - 5 - DISC_SLICES * (v - 1)


@pytest.fixture
def spine(tmp_path):
    """Cord, discs 1-31 and rootlets C2-S5 (values 2-30) on one RAS grid, index growing towards superior."""
    shape = (21, 21, 330)
    affine = np.diag([STEP_MM, STEP_MM, STEP_MM, 1.0])
    cord = np.zeros(shape, np.uint8)
    yy, xx = np.mgrid[:21, :21]
    cord[(xx - 10) ** 2 + (yy - 10) ** 2 <= 4] = 1
    cord[..., TOP + 1:] = 0
    cord[..., :3] = 0
    discs = np.zeros(shape, np.uint8)
    for v in range(1, 32):
        discs[10, 15, _disc_slice(v)] = v
    rootlets = np.zeros(shape, np.uint8)
    for level in range(2, 31):  # SL n beside VL n-1: the middle 6 slices between discs n-1 and n
        top = _disc_slice(level - 1) - 2
        rootlets[13, 9:12, top - 5:top + 1] = level
    paths = {}
    for name, data in (("cord", cord), ("discs", discs), ("rootlets", rootlets)):
        paths[name] = tmp_path / f"spine_{name}.nii.gz"
        nib.save(nib.Nifti1Image(data, affine), paths[name])
    return paths


def test_a_levels_run_on_whole_spine_discs_names_lumbar_sacral_and_coccygeal_levels(spine, tmp_path):
    out = tmp_path / "out"
    assert main(["levels", "-r", str(spine["rootlets"]), "-s", str(spine["cord"]), "-discs", str(spine["discs"]),
                 "-o", str(out)]) == 0
    table = pd.read_csv(out / "spine_rootlets_levels.csv")
    vertebral = table[table.kind == "vertebral"].set_index("value")["level"]
    assert list(vertebral.index) == list(range(1, 31))
    assert {v: vertebral[v] for v in SCT_VERTEBRAL} == SCT_VERTEBRAL
    assert [vertebral[v] for v in range(20, 31)] == ["L1", "L2", "L3", "L4", "L5", "S1", "S2", "S3", "S4", "S5", "Co"]
    spinal = table[table.kind == "spinal"].set_index("value")
    assert list(spinal.index) == list(range(2, 31)) and (spinal["status"] == "ok").all()
    assert [spinal.loc[v, "level"] for v in (9, 10, 21, 25, 26, 30)] == ["T1", "T2", "L1", "L5", "S1", "S5"]
    # each vertebral level spans its two discs: Co from disc 30 to disc 31, 20 mm
    assert table[(table.kind == "vertebral") & (table.value == 30)]["height_mm"].iloc[0] == pytest.approx(20.0, abs=0.5)
    # the viewer tables name them too
    tsv = pd.read_csv(out / "spine_rootlets_vertebral_levels.tsv", sep="\t").set_index("index")
    assert tsv.loc[20, "name"] == "vertebral level L1" and tsv.loc[30, "abbreviation"] == "Co"
    spinal_tsv = pd.read_csv(out / "spine_rootlets_spinal_levels.tsv", sep="\t").set_index("index")
    assert spinal_tsv.loc[26, "abbreviation"] == "S1"
    lut = (out / "rootlets_task_vertebral.lut").read_text()
    assert "vertebral L1\n" in lut and "vertebral Co\n" in lut and "T13" not in lut
    # shift table: the paper's shifted pairing continues (VL T1-SL T1, VL L1-SL L1), the unshifted one pairs values
    shift = pd.read_csv(out / "spine_rootlets_shift.csv")
    shifted = shift[shift.pairing == "shifted"].set_index("vertebral_level")["spinal_level"]
    unshifted = shift[shift.pairing == "unshifted"].set_index("vertebral_level")["spinal_level"]
    assert shifted["T1"] == "T1" and shifted["C7"] == "C8" and shifted["L1"] == "L1"
    assert unshifted["T1"] == "C8" and unshifted["C2"] == "C2"


def test_the_numbering_check_leaves_levels_below_t1_out(spine, tmp_path):
    """Beyond VL T1 the paper gives no shift: those levels are not paired (a correct whole-spine labelling is not
    flagged), and the note says which levels were not checked."""
    from rootlets_task.levels.compute import levels_from_files

    _, result = levels_from_files(spine["rootlets"], spine["cord"], spine["discs"], out_dir=tmp_path / "o")
    assert result.numbering.status == "ok"
    assert "spinal levels T2-S5 not checked" in result.numbering.text
    assert all(p["vertebral_level"] in {level_name(v, "vertebral") for v in range(1, 9)}
               for p in result.numbering.pairing(0).pairs)


def test_lookup_tables_cover_the_whole_spine():
    assert viewers.fsleyes_lut("spinal").count("\n") == 31 and "spinal Co" in viewers.fsleyes_lut("spinal")
    assert '"vertebral S5"' in viewers.itksnap_labels("vertebral")


def test_dataset_json_labels_named_by_level_map_to_spinal_levels():
    from rootlets_task.core.names import dataset_levels

    assert dataset_levels({"background": 0, **{f"lvl{i}": i for i in range(1, 10)}}) is None  # SCT's releases
    lumbar = {"background": 0, **{f"rootlets_{n}": i for i, n in enumerate(("T12", "L1", "L2", "L3", "L4", "L5", "S1",
                                                                                    "S2"), start=1)}}
    assert dataset_levels(lumbar) == {1: 20, 2: 21, 3: 22, 4: 23, 5: 24, 6: 25, 7: 26, 8: 27}
    assert dataset_levels({"background": 0, "T2": 1, "T3": 2}) == {1: 10, 2: 11}
    assert dataset_levels({"background": 0, "rootlets": 1}) is None  # not named by level: values as given


def test_a_custom_release_naming_its_classes_by_level_gives_those_levels(phantom_home, tmp_path):
    """The phantom model (classes 2-9) with its dataset.json relabelled as a lumbar model's (class 2 = L1 ...): its
    output carries spinal levels L1 ... S3 (21-28), and the confidence is keyed by them. Real inference."""
    import json
    import shutil

    from rootlets_task.inference.segmenter import Segmenter
    from rootlets_task.io.phantom import make_phantom
    from rootlets_task.models import install

    folder = tmp_path / "lumbar"
    shutil.copytree(install.model_folder("phantom")[0], folder)
    dataset = json.loads((folder / "dataset.json").read_text())
    names = ["C1", "L1", "L2", "L3", "L4", "L5", "S1", "S2", "S3"]
    dataset["labels"] = {"background": 0, **{f"rootlets_{n}": i for i, n in enumerate(names, start=1)}}
    (folder / "dataset.json").write_text(json.dumps(dataset))
    image = make_phantom("LPI", (1.0, 1.0, 1.0), seed=11).nifti("image").slicer[:, :, 60:124]
    plain = Segmenter(install.model_folder("phantom")[0], device="cpu", verbose=0).predict(image)
    mapped = Segmenter(folder, device="cpu", verbose=0).predict(image)
    classes = sorted(int(v) for v in np.unique(plain.labels) if v)
    assert classes and set(classes) <= set(range(2, 10))
    expected = np.zeros(256, np.uint8)
    expected[2:10] = range(21, 29)
    assert np.array_equal(mapped.labels, expected[plain.labels])
    assert sorted(int(k) for k in mapped.confidence["Levels"]) == [c + 19 for c in classes]
    assert {mapped.confidence["Levels"][str(c + 19)]["Level"] for c in classes} <= {"L1", "L2", "L3", "L4", "L5", "S1",
                                                                                     "S2", "S3"}


def test_levels_tables_of_earlier_versions_get_scts_names(tmp_path):
    """Versions up to 0.x wrote vertebral 20 as "T13": such a table reads with SCT's names."""
    from rootlets_task.io.tables import read_levels_table

    old = pd.DataFrame({"kind": ["vertebral", "vertebral", "spinal"], "level": ["T12", "T13", "T1"], "value": [19, 20, 9],
                        "start_mm": [1.0, 2.0, 3.0], "end_mm": [2.0, 3.0, 4.0], "mid_mm": [1.5, 2.5, 3.5],
                        "height_mm": [1.0, 1.0, 1.0], "status": ["ok", "ok", "ok"]})
    old.to_csv(tmp_path / "old_levels.csv", index=False)
    assert list(read_levels_table(tmp_path / "old_levels.csv")["level"]) == ["T12", "L1", "T1"]
