"""`rootlets -i IMG -levels`: image -> rootlets -> cord, discs, PMJ -> levels, checked against the phantom truth.

The external tools (sct_deepseg, totalspineseg, spineps, sct_detect_pmj) need weights that cannot be downloaded
here: they are replaced by TEST-ONLY stand-in executables (``tests/fake_tools.py``, MOCKS) put first on PATH,
which record their argv and write the phantom's true cord, discs and PMJ (and a SPINEPS-like vertebra mask).
Everything else is real: the segmentation with the bundled tiny release, the levels, the files and the record.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from support import fake_tools

from rootlets_task.cli import rootlets as cli
from rootlets_task.core.errors import RootletsError
from rootlets_task.core.files import sha256_file
from rootlets_task.core.options import ChainOptions, ModelOptions
from rootlets_task.inference.cropping import crop_box
from rootlets_task.io import viewers
from rootlets_task.models.releases import PHANTOM_MANIFEST
from rootlets_task.pipeline import chain
from rootlets_task.pipeline.chain import ChainInputs

SEED = 4


@pytest.fixture(scope="module")
def truth(files):
    return json.loads(files["truth"].read_text())


def _by_level(result, kind: str) -> dict[str, dict]:
    rows = result.levels[(result.levels["kind"] == kind) & (result.levels["status"] == "ok")]
    return {str(r["value"]): r for _, r in rows.iterrows()}


def _assert_levels(result, truth: dict, kind: str, values=None) -> None:
    """Midpoints within one voxel (1 mm) of the truth (vertebral with whole-slice discs: 1.5), ends within two.

    The published convention measures a level between the centres of its end slices (up to a voxel inside each
    true end) and the PMJ label is rounded to a voxel, as justified in test_levels.py; a midpoint averages both ends.
    The reference method's origin lies ``origin_offset_mm`` above the PMJ (the lab's origin): taken off here.
    """
    got = _by_level(result, kind)
    expected = truth[f"{kind}_levels"]
    offset = (result.origin or {}).get("origin_offset_mm") or 0.0
    mid_tol = 1.5 if kind == "vertebral" and result.reference.startswith("centerline top") else 1.0
    assert set(values or expected) <= set(got), (kind, sorted(got))
    for value in values or expected:
        for ours, end, tol in (("rostral_mm", "start_mm", 2.0), ("caudal_mm", "end_mm", 2.0), ("mid_mm", "mid_mm", mid_tol)):
            assert abs(got[value][ours] - offset - expected[value][end]) <= tol, (kind, value, end, got[value][ours],
                                                                                  expected[value])


def run(image, out, *, cord=None, discs=None, pmj=None, rootlets=None, release=None, device="auto", segmenter=None,
        qc_dir=None, **options):
    """``chain.run_chain`` with the chain's choices as keywords (the label files, model and chain options)."""
    return chain.run_chain(image, out, ChainInputs(cord=cord, discs=discs, pmj=pmj, rootlets=rootlets),
                           ChainOptions(**options), ModelOptions(release=release, device=device), segmenter, qc_dir)


def _truth_run(files, out: Path, **kwargs):
    args = {"rootlets": files["rootlets"], "cord": files["cord"], "discs": files["discs"], "pmj": files["pmj"],
            "method": "reference", **kwargs}
    return run(files["image"], out, **args)


