"""Measurements per level (`rootlets measure`, `-measure`): against SCT's own numbers, and the files, CLI and bad input.

The reference numbers in tests/data/measure_reference/reference.json were made by SCT's own commands
(sct_process_segmentation -perlevel, sct_extract_metric) on the kept inputs (make_reference.py, outside CI; README.md
there). Everything else runs for real on phantoms; no tool is mocked here.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

import rootlets_task
from rootlets_task.cli import rootlets as cli
from rootlets_task.core.errors import RootletsError
from rootlets_task.core.options import MeasureOptions
from rootlets_task.io.phantom import CORD_RADII, make_phantom
from rootlets_task.measures import metrics
from rootlets_task.measures.perlevel import measure_levels

REFERENCE = Path(__file__).parent / "data" / "measure_reference"
CASES = ("phantom_iso", "phantom_aniso", "oblique", "sct_t2")
CSA_RTOL = 1e-3  # the bound; the agreement found is ~1e-12 (the same operations in the same libraries)
MEAN_RTOL = 1e-6


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads((REFERENCE / "reference.json").read_text())


def _ours(case: str, kind: str, mask: str, method: str) -> pd.DataFrame:
    folder = REFERENCE / case
    data = folder / "map.nii.gz" if (folder / "map.nii.gz").is_file() else folder / "image.nii.gz"
    result = measure_levels(folder / "image.nii.gz", {kind: folder / f"{kind}_levels.nii.gz"}, {"m": data},
                            cord=folder / "cord.nii.gz", mask=None if mask == "cord" else folder / "mask.nii.gz",
                            options=MeasureOptions(method))
    return result.table.set_index("value")


def _close(ours: float, sct, rtol: float) -> bool:
    if sct in ("", None) or (isinstance(sct, float) and np.isnan(sct)):
        return bool(np.isnan(ours))
    return abs(ours - sct) <= rtol * abs(sct)


@pytest.mark.parametrize("kind", ["spinal", "vertebral"])
@pytest.mark.parametrize("case", CASES)
def test_morphometry_per_level_equals_sct_process_segmentation(reference, case, kind):
    sct = reference["cases"][case][kind]["process_segmentation"]
    ours = _ours(case, kind, "cord", "bin")
    assert sorted(int(float(v)) for v in sct) == sorted(ours.index)  # the same levels, from the same level file
    for level, row in sct.items():
        got = ours.loc[int(float(level))]
        first, _, last = str(row["Slice (I->S)"]).partition(":")
        assert got["slices"] == int(float(last or first)) - int(float(first)) + 1
        assert _close(got["csa_mm2"], row["MEAN(area)"], CSA_RTOL), (level, got["csa_mm2"], row["MEAN(area)"])
        for column, theirs in (("csa_sd_mm2", "STD(area)"), ("length_mm", "SUM(length)"),
                               ("diameter_ap_ellipse_mm", "MEAN(diameter_AP_ellipse)"), ("diameter_rl_mm", "MEAN(diameter_RL)"),
                               ("eccentricity", "MEAN(eccentricity)"), ("solidity", "MEAN(solidity)"),
                               ("angle_ap_deg", "MEAN(angle_AP)"), ("angle_rl_deg", "MEAN(angle_RL)")):
            assert _close(got[column], row[theirs], CSA_RTOL), (level, column, got[column], row[theirs])


@pytest.mark.parametrize("method", ["bin", "wa"])
@pytest.mark.parametrize("mask", ["cord", "mask"])
@pytest.mark.parametrize("kind", ["spinal", "vertebral"])
@pytest.mark.parametrize("case", CASES)
def test_map_statistics_per_level_equal_sct_extract_metric(reference, case, kind, mask, method):
    sct = reference["cases"][case][kind][f"extract_metric_{mask}_{method}"]
    ours = _ours(case, kind, mask, method)
    assert sorted(int(float(v)) for v in sct) == sorted(ours.index)
    for level, row in sct.items():
        got = ours.loc[int(float(level))]
        assert _close(got["m_mean"], row[f"{method.upper()}()"], MEAN_RTOL), (level, got["m_mean"], row)
        assert _close(got["m_sd"], row["STD()"], MEAN_RTOL), (level, got["m_sd"], row["STD()"])
        assert got["m_voxels"] == pytest.approx(row["Size [vox]"], abs=1e-4)  # SCT writes 4 decimals of a soft mask


def test_a_mask_without_voxels_in_a_level_gives_nan_and_a_warning_as_sct_gives_none(reference):
    """The oblique case's mask is empty over spinal level C5 (value 5): SCT writes no number, we write NaN, never 0."""
    assert reference["cases"]["oblique"]["spinal"]["extract_metric_mask_bin"]["5"]["BIN()"] in ("", None)
    folder = REFERENCE / "oblique"
    result = measure_levels(folder / "image.nii.gz", {"spinal": folder / "spinal_levels.nii.gz"},
                            {"m": folder / "map.nii.gz"}, cord=folder / "cord.nii.gz", mask=folder / "mask.nii.gz")
    row = result.table.set_index("value").loc[5]
    assert np.isnan(row["m_mean"]) and np.isnan(row["m_sd"]) and row["m_voxels"] == 0
    assert any("no voxel" in n and "C5" in n for n in result.notes)
    assert not np.isnan(result.table.set_index("value").loc[4, "m_mean"])


