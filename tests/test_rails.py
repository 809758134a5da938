"""Safety rails against believable wrong results: the phantom release on an image that is not a phantom, a custom
model that would silently replace an official release, and labels that are not disc labels given as discs.

Real files throughout: phantoms, the bundled phantom release, SCT's own test data (``sct_testing_data/t2``: its
``labels.nii.gz`` holds vertebral-body labels 3 and 5, its ``t2_seg-manual_labeled.nii.gz`` is a labelled cord).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from support.sct_data import T2, needs_t2

from rootlets_task.cli.rootlets import main
from rootlets_task.core.errors import RootletsError
from rootlets_task.core.options import ChainOptions, ModelOptions
from rootlets_task.io import labels
from rootlets_task.io.phantom import MARK, is_phantom, write_phantom
from rootlets_task.levels.compute import compute_levels, levels_from_files
from rootlets_task.models import install
from rootlets_task.models.releases import PHANTOM_ZIP
from rootlets_task.pipeline.chain import ChainInputs, run_chain
from rootlets_task.pipeline.segment import segment_files

PHANTOM_WARNING = "is not a phantom"


# ------------------------------------------------------------------------------------------------ phantom release


def _unmarked(files: dict, tmp_path: Path) -> Path:
    """The phantom image without its header mark: what a real scan looks like to the check."""
    img = nib.load(files["image"])
    img.header["descrip"] = b"an MRI scanner"
    path = tmp_path / "scan.nii.gz"
    nib.save(img, path)
    return path


def test_phantom_files_carry_the_mark(files):
    for kind in ("image", "rootlets", "cord", "discs", "pmj"):
        img = nib.load(files[kind])
        assert is_phantom(img) and img.header["descrip"].item() == MARK.encode(), kind
    assert not is_phantom(nib.Nifti1Image(np.zeros((2, 2, 2), np.uint8), np.eye(4)))


def test_phantom_release_on_a_phantom_says_nothing(files, tmp_path, phantom_home, caplog):
    caplog.set_level(logging.WARNING, logger="rootlets_task")
    (out,) = segment_files([files["image"]], tmp_path / "seg", ModelOptions(release="phantom"), verbose=0)
    assert not [r for r in caplog.records if PHANTOM_WARNING in r.getMessage()]
    assert "Warnings" not in json.loads(out.with_name(out.name.replace(".nii.gz", ".json")).read_text())


def test_phantom_release_on_another_image_warns_in_log_sidecar_and_chain(files, tmp_path, phantom_home, caplog):
    scan = _unmarked(files, tmp_path)
    caplog.set_level(logging.WARNING, logger="rootlets_task")
    result = run_chain(scan, out_dir=tmp_path / "chain",
                       inputs=ChainInputs(cord=files["cord"], discs=files["discs"], pmj=files["pmj"]),
                       options=ChainOptions(cord_from="file", discs_from="file", pmj_from="file"),
                       model=ModelOptions(release="phantom"))
    assert [n for n in result.notes if PHANTOM_WARNING in n and "phantom release" in n]
    assert [r for r in caplog.records if PHANTOM_WARNING in r.getMessage()]
    sidecar = json.loads((tmp_path / "chain" / "scan_rootlets.json").read_text())
    assert [w for w in sidecar["Warnings"] if PHANTOM_WARNING in w]
    again = run_chain(scan, out_dir=tmp_path / "chain",  # up to date: the note is given again, nothing recomputed
                      inputs=ChainInputs(cord=files["cord"], discs=files["discs"], pmj=files["pmj"]),
                      options=ChainOptions(cord_from="file", discs_from="file", pmj_from="file"),
                      model=ModelOptions(release="phantom"))
    assert again.steps["rootlets"] == "up to date" and [n for n in again.notes if PHANTOM_WARNING in n]


# ------------------------------------------------------------------------------------------------ custom models


def test_custom_url_without_release_installs_the_custom_tag(tmp_path, capsys):
    assert main(["-install", "-custom-url", str(PHANTOM_ZIP), "-v", "0"]) == 0
    assert (install.models_dir() / install.CUSTOM).is_dir()
    assert not (install.models_dir() / "r20250318").exists()  # the official default release is untouched
    folder, record = install.model_folder(install.CUSTOM)
    assert record["custom"] and record["tag"] == install.CUSTOM and folder.is_dir()
    assert main(["releases"]) == 0
    line = next(row for row in capsys.readouterr().out.splitlines() if " custom " in f" {row} ")
    assert "installed" in line
    assert install.model_folder() == (folder, record)  # installed last: what runs without -release, as in SCT
    with pytest.raises(RootletsError, match="no model release r20250318 installed"):
        install.model_folder("r20250318")  # never replaced by the custom model


def test_custom_release_needs_a_url_and_an_install(capsys):
    assert main(["-install", "-release", "custom"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "-custom-url" in err
    with pytest.raises(RootletsError, match="rootlets -install -custom-url"):
        install.model_folder(install.CUSTOM)


# ------------------------------------------------------------------------------------------------ disc labels


@needs_t2
def test_sct_vertebral_body_labels_are_not_taken_as_discs(tmp_path, capsys):
    args = ["levels", "-r", str(T2 / "t2_seg-deepseg_rootlets.nii.gz"), "-s", str(T2 / "t2_seg-manual.nii.gz"),
            "-discs", str(T2 / "labels.nii.gz"), "-o", str(tmp_path / "out")]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "labels.nii.gz" in err and "3, 5" in err and "vertebral-body" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    img = nib.load(T2 / "labels.nii.gz")
    assert labels.problem("discs", np.asarray(img.dataobj).astype(int)) is not None  # the chain's check too


@needs_t2
def test_a_labelled_cord_given_as_discs_names_the_file_to_give(tmp_path):
    with pytest.raises(RootletsError, match=r"labelled cord.*_labeled_discs"):
        levels_from_files(T2 / "t2_seg-deepseg_rootlets.nii.gz", T2 / "t2_seg-manual.nii.gz",
                          discs=T2 / "t2_seg-manual_labeled.nii.gz", out_dir=tmp_path)


def test_real_disc_labels_still_pass(phantom):
    result = compute_levels(phantom.rootlets, phantom.cord, phantom.affine, discs=phantom.discs, pmj=phantom.pmj)
    assert result.vertebral is not None and (result.levels["status"] == "ok").all()
    single = np.where(phantom.discs == 3, 3, 0)  # one disc: a reference, no vertebral level, a warning only
    assert "only disc 3" in " ".join(compute_levels(phantom.rootlets, phantom.cord, phantom.affine, discs=single).warnings)
    every_other = np.where(np.isin(phantom.discs, (3, 5, 7)), phantom.discs, 0)
    with pytest.raises(RootletsError, match="no two consecutive"):
        compute_levels(phantom.rootlets, phantom.cord, phantom.affine, discs=every_other, names={"discs": "discs d.nii.gz"})


def test_chain_refuses_body_labels_before_levels(tmp_path, files):
    ph = write_phantom(tmp_path / "ph", seed=1)
    body = np.where(np.isin(np.asarray(nib.load(ph["discs"]).dataobj), (3, 5)), np.asarray(nib.load(ph["discs"]).dataobj), 0)
    bad = tmp_path / "labels.nii.gz"
    nib.save(nib.Nifti1Image(body.astype(np.uint8), nib.load(ph["discs"]).affine), bad)
    with pytest.raises(RootletsError, match=r"discs .*labels\.nii\.gz.*vertebral-body"):
        run_chain(ph["image"], out_dir=tmp_path / "out",
                  inputs=ChainInputs(cord=ph["cord"], discs=bad, rootlets=ph["rootlets"]),
                  options=ChainOptions(cord_from="file", discs_from="file", pmj_from="none"))
