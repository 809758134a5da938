"""Issue #23, items 1-8: inputs never overwritten, edited reports never trusted, bounded waits and readers, release
values checked early, one-line errors, no leaks or escapes, and the library checking what the CLI checks.

Everything is real: files on disk, the phantom release and its nnU-Net inference, HTTP on 127.0.0.1. Each test
failed on the code before its fix (see changes/harden.md for the before/after of each).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import tracemalloc
import zipfile
from pathlib import Path

import pytest
from support.cli import one_line_error as _one_line_error
from support.cli import run_cli as _run
from support.loopback import QuietHandler, serve, stop
from support.random_model import write_random_model

from rootlets_task.cli.rootlets import main
from rootlets_task.core import files
from rootlets_task.core.errors import RootletsError
from rootlets_task.core.urls import redact
from rootlets_task.io.phantom import write_phantom
from rootlets_task.models import archive

DEEP = "[" * 100_000 + "]" * 100_000  # parses into a RecursionError with the json module


@pytest.fixture
def phantom_home(phantom_store, monkeypatch):
    monkeypatch.setenv("ROOTLETS_TASK_HOME", str(phantom_store))
    return phantom_store


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> dict[str, Path]:
    return write_phantom(tmp_path_factory.mktemp("phantom"), "LPI", seed=0)


def _zip_folder(folder: Path, target: Path, encrypted: str | None = None) -> Path:
    """A release zip of a trainer folder; ``encrypted``: the member name whose "encrypted" flag is set (in its local
    header and the central directory, as an encrypting zip tool sets it; zipfile itself never sets it)."""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, f"{folder.name}/{path.relative_to(folder).as_posix()}")
    if encrypted is not None:
        data = bytearray(target.read_bytes())
        with zipfile.ZipFile(target) as zf:
            info = next(i for i in zf.infolist() if i.filename.endswith(encrypted))
        data[info.header_offset + 6] |= 0x1
        central = data.find(b"PK\x01\x02")
        while central != -1:
            length = int.from_bytes(data[central + 28:central + 30], "little")
            if data[central + 46:central + 46 + length].decode() == info.filename:
                data[central + 8] |= 0x1
            central = data.find(b"PK\x01\x02", central + 4)
        target.write_bytes(bytes(data))
    return target


# ------------------------------------------------------------------------------------------------ 1. inputs kept
def test_same_file_sees_links_dotdot_and_hard_links(tmp_path):
    original = tmp_path / "a" / "img.nii.gz"
    original.parent.mkdir()
    original.write_bytes(b"x")
    (tmp_path / "sym.nii.gz").symlink_to(original)
    os.link(original, tmp_path / "hard.nii.gz")
    (tmp_path / "dirlink").symlink_to(original.parent)
    for name in ("sym.nii.gz", "hard.nii.gz", "a/../a/img.nii.gz", "dirlink/img.nii.gz"):
        assert files.same_file(tmp_path / name, original), name
        with pytest.raises(RootletsError, match="would overwrite the image; choose another -o"):
            files.keep_inputs([tmp_path / name], {"the image": original})
    (tmp_path / "other").write_bytes(b"x")
    assert not files.same_file(tmp_path / "other", original) and not files.same_file(tmp_path / "missing", original)
    files.keep_inputs([tmp_path / "other", tmp_path / "missing"], [original, None])


@pytest.mark.parametrize("name", ["itself", "symlink", "hard link", "dotdot", "cord"])
def test_speedcheck_never_writes_its_report_over_an_input(name, phantom_home, phantom, tmp_path, capsys):
    image, cord = tmp_path / "in" / "img.nii.gz", tmp_path / "in" / "cord.nii.gz"
    image.parent.mkdir()
    shutil.copy(phantom["image"], image)
    shutil.copy(phantom["cord"], cord)
    out = {"itself": image, "cord": cord, "symlink": tmp_path / "link.json", "hard link": tmp_path / "hard.json",
           "dotdot": tmp_path / "in" / ".." / "in" / "img.nii.gz"}[name]
    if name == "symlink":
        out.symlink_to(image)
    elif name == "hard link":
        os.link(image, out)
    before = image.read_bytes(), cord.read_bytes()
    code, _, err = _run(["speedcheck", image, "-s", cord, "-release", "phantom", "-levers", "crop", "-threads", "1",
                         "-o", out, "-v", "0"], capsys)
    assert "would overwrite the" in _one_line_error(code, err) and "choose another -o" in err
    assert (image.read_bytes(), cord.read_bytes()) == before


def test_stats_never_writes_over_its_input_table(phantom, tmp_path, capsys):
    """The lab-layout table `rootlets stats` writes, given back to it with the same -o, is an input."""
    out = tmp_path / "stats"
    assert main(["levels", "-r", str(phantom["rootlets"]), "-s", str(phantom["cord"]), "-discs", str(phantom["discs"]),
                 "-o", str(tmp_path / "lv")]) == 0
    assert main(["stats", str(tmp_path / "lv"), "-o", str(out)]) == 0
    capsys.readouterr()
    lab = out / "spinal_vs_vertebral_levels.csv"
    lab.write_text(lab.read_text() + "\n")  # the user's own copy, kept as it is
    before = lab.read_bytes()
    code, _, err = _run(["stats", lab, "-o", out], capsys)
    assert "would overwrite" in _one_line_error(code, err) and lab.read_bytes() == before


def test_install_refuses_a_zip_inside_the_folder_it_replaces(tmp_path, capsys):
    from rootlets_task.models import install

    folder = write_random_model(tmp_path / "model")
    dest = install.models_dir() / "custom"
    dest.mkdir(parents=True)
    archive_path = _zip_folder(folder, dest / "mine.zip")
    code, _, err = _run(["-install", "-custom-url", archive_path, "-v", "0"], capsys)
    assert "which the install replaces" in _one_line_error(code, err) and archive_path.is_file()


# ------------------------------------------------------------------------------------------------ 2. verdicts
@pytest.fixture(scope="module")
def crop_report(phantom_store, _backend_cache, tmp_path_factory) -> tuple[Path, Path]:
    """A real `rootlets speedcheck -levers crop` report on a two-subject BIDS dataset: (report, BIDS root). The crop
    lever moves the phantom model's level boundaries by several mm: it fails the default thresholds."""
    root, work = tmp_path_factory.mktemp("bids"), tmp_path_factory.mktemp("phantoms")
    for i in (1, 2):
        name = f"sub-0{i}_T2w"
        files = write_phantom(work / name, "LPI", seed=i - 1, prefix=name)
        (root / f"sub-0{i}" / "anat").mkdir(parents=True)
        labels = root / "derivatives" / "labels" / f"sub-0{i}" / "anat"
        labels.mkdir(parents=True)
        shutil.copy(files["image"], root / f"sub-0{i}" / "anat" / f"{name}.nii.gz")
        shutil.copy(files["cord"], labels / files["cord"].name)
    report = tmp_path_factory.mktemp("check") / "speedcheck.json"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ROOTLETS_TASK_HOME", str(phantom_store))
        mp.setenv("ROOTLETS_TASK_CACHE", str(_backend_cache))
        assert main(["speedcheck", str(root / "sub-01" / "anat" / "sub-01_T2w.nii.gz"), "-s",
                     str(root / "derivatives/labels/sub-01/anat/sub-01_T2w_label-SC_seg.nii.gz"), "-release", "phantom",
                     "-levers", "crop", "-threads", "1", "-o", str(report), "-v", "0"]) == 0
    content = json.loads(report.read_text())
    assert not content["Levers"]["crop"]["passed"] and content["Use"] == []
    return report, root


