"""Model install: a real HTTP server on 127.0.0.1 serves release zips built here with the real nnU-Net release layout.

The checkpoints inside the test zips are real PyTorch checkpoints of seeded random tensors (installing inspects them
as a loader would; inference tests use trained ones).
Registry URLs are redirected to the loopback server with ROOTLETS_TASK_MIRROR, so GitHub is never contacted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import random
import signal
import socket
import stat
import subprocess
import sys
import time
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from support.loopback import QuietHandler, serve, stop

from rootlets_task.cli.rootlets import main
from rootlets_task.core.errors import RootletsError
from rootlets_task.models import archive, install, releases

TRAINER = "nnUNetTrainer__nnUNetPlans__3d_fullres"
R = releases.RELEASES["r20250318"]


# ------------------------------------------------------------------------------------------------ helpers
def release_files(seed: int = 0, trainer: str = TRAINER, folds=("fold_0", "fold_1")) -> dict[str, bytes]:
    """The files of a release zip, shaped like RootletSeg's (labels lvl1..lvl9), with seeded fake checkpoints."""
    labels = {"background": 0, **{f"lvl{i}": i for i in range(1, 10)}}
    files = {f"{trainer}/dataset.json": json.dumps({"labels": labels, "file_ending": ".nii.gz"}).encode(),
             f"{trainer}/plans.json": json.dumps({"dataset_name": "Dataset037", "seed": seed}).encode()}
    for i, fold in enumerate(folds):
        files[f"{trainer}/{fold}/checkpoint_final.pth"] = checkpoint_bytes(f"{seed}-{i}")
    return files


def checkpoint_bytes(seed: str) -> bytes:
    """A small nnU-Net-shaped checkpoint (64 KiB of seeded weights), as torch.save writes it."""
    weights = torch.frombuffer(bytearray(random.Random(seed).randbytes(64 * 1024)), dtype=torch.float32)
    buffer = io.BytesIO()
    torch.save({"network_weights": OrderedDict(w=weights), "trainer_name": "nnUNetTrainer",
                "init_args": {"configuration": "3d_fullres"}}, buffer)
    return buffer.getvalue()


