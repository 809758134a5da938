"""`rootlets speedcheck` and `rootlets batch -levers auto`, end to end on phantoms with the bundled phantom release.

Everything is real: nnU-Net inference of the trained phantom model (OpenVINO, 1 thread), the crop lever on the
phantom's cord box, the int8 lever quantised by NNCF (cached for the session), levels on the phantom's cord. The
phantom model's labels move with any tiling change, so on these images the crop lever moves level boundaries by
several mm and fails the default thresholds: that is the lever that must not be used. Nothing is mocked.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from rootlets_task.cli import rootlets as cli
from rootlets_task.inference import backends, cpu, int8
from rootlets_task.inference.segmenter import Segmenter
from rootlets_task.io.phantom import write_phantom
from rootlets_task.models import install
from rootlets_task.pipeline import speedcheck

pytestmark = pytest.mark.skipif(not (backends.openvino_available() and int8.nncf_available()),
                                reason="int8 extra (openvino, nncf) not installed")
SEEDS = (0, 1)
NAMES = [f"sub-0{i}_T2w" for i in range(1, len(SEEDS) + 1)]


@pytest.fixture(autouse=True)
def _store(phantom_store, monkeypatch):
    monkeypatch.setenv("ROOTLETS_TASK_HOME", str(phantom_store))


@pytest.fixture(scope="module")
def bids(tmp_path_factory) -> Path:
    """sub-01, sub-02 (phantoms of seeds 0 and 1), their cord masks in derivatives/labels."""
    root, work = tmp_path_factory.mktemp("bids"), tmp_path_factory.mktemp("phantoms")
    for name, seed in zip(NAMES, SEEDS, strict=True):
        files = write_phantom(work / name, "LPI", seed=seed, prefix=name)
        anat, labels = root / name[:6] / "anat", root / "derivatives" / "labels" / name[:6] / "anat"
        anat.mkdir(parents=True)
        labels.mkdir(parents=True)
        shutil.copy(files["image"], anat / f"{name}.nii.gz")
        shutil.copy(files["cord"], labels / files["cord"].name)
    return root


def _image(bids: Path, i: int) -> Path:
    return bids / NAMES[i][:6] / "anat" / f"{NAMES[i]}.nii.gz"


def _cord(bids: Path, i: int) -> Path:
    return bids / "derivatives" / "labels" / NAMES[i][:6] / "anat" / f"{NAMES[i]}_label-SC_seg.nii.gz"


@pytest.fixture(scope="module")
def checked(bids, phantom_store, _backend_cache, tmp_path_factory):
    """`rootlets speedcheck` of every lever on sub-01 with its cord: (exit code, stdout, report path)."""
    out = tmp_path_factory.mktemp("check") / "speedcheck.json"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ROOTLETS_TASK_HOME", str(phantom_store))
        mp.setenv("ROOTLETS_TASK_CACHE", str(_backend_cache))
        import contextlib
        import io

        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            code = cli.main(["speedcheck", str(_image(bids, 0)), "-s", str(_cord(bids, 0)), "-release", "phantom",
                             "-threads", "1", "-o", str(out), "-v", "0"])
    return code, stdout.getvalue(), out


def _batch(bids: Path, out: Path, *args: str) -> int:
    return cli.main(["batch", str(bids), "-o", str(out), "-release", "phantom", "-threads", "1", "-v", "0",
                     "-levers", "auto", *args])


def _record(out: Path, i: int) -> dict:
    return json.loads((out / NAMES[i][:6] / "anat" / f"{NAMES[i]}_batch.json").read_text())["steps"]["unit"]


def _sidecar(out: Path, i: int) -> dict:
    return json.loads((out / NAMES[i][:6] / "anat" / f"{NAMES[i]}_rootlets.json").read_text())["GeneratedBy"][0]


def _assert_verdicts_follow_the_figures(report: dict) -> None:
    """Every verdict recomputed from the per-level figures of the report (midpoint within 1 voxel, boundary 1 mm)."""
    for lever, result in report["Levers"].items():
        misses = [d for image in result["images"] for d in image["levels"].values()
                  if "mid_diff_mm" not in d or round(d["mid_diff_mm"], 2) > 1.0 or round(d["boundary_diff_mm"], 2) > 1.0]
        assert result["passed"] == (not misses) == (not result["why"]), (lever, misses, result["why"])


def test_speedcheck_reports_every_lever_and_writes_the_json(checked, bids):
    code, text, path = checked
    assert code == 0 and text.strip().endswith(str(path))
    report = json.loads(path.read_text())
    record = install.model_folder("phantom")[1]
    assert report["Release"]["Release"] == "phantom" and report["Release"]["ModelSHA256"] == record["sha256"]
    assert speedcheck.release_problem(report, record) is None
    assert list(report["Levers"]) == list(speedcheck.default_levers()) and report["Int8"]["Precision"] == "int8"
    assert report["Exact"]["Precision"] == "float32" and report["CPU"]["Model"]
    assert ("bf16" in report["Levers"]) == cpu.has_bf16()  # bf16 is checked only where the CPU runs it
    for lever, result in report["Levers"].items():
        a = result["agreement"]
        assert result["seconds_per_image"] > 0 and result["speedup"] > 0, lever
        assert 0.99 <= a["min_voxel_agreement"] <= 1 and 0 < a["min_level_dice"] <= 1, (lever, a)
        (image,) = result["images"]
        assert {"C5", "C6", "C7", "C8"} <= set(image["levels"]) and set(image["dice"]) >= {"C5", "C6"}
        assert f"\n{lever} " in text  # a row of the table
    _assert_verdicts_follow_the_figures(report)
    # the crop lever's level moves on this model (its speed, 2 tiles of 8, is not asserted: no test depends on the
    # machine's load; benchmarks/bench_inference.py measures it)
    assert report["Images"][0]["CropBox"]["Source"] == "cord mask"
    assert not report["Levers"]["crop"]["passed"] and "boundary moved" in " ".join(report["Levers"]["crop"]["why"])
    assert report["Use"] == list(speedcheck.best_levers(report)) and "crop" not in report["Use"]
    assert f"rootlets batch -levers auto would use: {'+'.join(report['Use']) or 'no lever'}" in text


def test_batch_levers_auto_follows_the_report(checked, bids, tmp_path):
    report_path = checked[2]
    report = json.loads(report_path.read_text())
    out = tmp_path / "rootlets"
    assert _batch(bids, out, "-speedcheck", str(report_path)) == 0
    levers = json.loads((out / "dataset_description.json").read_text())["GeneratedBy"][0]["SpeedLevers"]
    assert levers["Levers"] == report["Use"] and levers["SpeedCheck"] == str(report_path.absolute())
    assert "moved" in levers["NotPassed"]["crop"][0] and "crop" not in levers["Levers"]
    for i in range(2):
        rec, sidecar = _record(out, i), _sidecar(out, i)
        assert rec["levers"]["used"] == report["Use"] and "crop not used: " in rec["levers"]["why"]
        assert sidecar["Settings"]["CropToCord"] is None  # the failed lever did not run
        assert sidecar["Settings"]["Precision"] == next((p for p in ("int8", "bf16") if p in report["Use"]), "float32")
    assert not (out / "logs" / "speedcheck.json").exists()  # the report given was followed: no check here


def test_batch_levers_auto_without_a_report_checks_the_first_image(checked, bids, tmp_path, capsys):
    """With a report of another release (ignored, with a message) the batch checks its first image itself, writes that
    image from the check's exact path and the rest with what passed."""
    other = json.loads(checked[2].read_text())
    other["Release"]["ModelSHA256"] = "0" * 64
    (tmp_path / "other.json").write_text(json.dumps(other))
    out = tmp_path / "rootlets"
    assert _batch(bids, out, "-speedcheck", str(tmp_path / "other.json"), "-levers-check", "1") == 0
    assert "other.json ignored: made with release phantom (model sha256 000000000000)" in capsys.readouterr().err
    report = json.loads((out / "logs" / "speedcheck.json").read_text())
    assert report["Checked"] == [f"sub-01/anat/{NAMES[0]}.nii.gz"]
    assert list(report["Levers"]) == list(speedcheck.default_levers())
    assert set(report["NotChecked"]) == set(speedcheck.levers_not_here())  # the bf16 levers, on a CPU without bf16
    _assert_verdicts_follow_the_figures(report)
    image = report["Images"][0]
    assert image["File"] == f"bids:raw:sub-01/anat/{NAMES[0]}.nii.gz" and image["Cord"].startswith("bids:raw:derivatives/")
    assert report["Release"]["ModelFolder"] == "phantom/nnUNetTrainer__nnUNetPlans__3d_fullres", "no local folders"
    levers = json.loads((out / "dataset_description.json").read_text())["GeneratedBy"][0]["SpeedLevers"]
    assert levers["SpeedCheck"] == "logs/speedcheck.json" and "ignored" in levers["Ignored"]
    assert levers["Levers"] == report["Use"] and not report["Levers"]["crop"]["passed"]

    first, second = _record(out, 0), _record(out, 1)
    assert first["levers"]["used"] == [] and "this image was checked" in first["levers"]["why"]
    assert "levers" not in first["key"] and second["key"]["levers"] == report["Use"]
    assert second["levers"]["used"] == report["Use"] and "crop not used" in second["levers"]["why"]
    # the checked image is the exact path's: equal to a plain float32 run
    exact = Segmenter(install.model_folder("phantom")[0], device="cpu", verbose=0, threads=1).segment_image(
        nib.load(_image(bids, 0)))
    written = np.asanyarray(nib.load(out / "sub-01" / "anat" / f"{NAMES[0]}_rootlets.nii.gz").dataobj)
    assert np.array_equal(written, exact)

    # a second run reuses the saved verdict (same keys) and finds everything done
    assert _batch(bids, out, "-levers-check", "1") == 0
    assert "2 skipped" in capsys.readouterr().out


