"""`rootlets batch -bids-strict`: BIDS-valid names (desc-/label- entities, dseg/mask suffixes), a dseg.tsv per
segmentation, a .bidsignore for the tables and records; the same arrays as the default names; the official BIDS
validator (schema-based, ``bids-validator-deno``) accepts the strict derivative and rejects the default one.

Real batch runs with the phantom release on the batch tests' dataset (tests/support/batch_data.py); the validator
test is skipped when the validator is not installed (.ci/run installs it; ``pip install bids-validator-deno``, or set
BIDS_VALIDATOR to its path).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from support.batch_data import BROKEN, COMMON, run
from support.required import needs

from rootlets_task.batch import bids_strict
from rootlets_task.batch import run as batch
from rootlets_task.core.errors import RootletsError
from rootlets_task.core.names import level_name
from rootlets_task.io import viewers

SUBSET = "sub-0[12]/|ses-01"  # sub-01, sub-02, sub-03 ses-01
STRICT_TAILS = ["desc-rootlets_dseg.nii.gz", "desc-rootlets_dseg.json", "desc-rootlets_dseg.tsv", "label-SC_mask.nii.gz",
                "label-SC_mask.json", "desc-discs_dseg.nii.gz", "desc-discs_dseg.json", "desc-discs_dseg.tsv",
                "desc-PMJ_dseg.nii.gz", "desc-PMJ_dseg.json", "desc-PMJ_dseg.tsv", "desc-spinal_dseg.nii.gz",
                "desc-spinal_dseg.json", "desc-spinal_dseg.tsv", "desc-vertebral_dseg.nii.gz",
                "desc-vertebral_dseg.json", "desc-vertebral_dseg.tsv"]
KEPT_TAILS = ["T2w_batch.json", "T2w_chain.json", "T2w_levels.csv", "T2w_levels.json", "T2w_shift.csv"]


@pytest.fixture(autouse=True)
def _store(phantom_home):
    """Every test here (and the workers it starts) uses the session's phantom store."""


@pytest.fixture(scope="module")
def runs(bids, phantom_store, _backend_cache, tmp_path_factory):
    """The subset in default names and in strict names."""
    root = tmp_path_factory.mktemp("strict")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ROOTLETS_TASK_HOME", str(phantom_store))
        mp.setenv("ROOTLETS_TASK_CACHE", str(_backend_cache))
        default = run(bids, root / "default", include=SUBSET, **COMMON)
        strict = run(bids, root / "strict", include=SUBSET + "|sub-06", bids_strict=True, **COMMON)
    return root / "default", root / "strict", default, strict


def _folder(out: Path, name: str) -> Path:
    parts = name.split("_")
    return out.joinpath(parts[0], *[p for p in parts if p.startswith("ses-")], "anat")