def _edited(report: Path) -> dict:
    """The report with only its verdicts edited to pass (figures unchanged), and looser thresholds written in."""
    content = json.loads(report.read_text())
    content["Levers"]["crop"].update(passed=True, why=[])
    content.update(Passed=["crop"], Use=["crop"])
    content["Thresholds"].update(max_mid_voxels=1000, max_boundary_mm=1000)
    return content


@pytest.mark.parametrize("where", ["-speedcheck FILE", "logs/speedcheck.json"])
def test_batch_levers_auto_recomputes_edited_verdicts(where, crop_report, phantom_home, tmp_path, capsys):
    report, root = crop_report
    out = tmp_path / "rootlets"
    argv = ["batch", root, "-o", out, "-release", "phantom", "-threads", "1", "-v", "0", "-levers", "auto",
            "-include", "sub-02"]
    if where == "-speedcheck FILE":
        (tmp_path / "edited.json").write_text(json.dumps(_edited(report)))
        argv += ["-speedcheck", tmp_path / "edited.json"]
    else:  # what an earlier run of this batch saved, edited between runs
        (out / "logs").mkdir(parents=True)
        (out / "logs" / "speedcheck.json").write_text(json.dumps({**_edited(report), "Checked": []}))
    code, _, err = _run(argv, capsys)
    assert code == 0, err
    assert "crop marked passed in the file, its figures fail" in err
    levers = json.loads((out / "dataset_description.json").read_text())["GeneratedBy"][0]["SpeedLevers"]
    assert levers["Levers"] == [] and "crop" in levers["NotPassed"] and levers["Passed"] == []
    assert levers["Verified"]["Thresholds"] == {"max_mid_voxels": 1.0, "max_boundary_mm": 1.0}  # not the file's 1000
    assert "crop" in levers["Verified"]["Overruled"]
    sidecar = json.loads((out / "sub-02" / "anat" / "sub-02_T2w_rootlets.json").read_text())["GeneratedBy"][0]
    assert sidecar["Settings"]["CropToCord"] is None  # the exact path ran
    record = json.loads((out / "sub-02" / "anat" / "sub-02_T2w_batch.json").read_text())["steps"]["unit"]
    assert record["levers"]["used"] == [] and "verdicts recomputed from the report's figures" in record["levers"]["why"]
    assert "crop marked passed in the file" in record["levers"]["why"]


