"""Issue #23 items 9-16: the package leaves its caller's process as it found it, follows SCT's install habits, and its
tests catch what they claim."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from rootlets_task.core import logs
from rootlets_task.core.options import ModelOptions
from rootlets_task.io.phantom import make_phantom
from rootlets_task.pipeline.segment import load_segmenter, segment


# --- 9. logging and threads restored -------------------------------------------------------------------------------
def test_package_logger_has_a_null_handler():
    code = "import logging, rootlets_task; print([type(h).__name__ for h in logging.getLogger('rootlets_task').handlers])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "NullHandler" in out


def test_unit_log_restores_the_logger_level(tmp_path):
    logger = logging.getLogger("rootlets_task")
    before = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with logs.unit_log(tmp_path / "unit.log"):
            assert logger.getEffectiveLevel() == logging.INFO  # the unit's log gets its progress lines
            logging.getLogger("rootlets_task.batch").info("inside the unit")
        assert logger.level == logging.ERROR
    finally:
        logger.setLevel(before)
    assert "inside the unit" in (tmp_path / "unit.log").read_text()


def test_loaded_model_leaves_torch_threads_and_nnunet_variables_as_it_found_them(random_store, monkeypatch):
    monkeypatch.setenv("ROOTLETS_TASK_HOME", str(random_store))
    for name in ("nnUNet_def_n_proc", "nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.delenv(name, raising=False)
    caller = torch.get_num_threads()
    torch.set_num_threads(3)  # the embedding program's own choice, distinct from the model's 1 below
    try:
        seg = load_segmenter(ModelOptions(device="cpu", threads=1), verbose=0)
        assert torch.get_num_threads() == 3
        labels = segment(make_phantom("LPI", (2.0, 2.0, 2.0)).nifti("image"), segmenter=seg)
        assert labels.get_data_dtype().name == "uint8" and torch.get_num_threads() == 3
        assert not {"nnUNet_def_n_proc", "nnUNet_raw", "nnUNet_results"} & set(os.environ)
    finally:
        torch.set_num_threads(caller)


# --- 12. SCT 6.x spellings ------------------------------------------------------------------------------------------
def test_sct6_task_flag_gets_the_new_spelling_and_exit_0_as_sct_7(tmp_path, capsys):
    from rootlets_task.cli import rootlets as cli

    out = tmp_path / "out.nii.gz"
    with pytest.raises(SystemExit) as stop:  # SCT 7.x: parser.exit() right after its hint, nothing else runs
        cli.main(["-task", "seg_spinal_rootlets_t2w", "-i", str(tmp_path / "t2.nii.gz"), "-o", str(out)])
    assert stop.value.code in (0, None)
    said = capsys.readouterr().out.strip().splitlines()
    assert len(said) == 1 and "`rootlets ...` without -task" in said[0] and "-release r20240730" in said[0]
    assert not out.exists()


# --- 10. -install -custom-url then -i runs the custom model, as SCT ------------------------------------------------
def test_custom_install_is_what_the_next_segmentation_runs(random_store, tmp_path, capsys, monkeypatch):
    from support.loopback import stop
    from test_install import Server

    from rootlets_task.cli import rootlets as cli
    from rootlets_task.io.phantom import write_phantom
    from rootlets_task.models.releases import DEFAULT_TAG, PHANTOM_ZIP

    home = tmp_path / "home"
    shutil.copytree(random_store, home)  # r20250318 installed (the random model), as a user has it
    monkeypatch.setenv("ROOTLETS_TASK_HOME", str(home))
    monkeypatch.setenv("ROOTLETS_TASK_BACKEND", "torch")  # no OpenVINO conversion: which model ran is the point
    server = Server()  # the phantom release zip served under a name of its own, as a lab's model would be
    try:
        url = server.add("lab_model_v2.zip", PHANTOM_ZIP.read_bytes())
        assert cli.main(["-install", "-custom-url", url, "-v", "0"]) == 0
    finally:
        stop(server.httpd)
    full = nib.load(write_phantom(tmp_path / "data", "LPI", (1.0, 1.0, 1.0))["image"])
    image = tmp_path / "small.nii.gz"  # a slab of it: only which model ran matters here
    centre = [n // 2 for n in full.shape]
    nib.save(full.slicer[centre[0] - 16:centre[0] + 16, centre[1] - 20:centre[1] + 20, centre[2] - 24:centre[2] + 24], image)
    ran = {}
    for name, extra in (("default", []), ("named", ["-release", DEFAULT_TAG])):
        out = tmp_path / f"{name}.nii.gz"
        assert cli.main(["-i", str(image), "-o", str(out), "-v", "0", *extra]) == 0
        ran[name] = json.loads(out.with_name(f"{name}.json").read_text())["GeneratedBy"][0]
    assert ran["default"]["Release"] == "custom" and "lab_model_v2.zip" in ran["default"]["ModelURL"]
    assert ran["named"]["Release"] == DEFAULT_TAG  # still installed beside it, and -release still picks
    capsys.readouterr()
    assert cli.main(["releases", "-json"]) == 0
    rows = {r["tag"]: r for r in json.loads(capsys.readouterr().out)["releases"]}
    assert rows["custom"]["active"] and not rows[DEFAULT_TAG]["active"] and rows[DEFAULT_TAG]["installed"]
    assert cli.main(["releases"]) == 0
    assert [line.split()[:2] for line in capsys.readouterr().out.splitlines() if line.startswith(">")] == [[">", "custom"]]


# --- 11. the SCT bridge keeps SCT's own model and restores it offline ----------------------------------------------
def test_sct_install_keeps_scts_model_and_restore_puts_it_back_offline(tmp_path, monkeypatch, capsys):
    import socket

    from test_sct import KEY, OTHER, make_sct, model_zip, tree

    from rootlets_task.cli import rootlets as cli
    from rootlets_task.models import sct

    root = make_sct(tmp_path / "sct_7.3")
    monkeypatch.setenv("SCT_DIR", str(root))
    store = root / "data" / "deepseg_models"
    scts_own = store / KEY  # a custom model the user had installed with `sct_deepseg rootlets -install -custom-url`
    scts_own.mkdir()
    (scts_own / "source.json").write_text(json.dumps({"model_name": KEY, "model_urls": "https://lab.example/m.zip",
                                                      "custom": True}, indent=4))
    trainer = scts_own / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    with zipfile.ZipFile(model_zip(tmp_path / "scts.zip", seed=5)) as zf:
        zf.extractall(scts_own)
    assert trainer.is_dir()
    before = tree(scts_own)
    assert cli.main(["-install", "-sct", "-custom-url", str(model_zip(tmp_path / "ours.zip", seed=6))]) == 0
    said = capsys.readouterr().out
    kept = sct.kept_models()
    assert len(kept) == 1 and tree(kept[0]) == before and f"kept in {kept[0]}" in said
    assert tree(scts_own) != before

    def no_network(sock, address):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    assert cli.main(["-install", "-sct", "-restore"]) == 0
    assert tree(scts_own) == before  # SCT's own model, byte for byte
    assert "restored SCT's rootlets model" in capsys.readouterr().out
    assert sorted(p.name for p in store.iterdir() if not p.name.startswith(".")) == sorted(
        [KEY, OTHER, sct.kept_models()[0].name])  # ours is kept in turn: a restore deletes nothing


def test_restore_with_nothing_kept_is_one_line(tmp_path, monkeypatch, capsys):
    from test_sct import make_sct

    from rootlets_task.cli import rootlets as cli

    monkeypatch.setenv("SCT_DIR", str(make_sct(tmp_path / "sct")))
    assert cli.main(["-install", "-sct", "-restore"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nothing to restore" in err


# --- 13. the differences from SCT found side by side are documented, and true --------------------------------------
def test_undocumented_differences_are_in_help_and_docs_and_hold(random_store, tmp_path, monkeypatch, capsys):
    from rootlets_task.cli import rootlets as cli

    monkeypatch.setenv("ROOTLETS_TASK_HOME", str(random_store))
    monkeypatch.setenv("ROOTLETS_TASK_BACKEND", "torch")
    with pytest.raises(SystemExit):
        cli.main(["-h"])
    helptext = " ".join(capsys.readouterr().out.split())
    docs = " ".join((Path(__file__).parents[1] / "docs" / "sct.md").read_text().split())
    for text in (helptext, docs):
        assert "int64" in text and "qform_code" in text and "1 of 219,375 voxels" in text
    source = make_phantom("LPI", (2.0, 2.0, 2.0)).nifti("image")
    img = nib.Nifti1Image(source.get_fdata(dtype=np.float32), source.affine)
    img.set_qform(None, code=0)  # no qform: what the help says is kept
    nib.save(img, tmp_path / "noq.nii.gz")
    out = tmp_path / "filled.nii.gz"
    assert cli.main(["-i", str(tmp_path / "noq.nii.gz"), "-o", str(out), "-thr", "0.5", "-fill-holes", "1",
                     "-v", "0"]) == 0
    written = nib.load(out)
    assert written.get_data_dtype() == np.uint8 and int(written.header["qform_code"]) == 0
    assert np.allclose(written.affine, img.affine)


# --- 14. tests that catch one-line breaks ---------------------------------------------------------------------------
def test_reorient_hands_each_axis_its_own_voxel_size():
    """A PSR image of 2 x 2 x 6 mm voxels (array axes P, S, R) in the RAS frame: R (6 mm) first, then A, then S."""
    from rootlets_task.io import nifti

    img = make_phantom("PSR", (2.0, 2.0, 6.0)).nifti("image")
    data, spacing, _ = nifti.reorient(img, ("R", "A", "S"))
    assert spacing == (6.0, 2.0, 2.0)
    assert data.shape == (img.shape[2], img.shape[0], img.shape[1])


@pytest.mark.parametrize("shape, zooms, refused", [
    ((500, 8, 8), (0.011, 1.0, 1.0), False),  # just above the smallest voxel size (0.01 mm), on one axis only
    ((600, 8, 8), (0.009, 1.0, 1.0), True),   # below it on one axis, the other two plausible
    ((2, 10, 10), (50.0, 1.0, 1.0), False),   # the largest voxel size accepted
    ((2, 10, 10), (51.0, 1.0, 1.0), True),
    ((5, 40, 40), (1.0, 1.0, 1.0), False),    # a 5 mm field of view along one axis: the least accepted
    ((4, 40, 40), (1.0, 1.0, 1.0), True),     # 4 mm along one axis, the others wide
    ((40, 40, 4), (1.0, 1.0, 1.0), True),
])
def test_voxel_size_and_field_of_view_bounds_hold_per_axis(shape, zooms, refused, tmp_path):
    from rootlets_task.core.errors import RootletsError
    from rootlets_task.io import nifti

    path = tmp_path / "img.nii.gz"
    nib.save(nib.Nifti1Image(np.ones(shape, np.float32), np.diag([*zooms, 1.0])), path)
    if refused:
        with pytest.raises(RootletsError, match="not those of an MRI of the spine"):
            nifti.load(path)
    else:
        assert nifti.load(path).shape == shape


@pytest.mark.parametrize("zooms, kept_from", [
    ((1.0, 1.0, 2.0), 6),   # 11 mm3 / 2 mm3 = 5.5 voxels: SCT rounds to 6 (a floor would give 5)
    ((1.0, 1.0, 1.5), 7),   # 11 mm3 / 1.5 mm3 = 7.33 voxels: 7 (a ceiling would give 8)
])
def test_remove_small_mm3_rounds_as_sct(zooms, kept_from):
    from rootlets_task.inference import postprocess

    data = np.zeros((40, 8, 8), np.uint8)
    sizes = range(kept_from - 1, kept_from + 2)  # one blob just below the size, one at it, one above
    for i, size in enumerate(sizes):
        data[i * 12:i * 12 + size, 4, 4] = 3
    out = postprocess.remove_small(data, ("11mm3",), zooms)
    assert [int((out[i * 12:i * 12 + 10] > 0).sum()) for i in range(3)] == [0, kept_from, kept_from + 1]


def _pickle(*ops: bytes) -> bytes:
    return b"\x80\x04" + b"".join(ops) + b"\x93."  # PROTO 4, the ops, STACK_GLOBAL, STOP


def _unicode(text: str) -> bytes:
    return b"\x8c" + bytes([len(text)]) + text.encode()  # SHORT_BINUNICODE


@pytest.mark.parametrize("stream, found", [
    (_pickle(_unicode("collections"), _unicode("OrderedDict")), {"collections.OrderedDict"}),  # traced from its strings
    (_pickle(_unicode("os"), b"K\x05"), None),      # the name is an integer (BININT1): cannot be traced
    (_pickle(b"K\x05", _unicode("system")), None),  # the module is: cannot be traced
    (_pickle(_unicode("system")), None),            # only one string on the stack
])
def test_checkpoint_scan_refuses_a_global_it_cannot_trace(stream, found):
    from rootlets_task.models import checkpoints

    assert checkpoints.pickle_globals(stream) == (found or {checkpoints.UNKNOWN})


# --- 16. CI: a tool it cannot install is a failure, not a quiet skip ----------------------------------------------
def test_ci_tool_install_fails_as_root_when_debian_refuses(tmp_path):
    """``.ci/install_tools`` under a stand-in ``id`` (uid 0) and ``apt-get`` (a failed install): exit 1, one reason.
    Only bash, the stand-ins and an already cached validator are on PATH, so nothing is installed for real."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "bash").symlink_to(shutil.which("bash"))
    for name, body in (("id", "echo 0"), ("apt-get", "echo 'E: Unable to locate package' >&2; exit 100")):
        (bin_dir / name).write_text(f"#!{shutil.which('bash')}\n{body}\n")
        (bin_dir / name).chmod(0o755)
    validator = tmp_path / "cache" / "rootlets_task_ci" / "bids-validator-3.0.2" / "bin" / "bids-validator-deno"
    validator.parent.mkdir(parents=True)
    validator.write_text("#!/bin/sh\n")
    validator.chmod(0o755)
    script = Path(__file__).parents[1] / ".ci" / "install_tools"
    done = subprocess.run([shutil.which("bash"), str(script)], capture_output=True, text=True, timeout=60,
                          env={"PATH": str(bin_dir), "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert done.returncode == 1 and "apt-get install chromium" in done.stderr and "CI needs them" in done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize("require, outcome", [("", "1 skipped"), ("chromium", "1 failed"), ("all", "1 failed")])
def test_a_test_needing_a_missing_tool_fails_where_ci_requires_it(require, outcome, tmp_path):
    env = {**os.environ, "PATH": str(tmp_path), "ROOTLETS_REQUIRE": require}  # no chromium on this PATH
    env.pop("PYTEST_ADDOPTS", None)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_qc.py", "-k",
                           "headless_chromium"], capture_output=True, text=True, timeout=300, env=env,
                          cwd=Path(__file__).parents[1])
    assert outcome in done.stdout, done.stdout[-2000:]