def test_weighted_median_and_non_finite_values():
    data = np.array([1.0, 2.0, 3.0, np.nan, 100.0])
    weights = np.array([1.0, 1.0, 1.0, 1.0, 0.0])  # NaN ignored (SCT sets it and its weight to 0), 100 outside the mask
    stats = metrics.map_statistics(data, weights, "wa")
    assert stats["mean"] == pytest.approx(2.0) and stats["median"] == pytest.approx(2.0)
    assert stats["sd"] == pytest.approx(np.std([1.0, 2.0, 3.0])) and stats["voxels"] == 4.0
    soft = metrics.map_statistics(np.array([1.0, 3.0]), np.array([0.4, 0.6]), "bin")
    assert soft["mean"] == 3.0  # bin: only the voxel >= 0.5 counts
    assert metrics.map_statistics(np.array([1.0, 3.0]), np.array([0.4, 0.6]), "wa")["mean"] == pytest.approx(2.2)


def test_phantom_csa_is_the_true_ellipse_area_and_the_api_returns_a_table():
    ph = make_phantom(spacing=(0.5, 0.5, 1.0), seed=1)
    table = rootlets_task.measure(ph.nifti("image"), {"spinal": ph.spinal_levels, "vertebral": ph.vertebral_levels},
                                  {"T2": ph.nifti("image")}, cord=ph.cord)
    assert set(table["kind"]) == {"spinal", "vertebral"} and (table["slices"] > 0).all()
    assert table["csa_mm2"].to_numpy() == pytest.approx(np.pi * CORD_RADII[0] * CORD_RADII[1], rel=0.03)
    assert (table["T2_voxels"] == table["cord_voxels"]).all()  # the maps are measured within the cord by default


def test_a_map_on_another_grid_is_resampled_when_it_covers_the_levels_and_refused_otherwise(tmp_path):
    ph = make_phantom(seed=1)
    image = ph.nifti("image")
    coarse = ph.affine.copy()
    coarse[:3, :3] *= 2  # twice coarser, same origin: covers the whole image
    shape = tuple(int(np.ceil(n / 2)) + 1 for n in ph.image.shape)
    constant = nib.Nifti1Image(np.full(shape, 7.0, np.float32), coarse)
    nib.save(constant, tmp_path / "coarse.nii.gz")
    result = measure_levels(image, {"spinal": ph.spinal_levels}, {"c": tmp_path / "coarse.nii.gz"}, cord=ph.cord)
    assert result.table["c_mean"].to_numpy() == pytest.approx(7.0)
    assert any("resampled" in n and "coarse.nii.gz" in n for n in result.notes)
    away = ph.affine.copy()
    away[:3, 3] += 500.0  # another space
    nib.save(nib.Nifti1Image(np.ones(ph.image.shape, np.float32), away), tmp_path / "away.nii.gz")
    with pytest.raises(RootletsError, match=r"map away .*away\.nii\.gz: on another grid that does not cover"):
        measure_levels(image, {"spinal": ph.spinal_levels}, {"away": tmp_path / "away.nii.gz"}, cord=ph.cord)
    nib.save(nib.Nifti1Image(np.ones((*ph.image.shape, 3), np.float32), ph.affine), tmp_path / "four.nii.gz")
    with pytest.raises(RootletsError, match="a 3D volume is needed"):
        measure_levels(image, {"spinal": ph.spinal_levels}, {"f": tmp_path / "four.nii.gz"}, cord=ph.cord)