def test_batch_never_writes_its_check_over_the_speedcheck_report_given(crop_report, phantom_home, tmp_path, capsys):
    """A -speedcheck report of another release that is the batch's own logs/speedcheck.json: the check the batch would
    run instead would replace it."""
    report, root = crop_report
    out = tmp_path / "rootlets"
    saved = out / "logs" / "speedcheck.json"
    saved.parent.mkdir(parents=True)
    other = json.loads(report.read_text())
    other["Release"]["ModelSHA256"] = "0" * 64
    saved.write_text(json.dumps(other))
    before = saved.read_bytes()
    code, _, err = _run(["batch", root, "-o", out, "-release", "phantom", "-threads", "1", "-v", "0", "-levers", "auto",
                         "-speedcheck", saved, "-include", "sub-02"], capsys)
    assert "a check here would replace it" in _one_line_error(code, err) and saved.read_bytes() == before


def test_verify_refuses_wrongly_typed_fields_in_one_line(crop_report):
    from rootlets_task.pipeline.speedcheck import verify

    good = json.loads(crop_report[0].read_text())
    level = next(iter(good["Levers"]["crop"]["images"][0]["levels"]))

    def edited(where: str, value) -> dict:
        report = json.loads(json.dumps(good))
        *path, last = where.split(".")
        node = report
        for key in path:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[last] = value
        return report

    for where, value in (("Levers.crop.speedup", "fast"), ("Levers.crop.images.0.levels", [1, 2]),
                         (f"Levers.crop.images.0.levels.{level}.exact_mm", "a"), ("Images", {}),
                         ("Images.0.SISpacingMM", 0), ("Levers.warp", {"passed": True}), ("Levers.crop.images", "x")):
        with pytest.raises(RootletsError, match=r"^speedcheck report r\.json: .*make the report again$"):
            verify(edited(where, value), "r.json")
    assert verify(good, "r.json")["Passed"] == []


# ------------------------------------------------------------------------------------------------ 3. bounded waits
def test_retry_after_cannot_outlast_the_download_deadline(monkeypatch, capsys):
    class Busy(QuietHandler):
        def do_GET(self):
            self.send_response(503)
            self.send_header("Retry-After", "30")
            self.send_header("Content-Length", "0")
            self.end_headers()

    httpd = serve(Busy)
    try:
        monkeypatch.setenv(archive.ENV_DEADLINE, "2")
        t0 = time.monotonic()
        code, _, err = _run(["-install", "-custom-url", f"{httpd.base}/x.zip", "-v", "0"], capsys)
        elapsed = time.monotonic() - t0
    finally:
        stop(httpd)
    assert "asks to try again in 30 s, past the 2 s deadline" in _one_line_error(code, err)
    assert elapsed < 10, elapsed