def test_file_sources_give_the_phantom_truth(no_tools, tmp_path, files, truth, phantom):
    out = tmp_path / "out"
    result = _truth_run(files, out)
    assert result.sources == {"cord": "file", "discs": "file", "pmj": "file"}
    assert result.reference == "centerline top (cord and PMJ)" and result.origin["origin_offset_mm"] > 5
    assert any("above the PMJ" in n for n in result.notes) and result.numbering["status"] == "ok"
    # the published method on the true rootlets and discs gives the truth (see _assert_levels for the tolerance)
    _assert_levels(result, truth, "spinal")
    _assert_levels(result, truth, "vertebral")
    truth_shift = {(v, k): truth["vertebral_levels"][v]["mid_mm"] - truth["spinal_levels"][k]["mid_mm"]
                   for v in truth["vertebral_levels"] for k in truth["spinal_levels"]}
    for row in result.shift.itertuples():
        v = {f"C{i}": str(i) for i in range(1, 8)} | {"T1": "8"}
        k = {f"C{i}": str(i) for i in range(2, 9)} | {"T1": "9"}
        assert abs(row.shift_mm - truth_shift[v[row.vertebral_level], k[row.spinal_level]]) <= 2.0
    assert set(result.shift["pairing"]) == {"unshifted", "shifted"}

    names = {p.name for p in out.iterdir()}
    stem = "phantom_T2w"
    assert names == {f"{stem}{s}" for s in ("_rootlets.nii.gz", "_rootlets.json", "_label-SC_seg.nii.gz", "_label-SC_seg.json",
                                            "_label-discs_dlabel.nii.gz", "_label-discs_dlabel.json",
                                            "_label-PMJ_dlabel.nii.gz", "_label-PMJ_dlabel.json", "_spinal_levels.nii.gz",
                                            "_vertebral_levels.nii.gz", "_levels.csv", "_levels.json", "_shift.csv",
                                            "_levels_lab.csv", "_chain.json", "_rootlets.tsv", "_spinal_levels.tsv",
                                            "_vertebral_levels.tsv")} | set(viewers.FOLDER_FILES)
    for kind in ("cord", "discs", "pmj", "rootlets"):
        copied = nib.load(result.outputs[kind])
        assert np.array_equal(np.asarray(copied.dataobj), getattr(phantom, kind))
        assert np.allclose(copied.affine, phantom.affine)
    sidecar = json.loads((out / f"{stem}_label-discs_dlabel.json").read_text())
    assert sidecar["Source"] == "file" and sidecar["SourceFile"] == os.path.relpath(files["discs"], out)
    assert sidecar["SourceSHA256"] == sha256_file(files["discs"])
    record = json.loads(result.outputs["record"].read_text())
    assert record["sources"]["discs"]["source"] == "file" and record["sources"]["discs"]["reason"].startswith("-discs ")
    spinal = np.asarray(nib.load(result.outputs["spinal"]).dataobj)
    assert set(np.unique(spinal)) == set(range(10)) - {1}


def test_rerun_skips_overwrite_recomputes_and_a_changed_input_reruns_only_what_depends_on_it(no_tools, tmp_path, files,
                                                                                              phantom):
    out = tmp_path / "out"
    first = _truth_run(files, out)
    assert set(first.steps.values()) == {"computed"}
    def stamps() -> dict[str, int]:  # every output but the record, which notes the sources of each run
        return {p.name: p.stat().st_mtime_ns for p in out.iterdir() if not p.name.endswith("_chain.json")}

    before = stamps()
    again = _truth_run(files, out)
    assert set(again.steps.values()) == {"up to date"}
    assert stamps() == before
    assert again.levels.equals(first.levels)

    moved = phantom.pmj.copy()
    moved[np.nonzero(moved)] = 0
    i, j, k = np.argwhere(phantom.pmj)[0]
    moved[i, j, k - 3] = 50
    pmj = tmp_path / "pmj_lower.nii.gz"
    nib.save(nib.Nifti1Image(moved, phantom.affine), pmj)
    changed = _truth_run(files, out, pmj=pmj)
    assert changed.steps == {"rootlets": "up to date", "cord": "up to date", "discs": "up to date", "pmj": "computed",
                             "levels": "computed"}
    delta = changed.levels["mid_mm"] - first.levels["mid_mm"]
    # the PMJ moved 3 mm caudally, inside the cord: the lab's origin (the cord's top) stays, so the distances do too,
    # and the PMJ now lies ~3 mm further below that origin (the anatomical distances would shrink by those 3 mm)
    assert np.allclose(delta.dropna(), 0, atol=0.01)
    assert 2.5 < changed.origin["origin_offset_mm"] - first.origin["origin_offset_mm"] < 3.5

    forced = _truth_run(files, out, pmj=pmj, overwrite=True)
    assert set(forced.steps.values()) == {"computed"}

    none = _truth_run(files, out, discs=None, discs_from="none")
    assert none.sources["discs"] == "none" and none.shift is None
    assert not (out / "phantom_T2w_vertebral_levels.nii.gz").exists()
    assert not (out / "phantom_T2w_label-discs_dlabel.nii.gz").exists() and not (out / "phantom_T2w_shift.csv").exists()