def test_slurm_is_required_by_either_spelling(monkeypatch):
    from support.required import required

    monkeypatch.delenv("ROOTLETS_REQUIRE", raising=False)
    monkeypatch.delenv("ROOTLETS_REQUIRE_SLURM", raising=False)
    assert not required("slurm")
    monkeypatch.setenv("ROOTLETS_REQUIRE_SLURM", "1")
    assert required("slurm") and not required("chromium")
    monkeypatch.setenv("ROOTLETS_REQUIRE", "all")
    assert required("chromium") and required("bids-validator")


# --- 15. surfaces: participants.tsv heights and text a spreadsheet would run ---------------------------------------
LAB = Path(__file__).parent / "data" / "lab_reference"


@pytest.mark.parametrize("height", ["tall", "NaN", "-170", "inf", "1e308", "1e400", ""])
def test_implausible_heights_are_one_line_naming_subject_and_file(height, tmp_path, capsys):
    import pandas as pd

    from rootlets_task.cli import rootlets as cli

    table = pd.read_csv(LAB / "participants.tsv", sep="\t", dtype=str)
    table.loc[table.subject == "sub-amu02", "height_sub"] = height
    bad = tmp_path / "participants.tsv"
    table.to_csv(bad, sep="\t", index=False)
    out = tmp_path / "out"
    assert cli.main(["stats", str(LAB / "spinal_vs_vertebral_levels.csv"), "-participants", str(bad), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(bad) in err and "sub-amu02" in err and not out.exists()


def test_formula_text_in_names_is_neutralised_in_every_table(tmp_path):
    import csv

    import pandas as pd

    from rootlets_task.cli import rootlets as cli

    evil = "=cmd|' /C calc'!A0"
    levels = pd.read_csv(LAB / "spinal_vs_vertebral_levels.csv", dtype=str)
    levels = levels.replace({"sub-amu02": evil, "sub-amu01": "@SUM(1+1)*cmd|' /C calc'!A0"}, regex=False)
    levels["fname"] = levels["fname"].str.replace("sub-amu03", "+cmd", regex=False)
    heights = pd.read_csv(LAB / "participants.tsv", sep="\t", dtype=str).replace({"sub-amu02": evil})
    heights.loc[heights.subject == "sub-amu01", "subject"] = "@SUM(1+1)*cmd|' /C calc'!A0"
    levels.to_csv(tmp_path / "levels.csv", index=False)
    heights.to_csv(tmp_path / "participants.tsv", sep="\t", index=False)
    out = tmp_path / "out"
    assert cli.main(["stats", str(tmp_path / "levels.csv"), "-participants", str(tmp_path / "participants.tsv"),
                     "-o", str(out)]) == 0
    cells = [cell for table in out.glob("*.csv") for row in csv.reader(table.open()) for cell in row]
    assert f"'{evil}" in cells  # carried, as text
    assert not [c for c in cells if c[:1] in "=+@" or (c[:1] == "-" and not c[1:2].isdigit())]


# --- 15. surfaces: a full disk and read-only folders -----------------------------------------------------------------
def _namespaces_or_skip() -> None:
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    if probe.returncode:
        pytest.skip(f"no user/mount namespace here ({probe.stderr.decode().strip()}): no private tmpfs or read-only "
                    "bind mount to test with")


@pytest.fixture
def small_bids(tmp_path):
    """One subject, one 2 mm phantom T2w: a BIDS dataset the random model segments in seconds."""
    from rootlets_task.io.phantom import write_phantom

    ph = write_phantom(tmp_path / "ph", spacing=(2.0, 2.0, 2.0))
    bids = tmp_path / "bids"
    (bids / "sub-01" / "anat").mkdir(parents=True)
    (bids / "sub-01" / "anat" / "sub-01_T2w.nii.gz").write_bytes(ph["image"].read_bytes())
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "small", "BIDSVersion": "1.9.0"}))
    return ph, bids