# ------------------------------------------------------------------------------------------------ 4. bounded readers
def test_json_readers_bound_depth_and_size(tmp_path):
    deep, big, fine = tmp_path / "deep.json", tmp_path / "big.json", tmp_path / "fine.json"
    deep.write_text(DEEP)
    big.write_text(json.dumps({"a": "x" * 3000}))
    fine.write_text(json.dumps({"a": [[[1]]]}))
    assert files.read_json(deep) is None and files.read_json(big, limit=1000) is None and files.read_json(fine) == {"a": [[[1]]]}
    assert files.read_json(fine, depth=3) is None  # the dict, two lists and a third list: 4 levels
    with pytest.raises(RootletsError, match=r"^plan .*deep.json: JSON nested too deeply; fix it$"):
        files.load_json(deep, "plan", fix="fix it")
    with pytest.raises(RootletsError, match="larger than 0 KiB"):
        files.load_json(big, limit=100)


def test_input_tables_are_bounded_in_size(phantom, tmp_path, capsys):
    huge = tmp_path / "sub-01_levels.csv"
    huge.write_text("kind,level\n")
    os.truncate(huge, 70 << 20)  # sparse: 70 MiB on paper, nothing on disk
    code, _, err = _run(["stats", huge, "-o", tmp_path / "out"], capsys)
    assert "larger than the 64 MiB" in _one_line_error(code, err)
    code, _, err = _run(["qc", "-i", phantom["image"], "-r", phantom["rootlets"], "-levels", huge, "-qc", tmp_path / "qc"],
                        capsys)
    assert "larger than the 64 MiB" in _one_line_error(code, err)


def test_foreign_files_in_a_shared_qc_folder_are_skipped_with_a_warning(tmp_path, caplog):
    from rootlets_task.qc import report, sct_report

    qc = tmp_path / "qc"
    (qc / "js").mkdir(parents=True)
    (qc / "js" / "datasets.js").write_text("\nwindow.SCT_QC_UUID = 'x'; alert(1); //';\n\x00\xff garbage")
    (qc / "_json").mkdir()
    good = {"path": "/", "command": "sct_deepseg", "subject": "sub-01"}
    (qc / "_json" / "qc_1.json").write_text(json.dumps(good))
    (qc / "_json" / "qc_2.json").write_text(DEEP)
    (qc / "_json" / "qc_3.json").write_text(json.dumps({"pad": "x" * (2 << 20)}))
    (qc / "_json" / "qc_4.json").write_text("[1, 2]")
    with caplog.at_level(logging.WARNING):
        target = sct_report.refresh_datasets(qc)
    text = target.read_text()
    assert json.dumps([good]) in text and "alert" not in text
    assert sum("qc_" in r.message and "not listed" in r.message for r in caplog.records) == 3

    records = qc / report.REPORT / report.RECORDS
    records.mkdir(parents=True)
    for name, content in {"deep": DEEP, "list": "[1]", "no subject": json.dumps({"key": "k"}),
                          "typed": json.dumps({"subject": 1, "key": 2, "warnings": 3})}.items():
        (records / f"{name}.json").write_text(content)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        index = report.rebuild_index(qc)
    assert index.is_file() and sum("not a record" in r.message or "nested" in r.message for r in caplog.records) == 4