def make_zip(path: Path, files: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers() -> list[str]:
    root = install.models_dir()
    return [p.name for p in root.iterdir() if ".tmp-" in p.name or ".old-" in p.name] if root.exists() else []


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Server:
    """Loopback HTTP server: routes name -> bytes, optional failures first, truncation, slow sending; counts hits."""

    def __init__(self):
        self.routes: dict[str, dict] = {}
        self.hits: dict[str, int] = {}
        owner = self

        class Handler(QuietHandler):
            def do_GET(self):
                name = self.path.lstrip("/")
                owner.hits[name] = owner.hits.get(name, 0) + 1
                route = owner.routes.get(name)
                if route is None:
                    self.send_error(404)
                    return
                if route["fail"]:
                    self.send_response(route["fail"].pop(0))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = route["data"]
                self.send_response(200)
                self.send_header("Content-Type", "application/zip")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                body = data[:route["truncate"]] if route["truncate"] is not None else data
                pieces = 20 if route["delay"] else 1
                step = -(-len(body) // pieces)
                for i in range(0, len(body), step):
                    self.wfile.write(body[i:i + step])
                    self.wfile.flush()
                    time.sleep(route["delay"] / pieces)
                if route["truncate"] is not None:
                    self.close_connection = True

        self.httpd = serve(Handler)
        self.base = self.httpd.base

    def add(self, name: str, data: bytes, fail=(), truncate: int | None = None, delay: float = 0.0) -> str:
        self.routes[name] = {"data": data, "fail": list(fail), "truncate": truncate, "delay": delay}
        return f"{self.base}/{name}"


@pytest.fixture
def server():
    srv = Server()
    yield srv
    stop(srv.httpd)


@pytest.fixture
def good_zip(tmp_path) -> Path:
    return make_zip(tmp_path / R.asset, release_files(seed=1))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------------ download + install
def test_install_registry_release_over_http_with_progress(server, good_zip, monkeypatch, capsys):
    data = good_zip.read_bytes()
    url = server.add(R.asset, data)
    monkeypatch.setenv(releases.ENV_MIRROR, server.base)
    terminal = _Terminal()
    with monkeypatch.context() as m:
        m.setattr(sys, "stderr", terminal)
        inst = install.install_release("r20250318")
    assert R.asset in terminal.getvalue() and "100%" in terminal.getvalue(), "tqdm progress bar on a terminal"
    install.install_release("r20250318", force=True)
    assert "\r" not in capsys.readouterr().err and server.hits[R.asset] == 2, "not a terminal (a log): no bar"
    rec = inst.record
    assert (rec["tag"], rec["url"], rec["sha256"], rec["size"], rec["custom"]) == ("r20250318", url, sha(data), len(data), False)
    assert rec["asset"] == R.asset and rec["trainer_folder"] == TRAINER and rec["folds"] == ["fold_0", "fold_1"]
    folder, record = install.model_folder()
    assert folder == install.models_dir() / "r20250318" / TRAINER and record == rec
    assert tree(folder) == {k.split("/", 1)[1]: v for k, v in release_files(seed=1).items()}, "byte-identical files"
    assert inst.outdated is None and leftovers() == []
    # installed and current: a second install does not download again
    assert main(["-install", "-release", "r20250318"]) == 0
    assert server.hits[R.asset] == 2 and "already installed" in capsys.readouterr().out


class _Terminal(io.StringIO):
    """Stands in for a terminal's stderr (the tests' output is captured, never a terminal)."""

    def isatty(self) -> bool:
        return True


def test_retry_after_503(server, good_zip, monkeypatch):
    server.add(R.asset, good_zip.read_bytes(), fail=[503])
    monkeypatch.setenv(releases.ENV_MIRROR, server.base)
    install.install_release(progress=False)
    assert server.hits[R.asset] == 2
    assert install.model_folder()[1]["sha256"] == sha(good_zip.read_bytes())


def test_mirrors_in_order_until_one_works(server, good_zip, monkeypatch):
    good = server.add(f"ok/{R.asset}", good_zip.read_bytes())
    monkeypatch.setenv(releases.ENV_MIRROR, f"http://127.0.0.1:{free_port()} {server.base}/missing {server.base}/ok")
    assert install.install_release(progress=False).record["url"] == good
    assert server.hits[f"missing/{R.asset}"] == 1


def test_known_checksum_verified(server, good_zip, monkeypatch):
    data = good_zip.read_bytes()
    server.add(R.asset, data)
    monkeypatch.setenv(releases.ENV_MIRROR, server.base)
    # the real releases publish no digest: give this one a registry entry with one (wrong, then right)
    monkeypatch.setitem(releases.RELEASES, R.tag, dataclasses.replace(R, sha256=sha(b"other")))
    with pytest.raises(archive.DownloadError, match=r"checksum mismatch.*-custom-url FILE\.zip"):
        install.install_release(progress=False)
    assert not (install.models_dir() / R.tag).exists() and leftovers() == []
    monkeypatch.setitem(releases.RELEASES, R.tag, dataclasses.replace(R, sha256=sha(data)))
    assert install.install_release(progress=False).record["sha256"] == sha(data)


@pytest.mark.parametrize("case", ["interrupted", "404", "refused"])
def test_download_failures_are_one_line_errors(case, server, good_zip, capsys):
    data = good_zip.read_bytes()
    url = {"interrupted": server.add("cut.zip", data, truncate=len(data) // 2),
           "404": f"{server.base}/nope.zip",
           "refused": f"http://127.0.0.1:{free_port()}/x.zip"}[case]
    assert main(["-install", "-release", R.tag, "-custom-url", url, "-v", "0"]) == 1
    err = capsys.readouterr().err.strip()
    expected = {"interrupted": "download interrupted", "404": "HTTP 404", "refused": "no network"}[case]
    assert err.count("\n") == 0 and err.startswith("rootlets: error: cannot install model release r20250318")
    assert expected in err and url in err
    assert f"download {Path(url).name} elsewhere" in err, "the advice names the file asked for"
    assert not (install.models_dir() / R.tag).exists() and leftovers() == []


def test_failed_custom_url_advice_names_its_file(capsys):
    url = f"http://127.0.0.1:{free_port()}/models/my_model.zip?token=secret"
    assert main(["-install", "-custom-url", url, "-v", "0"]) == 1
    err = capsys.readouterr().err
    assert "download my_model.zip elsewhere" in err and "custom.zip" not in err and "secret" not in err


def test_local_path_and_file_url(good_zip, monkeypatch):
    monkeypatch.chdir(good_zip.parent)
    rec = install.install_release(custom_url=good_zip.name).record
    assert rec["custom"] and rec["url"] == str(good_zip) and rec["sha256"] == sha(good_zip.read_bytes())
    other = make_zip(good_zip.parent / "other.zip", release_files(seed=2))
    rec = install.install_release("r20240129", custom_url=other.as_uri()).record
    assert rec["url"] == other.as_uri() and rec["tag"] == "r20240129"
    assert tree(install.model_folder("r20240129")[0])["plans.json"] == release_files(seed=2)[f"{TRAINER}/plans.json"]
    # an offline mirror folder installs the registry release as itself (not custom)
    monkeypatch.setenv(releases.ENV_MIRROR, str(good_zip.parent))
    rec = install.install_release().record
    assert not rec["custom"] and rec["url"] == str(good_zip)


# ------------------------------------------------------------------------------------------------ unsafe archives
def _bad_archives(tmp: Path) -> dict[str, Path]:
    base = release_files()
    return {
        "absolute path": make_zip(tmp / "abs.zip", {**base, "/tmp/evil.txt": b"x"}),
        "'..'": make_zip(tmp / "dots.zip", {**base, f"{TRAINER}/../../evil.txt": b"x"}),
        "link": make_zip(tmp / "link.zip", base, links={f"{TRAINER}/fold_0/evil": "/etc/passwd"}),
        "2 nnUNetTrainer": make_zip(tmp / "two.zip", {**base, **release_files(trainer=TRAINER.replace("Trainer", "TrainerDA5"))}),
        "missing plans.json": make_zip(tmp / "noplans.zip", {k: v for k, v in base.items() if not k.endswith("plans.json")}),
        "missing fold_": make_zip(tmp / "nofold.zip", {k: v for k, v in base.items() if ".pth" not in k}),
        "no nnUNetTrainer": make_zip(tmp / "notrainer.zip", {"model/dataset.json": b"{}"}),
        "not a zip": tmp.joinpath("page.zip").write_bytes(b"<html>Not Found</html>") and tmp / "page.zip",
        "truncated": tmp.joinpath("cut.zip").write_bytes(make_zip(tmp / "full.zip", base).read_bytes()[:3000])
        and tmp / "cut.zip",
    }


def test_unsafe_or_broken_archives_refused(tmp_path):
    for reason, path in _bad_archives(tmp_path).items():
        with pytest.raises(RootletsError, match=reason.replace("(", r"\(")) as exc:
            archive.validate_release_zip(path)
        assert str(path) in str(exc.value) and "\n" not in str(exc.value)
    assert not (tmp_path.parent / "evil.txt").exists() and not Path("/tmp/evil.txt").exists()


def test_wrapper_folder_accepted(tmp_path):
    files = {f"model-spinal-rootlets-r1/{k}": v for k, v in release_files().items()}
    layout = archive.validate_release_zip(make_zip(tmp_path / "wrapped.zip", {**files, "__MACOSX/._x": b""}))
    assert layout.trainer_name == TRAINER and layout.folds == ("fold_0", "fold_1")


def test_failed_installs_keep_previous_model_byte_identical(server, good_zip, tmp_path, capsys):
    install.install_release(custom_url=str(good_zip))
    folder = install.models_dir() / R.tag
    before = tree(folder)
    data = good_zip.read_bytes()
    bad_urls = [server.add(f"{name}.zip", p.read_bytes()) for name, p in
                [("slip", _bad_archives(tmp_path)["'..'"]), ("trunc", _bad_archives(tmp_path)["truncated"])]]
    bad_urls.append(server.add("cut.zip", data, truncate=len(data) - 10))
    for url in bad_urls:
        assert main(["-install", "-custom-url", url, "-v", "0"]) == 1
        assert url in capsys.readouterr().err
        assert tree(folder) == before and leftovers() == []


def test_killed_install_leaves_previous_model_and_next_install_cleans_up(server, good_zip, tmp_path, monkeypatch):
    monkeypatch.setenv(releases.ENV_MIRROR, str(good_zip.parent))  # offline mirror folder: the registry release
    install.install_release()
    folder = install.models_dir() / R.tag
    before = tree(folder)
    url = server.add("slow.zip", make_zip(tmp_path / "new.zip", release_files(seed=5)).read_bytes(), delay=20)
    proc = subprocess.Popen([sys.executable, "-m", "rootlets_task.cli.rootlets", "-install", "-release", R.tag,
                             "-custom-url", url, "-v", "0"])
    try:
        deadline = time.time() + 20
        while not (server.hits.get("slow.zip") and leftovers()) and time.time() < deadline:
            time.sleep(0.05)
        assert leftovers(), "the installer is downloading into a temp folder beside the model"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert tree(folder) == before
    assert model_usable_and_leftovers_cleaned(folder, before)
    # killed between the two renames: only the moved-aside previous model is left; the next install restores it
    os.rename(folder, folder.parent / f".{R.tag}.old-1")
    assert model_usable_and_leftovers_cleaned(folder, before)


def model_usable_and_leftovers_cleaned(folder: Path, before: dict[str, bytes]) -> bool:
    install.install_release()  # installed and current: only repairs, downloads nothing
    return tree(folder) == before and leftovers() == [] and install.model_folder()[0].parent == folder


def test_two_concurrent_installs_one_download(server, good_zip):
    """Two real processes install the default release at once: both succeed, one downloads, the other waits."""
    server.add(R.asset, good_zip.read_bytes(), delay=2.5)
    env = {**os.environ, releases.ENV_MIRROR: server.base}
    cmd = [sys.executable, "-m", "rootlets_task.cli.rootlets", "-install"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    stdout = "".join(o for o, _ in outs)
    assert server.hits[R.asset] == 1 and stdout.count("installed model release") == 1 and "already installed" in stdout
    assert "waiting for another install" in "".join(e for _, e in outs)
    assert tree(install.model_folder()[0]) == {k.split("/", 1)[1]: v for k, v in release_files(seed=1).items()}
    assert leftovers() == []


# ------------------------------------------------------------------------------------------------ store, status, CLI
def test_models_dir_env_and_platformdirs(monkeypatch, tmp_path):
    import platformdirs

    monkeypatch.setenv(install.ENV_HOME, str(tmp_path))
    assert install.models_dir() == tmp_path / "models"
    monkeypatch.delenv(install.ENV_HOME)
    assert install.models_dir() == platformdirs.user_data_path("rootlets_task", appauthor=False) / "models"


def test_model_folder_missing_damaged_and_reinstall(good_zip, monkeypatch):
    with pytest.raises(RootletsError, match=r"no model release r20240730 installed; run `rootlets -install -release r20240730`"):
        install.model_folder("r20240730")
    monkeypatch.setenv(releases.ENV_MIRROR, str(good_zip.parent))
    inst = install.install_release()
    (inst.trainer_folder / "fold_0" / "checkpoint_final.pth").unlink()
    (inst.trainer_folder / "fold_1" / "checkpoint_final.pth").unlink()
    with pytest.raises(RootletsError, match=r"damaged .*checkpoint_final.pth.* to reinstall"):
        install.model_folder()
    install.install_release()  # damaged is not current: reinstalled
    assert install.model_folder()[0] == inst.trainer_folder


def test_unknown_release_tag(capsys):
    assert main(["-install", "-release", "r1999"]) == 1
    err = capsys.readouterr().err
    assert "unknown model release 'r1999'" in err and all(tag in err for tag in releases.RELEASES)
    with pytest.raises(RootletsError, match="known releases: r20250318"):
        install.model_folder("nope")


def test_custom_url_without_install_is_ignored_as_sct_does(server, capsys):
    """sct_deepseg ignores -custom-url without -install (no error): so do we, saying so; nothing is downloaded."""
    url = server.add("x.zip", b"not a zip")
    assert main(["-i", "x.nii.gz", "-custom-url", url]) == 1  # the missing input, not the flag, is the error
    err = capsys.readouterr().err
    assert "-custom-url is only used with -install; ignored" in err and "image x.nii.gz: file not found" in err
    assert server.hits == {}


def test_releases_command(good_zip, monkeypatch, capsys):
    def rows() -> dict[str, str]:
        assert main(["releases"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert str(install.models_dir()) in lines[0]
        return {next(w for w in line.split() if w not in ("*", ">", "*>")): line for line in lines[2:-1]}

    table = rows()
    assert set(table) == set(releases.RELEASES) and table["r20250318"].startswith("*")
    assert all(line.endswith("not installed") for line in table.values())
    monkeypatch.setenv(releases.ENV_MIRROR, str(good_zip.parent))
    install.install_release()
    install.install_release("r20240523", custom_url=str(good_zip))
    assert [inst.tag for inst in install.installed_releases()] == ["r20240523", "r20250318"]
    table = rows()
    assert table["r20250318"].endswith("current") and "C2-T1" in table["r20250318"] and "UNIT1" in table["r20250318"]
    assert table["r20240523"].endswith("custom") and table["r20240129"].endswith("not installed")
    # the registry moves the release to a new asset: the installed one is outdated, and -install replaces it
    monkeypatch.setitem(releases.RELEASES, R.tag, dataclasses.replace(R, urls=(R.urls[0].replace(".zip", "-2.zip"),)))
    assert "outdated" in rows()["r20250318"]
    assert main(["releases", "-json"]) == 0
    status = {r["tag"]: r for r in json.loads(capsys.readouterr().out)["releases"]}
    assert status["r20250318"]["installed"] and status["r20250318"]["status"].startswith("outdated")
    assert status["r20250318"]["sha256"] == sha(good_zip.read_bytes())


@pytest.mark.skipif(not releases.PHANTOM_ZIP.is_file(), reason="bundled phantom release not built yet")
def test_install_bundled_phantom_with_no_network(monkeypatch, capsys):
    def no_network(sock, address):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    assert main(["-install", "-release", "phantom"]) == 0
    manifest = json.loads(releases.PHANTOM_MANIFEST.read_text())
    folder, record = install.model_folder("phantom")
    assert record["sha256"] == manifest["sha256"] == releases.get_release("phantom").sha256
    assert folder.name == manifest["trainer_folder"] and not record["custom"]
    assert "installed model release phantom" in capsys.readouterr().out


@pytest.mark.skipif(not releases.PHANTOM_ZIP.is_file(), reason="bundled phantom release not built yet")
def test_bundled_phantom_zip_is_a_valid_release_served_over_http(server, capsys):
    data = releases.PHANTOM_ZIP.read_bytes()
    manifest = json.loads(releases.PHANTOM_MANIFEST.read_text())
    layout = archive.validate_release_zip(releases.PHANTOM_ZIP)
    assert layout.trainer_name == manifest["trainer_folder"] and layout.folds == tuple(f"fold_{f}" for f in manifest["folds"])
    url = server.add("phantom.zip", data)
    assert main(["-install", "-release", "phantom", "-custom-url", url]) == 0
    record = install.model_folder("phantom")[1]
    assert record["sha256"] == sha(data) == manifest["sha256"] and record["custom"] and record["size"] == len(data)
    captured = capsys.readouterr()
    assert "phantom.zip" in captured.out and "\r" not in captured.err, "the source named; no progress bar off a terminal"
