"""Provenance without local paths: a derivative is shared, archived and published, so none of its files names this
machine's folders (BIDS URIs ``bids:raw:...`` or paths relative to the dataset instead), releases are named by public
URLs, and each sidecar's ``Name`` says the command that really ran."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from rootlets_task.cli import rootlets as cli
from rootlets_task.core.places import portable, portable_text, shared_paths
from rootlets_task.io import provenance
from rootlets_task.models.releases import PHANTOM_ZIP


def _local_paths(root: Path, folders: list[Path]) -> list[str]:
    """Every occurrence of one of ``folders`` (as a whole path component) in any file under ``root``."""
    pattern = re.compile(b"|".join(re.escape(str(f).encode()) + rb"(?![\w.-])" for f in folders))
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        found += [f"{path.relative_to(root)}: ...{data[max(0, m.start() - 40):m.end() + 40]!r}..."
                  for m in pattern.finditer(data)]
    return found


@pytest.fixture(scope="module")
def derivative(tmp_path_factory, phantom_store, _backend_cache) -> tuple[Path, Path]:
    """`rootlets batch -levels -qc` of a one-subject dataset made by `rootlets phantom -subject 01`, its labels in
    the dataset's derivatives/labels, the derivative and its QC inside the dataset. Returns (dataset, derivative)."""
    root = tmp_path_factory.mktemp("provenance") / "BIDS"
    anat, labels = root / "sub-01" / "anat", root / "derivatives" / "labels" / "sub-01" / "anat"
    assert cli.main(["phantom", "-o", str(anat), "-subject", "01"]) == 0
    labels.mkdir(parents=True)
    for kind in ("label-SC_seg", "label-discs_dlabel", "label-PMJ_dlabel"):
        shutil.move(anat / f"sub-01_T2w_{kind}.nii.gz", labels)
    for extra in anat.glob("sub-01_T2w_*"):
        extra.unlink()
    out = root / "derivatives" / "rootlets"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ROOTLETS_TASK_HOME", str(phantom_store))
        mp.setenv("ROOTLETS_TASK_CACHE", str(_backend_cache))
        assert cli.main(["batch", str(root), "-o", str(out), "-release", "phantom", "-levels", "-threads", "1",
                         "-qc", str(out / "qc"), "-v", "0"]) == 0
    return root, out


def test_no_file_of_a_batch_derivative_names_a_local_folder(derivative, tmp_path_factory, phantom_store):
    root, out = derivative
    folders = [Path(tmp_path_factory.getbasetemp()).resolve(), Path.home(), phantom_store, PHANTOM_ZIP.parent,
               Path(cli.__file__).parents[2]]
    assert len(list(out.rglob("*.json"))) >= 8 and (out / "logs").is_dir() and (out / "qc").is_dir()
    assert _local_paths(out, folders) == []


def test_batch_derivative_names_its_sources_by_bids_uri(derivative):
    root, out = derivative
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["SourceDatasets"] == [{"URL": "bids:raw:"}]
    assert (out / description["DatasetLinks"]["raw"]).resolve() == root.resolve()
    generated = description["GeneratedBy"][0]
    assert generated["ModelURL"] == provenance.code_url(f"data/{PHANTOM_ZIP.name}")
    anat = out / "sub-01" / "anat"
    rootlets = json.loads((anat / "sub-01_T2w_rootlets.json").read_text())
    assert rootlets["InputFile"] == "bids:raw:sub-01/anat/sub-01_T2w.nii.gz"
    assert rootlets["GeneratedBy"][0]["Name"].startswith("rootlets_task: rootlets batch bids:raw:sub-01/anat/sub-01_T2w")
    assert rootlets["GeneratedBy"][0]["ModelFolder"] == "phantom/nnUNetTrainer__nnUNetPlans__3d_fullres"
    cord = json.loads((anat / "sub-01_T2w_label-SC_seg.json").read_text())
    assert cord["SourceFile"] == "bids:raw:derivatives/labels/sub-01/anat/sub-01_T2w_label-SC_seg.nii.gz"
    assert cord["GeneratedBy"][0]["Name"].startswith("rootlets_task: rootlets batch ")
    record = json.loads((anat / "sub-01_T2w_batch.json").read_text())
    assert record["image"] == "bids:raw:sub-01/anat/sub-01_T2w.nii.gz" and record["steps"]["unit"]["qc"] == "qc"


def test_a_rerun_of_the_batch_finds_its_units_done(derivative, phantom_store, monkeypatch, capsys):
    """The record holds the QC folder as a relative path: still recognised as the same QC folder."""
    root, out = derivative
    monkeypatch.setenv("ROOTLETS_TASK_HOME", str(phantom_store))
    assert cli.main(["batch", str(root), "-o", str(out), "-release", "phantom", "-levels", "-threads", "1",
                     "-qc", str(out / "qc"), "-v", "0"]) == 0
    assert "0 done, 1 skipped" in capsys.readouterr().out


def test_single_run_sidecar_names_its_input_relative_to_itself(tmp_path):
    with shared_paths(tmp_path / "out"):
        assert portable(tmp_path / "data" / "sub-01_T2w.nii.gz") == "../data/sub-01_T2w.nii.gz"
        assert portable(tmp_path / "out" / "x.nii.gz") == "x.nii.gz"
    assert portable(tmp_path / "x.nii.gz") == "x.nii.gz", "outside any shared setting: the file name only"
    with shared_paths("/data/out"):
        assert portable("/elsewhere/img.nii.gz") == "img.nii.gz", "sharing only the root folder: the file name only"


def test_text_paths_are_rewritten_as_whole_components(tmp_path):
    home = str(Path.home())
    with shared_paths(tmp_path / "BIDS" / "derivatives" / "rootlets", {"raw": tmp_path / "BIDS"}):
        text = portable_text(f"-s {tmp_path}/BIDS/sub-01/anat/a.nii.gz {home}/x {home}lets/y "
                             f"{tmp_path}/BIDS/derivatives/rootlets/sub-01/b.nii.gz")
    assert text == f"-s bids:raw:sub-01/anat/a.nii.gz ~/x {home}lets/y sub-01/b.nii.gz"


@pytest.mark.parametrize(("url", "shown"), [
    ("https://user:tok@example.org/r/model.zip?sig=1", "https://example.org/r/model.zip?<redacted>"),
    ("/home/someone/Downloads/my_model.zip", "my_model.zip"),
    ("file:///home/someone/my%20model.zip", "my model.zip"),
    (str(PHANTOM_ZIP), provenance.code_url(f"data/{PHANTOM_ZIP.name}")),
])
def test_model_url_is_public_or_a_file_name(url, shown):
    assert provenance.model_url(url) == shown
