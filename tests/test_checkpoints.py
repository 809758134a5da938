"""A release can never run code: malicious checkpoints are refused at install and at load, and nothing they name runs.

Every malicious file here would create a marker file when unpickled with ``weights_only=False`` (what nnU-Net and
SCT do); each test first shows that, then that no path of ours (``-install``, ``-i``, ``-install -sct``, a batch
worker) creates it.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from support.random_model import write_random_model

from rootlets_task.cli.rootlets import main
from rootlets_task.core.errors import RootletsError
from rootlets_task.io.phantom import write_phantom
from rootlets_task.models import checkpoints, install


class _Touch:
    """Unpickling this calls ``os.system("touch MARKER")``: the classic pickle payload."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Hidden:
    """The same payload, reached through a global the pickle builds from strings (protocol 4 STACK_GLOBAL)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (shutil.copy, (__file__, str(self.marker)))


def _nested_pickle(marker: Path) -> bytes:
    """A checkpoint whose plain ``bytes`` value is itself a malicious pickle: loading as data never unpickles it."""
    return pickle.dumps(_Touch(marker))


@pytest.fixture
def model(tmp_path) -> Path:
    return write_random_model(tmp_path / "model")


def _poison(folder: Path, kind: str, marker: Path) -> Path:
    """Rewrite fold_all's checkpoint of ``folder`` with payload ``kind``; returns the checkpoint."""
    path = folder / "fold_all" / "checkpoint_final.pth"
    content = torch.load(path, weights_only=True)
    if kind == "reduce":
        torch.save({**content, "logging": _Touch(marker)}, path)
    elif kind == "stack_global":
        torch.save({**content, "init_args": {"configuration": "3d_fullres", "x": _Hidden(marker)}}, path, pickle_protocol=4)
    elif kind == "nested":
        torch.save({**content, "blob": _nested_pickle(marker)}, path)
    elif kind == "legacy":
        torch.save({**content, "logging": _Touch(marker)}, path, _use_new_zipfile_serialization=False)
    elif kind == "trainer_name":  # a trainer only a release's own code could provide
        torch.save({**content, "trainer_name": "EvilTrainer"}, path)
    return path


MALICIOUS = ("reduce", "stack_global", "legacy")