def test_slurm_collect_reads_tampered_plans_and_huge_logs_in_one_line(tmp_path, caplog):
    from rootlets_task.batch import slurm_array

    out = tmp_path / "out"
    folder = out / "logs" / "array" / "a1"
    (folder / "results").mkdir(parents=True)
    (folder / "plan.json").write_text(json.dumps({"tasks": 0, "units": [{"name": "sub-01_T2w"}]}))
    (folder / "job.json").write_text(json.dumps({"job": "12", "tasks": 0}))
    other = out / "logs" / "array" / "a2"
    (other / "results").mkdir(parents=True)
    (other / "plan.json").write_text(DEEP)
    (other / "job.json").write_text(json.dumps({"job": "13"}))
    with caplog.at_level(logging.WARNING):
        arrays = slurm_array._arrays(out)
    assert arrays == [] and "tasks 0 is not a number from 1" in caplog.text
    status, why, _ = slurm_array._why(out, "sub-01_T2w", arrays)
    assert status == "not run"

    # a task log of 40 MB is read from its end only, and what it says is printed without escape sequences
    good = out / "logs" / "array" / "a3"
    (good / "results").mkdir(parents=True)
    (good / "plan.json").write_text(json.dumps({"tasks": 1, "units": [{"name": "a"}, {"name": "b"}]}))
    (good / "job.json").write_text(json.dumps({"job": "14"}))
    (good / "results" / "a.json").write_text(json.dumps({"status": "failed", "error": "bad\x1b[2J\x1b]0;owned\x07 end"}))
    with open(good / "task-14_0.out", "w") as fh:
        fh.write(("x" * 1023 + "\n") * 40_000)
        fh.write("*** JOB 14 ON node1 CANCELLED AT 2026-01-01T00:00:00 DUE TO TIME LIMIT ***\n")
    arrays = slurm_array._arrays(out)
    status, why, _ = slurm_array._why(out, "a", arrays)
    assert status == "failed" and "\x1b" not in why and "\x07" not in why and why.startswith("bad?[2J")
    tracemalloc.start()
    status, why, _ = slurm_array._why(out, "b", arrays)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert why.endswith("was cancelled due to time limit") and peak < 8 << 20, (why, peak)


# ------------------------------------------------------------------------------------------------ 5. plans values
PLAN_CASES = {
    "huge patch": ({"patch_size": [4096, 4096, 4096]}, "patch_size"),
    "negative patch": ({"patch_size": [-64, 32, 32]}, "patch_size"),
    "text patch": ({"patch_size": ["64", 32, 32]}, "patch_size"),
    "zero spacing": ({"spacing": [0, 1.0, 1.0]}, "spacing"),
    "huge spacing": ({"spacing": [1e308, 1.0, 1.0]}, "spacing"),
    "tile memory": ({"patch_size": [256, 256, 256], "architecture": {"arch_kwargs": {"features_per_stage": [4096]}}},
                    "needs about"),
}


def _plans_with(folder: Path, change: dict) -> None:
    plans = json.loads((folder / "plans.json").read_text())
    plans["configurations"]["3d_fullres"].update(change)
    (folder / "plans.json").write_text(json.dumps(plans))


@pytest.mark.parametrize("case", PLAN_CASES)
def test_plans_values_refused_at_install_and_before_the_model_loads(case, phantom_store, tmp_path, capsys):
    from rootlets_task.inference.segmenter import Segmenter
    from rootlets_task.models import install

    change, needle = PLAN_CASES[case]
    source = phantom_store / "models" / "phantom"
    trainer = next(source.glob("nnUNetTrainer*"))
    from rootlets_task.models.plans import plans_problem

    assert plans_problem(json.loads((trainer / "plans.json").read_text())) is None
    copy = tmp_path / "model" / trainer.name
    shutil.copytree(trainer, copy)
    _plans_with(copy, change)
    archive_path = _zip_folder(copy, tmp_path / "bad.zip")
    code, _, err = _run(["-install", "-custom-url", archive_path, "-v", "0"], capsys)
    assert needle in _one_line_error(code, err) and "plans.json" in err
    assert install.installed_release("custom") is None
    with pytest.raises(RootletsError, match=f"plans.json: .*{needle}") as exc:
        Segmenter(copy, device="cpu", verbose=0, threads=1)
    assert "cannot be loaded" not in str(exc.value)  # refused before nnU-Net saw it


# ------------------------------------------------------------------------------------------------ 6. one line
def test_an_encrypted_zip_member_is_refused_in_one_line(tmp_path, capsys):
    folder = write_random_model(tmp_path / "model")
    archive_path = _zip_folder(folder, tmp_path / "locked.zip", "checkpoint_final.pth")
    code, _, err = _run(["-install", "-custom-url", archive_path, "-v", "0"], capsys)
    assert "is encrypted" in _one_line_error(code, err)


@pytest.mark.parametrize("url, needle", [
    ("http://[::1/x.zip", "not a valid URL (Invalid IPv6 URL)"),
    ("http://127.0.0.1:70000/x.zip", "Port out of range"),
    ("http://user:SECRET@/x.zip", "no host in the URL"),
    ("htps://user:SECRET@example.org/x.zip?sig=SECRET", "unknown URL scheme 'htps'"),
])
def test_malformed_urls_are_one_line_without_secrets(url, needle, capsys):
    code, _, err = _run(["-install", "-custom-url", url, "-v", "0"], capsys)
    assert needle in _one_line_error(code, err) and "SECRET" not in err
    assert "SECRET" not in redact(url)