def test_numbering_warning_in_notes_record_and_qc_and_renumber_on_request(no_tools, tmp_path, files, phantom):
    """Rootlets given one level too high (-r): the chain warns, records the check, shows it on the QC page and index;
    ChainOptions(renumber="suggested") is another levels step, whose levels have the true names."""
    wrong = tmp_path / "wrong_rootlets.nii.gz"
    nib.save(nib.Nifti1Image(np.where(phantom.rootlets > 0, phantom.rootlets + 1, 0).astype(np.uint8), phantom.affine),
             wrong)
    out, qc = tmp_path / "out", tmp_path / "qc"
    result = _truth_run(files, out, rootlets=wrong, method="gapfree", qc_dir=qc)
    assert result.numbering["status"] == "shifted" and result.numbering["offset"] == -1
    assert any(n.startswith("numbering check") and "C3->C2" in n for n in result.notes)
    record = json.loads(result.outputs["record"].read_text())["steps"]["levels"]
    assert record["numbering"]["status"] == "shifted" and record["key"]["renumber"] == "none"
    assert 'data-numbering="shifted"' in (qc / "rootlets_task" / "index.html").read_text()
    assert "Numbering check: shifted" in result.qc_page.read_text()
    assert result.levels[result.levels.kind == "spinal"]["level"].iloc[0] == "C3"
    fixed = _truth_run(files, out, rootlets=wrong, method="gapfree", renumber="suggested")
    assert fixed.steps["levels"] == "computed" and fixed.numbering["applied"]
    spinal = fixed.levels[fixed.levels.kind == "spinal"]
    assert spinal["level"].iloc[0] == "C2" and spinal["original_level"].iloc[0] == "C3"
    again = _truth_run(files, out, rootlets=wrong, method="gapfree", renumber="suggested")
    assert again.steps["levels"] == "up to date" and again.numbering["applied"]  # read back from the levels JSON


def test_foreign_or_edited_outputs_are_never_replaced_without_overwrite(no_tools, tmp_path, files):
    out = tmp_path / "out"
    out.mkdir()
    foreign = out / "phantom_T2w_label-SC_seg.nii.gz"
    shutil.copy(files["cord"], foreign)
    with pytest.raises(RootletsError, match="exists and was not written by this chain.*-overwrite"):
        _truth_run(files, out)
    assert foreign.read_bytes() == files["cord"].read_bytes()
    result = _truth_run(files, out, overwrite=True)
    edited = result.outputs["spinal"]
    edited.write_bytes(edited.read_bytes() + b"\0")
    with pytest.raises(RootletsError, match="was changed since"):
        _truth_run(files, out, method="gapfree")


def test_cord_file_inside_the_output_folder_is_used_in_place(no_tools, tmp_path, files):
    out = tmp_path / "out"
    out.mkdir()
    own = out / "phantom_T2w_label-SC_seg.nii.gz"
    shutil.copy(files["cord"], own)
    result = _truth_run(files, out, cord=own)
    assert result.outputs["cord"] == own and own.read_bytes() == files["cord"].read_bytes()
    assert not (out / "phantom_T2w_label-SC_seg.json").exists()


def test_a_produced_cord_given_back_with_s_is_kept_and_nothing_recomputed(fake, tmp_path, files):
    out = tmp_path / "out"
    first = run(files["image"], out, rootlets=files["rootlets"], discs_from="none", pmj_from="none")
    produced = first.outputs["cord"]
    again = run(files["image"], out, rootlets=files["rootlets"], cord=produced, discs_from="none",
                            pmj_from="none")
    assert again.sources["cord"] == "file" and again.outputs["cord"] == produced
    assert produced.is_file() and produced.with_name("phantom_T2w_label-SC_seg.json").is_file()
    assert again.steps["levels"] == "up to date"  # same cord bytes, so the levels stand
    assert [c[1] for c in fake_tools.calls(fake)] == ["spinalcord"]


def test_an_output_never_overwrites_an_input(no_tools, tmp_path, files):
    out = tmp_path / "out"
    out.mkdir()
    disguised = out / "phantom_T2w_label-SC_seg.nii.gz"  # the discs input has the name of the chain's cord output
    shutil.copy(files["discs"], disguised)
    with pytest.raises(RootletsError, match="would overwrite the discs file; choose another -ofolder"):
        run(files["image"], out, rootlets=files["rootlets"], cord=files["cord"], discs=disguised)
    assert disguised.read_bytes() == files["discs"].read_bytes() and len(list(out.iterdir())) == 1


