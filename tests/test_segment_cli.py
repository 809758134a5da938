"""``rootlets -i ...`` and ``rootlets_task.pipeline.segment``: outputs, sidecars, several inputs, and every bad input.

Two models are installed once per session through the real installer into a private model store:
- the bundled ``phantom`` release (trained on phantoms), for accuracy against the phantom truth;
- a structurally real nnU-Net with untrained weights (``random_model.py``), installed with ``-custom-url`` as the
  default release: it keeps the I/O and error tests fast and exercises the "no -release given" path.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from support.cli import run_cli as _run

import rootlets_task
from rootlets_task.cli import rootlets as cli
from rootlets_task.core.errors import RootletsError
from rootlets_task.core.options import ModelOptions
from rootlets_task.inference import segmenter as inference
from rootlets_task.io import nifti
from rootlets_task.io.metrics import dice_per_level
from rootlets_task.io.phantom import SPINAL_LEVELS, write_phantom
from rootlets_task.models import install
from rootlets_task.models.releases import DEFAULT_TAG, PHANTOM_MANIFEST
from rootlets_task.pipeline import segment

COARSE = (2.0, 2.0, 2.0)


@pytest.fixture(scope="session")
def models_home(random_store):
    """A model store holding a random-weight model installed as the default release."""
    return random_store


@pytest.fixture(scope="session")
def phantom_installed(models_home):
    """The bundled phantom release, installed once into the session's model store (no network)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(install.ENV_HOME, str(models_home))
        install.install_release("phantom", progress=False, make_active=False)  # beside the random model, not the default
    return models_home


@pytest.fixture
def home(models_home, monkeypatch):
    monkeypatch.setenv(install.ENV_HOME, str(models_home))
    return models_home


@pytest.fixture(scope="session")
def coarse_phantom(tmp_path_factory):
    """A 2 mm phantom cut to 32 slices around C4-C6: one 32^3 tile of the random model, so each run is quick."""
    folder = tmp_path_factory.mktemp("coarse")
    img = nib.load(write_phantom(folder, "LPI", COARSE)["image"]).slicer[:, :, 30:62]
    nib.save(img, folder / "coarse.nii.gz")
    return folder / "coarse.nii.gz"


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------------ accuracy
# Held-out cases of the manifest: seed 902 PSR 1 mm (reorientation) and seed 904 LPI 0.7x0.7x1.5 mm (spacing order).
@pytest.mark.parametrize("case", [2, 4])
def test_rootlets_on_phantom_matches_manifest_dice(phantom_installed, home, tmp_path, capsys, case):
    manifest = json.loads(PHANTOM_MANIFEST.read_text())
    held = manifest["heldout_dice"]["cases"][case]
    paths = write_phantom(tmp_path, held["orientation"], tuple(held["spacing"]), seed=held["seed"])
    code, out, err = _run(["-i", paths["image"], "-release", "phantom", "-device", "cpu"], capsys)
    assert code == 0, err
    expected_out = tmp_path / "phantom_T2w_rootlets.nii.gz"
    assert out.split() == [str(expected_out)]
    assert "inference time" in err
    pred = np.asanyarray(nib.load(expected_out).dataobj)
    truth = np.asanyarray(nib.load(paths["rootlets"]).dataobj)
    assert pred.dtype == np.uint8 and set(np.unique(pred)) <= {0, *SPINAL_LEVELS}
    # Same weights, plans, settings and input as the manifest's evaluation (stock nnU-Net). What may differ is float
    # arithmetic: thread count, the OpenVINO backend when installed and the float32 logits resampling, which flip a
    # few boundary voxels of levels that have hundreds. Measured over all six held-out cases: |dDice| <= 0.01 per
    # level (0.003 for these two); the tolerance is twice the worst case. A wrong orientation or spacing order
    # changes Dice by far more.
    scores = dice_per_level(pred, truth, SPINAL_LEVELS)
    for level in SPINAL_LEVELS:
        assert scores[level] == pytest.approx(held["dice"][str(level)], abs=0.02, nan_ok=True), level
    assert np.nanmean(list(scores.values())) == pytest.approx(held["mean"], abs=0.02)


# ------------------------------------------------------------------------------------------------ outputs
def test_default_output_beside_input_with_sidecar(home, coarse_phantom, tmp_path, capsys):
    src = tmp_path / "sub-01_T2w.nii.gz"
    src.write_bytes(coarse_phantom.read_bytes())
    code, out, err = _run(["-i", src], capsys)
    assert code == 0, err
    target = tmp_path / "sub-01_T2w_rootlets.nii.gz"
    assert out.split() == [str(target)]
    res, ref = nib.load(target), nib.load(src)
    assert res.shape == ref.shape and res.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(res.affine, ref.affine)
    side = json.loads((tmp_path / "sub-01_T2w_rootlets.json").read_text())
    gen = side["GeneratedBy"][0]
    record = json.loads((home / "models" / DEFAULT_TAG / install.RECORD).read_text())
    assert gen["Name"].startswith("rootlets_task: rootlets -i sub-01_T2w.nii.gz")
    assert gen["Version"] == rootlets_task.__version__
    assert gen["CodeURL"] and gen["ModelURL"] == Path(record["url"]).name
    assert gen["Release"] == DEFAULT_TAG and gen["ModelSHA256"] == record["sha256"]
    assert gen["Device"] == "cpu"
    assert gen["Settings"]["TileStepSize"] == 0.5 and gen["Settings"]["Mirroring"] is False
    assert gen["Settings"]["Folds"] == ["all"]
    assert side["InputFile"] == "sub-01_T2w.nii.gz", "beside the sidecar: relative to it"


