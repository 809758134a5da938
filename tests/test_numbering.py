"""The numbering check: phantoms relabelled +1 / -1 / +2 are caught, unchanged ones never warn, SCT's t2 data.

The phantom's spinal levels sit where the RootletSeg paper puts them relative to its vertebral levels (shift 0 ->
8 mm), so relabelling its rootlets is exactly the error the check must catch: a level with the wrong name.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from support.sct_data import T2, needs_t2

from rootlets_task.cli.rootlets import main
from rootlets_task.core.names import level_name
from rootlets_task.io.phantom import FILES, make_phantom
from rootlets_task.levels import numbering
from rootlets_task.levels.centerline import cord_centerline
from rootlets_task.levels.compute import compute_levels, levels_from_files
from rootlets_task.levels.numbering import check, expected_shift

GRIDS = {"iso1 LPI": ("LPI", (1.0, 1.0, 1.0), 0.0), "axial RPI 0.5x0.5x3": ("RPI", (0.5, 0.5, 3.0), 0.0),
         "tilted AIL": ("AIL", (1.0, 1.0, 1.0), 15.0), "PSR 1.2": ("PSR", (1.2, 1.2, 1.2), 0.0)}
SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def phantoms():
    """4 grids x 3 seeds (built once: they are the slow part)."""
    return {(grid, seed): make_phantom(o, s, seed=seed, tilt_deg=t) for grid, (o, s, t) in GRIDS.items() for seed in SEEDS}


def _relabelled(rootlets: np.ndarray, offset: int) -> np.ndarray:
    return np.where(rootlets > 0, rootlets.astype(np.int32) + offset, 0)


@pytest.mark.parametrize("grid", GRIDS)
def test_unchanged_phantoms_never_warn(phantoms, grid):
    """Both methods, every seed: status ok, no warning, nothing suggested, the residuals small."""
    for seed in SEEDS:
        ph = phantoms[grid, seed]
        for method in ("gapfree", "reference"):
            res = compute_levels(ph.rootlets, ph.cord, ph.affine, ph.discs, ph.pmj, method=method)
            assert res.numbering.status == "ok" and res.numbering.offset == 0, (grid, seed, method, res.numbering.text)
            assert not any("numbering" in w for w in res.warnings)
            assert res.levels["suggested_level"].isna().all() and (res.levels["numbering"] == "ok").all()
            assert res.numbering.pairing(0).n == 8 and res.numbering.pairing(0).score_mm < 3.0


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("relabel", [+1, -1, +2])
def test_relabelled_phantoms_are_caught_and_named(phantoms, grid, relabel):
    """Rootlets relabelled by +1/-1/+2: a warning naming the levels, the evidence and the right names; nothing renamed
    unless asked; with renumber="suggested" the levels get the true names back and say so."""
    for seed in SEEDS:
        ph = phantoms[grid, seed]
        wrong = _relabelled(ph.rootlets, relabel)
        res = compute_levels(wrong, ph.cord, ph.affine, ph.discs, ph.pmj)
        found = res.numbering
        assert found.status == "shifted" and found.offset == -relabel, (grid, seed, found.text)
        spinal = res.levels[res.levels.kind == "spinal"]
        assert list(spinal["value"]) == [v + relabel for v in range(2, 10)]  # never renamed silently
        assert list(spinal["suggested_level"]) == [level_name(v, "spinal") for v in range(2, 10)]
        text = next(w for w in res.warnings if w.startswith("numbering check"))
        assert text == found.text and f"rootlet labels {-relabel:+d}" in text and "Not renumbered" in text
        assert f"{level_name(2 + relabel, 'spinal')}->C2" in text and "VL C2/SL C3" in text  # names and pair shifts
        assert found.pairing(-relabel).score_mm < 3.0 <= found.tolerance_mm < found.pairing(0).score_mm
        fixed = compute_levels(wrong, ph.cord, ph.affine, ph.discs, ph.pmj, renumber="suggested")
        assert fixed.numbering.applied and "Renumbered" in fixed.numbering.text
        assert fixed.levels.drop(columns=["numbering", "original_level", "suggested_level"]).equals(
            compute_levels(ph.rootlets, ph.cord, ph.affine, ph.discs, ph.pmj).levels.drop(
                columns=["numbering", "original_level", "suggested_level"]))
        spinal = fixed.levels[fixed.levels.kind == "spinal"]
        assert (fixed.levels["numbering"] == "renumbered").all()
        assert list(spinal["original_level"]) == [level_name(v + relabel, "spinal") for v in range(2, 10)]


def test_missing_levels_and_few_pairs():
    """A missing level is no evidence; one pair is too little for a suggestion; no vertebral levels: not checked."""
    spinal = {k: 36.0 + 16 * (k - 2) for k in range(2, 10)}
    vertebral = {v: spinal[v + 1] + expected_shift(v) for v in range(1, 9)}
    assert check(spinal, vertebral).status == "ok"
    del spinal[5], vertebral[6]
    assert check(spinal, vertebral).status == "ok"
    shifted = {k + 1: mm for k, mm in spinal.items()}
    found = check(shifted, vertebral)
    assert found.status == "shifted" and found.offset == -1
    assert check({4: spinal[3]}, {2: vertebral[2], 8: vertebral[8]}).status != "shifted"  # one pair only
    assert check(spinal, {}).status == "not checked" and check(spinal, {}).text.startswith("numbering not checked")
    # levels lying between two numberings (half a level off) fit neither: unclear, with a warning but no suggestion
    half = {k: mm + 9.5 for k, mm in spinal.items()}  # tolerance 8.7 mm, spacing 17.4 mm
    result = check(half, vertebral)
    assert result.status == "unclear" and result.offset == 0 and result.renames(half) == {}


def test_one_odd_level_does_not_trigger(phantoms):
    """Robust to one wrong level among eight: the median residual stays small."""
    ph = phantoms["iso1 LPI", 0]
    rootlets = np.where(ph.rootlets == 6, 7, ph.rootlets)  # C6 labelled C7 too
    res = compute_levels(rootlets, ph.cord, ph.affine, ph.discs, ph.pmj)
    assert res.numbering.status == "ok"


# ----------------------------------------------------------------------------------------------- SCT's t2 data


@pytest.fixture(scope="module")
def t2():
    """SCT's t2 test image: the cord's centerline, the rootlets' midpoints and three vertebral-label sources."""
    if not (T2 / "t2.nii.gz").is_file():
        pytest.skip(needs_t2.kwargs["reason"])

    def load(name):
        return np.asarray(nib.load(T2 / name).dataobj)

    affine = nib.load(T2 / "t2.nii.gz").affine
    cord = load("t2_seg-manual.nii.gz") > 0
    line = cord_centerline(cord, affine)
    vertebral = {
        "bodies 3, 5 (labels.nii.gz)": numbering.vertebral_from_bodies(load("labels.nii.gz").astype(int), line, affine),
        "bodies 3, 4, 5 (t2_labeled_center_manual)": numbering.vertebral_from_bodies(
            load("t2_labeled_center_manual.nii.gz").astype(int), line, affine),
        "cord by level (t2_seg-manual_labeled)": numbering.vertebral_from_labelled_cord(
            np.round(load("t2_seg-manual_labeled.nii.gz")).astype(int), line)}
    spinal = {}
    for name in ("manual", "r20250318"):
        file = "t2_seg-deepseg_rootlets-manual.nii.gz" if name == "manual" else "t2_seg-deepseg_rootlets.nii.gz"
        res = compute_levels(load(file), cord, affine, method="reference")
        assert res.numbering.status == "not checked"  # no discs: nothing to compare with
        spinal[name] = {int(r.value): float(r.mid_mm) for r in res.levels.itertuples() if r.status == "ok"}
    return spinal, vertebral