def test_an_unusable_model_home_is_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("ROOTLETS_TASK_HOME", str(tmp_path / "file" / "home"))
    code, _, err = _run(["-install", "-release", "phantom", "-v", "0"], capsys)
    assert "model folder" in _one_line_error(code, err)


@pytest.mark.parametrize("value", ["abc", "0", "-3"])
def test_a_bad_nnunet_process_count_is_one_line(value, phantom_home, phantom, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("nnUNet_def_n_proc", value)
    code, _, err = _run(["-i", phantom["image"], "-release", "phantom", "-o", tmp_path / "r.nii.gz", "-v", "0"], capsys)
    assert f"nnUNet_def_n_proc={value!r}" in _one_line_error(code, err) and not (tmp_path / "r.nii.gz").exists()


def test_tampered_array_plan_is_one_line_in_the_task(tmp_path):
    from rootlets_task.batch import slurm_array

    plan = tmp_path / "plan.json"
    for content in ({"tasks": 0, "units": [{"name": "a"}]}, {"tasks": 1, "units": [{"name": "a", "x": 1}],
                                                              "settings": {"options": {"nope": 1}}}):
        plan.write_text(json.dumps(content))
        with pytest.raises(RootletsError, match=r"^array plan .*plan.json: .*submit the array again"):
            slurm_array.run_task(plan, 0)


# ------------------------------------------------------------------------------------------------ 7. escapes
@pytest.mark.parametrize("prefix", ["../../X", "/abs/X", "..", "a/b"])
def test_levels_prefix_cannot_leave_the_output_folder(prefix, phantom, tmp_path, capsys):
    out = tmp_path / "deep" / "er" / "out"
    code, _, err = _run(["levels", "-r", phantom["rootlets"], "-s", phantom["cord"], "-o", out, "-prefix", prefix],
                        capsys)
    assert "-prefix" in _one_line_error(code, err) and "without a folder" in err
    assert not any(p.is_file() for p in tmp_path.rglob("*")) and not Path("/abs").exists()


def test_printable_strips_terminal_control_characters():
    assert files.printable("a\x1b[31mred\x1b[0m\r\nb\u202eevil\x9b") == "a?[31mred?[0m??b?evil?"
    assert files.printable("x" * 600).endswith("...") and len(files.printable("x" * 600)) == 503


# ------------------------------------------------------------------------------------------------ 8. library bounds
@pytest.mark.parametrize("slab", [(-5, 6), (1e9, 1e9), (0, 6), (float("nan"), 6)])
def test_qc_subject_checks_the_slab_as_the_cli_does(slab, phantom, tmp_path, capsys):
    from rootlets_task.qc.report import qc_subject

    with pytest.raises(RootletsError, match="half-thicknesses between 0 and 100 mm"):
        qc_subject(tmp_path / "qc", phantom["image"], phantom["rootlets"], slab_mm=slab)
    assert not (tmp_path / "qc").exists()
    with pytest.raises(SystemExit) as exc:
        main(["qc", "-i", str(phantom["image"]), "-r", str(phantom["rootlets"]), "-qc", str(tmp_path / "qc"),
              "-slab", *map(str, slab)])
    assert exc.value.code == 2 and "half-thicknesses between 0 and 100 mm" in capsys.readouterr().err


def test_option_objects_refuse_what_the_cli_refuses():
    from rootlets_task.core.options import ChainOptions, ModelOptions
    from rootlets_task.pipeline.speedcheck import Thresholds

    for make, needle in ((lambda: ModelOptions(threads=0), "threads 0"), (lambda: ModelOptions(device="tpu"), "tpu"),
                         (lambda: ChainOptions(method="magic"), "magic"), (lambda: ChainOptions(cord_from="x"), "-cord-from"),
                         (lambda: Thresholds(max_mid_voxels=-1), "max_mid_voxels"),
                         (lambda: Thresholds(max_boundary_mm=float("nan")), "max_boundary_mm")):
        with pytest.raises(RootletsError, match=needle):
            make()
