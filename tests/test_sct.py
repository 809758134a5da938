"""SCT bridge, against SCT-shaped folders built here in SCT's real layout.

Each fake SCT has ``spinalcordtoolbox/version.txt`` (what SCT reads its version from), ``data/deepseg_models/`` (its
model store, with another model that must stay untouched) and ``bin/sct_deepseg``: a STUB that only exists so that
discovery through PATH can be tested; it is never run. SCT's own code is not here (it is LGPL and not installed in
this environment), so ``source.json`` is compared with what SCT's ``install_model`` writes: ``json.dump(d, fp,
indent=4)``, reproduced below. Release zips are structurally real nnU-Net models (``random_model``, untrained) or the
bundled phantom release; the GitHub releases are served from a local mirror folder (ROOTLETS_TASK_MIRROR).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from support.loopback import QuietHandler, serve, stop
from support.random_model import write_random_model

from rootlets_task.cli.rootlets import main
from rootlets_task.core.errors import RootletsError
from rootlets_task.io.phantom import write_phantom
from rootlets_task.models import install, releases, sct

KEY = "model_seg_spinal_rootlets_nnunet"
GITHUB = "https://github.com/ivadomed/model-spinal-rootlets/releases/download"
URL_7X = f"{GITHUB}/r20250318/model-spinal-rootlets-multicon-r20250318.zip"
URL_6X = f"{GITHUB}/r20240730/model-spinal-rootlets_M5_r20240129-2.zip"
OTHER = "model_seg_sc_contrast_agnostic_nnunet"


def sct_writes(source: dict) -> bytes:
    """SCT's ``install_model``: ``with open(..., "w") as fp: json.dump(source_dict, fp, indent=4)``."""
    path = Path(tempfile.mkdtemp()) / "source.json"
    with open(path, "w") as fp:
        json.dump(source, fp, indent=4)
    data = path.read_bytes()
    shutil.rmtree(path.parent)
    return data