def test_strict_names_tables_and_same_arrays(runs, bids):
    default, strict, _, summary = runs
    assert len(summary.by_status("done")) == 3 and [r["rel"] for r in summary.failed] == [BROKEN]
    for name in ("sub-01_T2w", "sub-02_T2w", "sub-03_ses-01_T2w"):
        source = name[: -len("_T2w")]
        folder = _folder(strict, name)
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            [f"{source}_{t}" for t in STRICT_TAILS] + [f"{source}_{t}" for t in KEPT_TAILS] + list(viewers.FOLDER_FILES))
        for tail, (strict_tail, kind, _) in bids_strict.STRICT.items():  # same voxels as under the default names
            old = nib.load(_folder(default, name) / f"{name}{tail}.nii.gz")
            new = nib.load(folder / f"{source}_{strict_tail}.nii.gz")
            assert np.array_equal(np.asanyarray(old.dataobj), np.asanyarray(new.dataobj)) and np.allclose(old.affine, new.affine)
            if kind:  # its look-up table: one row per value present
                rows = (folder / f"{source}_{strict_tail}.tsv").read_text().splitlines()
                values = sorted(int(v) for v in np.unique(np.asanyarray(new.dataobj)) if v > 0)
                assert rows[0] == "index\tname" and [int(r.split("\t")[0]) for r in rows[1:]] == values
        sidecar = json.loads((folder / f"{source}_desc-rootlets_dseg.json").read_text())
        assert sidecar["Sources"] == [f"bids:raw:{Path(*folder.relative_to(strict).parts, f'{name}.nii.gz').as_posix()}"]
        record = json.loads((folder / f"{name}_batch.json").read_text())["steps"][batch.UNIT_STEP]
        assert set(record["outputs"]) == {p.name for p in folder.iterdir()} - {f"{name}_batch.json"}
        assert record["key"]["bids_strict"] is True
        text = (folder / f"{name}_levels.json").read_text() + (folder / f"{name}_chain.json").read_text()
        assert f"{name}_spinal_levels" not in text and f"{name}_rootlets.nii.gz" not in text, "references renamed"
        assert f"{source}_desc-spinal_dseg.nii.gz" in text
    rootlets = dict(r.split("\t") for r in (_folder(strict, "sub-01_T2w") / "sub-01_desc-rootlets_dseg.tsv").read_text()
                    .splitlines()[1:])
    assert rootlets and all(n == level_name(int(v), "spinal") for v, n in rootlets.items())
    assert {"C2", "T1"} & set(rootlets.values()) <= {rootlets.get("2"), rootlets.get("9")}
    discs = (_folder(strict, "sub-01_T2w") / "sub-01_desc-discs_dseg.tsv").read_text().splitlines()
    assert discs[1:4] == ["1\ttop of C1", "2\tC1/C2", "3\tC2/C3"] and "8\tC7/T1" in discs
    assert (strict / ".bidsignore").read_text().split() == bids_strict.BIDSIGNORE
    link = json.loads((strict / "dataset_description.json").read_text())["DatasetLinks"]["raw"]
    assert not os.path.isabs(link) and (strict / link).resolve() == Path(bids).resolve(), "relative: no local folders"
    for table in ("levels.csv", "shift.csv"):
        assert (strict / table).read_text() == (default / table).read_text()


def test_strict_reruns_and_switching_names(runs, bids, tmp_path):
    """A second strict run skips everything; the default names afterwards redo the images and leave no strict file."""
    out = tmp_path / "rootlets"
    shutil.copytree(runs[1], out)
    again = run(bids, out, include=SUBSET, bids_strict=True, **COMMON)
    assert len(again.by_status("skipped")) == 3
    switched = run(bids, out, include="sub-01/", **COMMON)
    assert [r["name"] for r in switched.by_status("done")] == ["sub-01_T2w"]
    names = {p.name for p in (out / "sub-01" / "anat").iterdir()}
    assert "sub-01_T2w_rootlets.nii.gz" in names and not any("_desc-" in n or "_mask" in n for n in names), names


def test_strict_refuses_names_that_collide(bids, tmp_path):
    root = tmp_path / "bids"
    shutil.copytree(bids / "sub-01", root / "sub-01")
    shutil.copy(root / "sub-01" / "anat" / "sub-01_T2w.nii.gz", root / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    with pytest.raises(RootletsError, match=r"-bids-strict: sub-01/anat/sub-01_T1w.nii.gz and sub-01/anat/sub-01_T2w"):
        run(root, tmp_path / "out", contrasts=("T1w", "T2w"), bids_strict=True, **COMMON)
    assert not (tmp_path / "out" / "sub-01").exists()


def _validator() -> str | None:
    return os.environ.get("BIDS_VALIDATOR") or shutil.which("bids-validator-deno")


@needs("bids-validator", _validator(), "the BIDS validator is not installed (pip install bids-validator-deno, or "
       "BIDS_VALIDATOR=path); .ci/run installs it")
def test_official_bids_validator_accepts_the_strict_derivative(runs):
    def errors(folder: Path) -> list[tuple[str, str]]:
        done = subprocess.run([_validator(), "--json", str(folder)], capture_output=True, text=True, timeout=300)
        issues = json.loads(done.stdout)["issues"]["issues"]
        return [(i["code"], i.get("location")) for i in issues if i["severity"] == "error"]

    assert errors(runs[1]) == []
    default = errors(runs[0])  # the default (SCT) names are not BIDS: the validator does check them
    assert ("NOT_INCLUDED", "/sub-01/anat/sub-01_T2w_rootlets.nii.gz") in default
