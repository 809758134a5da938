"""Spinal and vertebral levels: phantom truth in several grids, the published algorithm by hand, SCT t2 data, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from support.sct_data import T2, needs_t2

from rootlets_task import __version__
from rootlets_task.cli.rootlets import main
from rootlets_task.core.errors import RootletsError
from rootlets_task.io import viewers
from rootlets_task.io.nifti import reorient, sct_to_axcodes, si_axis, undo_reorient
from rootlets_task.io.phantom import FILES, make_phantom
from rootlets_task.levels.compute import LEVEL_COLUMNS, SHIFT_COLUMNS, compute_levels, levels_from_files

KINDS = ("rootlets", "cord", "discs", "pmj")


def _step(ph) -> float:
    return float(np.linalg.norm(ph.affine[:3, si_axis(ph.affine)]))


@pytest.fixture(scope="module")
def phantoms():
    """One phantom per grid of the issue (built once: they are the slow part)."""
    grids = {"sag0.8": ("PSR", (0.8, 0.8, 0.8), 0), "iso1": ("LPI", (1.0, 1.0, 1.0), 0),
             "axial": ("RPI", (0.5, 0.5, 3.0), 0), "tilt": ("AIL", (1.0, 1.0, 1.0), 15)}
    return {name: make_phantom(o, s, seed=1, tilt_deg=t) for name, (o, s, t) in grids.items()}


@pytest.mark.parametrize("grid", ["sag0.8", "iso1", "axial", "tilt"])
def test_reference_levels_match_truth(phantoms, grid):
    """Extents, midpoints and shifts agree with the phantom truth (mm along the centerline from the PMJ).

    The reference method measures from the lab's origin, the top of the cord + PMJ centerline, which lies
    ``origin_offset_mm`` above the PMJ label voxel, which lies ``pmj_label_offset_mm`` caudal of the truth's
    anatomical PMJ. Midpoints: within one voxel along the superior-inferior axis (vertebral: one and a half, since
    the lab's method takes each disc at its nearest whole centerline slice). Shifts are differences of two
    midpoints, each rounded to voxels on its own: two voxels. Extents: two voxels, because the published convention
    measures between the centres of the end slices (up to one voxel inside each true end) and the
    phantom's 2 mm thick rootlet strands are drawn as the voxels whose centres fall inside them; in the 3 mm axial
    grid a strand can fall between two slice centres altogether.
    """
    ph = phantoms[grid]
    step = _step(ph)
    res = compute_levels(ph.rootlets, ph.cord, ph.affine, ph.discs, ph.pmj, method="reference")
    assert res.reference == "centerline top (cord and PMJ)" and res.origin.offset_mm > 5  # the phantom cord reaches higher
    assert res.warnings == [res.origin.note()] and "above the PMJ" in res.warnings[0]
    assert res.numbering.status == "ok" and (res.levels["numbering"] == "ok").all()
    table = res.levels
    assert list(table.columns) == LEVEL_COLUMNS and (table["status"] == "ok").all()
    assert set(table[table.kind == "spinal"].value) == set(range(2, 10))
    assert set(table[table.kind == "vertebral"].value) == set(range(1, 9))
    extent_tol = 2 * step
    offset = ph.truth["pmj_label_offset_mm"] - res.origin.offset_mm
    for row in table.itertuples():
        truth = {k: v - offset for k, v in ph.truth[f"{row.kind}_levels"][str(row.value)].items() if k != "height_mm"}
        assert abs(row.mid_mm - truth["mid_mm"]) <= step * (1.5 if row.kind == "vertebral" else 1), (row.kind, row.level)
        assert abs(row.rostral_mm - truth["start_mm"]) <= extent_tol and abs(row.caudal_mm - truth["end_mm"]) <= extent_tol
        assert row.rostral_mm <= row.mid_mm <= row.caudal_mm
        assert row.height_mm == pytest.approx(row.caudal_mm - row.rostral_mm)
    spinal_truth = {int(k): v["mid_mm"] for k, v in ph.truth["spinal_levels"].items()}
    vertebral_truth = {int(k): v["mid_mm"] for k, v in ph.truth["vertebral_levels"].items()}
    shift = res.shift
    assert list(shift.columns) == SHIFT_COLUMNS
    assert len(shift[shift.pairing == "shifted"]) == 8 and len(shift[shift.pairing == "unshifted"]) == 7
    names = {v: f"C{v}" for v in range(1, 9)} | {9: "T1"}
    for row in shift.itertuples():
        v = 8 if row.vertebral_level == "T1" else int(row.vertebral_level[1:])
        k = [key for key, name in names.items() if name == row.spinal_level][0]
        expected = vertebral_truth[v] - spinal_truth[k]
        assert abs(row.shift_mm - expected) <= 2 * step, (row.pairing, row.vertebral_level, row.spinal_level)
        assert k == (v + 1 if row.pairing == "shifted" else v)  # the paper's: unshifted VL T1 pairs with SL C8
    # the painted cord labels agree with the truth image of the phantom except within a voxel of boundaries
    cord = ph.cord > 0
    agree = (res.spinal[cord] == ph.spinal_levels[cord]).mean()
    assert agree > (0.8 if grid == "axial" else 0.9)
    assert (res.vertebral[cord] == ph.vertebral_levels[cord]).mean() > (0.85 if grid == "axial" else 0.93)


@pytest.mark.parametrize("grid", ["sag0.8", "iso1", "axial", "tilt"])
def test_gapfree_boundaries_halfway(phantoms, grid):
    """Gap-free: inner boundaries halfway (mm) between the truth spans, outer ends at the rootlets, no cord gaps."""
    ph = phantoms[grid]
    step = _step(ph)
    res = compute_levels(ph.rootlets, ph.cord, ph.affine, ph.discs, ph.pmj)
    spinal = res.levels[res.levels.kind == "spinal"].set_index("value")
    truth = {int(k): v for k, v in ph.truth["spinal_levels"].items()}
    tol = 2 * step  # as for the reference spans above
    for k in range(2, 9):
        assert spinal.loc[k, "caudal_mm"] == pytest.approx(spinal.loc[k + 1, "rostral_mm"])
        assert abs(spinal.loc[k, "caudal_mm"] - (truth[k]["end_mm"] + truth[k + 1]["start_mm"]) / 2) <= tol
    assert abs(spinal.loc[2, "rostral_mm"] - truth[2]["start_mm"]) <= tol
    assert abs(spinal.loc[9, "caudal_mm"] - truth[9]["end_mm"]) <= tol
    # every cord slice between the first and last level is labelled
    axis = si_axis(ph.affine)
    labelled = np.moveaxis(res.spinal, axis, 0).reshape(res.spinal.shape[axis], -1).max(1)
    cord_slices = np.moveaxis(ph.cord, axis, 0).reshape(ph.cord.shape[axis], -1).any(1)
    covered = np.flatnonzero(labelled)
    inside = np.arange(covered.min(), covered.max() + 1)
    assert (labelled[inside][cord_slices[inside]] > 0).all()
    # gap-free never moves a level's midpoint by more than half the neighbouring gaps
    assert np.all(np.diff(spinal["mid_mm"].to_numpy()) > 0)


def test_identical_across_orientations(phantoms):
    """The same phantom reoriented (LPI -> RPI, PSR, AIL) gives the same mm and the same labels voxel for voxel."""
    ph = phantoms["iso1"]
    base = compute_levels(ph.rootlets, ph.cord, ph.affine, ph.discs, ph.pmj)
    cols = ["rostral_mm", "caudal_mm", "mid_mm", "height_mm"]
    for orient in ("RPI", "PSR", "AIL"):
        arrays = {}
        for kind in KINDS:
            arrays[kind], _, inverse = reorient(ph.nifti(kind), sct_to_axcodes(orient))
        ornt = nib.orientations.ornt_transform(nib.orientations.io_orientation(ph.affine),
                                               nib.orientations.axcodes2ornt(sct_to_axcodes(orient)))
        affine = ph.affine @ nib.orientations.inv_ornt_aff(ornt, ph.rootlets.shape)
        res = compute_levels(arrays["rootlets"], arrays["cord"], affine, arrays["discs"], arrays["pmj"])
        np.testing.assert_allclose(res.levels[cols].to_numpy(float), base.levels[cols].to_numpy(float), atol=1e-6)
        np.testing.assert_allclose(res.shift["shift_mm"], base.shift["shift_mm"], atol=1e-6)
        assert np.array_equal(undo_reorient(res.spinal, inverse), base.spinal)
        assert np.array_equal(undo_reorient(res.vertebral, inverse), base.vertebral)


def test_reference_method_by_hand():
    """The published 02a algorithm on a case small enough to work out by hand.

    Cord: one voxel column at x=4, y=4, slices z=0..11 (LPI, 1 mm, z up). Rootlets (ball radius 3 voxels):
    level 1 at (4,7,11): distance 3 -> kept (the script erased level 1; we keep it);
    level 2 at (7,4,9..10): distance 3 -> kept, and at (8,4,11): distance 4 -> dropped;
    level 3 at (4,6,5..8) and (6,6,4): distance 2 and sqrt(8) -> kept;
    level 4 at (4,1,7) and (4,1,2): distance 3 -> kept; level 6 at (0,0,1): sqrt(32) -> dropped (missing);
    level 5 absent (missing). Spans: 1: z11; 2: z9-10; 3: z4-8; 4: z2-7 -> painting in ascending order, the
    higher level wins on the overlap z4-7: z11=1, z9-10=2, z8=3, z2-7=4, z0-1 and nothing else = 0.
    Reference = cord rostral end (z=11), straight centerline, so mm = 11 - z.
    """
    shape = (9, 9, 12)
    cord = np.zeros(shape, np.uint8)
    cord[4, 4, :] = 1
    rootlets = np.zeros(shape, np.uint8)
    rootlets[4, 7, 11] = 1
    rootlets[7, 4, 9:11] = 2
    rootlets[8, 4, 11] = 2
    rootlets[4, 6, 5:9] = 3
    rootlets[6, 6, 4] = 3
    rootlets[4, 1, 7] = rootlets[4, 1, 2] = 4
    rootlets[0, 0, 1] = 6
    res = compute_levels(rootlets, cord, np.eye(4), method="reference")
    expected = np.zeros(12, np.uint8)
    expected[11], expected[9:11], expected[8], expected[2:8] = 1, 2, 3, 4
    assert np.array_equal(res.spinal[4, 4, :], expected)
    assert res.spinal.sum() == expected.sum()
    table = res.levels.set_index("value")
    assert list(table["status"]) == ["ok", "ok", "ok", "ok", "missing", "missing"]
    for value, (z_top, z_bottom) in {1: (11, 11), 2: (10, 9), 3: (8, 4), 4: (7, 2)}.items():
        row = table.loc[value]
        assert (row.rostral_slice, row.caudal_slice) == (z_top, z_bottom)
        assert row.rostral_mm == pytest.approx(11 - z_top) and row.caudal_mm == pytest.approx(11 - z_bottom)
        assert row.mid_mm == pytest.approx(11 - (z_top + z_bottom) / 2)
        assert row.n_voxels == (rootlets == value).sum() and row.volume_mm3 == pytest.approx(row.n_voxels)
    assert table.loc[5, "n_voxels"] == 0 and pd.isna(table.loc[5, "rostral_mm"])
    assert res.reference == "cord rostral end"
    assert any("C5" in w and "no rootlets" in w for w in res.warnings)
    assert any("C6" in w and "do not touch" in w for w in res.warnings)
    # a radius of 4 voxels also keeps (8,4,11): level 2 then spans z9-11 and wins over level 1 on z11
    wider = compute_levels(rootlets, cord, np.eye(4), method="reference", dilate_voxels=4)
    assert wider.spinal[4, 4, 11] == 2 and wider.levels.set_index("value").loc[2, "rostral_slice"] == 11
    # gap-free on the same case: boundary 1|2 halfway between z11 and z10, 2|3 between z9 and z8 ...
    gap = compute_levels(rootlets, cord, np.eye(4)).levels.set_index("value")
    assert gap.loc[1, "caudal_mm"] == pytest.approx(0.5) and gap.loc[2, "caudal_mm"] == pytest.approx(2.5)
    assert gap.loc[3, "caudal_mm"] == pytest.approx((7 + 4) / 2)  # overlap of 3 (3-7 mm) and 4 (4-9 mm) split halfway


@pytest.fixture(scope="module")
def files(phantoms, tmp_path_factory):
    """The 1 mm phantom written to disk with the names write_phantom uses."""
    folder = tmp_path_factory.mktemp("ph")
    ph = phantoms["iso1"]
    paths = {kind: folder / FILES[kind] for kind in KINDS}
    for kind, path in paths.items():
        nib.save(ph.nifti(kind), path)
    return paths


def test_files_outputs_on_input_grid(files, tmp_path):
    out, _ = levels_from_files(files["rootlets"], files["cord"], files["discs"], files["pmj"], out_dir=tmp_path)
    assert set(out) == {"spinal", "vertebral", "csv", "json", "shift"}
    tables = [f"{p.name[:-len('.nii.gz')]}.tsv" for k, p in out.items() if k in ("spinal", "vertebral")]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([p.name for p in out.values()] + tables
                                                                 + list(viewers.FOLDER_FILES))
    assert out["spinal"].name == FILES["rootlets"].replace(".nii.gz", "_spinal_levels.nii.gz")
    src = nib.load(files["rootlets"])
    for key in ("spinal", "vertebral"):
        img = nib.load(out[key])
        assert img.get_data_dtype() == np.uint8 and img.shape == src.shape and np.allclose(img.affine, src.affine)
    table = pd.read_csv(out["csv"])
    doc = json.loads(out["json"].read_text())
    assert list(table.columns) == LEVEL_COLUMNS and len(doc["levels"]) == len(table)
    assert doc["reference"] == "PMJ" and doc["method"] == "gapfree" and doc["version"] == __version__
    assert doc["origin"] == {"reference": "PMJ", "origin_offset_mm": 0.0, "note": None}
    assert doc["numbering"]["status"] == "ok" and doc["numbering"]["offset"] == 0
    assert list(pd.read_csv(out["shift"]).columns) == SHIFT_COLUMNS
    spinal = nib.load(out["spinal"]).get_fdata()
    assert set(np.unique(spinal)) == {0, *range(2, 10)}


def test_files_on_different_grids_are_resampled(phantoms, files, tmp_path):
    """A cord on a 0.8 mm PSR grid and discs on a 0.5x0.5x3 mm RPI grid are resampled onto the rootlets grid."""
    nib.save(phantoms["sag0.8"].nifti("cord"), tmp_path / "cord08.nii.gz")
    nib.save(phantoms["axial"].nifti("discs"), tmp_path / "discs3.nii.gz")
    same, _ = levels_from_files(files["rootlets"], files["cord"], files["discs"], files["pmj"], out_dir=tmp_path / "a")
    diff, result = levels_from_files(files["rootlets"], tmp_path / "cord08.nii.gz", tmp_path / "discs3.nii.gz",
                                     files["pmj"], out_dir=tmp_path / "b")
    assert any("resampled onto the image grid (nearest neighbour)" in w for w in result.warnings)
    a, b = pd.read_csv(same["csv"]), pd.read_csv(diff["csv"])
    assert np.abs(a["mid_mm"] - b["mid_mm"]).max() <= 1.5  # the 3 mm disc grid rounds discs by up to 1.5 mm
    assert nib.load(diff["spinal"]).shape == nib.load(files["rootlets"]).shape


def test_image_grid_and_prefix(phantoms, files, tmp_path):
    """-i IMAGE: outputs on the image's grid (rootlets and cord resampled), named by the prefix."""
    image = phantoms["sag0.8"].nifti("image")
    nib.save(image, tmp_path / "img.nii.gz")
    out, result = levels_from_files(files["rootlets"], files["cord"], image=tmp_path / "img.nii.gz", out_dir=tmp_path / "o",
                                    prefix="sub-01", method="reference")
    assert any("resampled" in w for w in result.warnings)
    assert set(out) == {"spinal", "csv", "json", "lab"} and out["csv"].name == "sub-01_levels.csv"
    assert out["lab"].name == "sub-01_levels_lab.csv"
    assert nib.load(out["spinal"]).shape == image.shape
    table = pd.read_csv(out["csv"])
    assert table["reference"].iloc[0] == "cord rostral end" and list(table["level"]) == [f"C{k}" for k in range(2, 9)] + ["T1"]


def test_c2c3_disc_reference(phantoms):
    ph = phantoms["iso1"]
    res = compute_levels(ph.rootlets, ph.cord, ph.affine, ph.discs)
    vert = res.levels[res.levels.kind == "vertebral"].set_index("value")
    assert res.reference == "C2/C3 disc" and vert.loc[3, "rostral_mm"] == pytest.approx(0, abs=1e-9)


def test_missing_disc_and_level_are_rows_not_crashes(phantoms):
    ph = phantoms["iso1"]
    rootlets = np.where(ph.rootlets == 5, 0, ph.rootlets)
    discs = np.where(ph.discs == 6, 0, ph.discs)
    res = compute_levels(rootlets, ph.cord, ph.affine, discs, ph.pmj)
    status = res.levels.set_index(["kind", "value"])["status"]
    assert status["spinal", 5] == "missing" and status["vertebral", 5] == "missing" and status["vertebral", 6] == "missing"
    assert (status == "ok").sum() == 7 + 6
    assert len(res.warnings) == 3
    # gap-free leaves the place of the missing level unlabelled rather than guessing
    assert 5 not in np.unique(res.spinal)
    assert "C5" not in set(res.shift["spinal_level"]) and "C5" not in set(res.shift["vertebral_level"])


@needs_t2
def test_sct_t2_manual_rootlets(tmp_path):
    """Real data: manual rootlets + manual cord -> levels C5, C6, C7 in order, centres match the SCT midpoints file."""
    out, _ = levels_from_files(T2 / "t2_seg-deepseg_rootlets-manual.nii.gz", T2 / "t2_seg-manual.nii.gz", out_dir=tmp_path,
                               method="reference")
    table = pd.read_csv(out["csv"])
    assert list(table["level"]) == ["C5", "C6", "C7"] and (table["status"] == "ok").all()
    mids = table["mid_mm"].to_numpy()
    assert np.all(np.diff(mids) > 5) and np.all(np.diff(mids) < 30), "levels run caudally, a few mm to cm apart"
    midpoints = nib.load(T2 / "t2_seg-deepseg_rootlets-manual_midpoints.nii.gz")
    axis = si_axis(midpoints.affine)
    data = np.asarray(midpoints.dataobj)
    for row in table.itertuples():
        assert abs(row.mid_slice - np.argwhere(data == row.value)[0][axis]) <= 1
    gap = pd.read_csv(levels_from_files(T2 / "t2_seg-deepseg_rootlets-manual.nii.gz", T2 / "t2_seg-manual.nii.gz",
                                        out_dir=tmp_path / "g")[0]["csv"])
    assert np.allclose(gap["caudal_mm"].iloc[:-1].to_numpy(), gap["rostral_mm"].iloc[1:].to_numpy())


# ----------------------------------------------------------------------------------------------- bad input


def _save(path: Path, data: np.ndarray, like: Path) -> Path:
    ref = nib.load(like)
    nib.save(nib.Nifti1Image(data, ref.affine), path)
    return path


def _bad_inputs(files: dict, tmp: Path) -> dict[str, tuple[dict, str]]:
    """name -> (keyword arguments of levels_from_files, the file the error must name)."""
    r, c, d, p = (np.asarray(nib.load(files[k]).dataobj) for k in KINDS)
    like = files["rootlets"]
    ok = {"rootlets": files["rootlets"], "cord": files["cord"], "discs": files["discs"], "pmj": files["pmj"]}
    axis = si_axis(nib.load(like).affine)
    t1 = np.unique(np.argwhere(r == 9)[:, axis])
    half = np.moveaxis(c.copy(), axis, 0)
    half[max(t1.min() - 4, 0): t1.max() + 5] = 0  # no cord on (and 3 slices around) the T1 rootlets
    half = np.moveaxis(half, 0, axis)
    blob, dup, swapped = d.copy(), d.copy(), d.copy()
    v3 = np.argwhere(d == 3)[0]
    blob[tuple(v3 + [1, 0, 0])] = 3
    dup[tuple(v3 + [0, 0, 12])] = 3
    swapped[d == 4], swapped[d == 5] = 5, 4
    far = nib.load(files["cord"])
    shifted = far.affine.copy()
    shifted[:3, 3] += 500
    cases = {
        "empty rootlets": ({"rootlets": _save(tmp / "r0.nii.gz", np.zeros_like(r), like)}, "r0.nii.gz"),
        "empty cord": ({"cord": _save(tmp / "c0.nii.gz", np.zeros_like(c), like)}, "c0.nii.gz"),
        "non-integer": ({"rootlets": _save(tmp / "rf.nii.gz", r.astype(np.float32) * 0.5, like)}, "rf.nii.gz"),
        "negative": ({"cord": _save(tmp / "cn.nii.gz", c.astype(np.int16) * -1, like)}, "cn.nii.gz"),
        "multi-voxel disc": ({"discs": _save(tmp / "db.nii.gz", blob, like)}, "db.nii.gz"),
        "duplicated disc": ({"discs": _save(tmp / "dd.nii.gz", dup, like)}, "dd.nii.gz"),
        "discs out of order": ({"discs": _save(tmp / "ds.nii.gz", swapped, like)}, "ds.nii.gz"),
        "4D": ({"rootlets": _save(tmp / "r4.nii.gz", np.stack([r, r], -1), like)}, "r4.nii.gz"),
        "two-voxel PMJ": ({"pmj": _save(tmp / "p2.nii.gz", np.where(d == 3, 50, p).astype(np.uint8), like)}, "p2.nii.gz"),
        "no overlap": ({"cord": tmp / "cfar.nii.gz"}, "cfar.nii.gz"),
        "cord missing where rootlets are": ({"cord": _save(tmp / "ch.nii.gz", half, like)}, "ch.nii.gz"),
    }
    nib.save(nib.Nifti1Image(c, shifted), tmp / "cfar.nii.gz")
    return {name: ({**ok, **kwargs}, file) for name, (kwargs, file) in cases.items()}


def test_every_bad_input_is_one_clear_error(files, tmp_path):
    (tmp_path / "in").mkdir()
    for name, (kwargs, file) in _bad_inputs(files, tmp_path / "in").items():
        out = tmp_path / name.replace(" ", "_")
        with pytest.raises(RootletsError, match=file) as err:
            levels_from_files(**kwargs, out_dir=out)
        assert "\n" not in str(err.value), name
        assert not out.exists() or not any(out.iterdir()), f"{name}: something was written"


def test_output_never_overwrites_an_input(files, tmp_path):
    """A cord file named like an output of the rootlets file is refused, and kept."""
    rootlets, cord = tmp_path / "x.nii.gz", tmp_path / "x_spinal_levels.nii.gz"
    rootlets.write_bytes(Path(files["rootlets"]).read_bytes())
    cord.write_bytes(Path(files["cord"]).read_bytes())
    with pytest.raises(RootletsError, match="input"):
        levels_from_files(rootlets, cord)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.nii.gz", "x_spinal_levels.nii.gz"]
    assert cord.read_bytes() == Path(files["cord"]).read_bytes()


# ----------------------------------------------------------------------------------------------- command line, stats


def test_cli_levels_end_to_end(files, tmp_path, capsys):
    args = ["levels", "-r", str(files["rootlets"]), "-s", str(files["cord"]), "-discs", str(files["discs"]),
            "-pmj", str(files["pmj"]), "-method", "reference", "-dilate", "3", "-o", str(tmp_path / "out")]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "from the PMJ" in printed and "T1" in printed and "shifted" in printed
    written = sorted(p.name for p in (tmp_path / "out").iterdir() if p.suffix not in (".tsv", ".lut", ".txt"))
    assert len(written) == 6 and all(name in printed for name in written)  # with the lab's layout (-method reference)
    assert pd.read_csv(next((tmp_path / "out").glob("*_levels.csv")))["status"].eq("ok").all()
    # bad input: one line on stderr, exit 1, nothing written; bad argument: exit 2
    empty = tmp_path / "empty.nii.gz"
    _save(empty, np.zeros(nib.load(files["cord"]).shape, np.uint8), files["cord"])
    assert main(["levels", "-r", str(files["rootlets"]), "-s", str(empty), "-o", str(tmp_path / "bad")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("rootlets: error:") and str(empty) in err and err.count("\n") == 1
    assert not (tmp_path / "bad").exists()
    with pytest.raises(SystemExit) as exit_info:
        main(["levels", "-r", str(files["rootlets"]), "-s", str(files["cord"]), "-method", "nearest"])
    assert exit_info.value.code == 2


def test_group_stats_on_phantom_subjects(phantoms, tmp_path, capsys):
    """Three phantom subjects: bias and limits per pair from their shifts, heights from their levels, a PNG."""
    subjects = {1: phantoms["iso1"], 2: make_phantom("LPI", (1.0, 1.0, 1.0), seed=2),
                3: make_phantom("LPI", (1.0, 1.0, 1.0), seed=3)}
    truth_shifts: dict[str, list[float]] = {}
    for seed, ph in subjects.items():
        folder = tmp_path / f"sub-{seed}"
        folder.mkdir()
        for kind in KINDS:
            nib.save(ph.nifti(kind), folder / f"sub-{seed}_{kind}.nii.gz")
        levels_from_files(*(folder / f"sub-{seed}_{k}.nii.gz" for k in KINDS), method="reference")
        for v in range(2, 9):  # shifted pairing: vertebral v with spinal v+1
            shift = ph.truth["vertebral_levels"][str(v)]["mid_mm"] - ph.truth["spinal_levels"][str(v + 1)]["mid_mm"]
            truth_shifts.setdefault(f"C{v}" if v < 8 else "T1", []).append(shift)
    assert main(["stats", str(tmp_path), "-o", str(tmp_path / "group")]) == 0
    assert "bias_mm" in capsys.readouterr().out
    shift = pd.read_csv(tmp_path / "group" / "shift_stats.csv")
    shifted = shift[shift.pairing == "shifted"].set_index("vertebral_level")
    for vl, values in truth_shifts.items():
        assert shifted.loc[vl, "n"] == 3
        assert abs(shifted.loc[vl, "bias_mm"] - np.median(values)) <= 1.5
        assert shifted.loc[vl, "loa_low_mm"] <= shifted.loc[vl, "bias_mm"] <= shifted.loc[vl, "loa_high_mm"]
    assert shifted.loc["all", "n"] == 3 * 7  # the lab's seven pairs, VL C2-SL C3 ... VL T1-SL T1 (no VL C1)
    heights = pd.read_csv(tmp_path / "group" / "level_stats.csv").set_index(["kind", "level"])
    true_h = [ph.truth["spinal_levels"]["5"]["height_mm"] for ph in subjects.values()]
    assert heights.loc[("spinal", "C5"), "n"] == 3 and abs(heights.loc[("spinal", "C5"), "mean_height_mm"] - np.mean(true_h)) <= 2
    assert (tmp_path / "group" / "bland_altman.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a CSV that is not ours: one error naming it, nothing written
    alien = tmp_path / "alien_shift.csv"
    alien.write_text("a,b\n1,2\n")
    assert main(["stats", str(alien), "-o", str(tmp_path / "nothing")]) == 1
    assert "alien_shift.csv" in capsys.readouterr().err and not (tmp_path / "nothing").exists()
    empty = tmp_path / "sub-9_levels.csv"
    pd.DataFrame(columns=LEVEL_COLUMNS).to_csv(empty, index=False)
    assert main(["stats", str(empty), "-o", str(tmp_path / "nothing")]) == 1
    assert "sub-9_levels.csv" in capsys.readouterr().err and not (tmp_path / "nothing").exists()


def test_pmj_above_the_cord_is_reached_by_extrapolation(phantoms):
    """A cord segmentation stopping 12 mm below the PMJ: the centerline is extended linearly up to it."""
    ph = phantoms["iso1"]
    axis = si_axis(ph.affine)
    cord = np.moveaxis(ph.cord.copy(), axis, 0)
    top = np.argwhere(ph.pmj)[0][axis]
    cord[top - 12:] = 0  # LPI: the index grows towards superior
    cropped = compute_levels(ph.rootlets, np.moveaxis(cord, 0, axis), ph.affine, ph.discs, ph.pmj, method="reference")
    full = compute_levels(ph.rootlets, ph.cord, ph.affine, ph.discs, ph.pmj, method="reference")
    assert abs(cropped.origin.offset_mm) < 0.05 and full.origin.offset_mm > 5  # the origin is the PMJ only when above
    diff = np.abs(cropped.levels["mid_mm"] - (full.levels["mid_mm"] - full.origin.offset_mm))
    spinal = (cropped.levels["kind"] == "spinal").to_numpy()
    assert diff[spinal].max() < 0.2
    assert diff[~spinal].max() <= _step(ph)  # the lab's discs sit on whole slices of the cord's own b-spline: one may move
    assert cropped.centerline.length_mm > full.centerline.length_mm - 12 - 2 * _step(ph)


def test_tables_of_earlier_versions_are_read_and_mixing_versions_is_refused(files, tmp_path, capsys):
    """A table with the old column names (start_* = rostral, end_* = caudal) and no version reads in today's layout;
    `rootlets stats` refuses to mix it with today's, in one line naming the file and the fix."""
    from rootlets_task.io.tables import OLD_COLUMNS, read_levels_table

    out, _ = levels_from_files(files["rootlets"], files["cord"], files["discs"], files["pmj"], out_dir=tmp_path / "new",
                               prefix="sub-01_T2w")
    new = pd.read_csv(out["csv"])
    old_dir = tmp_path / "old"
    old_dir.mkdir()
    renamed = {v: k for k, v in OLD_COLUMNS.items()}
    old = new.rename(columns=renamed).drop(columns=["mean_probability", "fraction_below_half", "numbering",
                                                    "suggested_level", "original_level"])
    old.to_csv(old_dir / "sub-02_T2w_levels.csv", index=False)
    (old_dir / "sub-02_T2w_levels.json").write_text(json.dumps({"method": "gapfree", "reference": "PMJ"}))
    upgraded = read_levels_table(old_dir / "sub-02_T2w_levels.csv")
    assert list(upgraded.columns) == LEVEL_COLUMNS
    pd.testing.assert_frame_equal(upgraded[list(renamed)], read_levels_table(out["csv"])[list(renamed)])
    assert main(["stats", str(out["csv"]), str(old_dir / "sub-02_T2w_levels.csv"), "-o", str(tmp_path / "s")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sub-02_T2w_levels.csv" in err and "version" in err and "re-run" in err
    assert not (tmp_path / "s").exists()
    assert main(["stats", str(old_dir), "-o", str(tmp_path / "s")]) == 0  # old tables alone: still analysed


def test_shift_tables_of_earlier_versions_read_in_the_papers_words(tmp_path):
    """Versions up to 0.x called VL T1-SL T1 "unshifted" (same name); the paper calls that pair shifted and pairs the
    unshifted VL T1 with SL C8. An old ``_shift.csv`` reads with each row named by the pair it holds, once."""
    from rootlets_task.io.tables import read_shift_table

    old = pd.DataFrame({"pairing": ["unshifted", "unshifted", "shifted", "shifted"],
                        "vertebral_level": ["C7", "T1", "C7", "T1"], "spinal_level": ["C7", "T1", "C8", "T1"],
                        "vertebral_mid_mm": [120.0, 137.0, 120.0, 137.0], "spinal_mid_mm": [110.0, 133.0, 122.0, 133.0],
                        "shift_mm": [10.0, 4.0, -2.0, 4.0]})
    old.to_csv(tmp_path / "old_shift.csv", index=False)
    new = read_shift_table(tmp_path / "old_shift.csv")
    assert list(new.columns) == SHIFT_COLUMNS
    pairs = list(zip(new.pairing, new.vertebral_level, new.spinal_level, strict=True))
    assert pairs == [("unshifted", "C7", "C7"), ("shifted", "T1", "T1"), ("shifted", "C7", "C8")] or \
        sorted(pairs) == sorted([("unshifted", "C7", "C7"), ("shifted", "T1", "T1"), ("shifted", "C7", "C8")])
    assert new.loc[new.vertebral_level == "T1", "shift_mm"].tolist() == [4.0]