def make_sct(root: Path, version: str = "7.3", models_py: str | None = None) -> Path:
    """An SCT-shaped installation folder (see the module docstring)."""
    (root / "spinalcordtoolbox" / "deepseg").mkdir(parents=True)
    (root / "spinalcordtoolbox" / "__init__.py").write_text("")
    (root / "spinalcordtoolbox" / "version.txt").write_text(version + "\n")
    if models_py is not None:
        (root / "spinalcordtoolbox" / "deepseg" / "models.py").write_text(models_py)
    other = root / "data" / "deepseg_models" / OTHER / "nnUNetTrainer__nnUNetPlans__3d_fullres" / "fold_0"
    other.mkdir(parents=True)
    (other / "checkpoint_final.pth").write_bytes(b"another SCT model")
    (root / "bin").mkdir()
    stub = root / "bin" / "sct_deepseg"
    stub.write_text("#!/bin/sh\n# STUB for discovery tests only; never executed\nexit 99\n")
    stub.chmod(0o755)
    return root


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` -> file bytes (None for folders)."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def model_zip(path: Path, seed: int = 0) -> Path:
    """A release zip in RootletSeg's layout (one nnUNetTrainer* folder at the root), untrained weights."""
    src = Path(tempfile.mkdtemp())
    trainer = write_random_model(src, seed=seed)
    with zipfile.ZipFile(path, "w") as zf:
        for f in sorted(trainer.rglob("*")):
            zf.write(f, f.relative_to(src).as_posix())
    shutil.rmtree(src)
    return path


def zip_tree(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist() if not i.is_dir()}


@pytest.fixture(scope="module")
def zips(tmp_path_factory) -> dict[str, Path]:
    """Two different release zips, and a mirror folder holding one under the real releases' asset names."""
    d = tmp_path_factory.mktemp("zips")
    a, b = model_zip(d / "custom-a.zip", seed=1), model_zip(d / "custom-b.zip", seed=2)
    mirror = d / "mirror"
    mirror.mkdir()
    for tag in ("r20250318", "r20240730"):
        shutil.copy(a, mirror / releases.RELEASES[tag].asset)
    return {"a": a, "b": b, "mirror": mirror}


@pytest.fixture
def sct73(tmp_path, monkeypatch, zips) -> Path:
    root = make_sct(tmp_path / "sct_7.3")
    monkeypatch.setenv("SCT_DIR", str(root))
    monkeypatch.setenv("ROOTLETS_TASK_MIRROR", str(zips["mirror"]))
    return root


def model_dir(root: Path) -> Path:
    return root / "data" / "deepseg_models" / KEY


# ------------------------------------------------------------------------------------------------ exact files
def test_listed_release_is_recorded_as_sct_does(sct73, zips):
    other_before = tree(sct73 / "data" / "deepseg_models" / OTHER)
    model, _ = sct.install_sct("r20250318")
    folder = model_dir(sct73)
    assert model.folder == folder and model.release == "r20250318" and not model.custom
    # exactly SCT's layout: source.json + the release's nnUNetTrainer* folder, byte-for-byte
    expected = {f"nnUNetTrainer__nnUNetPlans__3d_fullres/{k.split('/', 1)[1]}" if "/" in k else k: v
                for k, v in zip_tree(zips["a"]).items()}
    files = {k: v for k, v in tree(folder).items() if v is not None}
    assert files.pop("source.json") == sct_writes({"model_name": KEY, "model_urls": URL_7X, "custom": False})
    assert files == expected
    # nothing else changed in SCT's store: no temp folders, the other model untouched
    assert sorted(p.name for p in folder.parent.iterdir() if not p.name.endswith(".lock")) == sorted([KEY, OTHER])
    assert tree(sct73 / "data" / "deepseg_models" / OTHER) == other_before
    assert sct.sct_accepts(sct.find_sct(), model)


def test_unlisted_release_is_custom_and_reinstall_is_a_noop(sct73, zips, capsys):
    sct.install_sct("r20240730")
    raw = (model_dir(sct73) / "source.json").read_bytes()
    assert raw == sct_writes({"model_name": KEY, "model_urls": str(zips["mirror"] / releases.RELEASES["r20240730"].asset),
                              "custom": True})
    mtime = (model_dir(sct73) / "source.json").stat().st_mtime_ns
    assert main(["-install", "-sct", "-release", "r20240730"]) == 0
    assert "already installed" in capsys.readouterr().out
    assert (model_dir(sct73) / "source.json").stat().st_mtime_ns == mtime
    # a custom URL always installs, recorded as the URL used, like `sct_deepseg -custom-url`
    sct.install_sct(custom_url=str(zips["b"]))
    assert (model_dir(sct73) / "source.json").read_bytes() == sct_writes(
        {"model_name": KEY, "model_urls": str(zips["b"]), "custom": True})
    assert sct.read_model(sct.find_sct()).release is None


def test_concurrent_installs_into_sct_wait_for_each_other(sct73):
    """Two batch jobs running `rootlets -install -sct` at once: one installs; the other (waiting for the lock if they
    overlap) finds it current. SCT's folder ends with one complete model and no temp folders."""
    cmd = [sys.executable, "-m", "rootlets_task.cli.rootlets", "-install", "-sct", "-release", "r20250318"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    said = sorted("already installed" in out for out, _ in outs)
    assert said == [False, True], outs
    assert (model_dir(sct73) / "source.json").read_bytes() == sct_writes(
        {"model_name": KEY, "model_urls": URL_7X, "custom": False})
    assert sorted(p.name for p in model_dir(sct73).parent.iterdir() if not p.name.endswith(".lock")) == sorted([KEY, OTHER])


@pytest.mark.parametrize("version, tag, source", [
    ("6.5", "r20240730", {"model_name": KEY, "model_urls": URL_6X, "custom": False}),
    ("6.4", "r20240730", {"model_name": KEY, "model_urls": URL_6X}),  # 6.4's source.json has no "custom" flag
])
def test_sct_6x_records(version, tag, source, tmp_path, monkeypatch, zips):
    root = make_sct(tmp_path / f"sct_{version}", version)
    monkeypatch.setenv("SCT_DIR", str(root))
    monkeypatch.setenv("ROOTLETS_TASK_MIRROR", str(zips["mirror"]))
    found = sct.find_sct()
    assert found.task == "seg_spinal_rootlets_t2w" and found.listed_tags == ["r20240730"]
    sct.install_sct(tag)
    assert (model_dir(root) / "source.json").read_bytes() == sct_writes(source)


def test_fork_registers_a_release_in_one_line(tmp_path, monkeypatch, zips):
    """A fork's models.py with ``MODELS[key] = sct_model_entry(tag)`` (here as the literal it evaluates to)."""
    entry, task = sct.sct_model_entry("phantom"), sct.sct_task_entry("phantom")
    assert set(entry) == {"url", "description", "contrasts", "framework", "thr", "default"}
    assert entry["framework"] == "nnunetv2" and entry["thr"] is None and entry["default"] is False
    assert sct.sct_model_entry("r20250318")["contrasts"] == ["t2", "UNIT1", "T1w-INV1", "T1w-INV2"]
    assert task["models"] == [KEY] and {"description", "long_description", "url", "citation"} <= set(task)
    root = make_sct(tmp_path / "fork", "7.4.dev0", f"MODELS = {{{KEY!r}: {entry!r}}}\nTASKS = {{'rootlets_phantom': {task!r}}}\n")
    monkeypatch.setenv("SCT_DIR", str(root))
    found = sct.find_sct()
    assert found.task == "rootlets_phantom" and found.listed_tags == ["phantom"]
    if not releases.PHANTOM_ZIP.is_file():
        pytest.skip("bundled phantom release not built yet")
    sct.install_sct("phantom")
    assert json.loads((model_dir(root) / "source.json").read_text()) == {
        "model_name": KEY, "model_urls": str(releases.PHANTOM_ZIP), "custom": False}


# --------------------------------------------------------------------------------------- failures keep the model
class Truncating(QuietHandler):
    """Announces the whole zip, sends half of it, then drops the connection: an interrupted download."""

    data = b""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.data)))
        self.end_headers()
        self.wfile.write(self.data[: len(self.data) // 2])
        self.close_connection = True


@pytest.mark.parametrize("failure", ["corrupt zip", "checksum mismatch", "interrupted download", "not a model"])
def test_failed_install_keeps_previous_model(failure, sct73, zips, tmp_path, monkeypatch):
    sct.install_sct(custom_url=str(zips["a"]))
    before = {k: v for k, v in tree(sct73 / "data").items() if not k.endswith(".lock")}  # the install lock stays
    kwargs = {}
    if failure == "corrupt zip":
        bad = tmp_path / "corrupt.zip"
        bad.write_bytes(zips["b"].read_bytes()[: zips["b"].stat().st_size // 2])
        kwargs["custom_url"] = str(bad)
    elif failure == "not a model":
        bad = tmp_path / "empty.zip"
        with zipfile.ZipFile(bad, "w") as zf:
            zf.writestr("README.md", "no model here")
        kwargs["custom_url"] = str(bad)
    elif failure == "checksum mismatch":
        # the real releases' digests are not published: give the registry entry one the mirror's zip does not match
        patched = dataclasses.replace(releases.RELEASES["r20250318"], sha256="0" * 64)
        monkeypatch.setitem(releases.RELEASES, "r20250318", patched)
        kwargs["tag"] = "r20250318"
    else:
        handler = type("H", (Truncating,), {"data": zips["b"].read_bytes()})
        httpd = serve(handler)
        kwargs["custom_url"] = f"{httpd.base}/model.zip"
    try:
        with pytest.raises(RootletsError, match=r"into SCT .*previous model is unchanged") as err:
            sct.install_sct(progress=False, **kwargs)
    finally:
        if failure == "interrupted download":
            stop(httpd)
    assert "\n" not in str(err.value)
    after = tree(sct73 / "data")
    assert {k: v for k, v in after.items() if not k.endswith(".lock")} == before


# ------------------------------------------------------------------------------------------------- bad input
def test_sct_not_found(monkeypatch, tmp_path):
    monkeypatch.delenv("SCT_DIR", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RootletsError, match=r"^SCT not found: set SCT_DIR"):
        sct.install_sct("phantom")
    monkeypatch.setenv("SCT_DIR", str(tmp_path))
    with pytest.raises(RootletsError, match=r"is not an SCT installation"):
        sct.find_sct()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("version", ["6.3", "5.8"])
def test_sct_too_old(version, tmp_path, monkeypatch, capsys):
    root = make_sct(tmp_path / "old", version)
    monkeypatch.setenv("SCT_DIR", str(root))
    before = tree(root)
    assert main(["-install", "-sct", "-release", "phantom"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"rootlets: error: SCT {version} at {root} is too old") and err.count("\n") == 1
    assert tree(root) == before


def test_sct_64_refuses_custom(tmp_path, monkeypatch, zips):
    root = make_sct(tmp_path / "sct_6.4", "6.4")
    monkeypatch.setenv("SCT_DIR", str(root))
    before = tree(root)
    with pytest.raises(RootletsError, match=r"SCT 6.4 re-downloads .* install release r20240730 or upgrade SCT"):
        sct.install_sct(custom_url=str(zips["a"]))
    assert tree(root) == before


@pytest.mark.parametrize("layout", ["stray file", "two trainers", "foreign source.json", "not a folder"])
def test_unknown_layout_is_left_alone(layout, sct73, zips, capsys):
    folder = model_dir(sct73)
    if layout == "not a folder":
        folder.write_text("?")
    else:
        sct.install_sct(custom_url=str(zips["a"]))
        if layout == "stray file":
            (folder / "weights.pt").write_bytes(b"x")
        elif layout == "two trainers":
            (folder / "nnUNetTrainer_250epochs__nnUNetPlans__3d_fullres").mkdir()
        else:
            (folder / "source.json").write_text(json.dumps({"model_name": "other", "model_urls": "x"}))
    before = tree(sct73)
    assert main(["-install", "-sct", "-custom-url", str(zips["b"])]) == 1
    err = capsys.readouterr().err
    assert f"SCT model folder {folder} has an unknown layout" in err and err.count("\n") == 1
    assert main(["-sct-status"]) == 0
    assert "unknown layout" in capsys.readouterr().out
    with pytest.raises(RootletsError, match="unknown layout"):
        install.model_folder("sct")
    assert tree(sct73) == before


def test_sct_folder_not_writable(sct73, zips, capsys):
    """Real permissions: chmod a-w, or, as root (who may write anywhere, e.g. this sandbox), the immutable attribute."""
    store = sct73 / "data" / "deepseg_models"
    before = tree(sct73)
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(store)], capture_output=True).returncode:
            pytest.skip("running as root on a filesystem without chattr +i: no way to make a folder read-only")
        undo = ["chattr", "-i", str(store)]
    else:
        store.chmod(0o555)
        undo = ["chmod", "755", str(store)]
    try:
        assert main(["-install", "-sct", "-custom-url", str(zips["a"])]) == 1
    finally:
        subprocess.run(undo, check=True)
    assert capsys.readouterr().err == (f"rootlets: error: SCT folder {store} is not writable; run as the user who "
                                       f"installed SCT ({sct73}) or give yourself write access to it\n")
    assert tree(sct73) == before


# ------------------------------------------------------------------------------------------------- discovery
def test_found_from_sct_deepseg_on_path(tmp_path, monkeypatch):
    root = make_sct(tmp_path / "sct_7.1", "7.1")
    monkeypatch.delenv("SCT_DIR", raising=False)
    monkeypatch.setenv("PATH", f"{root / 'bin'}{os.pathsep}{os.environ['PATH']}")
    found = sct.find_sct()
    assert found.root == root and found.version == "7.1" and found.task == "rootlets"
    assert found.found_by == str(root / "bin" / "sct_deepseg")


def test_found_through_the_launchers_python(tmp_path, monkeypatch):
    """``pip install -e`` into another venv: the launcher's interpreter knows where the package is."""
    root = make_sct(tmp_path / "src", "7.2")
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    launcher = venv_bin / "sct_deepseg"
    launcher.write_text(f"#!{sys.executable}\n# STUB for discovery tests only; never executed\n")
    launcher.chmod(0o755)
    monkeypatch.delenv("SCT_DIR", raising=False)
    monkeypatch.setenv("PATH", str(venv_bin))
    monkeypatch.setenv("PYTHONPATH", str(root))
    assert sct.find_sct().root == root


# --------------------------------------------------------------------------------------- reverse and status
def test_status_lines(tmp_path, monkeypatch, sct73, zips, capsys):
    assert main(["-sct-status"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"SCT: 7.3 at {sct73} (found via SCT_DIR)\n") and "rootlets model: not installed" in out
    assert "SCT task: rootlets; SCT's release: r20250318" in out
    # installed by SCT itself (what `sct_deepseg rootlets -install` leaves): ours, current, newest
    shutil.copytree(_extract(zips["a"], tmp_path / "x"), model_dir(sct73))
    (model_dir(sct73) / "source.json").write_bytes(sct_writes({"model_name": KEY, "model_urls": URL_7X, "custom": False}))
    assert main(["-sct-status"]) == 0
    out = capsys.readouterr().out
    assert f"rootlets model: release r20250318, from {URL_7X}" in out
    assert "SCT uses it as is: yes" in out and "newest release (r20250318): yes" in out
    info = sct.sct_status()
    assert info["model"]["ours"] and info["model"]["sct_accepts"] and info["model"]["newest"]
    # an older URL SCT no longer lists: SCT would re-download
    (model_dir(sct73) / "source.json").write_bytes(sct_writes({"model_name": KEY, "model_urls": URL_6X, "custom": False}))
    assert main(["-sct-status"]) == 0
    out = capsys.readouterr().out
    assert "release r20240730" in out and "SCT uses it as is: no" in out and "newest release (r20250318): no" in out
    monkeypatch.delenv("SCT_DIR")
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert main(["-sct-status"]) == 0
    assert capsys.readouterr().out.startswith("SCT: not found (SCT not found: set SCT_DIR")


def _extract(zip_path: Path, dest: Path) -> Path:
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(dest)
    return dest


def test_release_sct_segments_with_scts_model(tmp_path, sct73, zips, capsys):
    """``-release sct`` runs the model in SCT's folder (no download, names its release) on the input's grid.

    The bundled phantom release is used when it is built; before that, an untrained model zip installed as a custom
    model checks the same path. (Segmentation accuracy against the phantom truth is test_inference's job.)"""
    with pytest.raises(RootletsError, match=r"has no rootlets model installed; run `sct_deepseg rootlets -install`"):
        install.model_folder("sct")
    trained = releases.PHANTOM_ZIP.is_file()
    source = ["-release", "phantom"] if trained else ["-custom-url", str(zips["a"])]
    assert main(["-install", "-sct", *source, "-v", "0"]) == 0
    trainer = next(model_dir(sct73).glob("nnUNetTrainer*"))
    folder, record = install.model_folder("sct")
    assert folder == trainer and record["tag"] == "sct" and record["release"] == ("phantom" if trained else None)
    assert install.models_dir().exists() is False or not any(install.models_dir().iterdir())  # nothing in our store
    files = write_phantom(tmp_path / "ph", "RPI", (1.0, 1.0, 1.0), 3, 0.0)
    out = tmp_path / "sct.nii.gz"
    assert main(["-i", str(files["image"]), "-release", "sct", "-o", str(out)]) == 0
    named = "release phantom" if trained else f"an unknown release ({zips['a']})"
    assert f"using SCT 7.3's rootlets model, {named} (custom): {trainer}" in capsys.readouterr().err
    seg, img = nib.load(out), nib.load(files["image"])
    assert seg.shape == img.shape and np.allclose(seg.affine, img.affine) and seg.get_data_dtype() == np.uint8
    generated = json.loads((tmp_path / "sct.json").read_text())["GeneratedBy"][0]
    assert generated["ModelFolder"] == f"{trainer.parent.name}/{trainer.name}"  # SCT's model, without this machine's path
    assert str(tmp_path) not in json.dumps(generated)


@pytest.mark.parametrize("argv, message", [
    (["-sct", "-i", "x.nii.gz"], "-sct only works with -install"),
    (["-install", "-release", "sct"], "-release sct segments with SCT's installed model"),
])
def test_cli_misuse(argv, message, sct73, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not model_dir(sct73).exists()