def _argv(command: str, ph: dict, bids, out) -> list[str]:
    return {"qc": ["qc", "-i", str(ph["image"]), "-r", str(ph["rootlets"]), "-qc", str(out / "qc")],
            "segment": ["-i", str(ph["image"]), "-o", str(out / "seg.nii.gz"), "-v", "0"],
            "levels": ["levels", "-r", str(ph["rootlets"]), "-s", str(ph["cord"]), "-o", str(out / "levels")],
            "batch": ["batch", str(bids), "-o", str(out / "derivatives"), "-threads", "1"]}[command]


@pytest.mark.parametrize("command", ["qc", "batch"])
def test_a_full_disk_during_qc_or_batch_is_said_and_leaves_no_partial_file(command, random_store, small_bids, tmp_path,
                                                                          monkeypatch):
    from test_safety import _tiny_fs_run

    _namespaces_or_skip()
    monkeypatch.setenv("ROOTLETS_TASK_HOME", str(random_store))
    monkeypatch.setenv("ROOTLETS_TASK_BACKEND", "torch")
    ph, bids = small_bids
    done = _tiny_fs_run(tmp_path, _argv(command, ph, bids, tmp_path / "full"), free_kib=8)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and "No space left on device" in lines[-1], done.stderr
    assert all(line.startswith("rootlets: ") for line in lines), "no traceback"
    listing = (tmp_path / "listing").read_text().split()
    if command == "qc":  # one line, and the QC folder it was making is gone
        assert len(lines) == 1 and listing == ["filler"]
    else:  # the batch says which image failed and why it stopped; nothing half-written, no temporary left
        leftovers = [p for p in (tmp_path / "full").rglob("*")
                     if ".tmp" in p.name or p.name.startswith(".") and p.name != ".batch.lock"]
        assert leftovers == [] and "sub-01" in done.stderr