def test_exact_output_path_and_test_time_aug(home, coarse_phantom, tmp_path, capsys):
    target = tmp_path / "deep" / "er" / "seg.nii.gz"
    code, out, err = _run(["-i", coarse_phantom, "-o", target, "-test-time-aug", "-device", "cpu", "-v", "0"], capsys)
    assert code == 0, err
    assert out.split() == [str(target)] and err == ""
    assert nib.load(target).shape == nib.load(coarse_phantom).shape
    gen = json.loads((tmp_path / "deep" / "er" / "seg.json").read_text())["GeneratedBy"][0]
    assert gen["Settings"]["Mirroring"] is True and "-test-time-aug" in gen["Name"]
    (plain,) = segment.segment_files(coarse_phantom, output=tmp_path / "plain.nii.gz", model=ModelOptions(device="cpu"),
                                     verbose=0)
    assert not np.array_equal(nib.load(plain).get_fdata(), nib.load(target).get_fdata())  # mirroring really ran


def test_qc_page_per_input_listed_in_the_index(home, coarse_phantom, tmp_path, capsys):
    srcs = []
    for name in ("sub-01_T2w", "sub-02_T2w"):
        srcs.append(tmp_path / f"{name}.nii.gz")
        srcs[-1].write_bytes(coarse_phantom.read_bytes())
    qc_dir = tmp_path / "qc"
    code, out, err = _run(["-i", *srcs, "-qc", qc_dir, "-device", "cpu"], capsys)
    assert code == 0, err
    report = qc_dir / "rootlets_task"  # our report; the QC folder's root belongs to SCT's report
    index = (report / "index.html").read_text()
    for name in ("sub-01_T2w", "sub-02_T2w"):
        (folder,) = [p.parent for p in report.glob("*/index.html") if p.parent.name.startswith(name)]
        page = folder / "index.html"
        assert page.is_file() and (folder / "rootlets.png").stat().st_size > 0
        assert f"{name}_rootlets.nii.gz" in page.read_text() and name in index
    entries = [json.loads(p.read_text()) for p in sorted((qc_dir / "_json").glob("qc_*.json"))]
    assert sorted(e["inputFile"] for e in entries) == ["sub-01_T2w.nii.gz", "sub-02_T2w.nii.gz"]
    assert not (qc_dir / "index.html").exists(), "SCT's index.html is SCT's to write"


def test_unwritable_qc_folder_writes_nothing(home, coarse_phantom, tmp_path, capsys):
    src = tmp_path / "sub-01_T2w.nii.gz"
    src.write_bytes(coarse_phantom.read_bytes())
    before = _snapshot(tmp_path)
    code, out, err = _run(["-i", src, "-qc", "/proc/sys/rootlets_qc"], capsys)
    assert code == 1 and "QC folder /proc/sys/rootlets_qc" in err and len(err.strip().splitlines()) == 1
    assert _snapshot(tmp_path) == before


def test_several_inputs_one_model_load_distinct_outputs(home, coarse_phantom, tmp_path, monkeypatch):
    loads = []
    real_init = inference.Segmenter.__init__
    monkeypatch.setattr(inference.Segmenter, "__init__", lambda self, *a, **k: (loads.append(1), real_init(self, *a, **k))[1])
    a, b = tmp_path / "a" / "T2w.nii.gz", tmp_path / "b" / "T2w.nii.gz"
    for p in (a, b):
        p.parent.mkdir()
        p.write_bytes(coarse_phantom.read_bytes())
    outputs = segment.segment_files([a, b], model=ModelOptions(device="cpu"), verbose=0)
    assert outputs == [tmp_path / "a" / "T2w_rootlets.nii.gz", tmp_path / "b" / "T2w_rootlets.nii.gz"]
    assert len(loads) == 1 and all(p.is_file() for p in outputs)
    np.testing.assert_array_equal(nib.load(outputs[0]).get_fdata(), nib.load(outputs[1]).get_fdata())
    # a folder as -o for several inputs with the same name is refused, nothing written
    with pytest.raises(RootletsError, match="would be written for both"):
        segment.segment_files([a, b], output=tmp_path / "out", verbose=0)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------ bad input
