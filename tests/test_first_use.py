"""First use installs the model release on every path that runs it, as `rootlets -i` does (tests/test_sct_cli.py):
`rootlets -i IMG -levels`, `run_chain`, `rootlets batch` (once, before its workers start) and `rootlets speedcheck`,
with the same messages, and the same advice when the release cannot be downloaded.

The registry's mirror is a loopback HTTP server (``ROOTLETS_TASK_MIRROR``) serving the bundled phantom release's zip
under the default release's asset name, so that the installed model segments the phantoms for real; each test starts
from an empty model store (the autouse fixture of conftest.py).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from support.cli import run_cli as _run
from test_install import Server

from rootlets_task.cli import rootlets as cli
from rootlets_task.models import install
from rootlets_task.models.releases import DEFAULT_TAG, ENV_MIRROR, PHANTOM_ZIP, RELEASES

ASSET = RELEASES[DEFAULT_TAG].asset
ANNOUNCE = f"rootlets: Model release {DEFAULT_TAG} is not installed. Installing it now..."


@pytest.fixture(scope="module")
def mirror():
    server = Server()
    server.add(ASSET, PHANTOM_ZIP.read_bytes())
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> dict[str, Path]:
    """`rootlets phantom -subject 01`: sub-01_T2w.nii.gz and its labels, as a BIDS dataset (labels as derivatives)."""
    root = tmp_path_factory.mktemp("first_use")
    anat = root / "BIDS" / "sub-01" / "anat"
    assert cli.main(["phantom", "-o", str(anat), "-subject", "01", "-spacing", "1", "1", "1"]) == 0
    labels = root / "BIDS" / "derivatives" / "labels" / "sub-01" / "anat"
    labels.mkdir(parents=True)
    names = {kind: f"sub-01_T2w_{kind}.nii.gz" for kind in ("label-SC_seg", "label-discs_dlabel", "label-PMJ_dlabel")}
    for name in names.values():
        (anat / name).rename(labels / name)
    for extra in anat.iterdir():
        if extra.name != "sub-01_T2w.nii.gz":
            extra.unlink()
    return {"root": root, "image": anat / "sub-01_T2w.nii.gz", "cord": labels / names["label-SC_seg"],
            "discs": labels / names["label-discs_dlabel"], "pmj": labels / names["label-PMJ_dlabel"]}


def _levels(example, out: Path) -> list[str]:
    return ["-i", example["image"], "-ofolder", out, "-levels", "-s", example["cord"], "-discs", example["discs"],
            "-pmj", example["pmj"]]


def _batch(example, out: Path) -> list[str]:
    return ["batch", example["root"] / "BIDS", "-o", out / "rootlets", "-jobs", "2", "-threads", "1"]


def _speedcheck(example, out: Path) -> list[str]:
    return ["speedcheck", example["image"], "-s", example["cord"], "-levers", "crop", "-threads", "1",
            "-o", out / "speedcheck.json"]


PATHS = {"levels": _levels, "batch": _batch, "speedcheck": _speedcheck}


@pytest.mark.parametrize("path", PATHS)
def test_first_use_installs_the_release_then_runs(path, example, mirror, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(ENV_MIRROR, mirror.base)
    before = mirror.hits.get(ASSET, 0)
    out = tmp_path / "out"
    out.mkdir()
    code, stdout, err = _run(PATHS[path](example, out), capsys)
    assert code == 0, err
    assert err.count(ANNOUNCE) == 1, err
    assert err.count(f"rootlets: installed model release {DEFAULT_TAG} from {mirror.base}/{ASSET}") == 1, err
    assert mirror.hits[ASSET] == before + 1, "installed once (batch: before its workers, not once per worker)"
    assert install.installed_release(DEFAULT_TAG) is not None
    if path == "batch":
        assert err.index(ANNOUNCE) < err.index("sub-01"), "the install comes before any image runs"
        assert (out / "rootlets" / "sub-01" / "anat" / "sub-01_T2w_rootlets.nii.gz").is_file()
    code, stdout, err = _run(PATHS[path](example, tmp_path / "out"), capsys)
    assert "Installing" not in err and mirror.hits[ASSET] == before + 1, "installed and current: no download"


def test_run_chain_installs_on_first_use(example, mirror, tmp_path, monkeypatch, caplog):
    from rootlets_task import ChainInputs, ModelOptions, run_chain

    monkeypatch.setenv(ENV_MIRROR, mirror.base)
    before = mirror.hits.get(ASSET, 0)
    image = tmp_path / "sub-01_T2w.nii.gz"
    image.write_bytes(example["image"].read_bytes())
    files = ChainInputs(cord=example["cord"], discs=example["discs"], pmj=example["pmj"])
    with caplog.at_level("INFO", logger="rootlets_task"):
        result = run_chain(image, inputs=files, model=ModelOptions(threads=1))
    assert ANNOUNCE.removeprefix("rootlets: ") in caplog.messages
    assert mirror.hits[ASSET] == before + 1 and result.outputs["rootlets"].is_file()
    sidecar = json.loads(result.outputs["rootlets"].with_name("sub-01_T2w_rootlets.json").read_text())
    assert sidecar["GeneratedBy"][0]["Release"] == DEFAULT_TAG


@pytest.fixture
def offline(monkeypatch):
    """No network: the mirror is a loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv(ENV_MIRROR, f"http://127.0.0.1:{port}")


@pytest.mark.parametrize("path", PATHS)
def test_offline_first_use_gives_the_advice_of_rootlets_i(path, example, offline, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    code, stdout, err = _run(PATHS[path](example, out), capsys)
    assert code == 1, err
    lines = err.strip().splitlines()
    assert ANNOUNCE in lines
    error = lines[-1]
    assert error.startswith(f"rootlets: error: cannot install model release {DEFAULT_TAG}") and "cannot connect" in error
    assert f"download {ASSET} elsewhere" in error and f"rootlets -install -release {DEFAULT_TAG} -custom-url FILE.zip" \
        in error and ENV_MIRROR in error
    assert not any(out.iterdir()), "nothing written"
    assert install.installed_release(DEFAULT_TAG) is None