@pytest.mark.parametrize("kind", MALICIOUS)
def test_the_payloads_are_real(model, tmp_path, kind):
    """Loaded the way nnU-Net loads checkpoints, each payload does create its marker (so the tests below mean it)."""
    marker = tmp_path / "marker"
    torch.load(_poison(model, kind, marker), weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("kind", MALICIOUS)
def test_check_and_load_refuse_without_running_anything(model, tmp_path, kind):
    marker = tmp_path / "marker"
    path = _poison(model, kind, marker)
    for call in (checkpoints.check, checkpoints.load):
        with pytest.raises(RootletsError, match=r"^checkpoint .*checkpoint_final.pth: ") as err:
            call(path)
        assert "\n" not in str(err.value)
    assert not marker.exists()


def test_nested_pickle_is_only_bytes(model, tmp_path):
    marker = tmp_path / "marker"
    content = checkpoints.load(_poison(model, "nested", marker))
    assert isinstance(content["blob"], bytes) and not marker.exists()


def test_allowed_checkpoints_load(model, tmp_path):
    """Real nnU-Net checkpoints load: numpy scalars in the log, torch.device in init_args (torch.save's protocol 2)."""
    import numpy as np

    path = model / "fold_all" / "checkpoint_final.pth"
    content = torch.load(path, weights_only=True)
    torch.save({**content, "_best_ema": np.float64(0.5), "logging": {"ema_fg_dice": [np.float32(0.1), 0.2]},
                "init_args": {"configuration": "3d_fullres", "device": torch.device("cpu")}}, path)
    loaded = checkpoints.load(path)
    assert loaded["_best_ema"] == 0.5 and loaded["init_args"]["device"] == torch.device("cpu")
    assert checkpoints.pickle_globals(pickle.dumps(OrderedDict(a=1), protocol=4)) == {"collections.OrderedDict"}


def _zip(folder: Path, path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for f in sorted(folder.rglob("*")):
            zf.write(f, f.relative_to(folder.parent).as_posix())
    return path


@pytest.mark.parametrize("kind", MALICIOUS)
def test_install_refuses_and_keeps_nothing(model, tmp_path, capsys, kind):
    marker = tmp_path / "marker"
    _poison(model, kind, marker)
    archive = _zip(model, tmp_path / "evil.zip")
    assert main(["-install", "-release", "r20250318", "-custom-url", str(archive), "-v", "0"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ("refused" in err or "cannot be loaded" in err or "not a PyTorch" in err)
    assert not (install.models_dir() / "r20250318").exists() and not marker.exists()


def _tamper_installed(tmp_path: Path, kind: str, marker: Path) -> Path:
    """A clean install whose checkpoint is then replaced on disk (a tampered store or a copied-in folder)."""
    clean = write_random_model(tmp_path / "clean")
    assert main(["-install", "-release", "r20250318", "-custom-url", str(_zip(clean, tmp_path / "ok.zip")), "-v", "0"]) == 0
    trainer = install.model_folder("r20250318")[0]
    return _poison(trainer, kind, marker)


@pytest.mark.parametrize("kind", MALICIOUS)
def test_segmentation_refuses_a_tampered_model(tmp_path, capsys, kind):
    marker = tmp_path / "marker"
    _tamper_installed(tmp_path, kind, marker)
    image = write_phantom(tmp_path / "img", spacing=(2.0, 2.0, 2.0))["image"]
    out = tmp_path / "out.nii.gz"
    assert main(["-i", str(image), "-o", str(out), "-release", "r20250318", "-v", "0"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("rootlets: error: ") and err.count("\n") == 1
    assert not out.exists() and not marker.exists()


def test_unknown_trainer_name_runs_the_plans_network_and_no_code(tmp_path, capsys):
    """A trainer only a release's own code could provide: the network comes from the plans, nothing is imported."""
    marker = tmp_path / "marker"
    _tamper_installed(tmp_path, "trainer_name", marker)
    image = write_phantom(tmp_path / "img", spacing=(2.0, 2.0, 2.0))["image"]
    out = tmp_path / "out.nii.gz"
    assert main(["-i", str(image), "-o", str(out), "-release", "r20250318", "-v", "0"]) == 0
    assert out.exists() and not marker.exists()
    assert "EvilTrainer" not in sys.modules


def test_sct_bridge_refuses(model, tmp_path, monkeypatch, capsys):
    from test_sct import make_sct

    root = make_sct(tmp_path / "sct")
    monkeypatch.setenv("SCT_DIR", str(root))
    marker = tmp_path / "marker"
    _poison(model, "reduce", marker)
    archive = _zip(model, tmp_path / "evil.zip")
    assert main(["-install", "-sct", "-custom-url", str(archive), "-v", "0"]) == 1
    assert "refused" in capsys.readouterr().err
    assert not (root / "data" / "deepseg_models" / "model_seg_spinal_rootlets_nnunet").exists() and not marker.exists()


def test_batch_worker_refuses(tmp_path):
    from rootlets_task.batch.run import BatchOptions, run_batch
    from rootlets_task.core.options import ModelOptions

    marker = tmp_path / "marker"
    _tamper_installed(tmp_path, "reduce", marker)
    anat = tmp_path / "bids" / "sub-01" / "anat"
    image = write_phantom(anat, spacing=(2.0, 2.0, 2.0), prefix="sub-01_T2w")["image"]
    assert image.name == "sub-01_T2w.nii.gz"
    (tmp_path / "bids" / "dataset_description.json").write_text(json.dumps({"Name": "x", "BIDSVersion": "1.10.0"}))
    summary = run_batch(tmp_path / "bids", tmp_path / "out", BatchOptions(progress=False),
                        ModelOptions(release="r20250318", threads=1))
    assert [r["status"] for r in summary.results] == ["failed"]
    assert "refused" in summary.results[0]["error"] and not marker.exists()
    assert not list((tmp_path / "out").rglob("*_rootlets.nii.gz"))


def test_pickle_globals_reads_memoised_stack_globals():
    data = pickle.dumps([OrderedDict(), OrderedDict(), io.BytesIO], protocol=4)
    assert checkpoints.pickle_globals(data) == {"collections.OrderedDict", "_io.BytesIO"}
