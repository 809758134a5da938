"""Precision on every CPU: float32 is float32 (OpenVINO's precision hint), a network that runs in bf16 when float32 was
asked for is caught by the load check, the bf16 lever runs only where the CPU has native bfloat16, and segmenting
writes nothing outside the documented folders (OpenVINO's telemetry is off).

Real nnU-Net inference of the bundled phantom release on OpenVINO. Where a test needs an instruction-set feature it
detects it (:func:`rootlets_task.inference.cpu.has_bf16`, OpenVINO's own capabilities) and skips with the reason;
where a CPU feature cannot exist on the machine running the test, the test says what it stands in for.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch

from rootlets_task.cli import rootlets as cli
from rootlets_task.inference import backends, cpu
from rootlets_task.inference.segmenter import Segmenter
from rootlets_task.io.metrics import agreement
from rootlets_task.io.phantom import write_phantom

needs_openvino = pytest.mark.skipif(not backends.openvino_available(), reason="openvino extra not installed")
needs_bf16 = pytest.mark.skipif(not cpu.has_bf16(), reason=f"this CPU has no native bfloat16 (avx512_bf16 or AMX): "
                                f"{cpu.describe()}")


def _compiled(segmenter: Segmenter) -> list:
    return list(segmenter.predictor.network._compiled.values())


@needs_openvino
def test_float32_network_runs_in_f32_on_this_cpu(phantom_folder, tmp_path, monkeypatch):
    """Without the hint OpenVINO runs float32 networks in bf16 on avx512_bf16/AMX CPUs (and fails its check there)."""
    monkeypatch.setenv("ROOTLETS_TASK_CACHE", str(tmp_path / "cache"))
    seg = Segmenter(phantom_folder, device="cpu", verbose=0)
    assert seg.backend == "openvino" and seg.precision == "float32"
    assert [backends.inference_precision(m) for m in _compiled(seg)] == ["f32"] * len(seg.folds)
    (check,) = [json.loads(p.read_text()) for p in (tmp_path / "cache" / "openvino").glob("*/check.json")]
    assert check["inference_precision"] == "f32" and check["max_softmax_difference"] <= backends.TOLERANCE


@needs_openvino
def test_a_network_run_in_bf16_is_caught_and_pytorch_float32_runs(phantom_folder, tmp_path, monkeypatch, caplog):
    """float32 asked for, the network compiled with OpenVINO's bf16 hint: the load check catches the difference.

    On a CPU with native bfloat16 this is OpenVINO's real bf16 inference. Elsewhere OpenVINO ignores the bf16 hint
    (it runs f32), so the test stands in for it: the check's forward pass returns its output rounded to bfloat16
    (the best bf16 inference can do; real bf16 arithmetic differs more) and reports bf16 as OpenVINO would.
    """
    monkeypatch.setenv("ROOTLETS_TASK_CACHE", str(tmp_path / "cache"))
    compile_config = backends.compile_config
    monkeypatch.setattr(backends, "compile_config", lambda threads, precision="float32": compile_config(threads, "bf16"))
    if not cpu.has_bf16():
        run_network = backends.run_network
        monkeypatch.setattr(backends, "run_network", lambda compiled, x: torch.from_numpy(
            run_network(compiled, x)).to(torch.bfloat16).float().numpy())
        monkeypatch.setattr(backends, "inference_precision", lambda compiled: "bf16")
    seg = Segmenter(phantom_folder, device="cpu", verbose=0)
    assert seg.backend == "torch" and seg.precision == "float32" and seg.settings["Backend"] == "torch"
    assert not isinstance(seg.predictor.network, backends.OpenVINONetwork)
    assert {p.dtype for p in seg.predictor.network.parameters()} == {torch.float32}
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "float32 network in bf16" in warning and cpu.describe() in warning and "using PyTorch" in warning
    assert "ROOTLETS_TASK_BACKEND=torch" in warning and "\n" not in warning
    difference = float(warning.split("differs from PyTorch by ")[1].split()[0])
    assert difference > backends.TOLERANCE


def test_bf16_refused_in_one_line_where_the_cpu_has_none(phantom_home, tmp_path, capsys, monkeypatch):
    """On a CPU with bfloat16 the test stands in for one without (``has_bf16`` False): it cannot exist there."""
    monkeypatch.setattr(cpu, "has_bf16", lambda: False)
    files = write_phantom(tmp_path / "ph", "LPI", seed=0)
    bids = tmp_path / "bids"
    (bids / "sub-01" / "anat").mkdir(parents=True)
    (bids / "sub-01" / "anat" / "sub-01_T2w.nii.gz").write_bytes(files["image"].read_bytes())
    calls = {("-i", str(files["image"]), "-precision", "bf16", "-release", "phantom", "-o", str(tmp_path / "r.nii.gz")):
             "precision bf16: this CPU has no native bfloat16",
             ("speedcheck", str(files["image"]), "-levers", "bf16", "-release", "phantom", "-o",
              str(tmp_path / "s.json")): "-levers bf16: this CPU has no native bfloat16",
             ("batch", str(bids), "-o", str(tmp_path / "out"), "-levers", "crop,bf16"): "-levers bf16: this CPU has no",
             ("batch", str(bids), "-o", str(tmp_path / "out"), "-levers", "int8,bf16"): "int8 and bf16 are two"}
    for argv, message in calls.items():
        assert cli.main(list(argv)) == 1, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("rootlets: error: ") and message in err and "\n" not in err, (argv, err)
        assert "avx512_bf16 or AMX" in err or "two precisions" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bids", "ph"]  # nothing written
    from rootlets_task.pipeline import speedcheck

    assert "bf16" not in speedcheck.default_levers() and set(speedcheck.levers_not_here()) == {"bf16", "crop+bf16"}


@needs_openvino
@needs_bf16
def test_bf16_runs_end_to_end_and_is_cached(phantom_folder, phantom_image, tmp_path, monkeypatch):
    monkeypatch.setenv("ROOTLETS_TASK_CACHE", str(tmp_path / "cache"))
    exact = Segmenter(phantom_folder, device="cpu", verbose=0).segment_image(phantom_image)
    seg = Segmenter(phantom_folder, device="cpu", verbose=0, precision="bf16")
    assert seg.precision == "bf16" and seg.settings["Precision"] == "bf16" and seg.backend == "openvino"
    assert {backends.inference_precision(m) for m in _compiled(seg)} == {"bf16"}
    labels = seg.segment_image(phantom_image)
    close = agreement(exact, labels)
    assert close["voxel_agreement"] >= 0.995 and close["foreground_agreement"] >= 0.8, close  # as int8's bound
    (check,) = (tmp_path / "cache" / "openvino").glob("*/check-bf16.json")
    assert 0 < json.loads(check.read_text())["max_softmax_difference"]
    assert list((check.parent / "compiled-bf16").iterdir())  # OpenVINO's compiled blob, reused by the next load
    again = Segmenter(phantom_folder, device="cpu", verbose=0, precision="bf16")
    assert again.precision == "bf16" and np.array_equal(again.segment_image(phantom_image), labels)


GUARD = """
import socket, sys
_connect = socket.socket.connect
def _loopback_only(sock, address):
    host = address[0] if isinstance(address, tuple) else None
    if host is not None and sock.family in (socket.AF_INET, socket.AF_INET6) and host not in ("127.0.0.1", "::1"):
        print(f"OUTSIDE {host}", file=sys.stderr)
        raise ConnectionRefusedError(host)
    return _connect(sock, address)
