"""Every nnU-Net release format of ``tests/data/release_formats`` through the current package.

The zips there were written by the nnU-Net versions that wrote the real RootletSeg releases (2.1, 2.2.1, 2.4.2,
2.5.1, 2.6.0), by SCT's fork ``nnunetv2-neuropoly`` 2.6.2 (also with a ``trainer_class.py`` and with a
``crop_metadata.json``) and by 2.8.1, each with that version's own planner, trainer and checkpoint writer
(``tests/release_formats/build.py``; ``manifest.json`` says what each holds). For each zip: the zip is the one the
manifest describes, ``validate_release_zip`` accepts it, ``rootlets -install -custom-url`` installs it, and
``rootlets -i`` segments a phantom with it (grid, affine, dtype, values 0..9).

Every format must work: there is no list of expected failures, so a format the code cannot read fails its test. The
checkpoints are also read with ``torch.load(weights_only=True)``: as is, and with the allow-list ``ALLOW_LIST`` the
package uses (:func:`rootlets_task.models.checkpoints.numpy_allow_list`).
"""

from __future__ import annotations

import hashlib
import json
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from support.random_model import write_random_model

from rootlets_task.cli import rootlets as cli
from rootlets_task.io.phantom import write_phantom
from rootlets_task.models import archive, checkpoints, install
from rootlets_task.models.releases import PHANTOM_ZIP

sys.path.insert(0, str(Path(__file__).parent / "release_formats"))
from pickle_globals import checkpoint_globals  # noqa: E402

DATA = Path(__file__).parent / "data" / "release_formats"
MANIFEST = json.loads((DATA / "manifest.json").read_text())["zips"]
TAG = "r20250318"  # installed as a custom release of the default tag, as a user would with -custom-url
SPACING = (2.0, 2.0, 2.0)

ALLOW_LIST = checkpoints.numpy_allow_list()


def _entries() -> list:
    return [pytest.param(name, entry, id=name.removesuffix(".zip")) for name, entry in MANIFEST.items()]


def _checkpoint(zip_path: Path, entry: dict) -> bytes:
    with zipfile.ZipFile(zip_path) as zf:
        return zf.read(f"{entry['trainer_folder']}/fold_all/{entry['checkpoint']}")


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    """A 2 mm phantom in RPI (the releases expect LPI, so the package reorients and back)."""
    return write_phantom(tmp_path_factory.mktemp("phantom"), "RPI", SPACING, seed=7)["image"]


@pytest.mark.parametrize(("name", "entry"), _entries())
def test_zip_is_the_one_the_manifest_describes(name, entry):
    path = DATA / name
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
    assert path.stat().st_size == entry["size"] < 1 << 20
    with zipfile.ZipFile(path) as zf:
        assert sorted(zf.namelist()) == sorted(entry["members"])
    assert checkpoint_globals(_checkpoint(path, entry)) == entry["checkpoint_contents"]["pickle_globals"]


@pytest.mark.parametrize(("name", "entry"), _entries())
def test_validate_release_zip_accepts_it(name, entry):
    layout = archive.validate_release_zip(DATA / name, allow_code=entry["variant"] == "trainer_class")
    assert layout.trainer_name == entry["trainer_folder"]
    assert layout.folds == ("fold_all",)
    assert (f"{entry['trainer_folder']}/fold_all/{entry['checkpoint']}", f"fold_all/{entry['checkpoint']}") \
        in layout.members


def _rootlets(argv: list, capsys) -> tuple[int, str]:
    code = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    return code, err.splitlines()[-1] if err else ""


def _install_argv(name: str, entry: dict) -> list:
    code = ["-allow-release-code"] if entry["variant"] == "trainer_class" else []
    return ["-install", "-release", TAG, "-custom-url", DATA / name, "-v", "0", *code]