def test_t2_vertebral_sources(t2):
    """The labels derived from the three files: body centres (labels 3, 5 and 3, 4, 5) and the labelled cord's
    complete levels (3 and 4: discs between consecutive labels; levels 2 and 5 are cut by the field of view)."""
    _, vertebral = t2
    bodies, centres, cord = vertebral.values()
    assert sorted(bodies) == [3, 5] and sorted(centres) == [3, 4, 5] and sorted(cord) == [3, 4]
    assert bodies[3] == pytest.approx(centres[3], abs=0.5) and bodies[5] == pytest.approx(centres[5], abs=0.5)
    # the labelled cord's level 3 lies where the body files put vertebra 4: the sources disagree by one level
    assert cord[3] == pytest.approx(centres[4], abs=2.0) and cord[4] == pytest.approx(centres[5], abs=2.0)


EXPECTED = {  # (rootlets, vertebral source) -> (status, offset): what the check says, explained in the test below
    ("manual", "bodies 3, 5 (labels.nii.gz)"): ("shifted", -1),
    ("manual", "bodies 3, 4, 5 (t2_labeled_center_manual)"): ("shifted", -1),
    ("manual", "cord by level (t2_seg-manual_labeled)"): ("shifted", -2),
    ("r20250318", "bodies 3, 5 (labels.nii.gz)"): ("ok", 0),
    ("r20250318", "bodies 3, 4, 5 (t2_labeled_center_manual)"): ("ok", 0),
    ("r20250318", "cord by level (t2_seg-manual_labeled)"): ("shifted", -1),
}