socket.socket.connect = _loopback_only
from rootlets_task.cli.rootlets import main
sys.exit(main(sys.argv[1:]))
"""


@needs_openvino
def test_segmenting_leaves_home_and_xdg_folders_empty(phantom_store, tmp_path):
    """`rootlets -i` (OpenVINO backend, network converted on this run) with HOME and XDG_* on an empty folder: it stays
    empty (OpenVINO's telemetry wrote ~/intel/openvino_ga_cid and ~/intel/stats), and nothing reaches outside loopback.
    Run as a subprocess: a fresh process imports OpenVINO after rootlets_task, as a user's does."""
    empty, out = tmp_path / "home", tmp_path / "out"
    empty.mkdir()
    image = write_phantom(tmp_path / "ph", "LPI", seed=3)["image"]
    xdg = {f"XDG_{k}_HOME": str(empty / k.lower()) for k in ("CACHE", "CONFIG", "DATA", "STATE")}
    env = {**os.environ, "HOME": str(empty), **xdg, "ROOTLETS_TASK_HOME": str(phantom_store),
           "ROOTLETS_TASK_CACHE": str(tmp_path / "cache"), "TMPDIR": str(tmp_path / "tmp")}
    env.pop("ROOTLETS_TASK_BACKEND", None)
    (tmp_path / "tmp").mkdir()
    proc = subprocess.run([sys.executable, "-c", GUARD, "-i", str(image), "-release", "phantom", "-o", str(out),
                           "-v", "0"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (sidecar,) = out.glob("*_rootlets.json")
    assert json.loads(sidecar.read_text())["GeneratedBy"][0]["Settings"]["Backend"] == "openvino"
    assert nib.load(next(out.glob("*_rootlets.nii.gz"))).get_fdata().any()
    assert list(empty.rglob("*")) == [] and "OUTSIDE" not in proc.stderr