def test_chain_measure_writes_tables_sidecar_and_figure_and_resumes(no_tools, phantom_home, tmp_path, files, capsys):
    """`rootlets -i IMG -levels -measure MAP` with the tiny release (real inference) on a phantom."""
    out = tmp_path / "out"
    t2map = tmp_path / "t2map.nii.gz"
    img = nib.load(files["image"])
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj) / 10.0, img.affine), t2map)
    argv = ["-i", str(files["image"]), "-levels", "-release", "phantom", "-device", "cpu", "-s", str(files["cord"]),
            "-discs", str(files["discs"]), "-pmj", str(files["pmj"]), "-ofolder", str(out), "-measure", f"T2={t2map}",
            "-qc", str(tmp_path / "qc")]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    table = pd.read_csv(out / "phantom_T2w_measure.csv")
    assert {"spinal", "vertebral"} == set(table["kind"]) and table["T2_mean"].notna().all()
    assert table["csa_mm2"].between(40, 60).all()
    tsv = pd.read_csv(out / "phantom_T2w_measure.tsv", sep="\t", na_values="n/a")
    pd.testing.assert_frame_equal(tsv, table)
    sidecar = json.loads((out / "phantom_T2w_measure.json").read_text())
    assert sidecar["csa_mm2"]["Units"] == "mm^2" and "T2_mean" in sidecar and sidecar["Method"] == "bin"
    assert (out / "phantom_T2w_measure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "phantom_T2w_measure.png" in printed
    page = tmp_path / "qc" / "rootlets_task" / "phantom_T2w"  # the QC page shows the same figure
    assert (page / "measure.png").read_bytes() == (out / "phantom_T2w_measure.png").read_bytes()
    assert '<img src="measure.png"' in (page / "index.html").read_text()
    record = json.loads((out / "phantom_T2w_chain.json").read_text())["steps"]["measure"]
    assert set(record["outputs"]) >= {"phantom_T2w_measure.csv", "phantom_T2w_measure.png"}
    # a second run skips the step; another method recomputes it
    from rootlets_task.core.options import ChainOptions
    from rootlets_task.pipeline.chain import ChainInputs, run_chain

    inputs = ChainInputs(cord=files["cord"], discs=files["discs"], pmj=files["pmj"],
                         rootlets=out / "phantom_T2w_rootlets.nii.gz")
    again = run_chain(files["image"], out, inputs, ChainOptions(measure=(f"T2={t2map}",)))
    assert again.steps["measure"] == "up to date"
    wa = run_chain(files["image"], out, inputs, ChainOptions(measure=(f"T2={t2map}",), measure_method="wa"))
    assert wa.steps["measure"] == "computed" and json.loads((out / "phantom_T2w_measure.json").read_text())["Method"] == "wa"


def test_chain_refuses_a_missing_map_before_any_work(no_tools, tmp_path, files, capsys):
    out = tmp_path / "out"
    argv = ["-i", str(files["image"]), "-levels", "-rootlets", str(files["rootlets"]), "-s", str(files["cord"]),
            "-ofolder", str(out), "-measure", str(tmp_path / "nope.nii.gz")]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "nope.nii.gz: file not found" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())


def test_rootlets_measure_command(tmp_path, files, capsys):
    folder = REFERENCE / "sct_t2"
    argv = ["measure", "-i", str(folder / "image.nii.gz"), "-s", str(folder / "cord.nii.gz"), "-spinal",
            str(folder / "spinal_levels.nii.gz"), "-vertebral", str(folder / "vertebral_levels.nii.gz"), "-map",
            f"t2={folder / 'image.nii.gz'}", "-o", str(tmp_path), "-prefix", "t2"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "csa_mm2" in printed and "t2_mean" in printed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t2_measure.csv", "t2_measure.json", "t2_measure.png",
                                                         "t2_measure.tsv"]
    with pytest.raises(SystemExit):  # no level file: a usage error
        cli.main(["measure", "-i", str(folder / "image.nii.gz")])
    assert "give the levels to measure by" in capsys.readouterr().err


def test_batch_map_patterns_are_filled_per_image():
    from rootlets_task.batch.bids import Unit
    from rootlets_task.batch.units import unit_path

    unit = Unit(name="sub-03_ses-02_T2w", rel="sub-03/ses-02/anat/sub-03_ses-02_T2w.nii.gz",
                image="/data/bids/sub-03/ses-02/anat/sub-03_ses-02_T2w.nii.gz", subject="sub-03", session="ses-02",
                suffix="T2w", out_dir="/out")
    assert unit_path("T2=derivatives/maps/{subject}/{session}/{name}_T2map.nii.gz", unit) == \
        "T2=/data/bids/derivatives/maps/sub-03/ses-02/sub-03_ses-02_T2w_T2map.nii.gz"
    assert unit_path("/abs/{subject}_FA.nii.gz", unit) == "/abs/sub-03_FA.nii.gz"