def test_a_full_disk_during_install_names_the_sizes(tmp_path, monkeypatch):
    from test_safety import _tiny_fs_run

    _namespaces_or_skip()
    monkeypatch.setenv("ROOTLETS_TASK_HOME", str(tmp_path / "full" / "home"))
    done = _tiny_fs_run(tmp_path, ["-install", "-release", "phantom"], free_kib=8)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and "not enough disk space" in lines[0], done.stderr
    assert "needs 0.9 MB" in lines[0] and "kB free" in lines[0]  # was "needs 0 MB, 0 MB free"
    assert not (tmp_path / "full" / "home" / "models" / "phantom").exists()


@pytest.mark.parametrize("command", ["segment", "levels", "qc", "batch"])
def test_a_read_only_output_folder_is_one_line_before_any_work(command, random_store, small_bids, tmp_path,
                                                              monkeypatch):
    """A read-only bind mount (root ignores permission bits, so chmod cannot make one here)."""

    _namespaces_or_skip()
    monkeypatch.setenv("ROOTLETS_TASK_HOME", str(random_store))
    ph, bids = small_bids
    ro = tmp_path / "ro"
    ro.mkdir()
    script = f'mount --bind {ro} {ro} && mount -o remount,bind,ro {ro} && "$@"'
    run = [sys.executable, "-c", "import sys; from rootlets_task.cli.rootlets import main; sys.exit(main(sys.argv[1:]))"]
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", *run, *_argv(command, ph, bids, ro)],
                          capture_output=True, text=True, timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and lines[0].startswith("rootlets: error: "), done.stderr
    assert "writable" in lines[0] or "Read-only file system" in lines[0]
    assert list(ro.iterdir()) == []