def test_verdict_on_level_extents():
    t = speedcheck.Thresholds(max_mid_voxels=1.0, max_boundary_mm=1.0)
    exact = {2: (0.0, 10.0), 3: (10.0, 20.0)}
    rows, why = speedcheck.compare_levels(exact, {2: (0.5, 10.5), 3: (11.0, 20.0)}, si_mm=0.8, thresholds=t)
    assert why == [] and rows["C2"]["mid_diff_mm"] == 0.5 and rows["C3"]["boundary_diff_mm"] == 1.0
    rows, why = speedcheck.compare_levels(exact, {2: (1.0, 11.0), 3: (10.0, 21.5)}, si_mm=0.8, thresholds=t)
    assert why == ["level C2 midpoint moved 1.00 mm (limit 1 voxel = 0.80 mm)",
                   "level C3 boundary moved 1.50 mm (limit 1 mm)"]
    _, why = speedcheck.compare_levels(exact, {2: (0.0, 10.0), 4: (20.0, 30.0)}, si_mm=1.0, thresholds=t)
    assert why == ["level C3 missing", "level C4 found only with the lever"]
    report = {"Levers": {"crop": {"passed": True, "speedup": 4.0}, "int8": {"passed": True, "speedup": 1.5},
                         "crop+int8": {"passed": False, "speedup": 6.0}}}
    assert speedcheck.best_levers(report) == ("crop",)
    assert speedcheck.best_levers({"Levers": {"int8": {"passed": False, "speedup": 2.0}}}) == ()