@pytest.mark.parametrize("discs_from", ["sct", "totalspineseg", "spineps"])
def test_tool_sources_through_their_command_lines(fake, tmp_path, files, truth, discs_from):
    out = tmp_path / "out"
    result = run(files["image"], out, rootlets=files["rootlets"], discs_from=discs_from, method="reference",
                             device="cpu")
    assert result.sources == {"cord": "sct", "discs": discs_from, "pmj": "sct"}
    calls = fake_tools.calls(fake)
    image = str(files["image"].absolute())
    assert calls[0][:5] == ["sct_deepseg", "spinalcord", "-i", image, "-o"]
    expected_discs = {"sct": ["sct_deepseg", "spine", "-i", image, "-o"], "totalspineseg": ["totalspineseg", image],
                      "spineps": ["spineps", "sample", "-i"]}[discs_from]
    assert calls[1][:len(expected_discs)] == expected_discs
    cord_tmp = calls[0][5]
    assert calls[2] == ["sct_detect_pmj", "-i", image, "-c", "t2", "-s", str(result.outputs["cord"].absolute()), "-ofolder",
                        calls[2][8], "-o", "phantom_T2w_pmj.nii.gz"]
    assert not Path(cord_tmp).parent.exists(), "the tool's private folder is removed"
    assert len(calls) == 3
    sidecar = json.loads(result.outputs["discs"].with_name("phantom_T2w_label-discs_dlabel.json").read_text())
    assert sidecar["Source"] == discs_from and sidecar["Command"].startswith(expected_discs[0])
    assert sidecar["SourceReason"] == f"-discs-from {discs_from}"
    cord_sidecar = json.loads(result.outputs["cord"].with_name("phantom_T2w_label-SC_seg.json").read_text())
    assert cord_sidecar["SourceReason"] == "auto: first available of file, sct"
    assert cord_sidecar["Command"].startswith("sct_deepseg spinalcord -i ")
    _assert_levels(result, truth, "spinal")
    if discs_from == "spineps":
        # our conversion puts label 2 halfway between 1 and 3 (SPINEPS/SCT convention), not at the phantom's C1/C2,
        # so vertebral C1 and C2 differ from the truth; C3..T1 come from real disc tips
        _assert_levels(result, truth, "vertebral", values=[str(v) for v in range(3, 9)])
    else:
        _assert_levels(result, truth, "vertebral")


@pytest.mark.parametrize("present,expected", [
    (("sct_deepseg", "totalspineseg", "spineps", "sct_detect_pmj"), {"cord": "sct", "discs": "sct", "pmj": "sct"}),
    (("totalspineseg", "spineps"), {"cord": "file", "discs": "totalspineseg", "pmj": "none"}),
    (("spineps",), {"cord": "file", "discs": "spineps", "pmj": "none"}),
    ((), {"cord": "file", "discs": "none", "pmj": "none"}),
])
def test_auto_takes_the_first_available_source(monkeypatch, tmp_path, prepared, files, present, expected):
    bin_dir = fake_tools.install(tmp_path / "some_bin", present)
    log = fake_tools.activate(monkeypatch, prepared, tmp_path / "calls.jsonl")
    monkeypatch.setenv("PATH", str(bin_dir))
    cord = None if expected["cord"] == "sct" else files["cord"]
    result = run(files["image"], tmp_path / "out", rootlets=files["rootlets"], cord=cord, device="cpu")
    assert result.sources == expected
    assert [c[0] for c in fake_tools.calls(log)] == [
        {"sct": "sct_deepseg", "totalspineseg": "totalspineseg", "spineps": "spineps"}[s]
        for s in (expected["cord"], expected["discs"]) if s not in ("file", "none")] + (
        ["sct_detect_pmj"] if expected["pmj"] == "sct" else [])
    if expected["pmj"] == "sct":
        assert result.reference == "PMJ"
    else:
        assert result.reference == ("cord rostral end" if expected["discs"] == "none" else "C2/C3 disc")
    assert ("vertebral" in result.outputs) == (expected["discs"] != "none")


def test_no_cord_source_is_a_clear_error(no_tools, tmp_path, files):
    with pytest.raises(RootletsError, match="no spinal cord segmentation: give one with -s CORD, or install the Spinal Cord"):
        run(files["image"], tmp_path / "out", rootlets=files["rootlets"])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind,choice,file,message", [
    ("discs", "sct", "d.nii.gz", "-discs d.nii.gz and -discs-from sct contradict each other"),
    ("cord", "file", None, "-cord-from file needs a file: give it with -s FILE"),
    ("pmj", "spineps", None, "-pmj-from spineps: unknown source; use one of auto, file, sct, none"),
])
def test_contradictory_or_unknown_sources_are_refused(kind, choice, file, message):
    with pytest.raises(RootletsError, match=message):
        chain.resolve_source(kind, choice, file)


