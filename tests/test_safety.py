"""The audit's defects, one test each: hostile servers and archives, bad headers, full disks, signals, odd names.

Every test goes through the command line's entry point (``rootlets_task.cli.rootlets.main``) or the public API, on real files,
real loopback HTTP and, for the full disk, a real tiny tmpfs in a private mount namespace (skipped where the kernel
does not allow one). The malicious-checkpoint tests are in test_checkpoints.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from support.cli import one_line_error as _one_line_error
from support.cli import run_cli as _run
from support.loopback import QuietHandler, serve, stop
from support.random_model import write_random_model

from rootlets_task.cli.rootlets import main
from rootlets_task.core import files
from rootlets_task.core.errors import RootletsError
from rootlets_task.inference import segmenter as inference
from rootlets_task.io.phantom import write_phantom
from rootlets_task.models import archive, install, releases

SECRET_URL_PARTS = ("hunter2", "SIGNATURE-0123")
ROOTLETS = [sys.executable, "-c", "import sys; from rootlets_task.cli.rootlets import main; sys.exit(main(sys.argv[1:]))"]


def _listing(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _zip_model(tmp: Path, name: str = "model.zip") -> Path:
    folder = write_random_model(tmp / "src")
    return Path(shutil.make_archive(str(tmp / name.removesuffix(".zip")), "zip", folder.parent, folder.name))


class _Server:
    """Loopback HTTP server with hostile behaviours; routes on the path only (the query is ignored, as a CDN would)."""

    def __init__(self):
        self.routes: dict[str, tuple[str, bytes]] = {}
        owner = self

        class Handler(QuietHandler):
            def do_GET(self):
                kind, data = owner.routes.get(self.path.split("?")[0].lstrip("/"), ("404", b""))
                if kind == "404":
                    self.send_error(404)
                elif kind == "silent":  # accepts the request, never answers
                    time.sleep(30)
                elif kind == "drip":  # one byte at a time, forever
                    self.send_response(200)
                    self.end_headers()
                    with_suppressed(lambda: [(self.wfile.write(b"x"), self.wfile.flush(), time.sleep(0.2)) for _ in range(600)])
                elif kind == "endless":  # no Content-Length, never ends
                    self.send_response(200)
                    self.end_headers()
                    with_suppressed(lambda: [self.wfile.write(b"\0" * 65536) for _ in range(100_000)])
                elif kind == "huge":  # announces more than any cap
                    self.send_response(200)
                    self.send_header("Content-Length", str(50 << 30))
                    self.end_headers()
                else:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)

        self.httpd = serve(Handler)
        self.base = self.httpd.base


def with_suppressed(action) -> None:
    try:
        action()
    except OSError:  # the client hung up: what a hostile server sees when it is cut off
        pass


@pytest.fixture
def server():
    srv = _Server()
    yield srv
    stop(srv.httpd)


# ------------------------------------------------------------------------------------------------ 2. secrets
def test_secrets_in_urls_are_never_stored_or_printed(server, tmp_path, capsys, monkeypatch):
    server.routes["releases/model.zip"] = ("ok", _zip_model(tmp_path).read_bytes())
    url = f"http://user:{SECRET_URL_PARTS[0]}@127.0.0.1:{server.httpd.server_port}/releases/model.zip" \
          f"?X-Amz-Signature={SECRET_URL_PARTS[1]}&token=abc"
    code, out, err = _run(["-install", "-release", releases.DEFAULT_TAG, "-custom-url", url], capsys)
    assert code == 0, err
    code, listing, _ = _run(["releases", "-json"], capsys)
    record = (install.models_dir() / releases.DEFAULT_TAG / install.RECORD).read_text()
    assert json.loads(record)["url"] == f"http://127.0.0.1:{server.httpd.server_port}/releases/model.zip?<redacted>"
    image = write_phantom(tmp_path / "img", spacing=(2.0, 2.0, 2.0))["image"]
    assert main(["-i", str(image), "-o", str(tmp_path / "seg.nii.gz"), "-v", "0"]) == 0
    sidecar = (tmp_path / "seg.json").read_text()
    bids = tmp_path / "bids"
    (bids / "sub-01" / "anat").mkdir(parents=True)
    shutil.copy(image, bids / "sub-01" / "anat" / "sub-01_T2w.nii.gz")
    assert main(["batch", str(bids), "-o", str(tmp_path / "deriv"), "-v", "0"]) == 0
    description = (tmp_path / "deriv" / "dataset_description.json").read_text()
    for text in (out, err, listing, record, sidecar, description, capsys.readouterr().out):
        assert not any(secret in text for secret in SECRET_URL_PARTS), text
    # a failing secret URL is named without its secrets too
    server.routes.pop("releases/model.zip")
    code, _, err = _run(["-install", "-release", releases.DEFAULT_TAG, "-custom-url", url, "-v", "0"], capsys)
    assert "HTTP 404" in _one_line_error(code, err) and not any(s in err for s in SECRET_URL_PARTS)


# ------------------------------------------------------------------------------------------------ 3. bounded downloads
@pytest.mark.parametrize("kind, limit_env, expected", [
    ("endless", {archive.ENV_MAX_BYTES: "2MB"}, "more than 2097152 bytes; stopped"),
    ("huge", {}, "above the"),
    ("drip", {archive.ENV_DEADLINE: "2"}, "still downloading after 2 s"),
])
def test_downloads_are_bounded(server, monkeypatch, capsys, kind, limit_env, expected):
    server.routes["x.zip"] = (kind, b"")
    for key, value in limit_env.items():
        monkeypatch.setenv(key, value)
    t0 = time.monotonic()
    code, _, err = _run(["-install", "-release", releases.DEFAULT_TAG, "-custom-url", f"{server.base}/x.zip", "-v", "0"], capsys)
    assert expected in _one_line_error(code, err) and time.monotonic() - t0 < 20
    left = sorted(p.name for p in install.models_dir().iterdir()) if install.models_dir().exists() else []
    assert left in ([], [f".{releases.DEFAULT_TAG}.lock"]), left  # no model, no download left behind


def test_a_silent_server_times_out_once_with_the_right_message(server, monkeypatch, capsys):
    server.routes["x.zip"] = ("silent", b"")
    monkeypatch.setattr(archive, "READ_TIMEOUT_S", 1.0)  # the 60 s default, shortened for the test
    t0 = time.monotonic()
    code, _, err = _run(["-install", "-release", releases.DEFAULT_TAG, "-custom-url", f"{server.base}/x.zip", "-v", "0"], capsys)
    line = _one_line_error(code, err)
    assert "accepted the connection but sent nothing for 1 s" in line and "cannot connect" not in line
    assert time.monotonic() - t0 < 6, "a read timeout is not retried"


def test_a_held_install_lock_names_its_holder_and_gives_up(tmp_path, monkeypatch, capsys):
    dest = install.models_dir() / releases.DEFAULT_TAG
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from rootlets_task.models.archive import install_lock\n"
        f"with install_lock({str(dest)!r}):\n    print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(archive, "LOCK_WAIT_S", 1.0)  # the hour-long default, shortened for the test
        code, _, err = _run(["-install", "-release", releases.DEFAULT_TAG, "-custom-url", str(_zip_model(tmp_path))], capsys)
        line = err.strip().splitlines()[-1]
        assert code == 1 and f"process {holder.pid} on" in line and "still holds" in line and "delete that file" in line
        assert f"waiting for another install into {dest}" in err
    finally:
        holder.kill()
        holder.wait()


# ------------------------------------------------------------------------------------------------ 4. bounded archives
def _model_files(tmp: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(_zip_model(tmp)) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist() if not i.is_dir()}


def test_zip_bombs_are_refused_before_extraction(tmp_path, monkeypatch, capsys):
    files_ = _model_files(tmp_path)
    trainer = next(iter(files_)).split("/")[0]
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files_.items():
            zf.writestr(name, data)
        zf.writestr(f"{trainer}/fold_all/padding.bin", b"\0" * (40 << 20))  # 40 MiB of zeros, ~40 KiB compressed
    json_bomb = tmp_path / "jsonbomb.zip"
    with zipfile.ZipFile(json_bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files_.items():
            noise = os.urandom(10 << 20).hex().encode()  # 20 MiB that hardly compress: only the size check stops it
            zf.writestr(name, b'{"labels": {"a": 1}, "x": "' + noise + b'"}' if name.endswith("dataset.json") else data)
    for path, expected in ((bomb, "fold (a zip bomb?)"), (json_bomb, "too large for a model's JSON")):
        code, _, err = _run(["-install", "-custom-url", str(path), "-v", "0"], capsys)
        assert expected in _one_line_error(code, err)
        assert not (install.models_dir() / releases.DEFAULT_TAG).exists()
    monkeypatch.setattr(archive, "MAX_UNCOMPRESSED", 10 << 20)  # the 16 GiB cap, scaled to this archive
    with pytest.raises(RootletsError, match="expands to 40 MiB, above"):
        archive.validate_release_zip(bomb)


def test_release_code_needs_the_opt_in(tmp_path, capsys):
    files_ = _model_files(tmp_path)
    trainer = next(iter(files_)).split("/")[0]
    with_code = tmp_path / "with_code.zip"
    with zipfile.ZipFile(with_code, "w") as zf:
        for name, data in files_.items():
            zf.writestr(name, data)
        zf.writestr(f"{trainer}/trainer_class.py", "import os\nos.system('touch PWNED')\n")
    code, _, err = _run(["-install", "-custom-url", str(with_code), "-v", "0"], capsys)
    assert "-allow-release-code" in _one_line_error(code, err) and not (install.models_dir() / "r20250318").exists()


# ------------------------------------------------------------------------------------------------ 5. inputs
def _nifti(path: Path, data: np.ndarray, affine=None) -> Path:
    """A NIfTI file as any writer may produce it: ``affine`` goes straight into the sform rows and pixdim (nibabel
    itself refuses to write a singular affine, other tools do not)."""
    img = nib.Nifti1Image(data, np.eye(4))
    if affine is not None:
        header = img.header
        for row, name in enumerate(("srow_x", "srow_y", "srow_z")):
            header[name] = affine[row]
        header["sform_code"], header["qform_code"] = 1, 0
        header["pixdim"][1:4] = np.linalg.norm(affine[:3, :3], axis=0)
        raw = path.with_suffix("") if path.name.endswith(".gz") else path
        raw.write_bytes(header.binaryblock + b"\0" * 4 + np.ascontiguousarray(data).tobytes(order="F"))
        if path.name.endswith(".gz"):
            import gzip

            path.write_bytes(gzip.compress(raw.read_bytes()))
            raw.unlink()
        return path
    nib.save(img, path)
    return path


def _bad_headers(folder: Path) -> dict[str, tuple[Path, str]]:
    ok = np.ones((12, 12, 12), np.float32)
    rgb = np.zeros((12, 12, 12), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    huge = folder / "huge.nii"
    small = nib.Nifti1Image(np.ones((4, 4, 4), np.int16), np.eye(4))
    small.header.set_data_shape((4000, 4000, 4000))
    with open(huge, "wb") as fh:  # a header declaring 4000^3 voxels in front of a few bytes
        fh.write(small.header.binaryblock + b"\0" * 4 + b"\0" * 128)
    truncated = _nifti(folder / "cut.nii", ok)
    truncated.write_bytes(truncated.read_bytes()[:2000])
    return {
        "singular affine": (_nifti(folder / "singular.nii.gz", ok, np.diag([1.0, 0.0, 1.0, 1.0])), "singular"),
        "zero affine": (_nifti(folder / "zero.nii.gz", ok, np.zeros((4, 4))), "singular"),
        "RGB": (_nifti(folder / "rgb.nii.gz", rgb), "RGB"),
        "complex": (_nifti(folder / "complex.nii.gz", ok.astype(np.complex64)), "complex"),
        "4000^3 declared": (huge, "free memory"),
        "truncated .nii": (truncated, "truncated"),
        "1-voxel axis": (_nifti(folder / "slab.nii.gz", np.ones((12, 1, 12), np.float32)), "a 2D image"),
    }


def test_bad_headers_are_refused_before_the_model_loads(random_store, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("ROOTLETS_TASK_HOME", str(random_store))
    loads = []
    real = inference.Segmenter.__init__
    monkeypatch.setattr(inference.Segmenter, "__init__", lambda s, *a, **k: (loads.append(1), real(s, *a, **k))[1])
    folder = tmp_path / "in"
    folder.mkdir()
    good = write_phantom(tmp_path / "good", spacing=(2.0, 2.0, 2.0))["image"]
    for name, (path, needle) in _bad_headers(folder).items():
        before = _listing(tmp_path)
        for argv in (["-i", path], ["-i", good, path, "-o", tmp_path / "outdir"]):  # a bad one among good ones
            code, out, err = _run(argv, capsys)
            line = _one_line_error(code, err)
            assert needle in line and str(path) in line and out == "", (name, line)
            assert _listing(tmp_path) == before, name
    assert loads == []


def test_an_output_that_is_a_folder_is_refused_before_work(random_store, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("ROOTLETS_TASK_HOME", str(random_store))
    good = write_phantom(tmp_path / "good", spacing=(2.0, 2.0, 2.0))["image"]
    (tmp_path / "x.nii.gz").mkdir()
    code, _, err = _run(["-i", good, "-o", tmp_path / "x.nii.gz"], capsys)
    assert "is an existing folder" in _one_line_error(code, err)
    (tmp_path / "keep.json").write_text('{"mine": true}')
    code, _, err = _run(["-i", good, "-o", tmp_path / "keep.nii"], capsys)
    assert "not a sidecar of rootlets_task or SCT" in _one_line_error(code, err)
    assert (tmp_path / "keep.json").read_text() == '{"mine": true}' and not (tmp_path / "keep.nii").exists()


@pytest.mark.parametrize("argv, needle", [
    (["levels", "-r", "r.nii.gz", "-s", "c.nii.gz", "-dilate", "100000"], "-dilate 100000: give a radius from 0 to 50"),
    (["qc", "-i", "i.nii.gz", "-r", "r.nii.gz", "-qc", "q", "-slab", "0", "1e9"], "half-thicknesses between 0 and 100"),
])
def test_numeric_arguments_out_of_range_are_argument_errors(argv, needle, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and needle in err and "Traceback" not in err


def test_phantom_spacing_out_of_range_is_one_line(tmp_path, capsys):
    code, _, err = _run(["phantom", "-o", tmp_path / "p", "-spacing", "0", "1", "1"], capsys)
    assert "from 0.2 to 8.0 mm" in _one_line_error(code, err) and not (tmp_path / "p").exists()


# ------------------------------------------------------------------------------------------------ 6. output sets
def test_a_failed_rename_rolls_back_the_whole_set(tmp_path, monkeypatch):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("old a")
    b.write_text("old b")
    calls = []
    real = os.replace

    def replace(src, dst):  # MOCK: a rename failing midway (what a full or vanishing disk does) cannot be staged here
        calls.append(dst)
        if len(calls) == 4:
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(RootletsError, match="No space left on device.*nothing was changed"):
        with files.OutputSet() as out:
            out.path(a).write_text("new a")
            out.path(b).write_text("new b")
    monkeypatch.setattr(os, "replace", real)
    assert a.read_text() == "old a" and b.read_text() == "old b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


def _tiny_fs_run(tmp_path: Path, argv: list[str], free_kib: int) -> subprocess.CompletedProcess:
    """Run ``rootlets ARGV`` with ``tmp_path/full`` a real tmpfs of 256 KiB holding a filler that leaves ``free_kib``."""
    full = tmp_path / "full"
    full.mkdir()
    script = (f"mount -t tmpfs -o size=256k tmpfs {full} && "
              f"head -c $((256*1024 - {free_kib}*1024)) /dev/zero > {full}/filler 2>/dev/null; "
              f'"$@"; code=$?; ls -A {full} > {tmp_path}/listing; exit $code')
    try:
        return subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", *ROOTLETS, *argv], capture_output=True,
                              text=True, timeout=300)
    except FileNotFoundError:
        pytest.skip("unshare not available: no private tmpfs for a real full disk")


@pytest.mark.parametrize("command", ["segment", "levels"])
def test_a_full_disk_is_one_line_and_leaves_nothing(random_store, tmp_path, command, monkeypatch):
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    if probe.returncode:
        pytest.skip(f"no user/mount namespace here ({probe.stderr.decode().strip()}): no real full disk to test")
    monkeypatch.setenv("ROOTLETS_TASK_HOME", str(random_store))
    ph = write_phantom(tmp_path / "ph", spacing=(2.0, 2.0, 2.0))
    out = tmp_path / "full"
    argv = (["-i", str(ph["image"]), "-o", str(out / "seg.nii.gz"), "-v", "0"] if command == "segment" else
            ["levels", "-r", str(ph["rootlets"]), "-s", str(ph["cord"]), "-discs", str(ph["discs"]), "-o", str(out)])
    done = _tiny_fs_run(tmp_path, argv, free_kib=8)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and "No space left on device" in lines[0], done.stderr
    assert "nothing was changed" in lines[0]
    assert (tmp_path / "listing").read_text().split() == ["filler"], "no half-written output and no temporary left"


def test_levels_rerun_removes_what_it_no_longer_makes(tmp_path, capsys):
    ph = write_phantom(tmp_path / "ph", spacing=(2.0, 2.0, 2.0))
    out = tmp_path / "out"
    base = ["levels", "-r", ph["rootlets"], "-s", ph["cord"], "-o", out]
    assert _run([*base, "-discs", ph["discs"]], capsys)[0] == 0
    assert len(list(out.glob("*_shift.csv"))) == 1 and len(list(out.glob("*_vertebral_levels.nii.gz"))) == 1
    assert _run(base, capsys)[0] == 0
    assert not list(out.glob("*_shift.csv")) and not list(out.glob("*_vertebral_levels.nii.gz"))
    # a file of the same name the user edited since is not the earlier run's: it stays
    assert _run([*base, "-discs", ph["discs"]], capsys)[0] == 0
    (shift,) = out.glob("*_shift.csv")
    shift.write_text(shift.read_text() + "# my notes\n")
    assert _run(base, capsys)[0] == 0 and shift.is_file()


def test_temporaries_of_killed_runs_are_removed_and_those_of_live_ones_kept(tmp_path, capsys):
    ph = write_phantom(tmp_path / "ph", spacing=(2.0, 2.0, 2.0))
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = files.temporary_name(out / "x_levels.csv")
    stale = stale.with_name(stale.name.replace(f"-{os.getpid()}-", f"-{dead.pid}-"))
    stale.write_text("left by a SIGKILLed run")
    live = files.temporary_name(out / "y_levels.csv")  # this very process: still writing, must stay
    live.write_text("being written")
    assert _run(["levels", "-r", ph["rootlets"], "-s", ph["cord"], "-o", out], capsys)[0] == 0
    assert not stale.exists() and live.exists()


def test_sigterm_leaves_a_complete_set_or_nothing(tmp_path):
    ph = write_phantom(tmp_path / "ph", spacing=(1.0, 1.0, 1.0))
    interrupted = 0
    for delay in (0.5, 1.0, 1.5, 2.0, 2.5, 3.0):
        out = tmp_path / f"out{delay}"
        proc = subprocess.Popen([*ROOTLETS, "levels", "-r", str(ph["rootlets"]), "-s", str(ph["cord"]), "-discs",
                                 str(ph["discs"]), "-pmj", str(ph["pmj"]), "-o", str(out)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        # the viewer tables (.tsv, .lut, .txt) follow the set, each written atomically on its own
        made = sorted(p.name for p in out.iterdir() if p.suffix not in (".tsv", ".lut", ".txt")) if out.exists() else []
        assert len(made) in (0, 5), made  # spinal, vertebral, csv, json, shift: all or none, no temporaries
        if proc.returncode == 130:
            interrupted += 1
            assert "every output is either complete or absent" in err and "Traceback" not in err
        else:  # -SIGTERM: the signal came before main() installed its handler or after it was done
            assert proc.returncode in (0, -signal.SIGTERM), err
    assert interrupted, "no run was interrupted: lengthen the phantom"


# ------------------------------------------------------------------------------------------------ 7. QC and batch
def test_qc_names_with_dollars_slashes_and_spaces_get_their_own_entries(tmp_path, capsys):
    ph = write_phantom(tmp_path / "ph", spacing=(2.0, 2.0, 2.0))
    qc = tmp_path / "qc"
    names = ["sub 01", "sub_01", "sub/01", "$x$ costs $5"]
    for name in names:
        assert _run(["qc", "-i", ph["image"], "-r", ph["rootlets"], "-qc", qc, "-qc-subject", name], capsys)[0] == 0
    report = qc / "rootlets_task"
    records = [json.loads(p.read_text()) for p in (report / "_records").glob("*.json")]
    assert sorted(r["subject"] for r in records) == sorted(names) and len({r["key"] for r in records}) == 4
    assert all((report / r["key"] / "rootlets.png").stat().st_size > 0 for r in records)


def test_two_inputs_with_one_stem_get_two_qc_entries(random_store, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("ROOTLETS_TASK_HOME", str(random_store))
    image = write_phantom(tmp_path / "ph", spacing=(2.0, 2.0, 2.0))["image"]
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy(image, tmp_path / folder / "t2.nii.gz")
    assert _run(["-i", tmp_path / "a" / "t2.nii.gz", tmp_path / "b" / "t2.nii.gz", "-qc", tmp_path / "qc"], capsys)[0] == 0
    assert len(list((tmp_path / "qc" / "rootlets_task" / "_records").glob("*.json"))) == 2
    assert len(list((tmp_path / "qc" / "_json").glob("qc_*.json"))) == 2, "one SCT QC entry per input"


def _bids(root: Path, image: Path) -> Path:
    for sub in ("01", "02"):
        (root / f"sub-{sub}" / "anat").mkdir(parents=True)
        shutil.copy(image, root / f"sub-{sub}" / "anat" / f"sub-{sub}_T2w.nii.gz")
    shutil.copy(image, root / "sub-02" / "anat" / "sub-02_acq-my scan_T2w.nii.gz")  # not a BIDS name
    return root


def test_batch_checks_every_folder_before_work_and_keeps_foreign_files(random_store, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("ROOTLETS_TASK_HOME", str(random_store))
    bids = _bids(tmp_path / "bids", write_phantom(tmp_path / "ph", spacing=(2.0, 2.0, 2.0))["image"])
    out = tmp_path / "deriv"
    code, _, err = _run(["batch", bids, "-o", out, "-qc", "/proc/sys/rootlets_qc"], capsys)
    assert "QC folder /proc/sys/rootlets_qc" in _one_line_error(code, err) and not list(out.rglob("*.nii.gz"))
    code, _, err = _run(["batch", bids, "-o", bids / "sub-01" / "out"], capsys)
    assert "inside the raw dataset" in _one_line_error(code, err)
    foreign = tmp_path / "sct_deriv"
    foreign.mkdir()
    (foreign / "dataset_description.json").write_text(json.dumps({"Name": "SCT", "GeneratedBy": [{"Name": "SCT"}]}))
    (foreign / "logs").mkdir()
    (foreign / "logs" / "batch_summary.json").write_text("theirs")
    before = _listing(foreign)
    code, _, err = _run(["batch", bids, "-o", foreign], capsys)
    assert "holds another derivative dataset" in _one_line_error(code, err) and _listing(foreign) == before
    code, out_text, err = _run(["batch", bids, "-o", out, "-v", "0"], capsys)
    assert code == 0, err
    assert "not a candidate: sub-02/anat/sub-02_acq-my scan_T2w.nii.gz: not a BIDS file name" in out_text