def test_bad_calls_are_one_line(bids, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where speedcheck.json would go by default
    image, cord = str(_image(bids, 0)), str(_cord(bids, 0))
    (tmp_path / "a_file").write_text("")
    calls = {("speedcheck", str(tmp_path / "missing.nii.gz"), "-release", "phantom"): "missing.nii.gz",
             ("speedcheck", image, "-levers", "warp", "-release", "phantom"): "-levers warp: unknown warp",
             ("speedcheck", image, "-o", str(tmp_path / "a_file" / "x.json"), "-release", "phantom"): "a_file",
             ("speedcheck", image, "-s", cord, cord, "-release", "phantom"): "2 cord mask(s) for 1 image(s)",
             ("batch", str(bids), "-o", str(tmp_path / "o"), "-levers", "warp"): "-levers warp: unknown warp",
             ("batch", str(bids), "-o", str(tmp_path / "o"), "-levers", "auto", "-speedcheck",
              str(tmp_path / "nothing.json")): "nothing.json: file not found",
             ("batch", str(bids), "-o", str(tmp_path / "o"), "-levers", "auto", "-speedcheck",
              str(tmp_path / "a_file"), "-release", "phantom"): "not a report of `rootlets speedcheck`"}
    for argv, message in calls.items():
        assert cli.main(list(argv)) == 1, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("rootlets: error: ") and message in err and "\n" not in err, (argv, err)
    assert not (tmp_path / "speedcheck.json").exists() and not (tmp_path / "o" / "sub-01").exists()


def test_single_image_int8_is_recorded(bids, tmp_path):
    """`rootlets -i IMG -precision int8`: the network quantised on the input runs and the sidecar says so."""
    out = tmp_path / "r.nii.gz"
    assert cli.main(["-i", str(_image(bids, 0)), "-precision", "int8", "-release", "phantom", "-o", str(out),
                     "-v", "0"]) == 0
    settings = json.loads(out.with_name("r.json").read_text())["GeneratedBy"][0]["Settings"]
    assert settings["Precision"] == "int8" and np.asanyarray(nib.load(out).dataobj).any()
