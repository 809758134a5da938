"""Every nnU-Net release format of ``tests/data/release_formats`` through the current package.

The zips there were written by the nnU-Net versions that wrote the real RootletSeg releases (2.1, 2.2.1, 2.4.2,
2.5.1, 2.6.0), by SCT's fork ``nnunetv2-neuropoly`` 2.6.2 (also with a ``trainer_class.py`` and with a
``crop_metadata.json``) and by 2.8.1, each with that version's own planner, trainer and checkpoint writer
(``tests/release_formats/build.py``; ``manifest.json`` says what each holds). For each zip: the zip is the one the
manifest describes, ``validate_release_zip`` accepts it, ``rootlets -install -custom-url`` installs it, and
``rootlets -i`` segments a phantom with it (grid, affine, dtype, values 0..9).

``KNOWN_FAILURES`` lists what the current code cannot do yet, with the reason; such a test is an xfail that shows
the exact error, and it fails once the format works, so the entry must then be removed. The checkpoints are also
read with ``torch.load(weights_only=True)``: as is, and with the allow-list ``ALLOW_LIST`` the package is to use.
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
from random_model import write_random_model

from rootlets_task import cli, install
from rootlets_task.phantom import write_phantom
from rootlets_task.releases import PHANTOM_ZIP

sys.path.insert(0, str(Path(__file__).parent / "release_formats"))
from pickle_globals import checkpoint_globals  # noqa: E402

DATA = Path(__file__).parent / "data" / "release_formats"
MANIFEST = json.loads((DATA / "manifest.json").read_text())["zips"]
TAG = "r20250318"  # installed as a custom release of the default tag, as a user would with -custom-url
SPACING = (2.0, 2.0, 2.0)

# zip -> why the current code fails on it (the test shows the exact error when it does)
KNOWN_FAILURES = {
    "nnunetv2-neuropoly-2.6.2-trainer_class.zip": "the checkpoint's trainer_name is the custom class defined in "
    "trainer_class.py; the package then falls back to nnU-Net's lookup by name, which imports every trainer module "
    "(primus -> timm -> torchvision, which cannot load with this torch) and, with a working torchvision, does not "
    "find the class unless nnUNet_extTrainer names the trainer folder; SCT instead passes get_trainer_class() to the "
    "fork's initialize_from_trained_model_folder(trainer_class=...)",
}
# zip -> why install does not keep a file that SCT reads from the installed model folder
KNOWN_INSTALL_GAPS = {
    "nnunetv2-neuropoly-2.6.2-crop_metadata.zip": "install extracts only the nnUNetTrainer* folder; SCT reads "
    "crop_metadata.json from the installed model folder, beside it",
}


def _numpy_globals() -> list:
    """The smallest allow-list that loads every checkpoint here (``allow_list.py`` finds it): numpy's scalar
    reconstructor under both module paths (numpy 1 writes ``numpy.core.multiarray``, numpy 2 ``numpy._core``; a
    (callable, name) pair allows the name whichever numpy is loaded), ``numpy.dtype``, and the dtype classes that
    BUILD instantiates for numpy-1 float64 and float32 scalars (``_best_ema``, the ``logging`` lists)."""
    multiarray = np._core.multiarray if int(np.__version__.split(".")[0]) >= 2 else np.core.multiarray
    return [(multiarray.scalar, "numpy.core.multiarray.scalar"), (multiarray.scalar, "numpy._core.multiarray.scalar"),
            np.dtype, np.dtypes.Float64DType, np.dtypes.Float32DType]


ALLOW_LIST = _numpy_globals()


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
    layout = install.validate_release_zip(DATA / name)
    assert layout.trainer_name == entry["trainer_folder"]
    assert layout.folds == ("fold_all",)
    assert (f"{entry['trainer_folder']}/fold_all/{entry['checkpoint']}", f"fold_all/{entry['checkpoint']}") \
        in layout.members


def _rootlets(argv: list, capsys) -> tuple[int, str]:
    code = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    return code, err.splitlines()[-1] if err else ""


@pytest.mark.parametrize(("name", "entry"), _entries())
def test_install_and_segment(name, entry, phantom, tmp_path, capsys):
    """``rootlets -install -custom-url ZIP`` then ``rootlets -i`` on a phantom, through the CLI entry point."""
    code, err = _rootlets(["-install", "-release", TAG, "-custom-url", DATA / name, "-v", "0"], capsys)
    assert code == 0, err
    out = tmp_path / "out_rootlets.nii.gz"
    code, err = _rootlets(["-i", phantom, "-o", out, "-release", TAG, "-device", "cpu", "-v", "0"], capsys)
    if name in KNOWN_FAILURES:
        if code != 0:
            pytest.xfail(f"{KNOWN_FAILURES[name]} -- {err}")
        pytest.fail(f"{name} now segments: remove it from KNOWN_FAILURES")
    assert code == 0, err
    src, seg = nib.load(phantom), nib.load(out)
    assert seg.shape == src.shape
    assert np.allclose(seg.affine, src.affine)
    assert seg.get_data_dtype() == np.uint8
    values = np.unique(np.asanyarray(seg.dataobj))
    assert values.min() >= 0 and values.max() <= 9, values


@pytest.mark.parametrize(("name", "entry"), [p for p in _entries() if p.values[1]["variant"] != "plain"])
def test_install_keeps_what_sct_reads(name, entry, capsys):
    """trainer_class.py (inside the trainer folder) and crop_metadata.json (beside it) where SCT looks for them."""
    assert _rootlets(["-install", "-release", TAG, "-custom-url", DATA / name, "-v", "0"], capsys)[0] == 0
    installed = install.installed_release(TAG)
    wanted = {"trainer_class": installed.trainer_folder / "trainer_class.py",
              "crop_metadata": installed.folder / "crop_metadata.json"}[entry["variant"]]
    if name in KNOWN_INSTALL_GAPS and not wanted.is_file():
        present = sorted(p.name for p in installed.folder.iterdir())
        pytest.xfail(f"{KNOWN_INSTALL_GAPS[name]} -- {wanted.name} missing; the folder holds {present}")
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
