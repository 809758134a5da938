"""Shared fixtures. Every test runs with its own model store and cannot reach any address outside loopback.

Helpers (model builders, stand-in tools, a browser driver, the batch dataset, a single-node SLURM) are in
``tests/support/``.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import pytest
from support.slurm import pytest_runtest_makereport, slurm  # noqa: F401 (the SLURM fixture and its failure report)

_real_connect = socket.socket.connect


def _loopback_only(sock, address):
    host = address[0] if isinstance(address, tuple) else None
    if host is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            ok = ipaddress.ip_address(host).is_loopback
        except ValueError:
            ok = host == "localhost"
        if not ok:
            raise ConnectionRefusedError(f"tests may only reach loopback, not {host}")
    return _real_connect(sock, address)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """``make test`` runs two pytest-xdist workers (``--dist loadgroup``): every SLURM test goes to the same one, so
    one test cluster serves them all."""
    for item in items:
        if item.get_closest_marker("slurm"):
            item.add_marker(pytest.mark.xdist_group("slurm"))


def pytest_configure(config):
    config.addinivalue_line("markers", "slurm: needs the real single-node SLURM of tests/support/slurm.py (root, "
                            "slurm-wlm, munge); skipped with the reason where it cannot start")


@pytest.fixture(scope="session")
def _backend_cache(tmp_path_factory):
    """One converted-network cache for the session (content-addressed, so sharing it cannot mix models up)."""
    return tmp_path_factory.mktemp("backend_cache")


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory, monkeypatch, _backend_cache):
    """Private model store per test, a session-wide backend cache and a loopback-only network."""
    monkeypatch.setenv("ROOTLETS_TASK_HOME", str(tmp_path_factory.mktemp("rootlets_home")))
    monkeypatch.setenv("ROOTLETS_TASK_CACHE", str(_backend_cache))
    monkeypatch.setattr(socket.socket, "connect", _loopback_only)


@pytest.fixture(scope="session")
def random_store(tmp_path_factory):
    """A model store holding a structurally real nnU-Net with untrained weights (tests/support/random_model.py)
    installed with -custom-url as the default release: fast I/O, grid and error tests through the real installer."""
    import shutil

    from support.random_model import write_random_model

    from rootlets_task.models import install
    from rootlets_task.models.releases import DEFAULT_TAG

    home = tmp_path_factory.mktemp("random_store")
    folder = write_random_model(tmp_path_factory.mktemp("random"))
    archive = shutil.make_archive(str(home / "random"), "zip", folder.parent, folder.name)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ROOTLETS_TASK_HOME", str(home))
        install.install_release(DEFAULT_TAG, custom_url=archive, progress=False)
    return home


@pytest.fixture(scope="session")
def phantom_store(tmp_path_factory):
    """A model store with the bundled phantom release installed once for the session (no network)."""
    from rootlets_task.models import install

    home = tmp_path_factory.mktemp("phantom_store")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ROOTLETS_TASK_HOME", str(home))
        install.install_release("phantom", progress=False, make_active=False)  # tests name -release phantom
    return home


@pytest.fixture
def phantom_home(phantom_store, monkeypatch):
    """This test uses the session's phantom store (read-only use: install nothing else into it)."""
    monkeypatch.setenv("ROOTLETS_TASK_HOME", str(phantom_store))
    return phantom_store


# ---------------------------------------------------------------------------------------------- the chain's tools
TOOLS_SEED = 4  # the phantom the stand-in tools are prepared from


@pytest.fixture(scope="session")
def phantom():
    """The LPI 1 mm phantom of the chain and tool tests (arrays and truth)."""
    from rootlets_task.io.phantom import make_phantom

    return make_phantom("LPI", (1.0, 1.0, 1.0), seed=TOOLS_SEED)


@pytest.fixture(scope="session")
def files(tmp_path_factory):
    """The same phantom as NIfTI files (image, rootlets, cord, discs, pmj, truth ...)."""
    from rootlets_task.io.phantom import write_phantom

    return write_phantom(tmp_path_factory.mktemp("phantom"), "LPI", (1.0, 1.0, 1.0), seed=TOOLS_SEED)


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, phantom):
    """The stand-in executables (tests/support/fake_tools.py, MOCKS) and the phantom data they write."""
    from support import fake_tools

    return fake_tools.prepare(tmp_path_factory.mktemp("fake_tools"), phantom, TOOLS_SEED)


@pytest.fixture
def fake(monkeypatch, tmp_path, prepared):
    """All four stand-ins on PATH (and nothing else that could be a real tool); returns the argv log."""
    from support import fake_tools

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    return fake_tools.activate(monkeypatch, prepared, tmp_path / "calls.jsonl")


@pytest.fixture
def no_tools(monkeypatch, tmp_path):
    """No external tool can be found on PATH."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))


# ---------------------------------------------------------------------------------------------- the batch dataset
@pytest.fixture(scope="session")
def bids(tmp_path_factory):
    """The batch tests' phantom BIDS dataset (tests/support/batch_data.py): 6 images, manual labels, a broken sub-06."""
    from support.batch_data import write_dataset

    return write_dataset(tmp_path_factory.mktemp("bids"), tmp_path_factory.mktemp("phantoms"))


@pytest.fixture(scope="session")
def sequential(bids, phantom_store, _backend_cache, tmp_path_factory):
    """The reference run of ``bids``: sequential, in this process, the phantom release, 1 thread, ``-levels``; made
    once per session for every batch test module. Returns (output folder, summary)."""
    from support.batch_data import COMMON, run

    out = tmp_path_factory.mktemp("seq") / "rootlets"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ROOTLETS_TASK_HOME", str(phantom_store))
        mp.setenv("ROOTLETS_TASK_CACHE", str(_backend_cache))
        summary = run(bids, out, **COMMON)
    return out, summary


@pytest.fixture
def phantom_folder(phantom_home) -> Path:
    """The bundled phantom release's trainer folder, installed in this test's model store."""
    from rootlets_task.models import install

    return install.model_folder("phantom")[0]


@pytest.fixture(scope="module")
def phantom_image():
    """64 slices of a phantom (LPI, 1 mm): small enough for real inference in a test."""
    from rootlets_task.io.phantom import make_phantom

    return make_phantom("LPI", (1.0, 1.0, 1.0), seed=11).nifti("image").slicer[:, :, 60:124]