@pytest.mark.parametrize("case", EXPECTED)
def test_t2_what_the_check_says(t2, case):
    """Real anatomy, two rootlet numberings one level apart (manual {5,6,7}, r20250318 {3,4,5,6}) against vertebral
    files one level apart: the suggestions differ by exactly those levels. The model's numbering fits the two
    vertebral-body files; the manual one sits one level higher than they say; the labelled cord (numbered one lower
    than the body files) moves both suggestions by one more. The data cannot say which file is anatomically right."""
    spinal, vertebral = t2
    found = check(spinal[case[0]], vertebral[case[1]])
    assert (found.status, found.offset) == EXPECTED[case], found.text
    assert found.pairing(found.offset).score_mm <= 6.5


def test_t2_suggestions_are_consistent(t2):
    """Manual = model + 1 level and labelled cord = bodies - 1 level, so the offsets differ by exactly that."""
    spinal, vertebral = t2
    offsets = {(r, v): check(spinal[r], vertebral[v]).offset for r in spinal for v in vertebral}
    for v in vertebral:
        assert offsets["manual", v] == offsets["r20250318", v] - 1
    for r in spinal:
        assert offsets[r, "cord by level (t2_seg-manual_labeled)"] == offsets[r, "bodies 3, 5 (labels.nii.gz)"] - 1


# ----------------------------------------------------------------------------------------------- files and CLI


@pytest.fixture
def relabelled_files(phantoms, tmp_path):
    ph = phantoms["iso1 LPI", 1]
    paths = {kind: tmp_path / FILES[kind] for kind in ("rootlets", "cord", "discs", "pmj")}
    for kind, path in paths.items():
        nib.save(ph.nifti(kind), path)
    wrong = nib.Nifti1Image(_relabelled(ph.rootlets, 1).astype(np.uint8), ph.affine)
    nib.save(wrong, paths["rootlets"])
    return paths


def test_cli_warns_and_renumbers_only_when_asked(relabelled_files, tmp_path, capsys):
    """`rootlets levels`: the warning on stderr, the check in the JSON and CSV; -renumber suggested applies it."""
    f = relabelled_files
    base = ["levels", "-r", str(f["rootlets"]), "-s", str(f["cord"]), "-discs", str(f["discs"]), "-pmj", str(f["pmj"])]
    assert main([*base, "-o", str(tmp_path / "plain")]) == 0
    captured = capsys.readouterr()
    assert "rootlets: warning: numbering check" in captured.err and "C3->C2" in captured.err
    doc = json.loads(next((tmp_path / "plain").glob("*_levels.json")).read_text())
    assert doc["numbering"]["status"] == "shifted" and doc["numbering"]["offset"] == -1 and not doc["numbering"]["applied"]
    assert any(w.startswith("numbering check") for w in doc["warnings"])
    table = pd.read_csv(next((tmp_path / "plain").glob("*_levels.csv")))
    assert table[table.kind == "spinal"]["level"].iloc[0] == "C3" and table["suggested_level"].iloc[0] == "C2"
    assert main([*base, "-o", str(tmp_path / "fixed"), "-renumber", "suggested"]) == 0
    captured = capsys.readouterr()
    assert "Renumbered -1 as suggested" in captured.err
    doc = json.loads(next((tmp_path / "fixed").glob("*_levels.json")).read_text())
    assert doc["numbering"]["applied"] and doc["levels"][0]["level"] == "C2" and doc["levels"][0]["original_level"] == "C3"
    out, _ = levels_from_files(f["rootlets"], f["cord"], f["discs"], f["pmj"], out_dir=tmp_path / "api")
    assert json.loads(out["json"].read_text())["numbering"]["status"] == "shifted"
    with pytest.raises(SystemExit):
        main([*base, "-renumber", "always"])