# --- 15. surfaces: two writers at once, a killed batch ---------------------------------------------------------------
def _rootlets(argv: list[str], **kwargs) -> subprocess.Popen:
    run = [sys.executable, "-c", "import sys; from rootlets_task.cli.rootlets import main; sys.exit(main(sys.argv[1:]))"]
    return subprocess.Popen([*run, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def test_two_segmentations_into_one_output_at_once_leave_one_whole_result(random_store, small_bids, tmp_path,
                                                                          monkeypatch):
    monkeypatch.setenv("ROOTLETS_TASK_HOME", str(random_store))
    monkeypatch.setenv("ROOTLETS_TASK_BACKEND", "torch")
    ph, _ = small_bids
    out = tmp_path / "out" / "seg.nii.gz"
    both = [_rootlets(["-i", str(ph["image"]), "-o", str(out), "-v", "0"]) for _ in range(2)]
    assert [p.wait(timeout=300) for p in both] == [0, 0], [p.stderr.read() for p in both]
    assert nib.load(out).shape == nib.load(ph["image"]).shape  # the last one to finish wins, whole
    assert json.loads(out.with_name("seg.json").read_text())["GeneratedBy"][0]["Release"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "no temporary left"


# The first batch below stops itself (SIGSTOP) when it is about to move its image's outputs into place, so the second
# batch starts while the first one certainly holds the folder (waiting for .tmp raced with the tiny model's speed).
_PAUSED_BEFORE_FINISHING = """
import os, signal, sys
from rootlets_task.batch import units

finish = units._finish

def paused(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGSTOP)
    return finish(*args, **kwargs)

units._finish = paused
from rootlets_task.cli.rootlets import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_second_batch_into_the_same_folder_stops_in_one_line(random_store, small_bids, tmp_path, monkeypatch):
    import signal

    monkeypatch.setenv("ROOTLETS_TASK_HOME", str(random_store))
    monkeypatch.setenv("ROOTLETS_TASK_BACKEND", "torch")
    _, bids = small_bids
    out = tmp_path / "derivatives"
    argv = ["batch", str(bids), "-o", str(out), "-threads", "1"]
    first = subprocess.Popen([sys.executable, "-c", _PAUSED_BEFORE_FINISHING, *argv], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        _, status = os.waitpid(first.pid, os.WUNTRACED)  # returns once the first batch has stopped itself
        assert os.WIFSTOPPED(status), "the first batch ended before it stopped"
        second = _rootlets(argv)
        assert second.wait(timeout=300) == 1
        err = second.stderr.read().strip()
        assert len(err.splitlines()) == 1 and "another rootlets batch is writing into it" in err, err
    finally:
        first.send_signal(signal.SIGCONT)
    assert first.wait(timeout=300) == 0, first.stderr.read()
    assert (out / "sub-01" / "anat" / "sub-01_T2w_rootlets.nii.gz").is_file()


# The batch below is killed at one exact point, not after a sleep (a timed kill missed the tiny model's few
# milliseconds between writing and moving, and then found no process to kill): a wrapper around the os module of
# rootlets_task.batch.units sends SIGKILL to its own process right after the first output file is moved into place,
# with the image's other files still in .tmp and no record yet: the worst moment to die.
_KILLED_HALF_WAY = """
import os, signal, sys
from rootlets_task.batch import units

class KillAfterFirstMove:
    def __getattr__(self, name):
        return getattr(os, name)

    @staticmethod
    def replace(src, dst):
        os.replace(src, dst)
        if os.sep + units.TMP + os.sep not in str(dst):
            os.kill(os.getpid(), signal.SIGKILL)

units.os = KillAfterFirstMove()
from rootlets_task.cli.rootlets import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_batch_killed_mid_image_resumes_and_finishes(random_store, small_bids, tmp_path, monkeypatch):
    import signal

    monkeypatch.setenv("ROOTLETS_TASK_HOME", str(random_store))
    monkeypatch.setenv("ROOTLETS_TASK_BACKEND", "torch")
    _, bids = small_bids
    second = bids / "sub-02" / "anat"
    second.mkdir(parents=True)
    (second / "sub-02_T2w.nii.gz").write_bytes((bids / "sub-01" / "anat" / "sub-01_T2w.nii.gz").read_bytes())
    out = tmp_path / "derivatives"
    argv = ["batch", str(bids), "-o", str(out), "-threads", "1"]
    killed = subprocess.run([sys.executable, "-c", _KILLED_HALF_WAY, *argv], capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    moved = [p for p in out.glob("sub-*/anat/*") if p.is_file()]
    assert len(moved) == 1 and list((out / ".tmp").iterdir()), "killed with one file moved, the rest in .tmp"
    again = _rootlets(argv)
    assert again.wait(timeout=300) == 0, again.stderr.read()
    summary = json.loads((out / "logs" / "batch_summary.json").read_text())
    assert sorted(r["status"] for r in summary["results"]) == ["done", "done"]
    assert len(list(out.glob("sub-*/anat/*_rootlets.nii.gz"))) == 2 and not (out / ".tmp").exists()
    assert sorted(p.name for p in out.glob("sub-01/anat/*")) == sorted(p.name.replace("sub-02", "sub-01")
                                                                       for p in out.glob("sub-02/anat/*"))


@pytest.mark.parametrize("name, says", [
    ("sub-01_desc-preproc_T2w.nii.gz", "desc"),            # the strict names add desc-rootlets: desc twice
    ("sub-01_acq-a_acq-b_T2w.nii.gz", "acq"),               # an entity given twice
    ("sub-01_label-SC_T2w.nii.gz", "label"),
    (f"sub-01_acq-{'x' * 220}_T2w.nii.gz", "255 bytes"),    # a valid name whose strict names the disk cannot hold
])
def test_bids_strict_refuses_hostile_entities_before_any_work(name, says, random_store, small_bids, tmp_path,
                                                               monkeypatch, capsys):
    from rootlets_task.cli import rootlets as cli

    monkeypatch.setenv("ROOTLETS_TASK_HOME", str(random_store))
    _, bids = small_bids
    anat = bids / "sub-01" / "anat"
    (anat / "sub-01_T2w.nii.gz").rename(anat / name)
    out = tmp_path / "derivatives"
    assert cli.main(["batch", str(bids), "-o", str(out), "-bids-strict"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("rootlets: error: -bids-strict: ") and says in err, err
    assert not (out / "sub-01").exists()