def test_missing_chosen_tool_fails_before_any_work(no_tools, tmp_path, files):
    with pytest.raises(RootletsError, match=r"totalspineseg: `totalspineseg` was not found on PATH; pip install "
                                            r"'rootlets_task\[totalspineseg\]'.*-discs DISCS"):
        run(files["image"], tmp_path / "out", rootlets=files["rootlets"], cord=files["cord"],
                        discs_from="totalspineseg")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("step,mode", [("cord", "fail"), ("cord", "nothing"), ("cord", "otherspace"), ("cord", "badvalues"),
                                       ("discs:sct", "fail"), ("discs:totalspineseg", "nothing"),
                                       ("discs:spineps", "badvalues"), ("pmj", "otherspace")])
def test_a_failed_tool_step_leaves_nothing_in_the_output_folder(fake, monkeypatch, tmp_path, files, step, mode):
    out = tmp_path / "out"
    kind, _, source = step.partition(":")
    kwargs = {"cord": None if kind == "cord" else files["cord"], "discs_from": source or "none",
              "pmj_from": "sct" if kind == "pmj" else "none"}
    before = run(files["image"], out, rootlets=files["rootlets"], cord=files["cord"], discs_from="none",
                             pmj_from="none") if kind != "cord" else None
    listing = sorted(p.name for p in out.iterdir()) if before else []
    record = (out / "phantom_T2w_chain.json").read_text() if before else None
    monkeypatch.setenv("FAKE_TOOL_MODE", mode)
    if kind == "cord":
        kwargs.pop("cord")
        with pytest.raises(RootletsError, match="sct_deepseg spinalcord.*command `sct_deepseg spinalcord -i .*-s CORD"):
            run(files["image"], out, rootlets=files["rootlets"], **kwargs)
        assert list(out.iterdir()) == []  # the cord is the first step (the segmentation is cropped around it)
    else:
        with pytest.raises(RootletsError, match="command `"):
            run(files["image"], out, rootlets=files["rootlets"], **kwargs)
        assert sorted(p.name for p in out.iterdir()) == listing
        assert json.loads((out / "phantom_T2w_chain.json").read_text())["steps"]["levels"] == json.loads(record)["steps"][
            "levels"]


def test_pmj_not_found_falls_back_to_the_c2c3_disc(fake, monkeypatch, tmp_path, files):
    monkeypatch.setenv("FAKE_TOOL_MODE", "nothing")  # sct_detect_pmj writes nothing when it finds no PMJ
    result = run(files["image"], tmp_path / "out", rootlets=files["rootlets"], cord=files["cord"],
                             discs=files["discs"], pmj_from="sct")
    assert result.sources["pmj"] == "none" and result.reference == "C2/C3 disc"
    assert "sct_detect_pmj found no PMJ" in result.notes
    again = run(files["image"], tmp_path / "out", rootlets=files["rootlets"], cord=files["cord"],
                            discs=files["discs"], pmj_from="sct")
    assert again.steps["pmj"] == "up to date" and again.sources["pmj"] == "none"