def _write(path: Path, data: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path


def _bad_inputs(folder: Path, good: Path) -> dict[str, tuple[list, str]]:
    """name -> (argv, text the one-line error must contain). Built lazily inside the test's own folder."""
    (folder / "notes.txt").write_text("not an image")
    (folder / "fake.nii.gz").write_bytes(b"\x1f\x8b\x08 definitely not gzip")
    truncated = folder / "truncated.nii.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    nan = np.ones((8, 8, 8), np.float32)
    nan[1, 2, 3] = np.nan
    inf = np.ones((8, 8, 8), np.float32)
    inf[0, 0, 0] = np.inf
    return {
        "missing": (["-i", folder / "nope.nii.gz"], "not found"),
        "not nifti": (["-i", folder / "notes.txt"], "not a NIfTI"),
        "corrupt gzip": (["-i", folder / "fake.nii.gz"], "corrupt"),
        "truncated gzip": (["-i", truncated], "corrupt"),
        "2D": (["-i", _write(folder / "flat.nii.gz", np.ones((8, 8), np.float32))], "3D"),
        "4D": (["-i", _write(folder / "series.nii.gz", np.ones((8, 8, 8, 3), np.float32))], "3D"),
        "NaN": (["-i", _write(folder / "nan.nii.gz", nan)], "NaN"),
        "inf": (["-i", _write(folder / "inf.nii.gz", inf)], "infinite"),
        "zero axis": (["-i", _write(folder / "empty.nii.gz", np.ones((0, 8, 8), np.float32))], "zero"),
        "output is input": (["-i", good, "-o", good], "would overwrite the input file"),
        "unknown release": (["-i", good, "-release", "r19990101"], "r19990101"),
        "one bad among good": (["-i", good, folder / "nope.nii.gz"], "not found"),
        "file -o for two inputs": (["-i", good, folder / "flat2.nii.gz", "-o", folder / "x.nii.gz"], "folder"),
    }


def _not_writable_folder(tmp_path: Path) -> Path | None:
    """A folder this process cannot write to (as root, chmod is ignored; /proc/sys is read-only)."""
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    for candidate in (folder, Path("/proc/sys")):
        if candidate.is_dir() and not os.access(candidate, os.W_OK):
            return candidate
    return None


def test_every_bad_input_is_one_line_exit_1_and_writes_nothing(home, coarse_phantom, tmp_path, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    good = folder / "good.nii.gz"
    good.write_bytes(coarse_phantom.read_bytes())
    cases = _bad_inputs(folder, good)
    _write(folder / "flat2.nii.gz", np.ones((8, 8, 8), np.float32))
    locked = _not_writable_folder(tmp_path)
    assert locked is not None, "no read-only folder available to test the not-writable output"
    cases["output folder not writable"] = (["-i", good, "-o", locked / "seg.nii.gz"], "not writable")
    if not torch.cuda.is_available():
        cases["device not available"] = (["-i", good, "-device", "cuda", "-o", folder / "new" / "seg.nii.gz"], "cuda")
    before = _snapshot(folder)
    for name, (argv, needle) in cases.items():
        code, out, err = _run(argv, capsys)
        assert code == 1, (name, code, err)
        assert out == "", name
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("rootlets: error:") and needle in lines[0], (name, err)
        named = [a for a in argv[1:] if isinstance(a, Path) and (str(a) in lines[0] or f"{a.parent}:" in lines[0])]
        assert named or "release" in name or "device" in name, (name, lines[0])
        assert _snapshot(folder) == before, name
    assert not (locked / "seg.nii.gz").exists()


def test_no_model_installed_and_no_network_says_how_to_install(coarse_phantom, tmp_path, capsys, monkeypatch):
    """The autouse fixture gives this test an empty model store; the release's mirror is a closed loopback port (no
    network). `rootlets -i` tries to install the release first (as sct_deepseg does), then says how to install it."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("ROOTLETS_TASK_MIRROR", f"http://127.0.0.1:{port}")
    src = tmp_path / "t2.nii.gz"
    src.write_bytes(coarse_phantom.read_bytes())
    code, out, err = _run(["-i", src], capsys)
    assert code == 1 and out == ""
    announce, error = err.strip().splitlines()
    assert announce == f"rootlets: Model release {DEFAULT_TAG} is not installed. Installing it now..."
    assert error.startswith("rootlets: error: cannot install model release") and "cannot connect to 127.0.0.1" in error
    assert f"rootlets -install -release {DEFAULT_TAG} -custom-url FILE.zip" in error and "ROOTLETS_TASK_MIRROR" in error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t2.nii.gz"]


def test_unknown_device_is_an_argument_error(capsys, coarse_phantom):
    with pytest.raises(SystemExit) as exc:
        cli.main(["-i", str(coarse_phantom), "-device", "tpu"])
    assert exc.value.code == 2
    capsys.readouterr()


def test_output_grid_equals_input_for_an_oblique_anisotropic_phantom(home, tmp_path):
    src = tmp_path / "oblique.nii.gz"
    full = nib.load(write_phantom(tmp_path, "PSR", (1.0, 3.0, 1.0), seed=3, tilt_deg=8)["image"])
    nib.save(full.slicer[:, 20:36, :], src)  # 16 slices of 3 mm (axis 1 is S-I in PSR)
    (out,) = segment.segment_files(src, model=ModelOptions(release=DEFAULT_TAG, device="cpu"), verbose=0)
    res, ref = nib.load(out), nib.load(src)
    assert res.shape == ref.shape and nifti.orientation(res) == "PSR"
    np.testing.assert_array_equal(res.affine, ref.affine)