@pytest.fixture
def sc_crop_standin(monkeypatch, tmp_path):
    """The MOCK sc-crop of tests/support/standins (the real detector needs weights from the internet): returns a box."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "support" / "standins"))
    monkeypatch.delitem(sys.modules, "sc_crop", raising=False)
    box = {"xmin": 4, "xmax": 15, "ymin": 6, "ymax": 19, "zmin": 10, "zmax": 60}
    (tmp_path / "box.json").write_text(json.dumps(box))
    monkeypatch.setenv("FAKE_SC_CROP_BOX", str(tmp_path / "box.json"))
    monkeypatch.setenv("FAKE_SC_CROP_LOG", str(tmp_path / "sc_crop.jsonl"))
    return box, tmp_path / "sc_crop.jsonl"


@pytest.mark.parametrize(("name", "entry"), _entries())
def test_install_and_segment(name, entry, phantom, tmp_path, capsys, sc_crop_standin):
    """``rootlets -install -custom-url ZIP`` then ``rootlets -i`` on a phantom, through the CLI entry point."""
    code, err = _rootlets(_install_argv(name, entry), capsys)
    assert code == 0, err
    out = tmp_path / "out_rootlets.nii.gz"
    code, err = _rootlets(["-i", phantom, "-o", out, "-release", TAG, "-device", "cpu", "-v", "0"], capsys)
    assert code == 0, err
    src, seg = nib.load(phantom), nib.load(out)
    assert seg.shape == src.shape
    assert np.allclose(seg.affine, src.affine)
    assert seg.get_data_dtype() == np.uint8
    values = np.unique(np.asanyarray(seg.dataobj))
    assert values.min() >= 0 and values.max() <= 9, values
    if entry["variant"] == "crop_metadata":  # segmented on sc-crop's box with the file's paddings, 0 outside it
        box, log = sc_crop_standin
        cut = tuple(slice(box[f"{a}min"], box[f"{a}max"] + 1) for a in "xyz")
        data = np.asanyarray(seg.dataobj)
        assert data.sum() == data[cut].sum()
        padded = json.loads(log.read_text().splitlines()[-1])
        with zipfile.ZipFile(DATA / name) as zf:
            metadata = json.loads(zf.read(next(m for m in zf.namelist() if m.endswith("crop_metadata.json"))))
        assert {k: padded[k] for k in metadata if k.startswith("pad_")} == {k: v for k, v in metadata.items()
                                                                           if k.startswith("pad_")}


def test_release_code_is_refused_without_the_opt_in_and_never_runs_unasked(phantom, tmp_path, capsys, monkeypatch):
    name = "nnunetv2-neuropoly-2.6.2-trainer_class.zip"
    code, err = _rootlets(["-install", "-release", TAG, "-custom-url", DATA / name, "-v", "0"], capsys)
    assert code == 1 and "-allow-release-code" in err
    assert _rootlets(_install_argv(name, MANIFEST[name]), capsys)[0] == 0
    installed = install.installed_release(TAG)
    assert installed.record["code"] == ["trainer_class.py"]
    marker = tmp_path / "ran"
    code_file = installed.trainer_folder / "trainer_class.py"
    code_file.write_text(code_file.read_text() + f"\nopen({str(marker)!r}, 'w').close()\n")
    out = tmp_path / "seg.nii.gz"
    assert _rootlets(["-i", phantom, "-o", out, "-release", TAG, "-device", "cpu", "-v", "0"], capsys)[0] == 0
    assert marker.exists(), "installed with -allow-release-code: the release's trainer code builds the network"
    record = installed.folder / install.RECORD
    record.write_text(json.dumps({**installed.record, "code": []}))  # as if installed without the opt-in
    marker.unlink()
    assert _rootlets(["-i", phantom, "-o", out, "-release", TAG, "-device", "cpu", "-v", "0"], capsys)[0] == 0
    assert not marker.exists(), "without the opt-in the network comes from the plans and no release code runs"


@pytest.mark.parametrize(("name", "entry"), [p for p in _entries() if p.values[1]["variant"] != "plain"])
def test_install_keeps_what_sct_reads(name, entry, capsys):
    """trainer_class.py (inside the trainer folder) and crop_metadata.json (beside it) where SCT looks for them."""
    assert _rootlets(_install_argv(name, entry), capsys)[0] == 0
    installed = install.installed_release(TAG)
    wanted = {"trainer_class": installed.trainer_folder / "trainer_class.py",
              "crop_metadata": installed.folder / "crop_metadata.json"}[entry["variant"]]
    assert wanted.is_file(), f"{wanted} missing"
    with zipfile.ZipFile(DATA / name) as zf:
        member = next(m for m in zf.namelist() if m.endswith(wanted.name))
        assert wanted.read_bytes() == zf.read(member)


def _weights_only(raw: bytes, tmp_path: Path, allow: list | None = None) -> dict:
    path = tmp_path / "checkpoint.pth"
    path.write_bytes(raw)
    if allow is None:
        return torch.load(path, map_location="cpu", weights_only=True)
    with torch.serialization.safe_globals(allow):
        return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.parametrize(("name", "entry"), _entries())
def test_weights_only_load_with_the_allow_list(name, entry, tmp_path):
    """Plain weights_only fails exactly when the checkpoint holds numpy objects; with ALLOW_LIST every one loads."""
    raw = _checkpoint(DATA / name, entry)
    numpy_globals = [g for g in entry["checkpoint_contents"]["pickle_globals"] if g.startswith("numpy")]
    if numpy_globals:
        with pytest.raises(Exception, match="Unsupported global"):
            _weights_only(raw, tmp_path)
    ckpt = _weights_only(raw, tmp_path, ALLOW_LIST)
    assert ckpt["trainer_name"] == entry["checkpoint_contents"]["trainer_name"]
    assert ckpt["init_args"]["configuration"] == "3d_fullres"
    assert all(isinstance(v, torch.Tensor) for v in ckpt["network_weights"].values())


def test_checkpoints_the_package_writes_load_weights_only_as_is(tmp_path):
    """The bundled phantom release and tests/random_model.py (nnunetv2 2.8.1, stripped checkpoints) need no allow-list."""
    with zipfile.ZipFile(PHANTOM_ZIP) as zf:
        phantom = zf.read(next(n for n in zf.namelist() if n.endswith(".pth")))
    random = (write_random_model(tmp_path / "random") / "fold_all" / "checkpoint_final.pth").read_bytes()
    for raw in (phantom, random):
        assert not [g for g in checkpoint_globals(raw) if g.startswith("numpy")]
        ckpt = _weights_only(raw, tmp_path)
        assert ckpt["trainer_name"] == "nnUNetTrainer" and ckpt["init_args"]["configuration"] == "3d_fullres"


@pytest.mark.parametrize(("name", "entry"), _entries())
def test_sct_bridge_installs_and_runs_it(name, entry, phantom, tmp_path, capsys, monkeypatch, sc_crop_standin):
    """The same zip through the SCT bridge into an SCT-shaped folder (test_sct.make_sct), then ``-release sct``."""
    from test_sct import make_sct

    root = make_sct(tmp_path / "sct")
    monkeypatch.setenv("SCT_DIR", str(root))
    code, err = _rootlets(["-install", "-sct", *_install_argv(name, entry)[3:]], capsys)
    assert code == 0, err
    model_dir = root / "data" / "deepseg_models" / "model_seg_spinal_rootlets_nnunet"
    assert (model_dir / "crop_metadata.json").is_file() == (entry["variant"] == "crop_metadata")
    out = tmp_path / "seg.nii.gz"
    code, err = _rootlets(["-i", phantom, "-o", out, "-release", "sct", "-device", "cpu", "-v", "0"], capsys)
    assert code == 0, err
    assert nib.load(out).shape == nib.load(phantom).shape