def test_cli_prints_sources_table_and_outputs(no_tools, tmp_path, files, capsys):
    out = tmp_path / "out"
    code = cli.main(["-i", str(files["image"]), "-levels", "-rootlets", str(files["rootlets"]), "-s", str(files["cord"]),
                     "-discs", str(files["discs"]), "-pmj", str(files["pmj"]), "-ofolder", str(out), "-v", "0"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "cord from file, discs from file, PMJ from file" in printed
    assert "from the PMJ" in printed and "spinal (mm)" in printed and "vertebral (mm)" in printed
    assert any(line.split()[:1] == ["C5"] and line.count("-") >= 2 for line in printed.splitlines())
    assert str(out / "phantom_T2w_levels.csv") in printed

    code = cli.main(["-i", str(files["image"]), "-levels", "-rootlets", str(files["rootlets"]), "-ofolder", str(tmp_path / "o2"),
                     "-discs-from", "spineps", "-s", str(files["cord"])])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err[-1].startswith("rootlets: error: spineps: `spineps` was not found on PATH")
    assert not (tmp_path / "o2").exists()
    for chain_only in (["-s", str(files["cord"])], ["-crop-to-cord"]):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["-i", str(files["image"]), *chain_only])
        assert exit_.value.code == 2 and "only work with -levels" in capsys.readouterr().err


def _bundled_dice() -> float:
    return json.loads(PHANTOM_MANIFEST.read_text())["heldout_dice"]["mean"]


def test_image_to_levels_with_the_tiny_release(no_tools, phantom_home, tmp_path, files, truth, phantom):
    out = tmp_path / "out"
    kwargs = {"cord": files["cord"], "discs": files["discs"], "pmj": files["pmj"], "release": "phantom", "device": "cpu",
              "method": "reference"}
    result = run(files["image"], out, **kwargs)
    assert result.steps["rootlets"] == "computed" and result.segmenter is not None
    rootlets = nib.load(result.outputs["rootlets"])
    assert rootlets.shape == phantom.image.shape and np.allclose(rootlets.affine, phantom.affine)
    sidecar = json.loads(result.outputs["rootlets"].with_name("phantom_T2w_rootlets.json").read_text())
    assert sidecar["GeneratedBy"][0]["Release"] == "phantom"
    record = json.loads(result.outputs["record"].read_text())["steps"]["rootlets"]["key"]
    assert record["crop_to_cord"] is None and record["model"]["tag"] == "phantom"  # no crop unless asked for
    assert sidecar["GeneratedBy"][0]["Settings"]["CropToCord"] is None
    _assert_levels(result, truth, "vertebral")  # true discs and cord: exact whatever the rootlets

    # the same model passed in as a loaded Segmenter is the same step: nothing is segmented again
    again = run(files["image"], out, **{**kwargs, "segmenter": result.segmenter})
    assert set(again.steps.values()) == {"up to date"}
    fresh = run(files["image"], out, **kwargs)
    assert set(fresh.steps.values()) == {"up to date"} and fresh.segmenter is None  # no model loaded for nothing

    # cropping to the cord is another rootlets step: segmented again, recorded in the step key and the sidecar
    cropped = run(files["image"], out, **kwargs, crop_to_cord=True)
    assert cropped.steps["rootlets"] == "computed" and cropped.steps["levels"] == "computed"
    record = json.loads(cropped.outputs["record"].read_text())["steps"]["rootlets"]["key"]
    assert record["crop_to_cord"] == sha256_file(cropped.outputs["cord"])
    generated = json.loads(cropped.outputs["rootlets"].with_name("phantom_T2w_rootlets.json").read_text())["GeneratedBy"][0]
    assert generated["Settings"]["CropToCord"]["MarginMM"] == 10.0 and "-crop-to-cord" in generated["Name"]
    assert generated["Settings"]["CropToCord"]["CordFile"] == cropped.outputs["cord"].name  # beside the sidecar
    labels = np.asarray(nib.load(cropped.outputs["rootlets"]).dataobj)
    box = crop_box(nib.load(files["image"]), nib.load(files["cord"]))
    assert labels.sum() > 0 and labels[box].sum() == labels.sum()  # nothing outside the cord's box

    if _bundled_dice() < 0.6:
        pytest.skip(f"bundled phantom release is interim (held-out Dice {_bundled_dice():.2f} < 0.6, reported by "
                    "test_release_bundle): level accuracy cannot be asked of it")
    # The tiny model's rootlets are imperfect (held-out Dice ~0.7 in its manifest): a few stray voxels of a level move
    # that level's end (the published method takes the extreme slices), so one voxel cannot be asked of every level;
    # the one-voxel agreement of every level is checked with the true rootlets through the same chain (-r). What must
    # hold here: every level is found, in rostro-caudal order, and the typical (median) midpoint error is one voxel.
    got = _by_level(result, "spinal")
    assert set(got) == set(truth["spinal_levels"])
    values = sorted(truth["spinal_levels"], key=int)
    predicted = [got[v]["mid_mm"] for v in values]
    assert predicted == sorted(predicted), predicted
    offset = result.origin["origin_offset_mm"] if result.reference.startswith("centerline top") else 0.0
    errors = [abs(got[v]["mid_mm"] - offset - truth["spinal_levels"][v]["mid_mm"]) for v in values]
    assert float(np.median(errors)) <= 1.0, errors


def test_each_input_is_decoded_once(no_tools, tmp_path, files, monkeypatch):
    """The chain holds what it decoded: the image and each label file are read once, QC included, nothing re-read."""
    import nibabel

    loads = []
    real = nibabel.load
    monkeypatch.setattr(nibabel, "load", lambda path, *a, **k: (loads.append(Path(path).name), real(path, *a, **k))[1])
    _truth_run(files, tmp_path / "out", qc_dir=tmp_path / "qc")
    assert sorted(loads) == sorted(Path(files[kind]).name for kind in ("image", "rootlets", "cord", "discs", "pmj"))


SCT_COMMANDS = {  # what each SCT version's stand-in must be called with (cord task; disc task or classic labelling)
    "6.4": (["sct_deepseg", "-i", "IMG", "-task", "seg_sc_contrast_agnostic", "-o"], ["sct_label_vertebrae", "-i", "IMG"]),
    "6.5": (["sct_deepseg", "-i", "IMG", "-task", "seg_sc_contrast_agnostic", "-o"],
            ["sct_deepseg", "-i", "IMG", "-task", "totalspineseg", "-o"]),
    "7.0": (["sct_deepseg", "spinalcord", "-i", "IMG", "-o"], ["sct_deepseg", "totalspineseg", "-i", "IMG", "-o"]),
    "7.1": (["sct_deepseg", "spinalcord", "-i", "IMG", "-o"], ["sct_deepseg", "totalspineseg", "-i", "IMG", "-o"]),
    "7.2": (["sct_deepseg", "spinalcord", "-i", "IMG", "-o"], ["sct_deepseg", "spine", "-i", "IMG", "-o"]),
    "7.4.dev0": (["sct_deepseg", "spinalcord", "-i", "IMG", "-o"], ["sct_deepseg", "spine", "-i", "IMG", "-o"]),
}


@pytest.mark.parametrize("version", SCT_COMMANDS)
def test_every_supported_sct_version_gives_cord_and_discs(monkeypatch, tmp_path, prepared, files, phantom, version):
    """Stand-ins of each SCT version (tests/support/fake_tools.py, MOCKS speaking that version's command line)."""
    root = fake_tools.set_sct_version(tmp_path / "sct", version)
    log = fake_tools.activate(monkeypatch, prepared, tmp_path / "calls.jsonl")
    monkeypatch.setenv("PATH", str(fake_tools.install(root / "bin", ("sct_deepseg", "sct_label_vertebrae"))))
    result = run(files["image"], tmp_path / "out", rootlets=files["rootlets"], pmj_from="none", device="cpu")
    cord_call, discs_call = fake_tools.calls(log)
    image = str(files["image"].absolute())
    expected_cord, expected_discs = (
        [image if a == "IMG" else a for a in command] for command in SCT_COMMANDS[version])
    assert cord_call[:len(expected_cord)] == expected_cord and discs_call[:len(expected_discs)] == expected_discs
    assert result.sources == {"cord": "sct", "discs": "sct" if version != "6.4" else "label_vertebrae", "pmj": "none"}
    assert np.array_equal(result.arrays["cord"], phantom.cord) and np.array_equal(result.arrays["discs"], phantom.discs)
    if version == "6.4":  # classic labelling runs on the cord the chain made, with the chain's contrast
        assert discs_call[3:7] == ["-s", str(result.outputs["cord"].absolute()), "-c", "t2"]


def test_sct_label_vertebrae_on_request_and_the_6_4_disc_task_refused(monkeypatch, tmp_path, prepared, files):
    root = fake_tools.set_sct_version(tmp_path / "sct", "6.4")
    fake_tools.activate(monkeypatch, prepared, tmp_path / "calls.jsonl")
    monkeypatch.setenv("PATH", str(fake_tools.install(root / "bin", ("sct_deepseg", "sct_label_vertebrae"))))
    result = run(files["image"], tmp_path / "a", rootlets=files["rootlets"], cord=files["cord"], pmj_from="none",
                 discs_from="label_vertebrae", contrast="t1")
    sidecar = json.loads(result.outputs["discs"].with_name("phantom_T2w_label-discs_dlabel.json").read_text())
    assert sidecar["Tool"] == "sct_label_vertebrae" and "-c t1" in sidecar["Command"]
    with pytest.raises(RootletsError, match=r"SCT 6.4 has no disc task .*-discs-from label_vertebrae"):
        run(files["image"], tmp_path / "b", rootlets=files["rootlets"], cord=files["cord"], pmj_from="none",
            discs_from="sct")
    assert not (tmp_path / "b").exists(), "refused before any work"
