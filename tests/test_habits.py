"""Issue #23 items 9-16: the package leaves its caller's process as it found it, follows SCT's install habits, and its
tests catch what they claim."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import nibabel as nib
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
    import shutil

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
