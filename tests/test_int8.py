"""Opt-in int8 network (NNCF quantisation of the OpenVINO model) on the bundled phantom release, and the sc-crop box.

int8 tests run real NNCF quantisations of the trained phantom model (a few seconds each with 4 calibration tiles)
and compare with the float32 path on a phantom. The sc-crop test replaces only sc-crop's YOLO detector, whose
weights are downloaded from outside at run time and which needs torchvision: that cannot run here.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

from rootlets_task.core.errors import RootletsError
from rootlets_task.inference import backends, int8
from rootlets_task.inference.cropping import CROP_MARGIN_MM, crop_box, detected_box
from rootlets_task.inference.segmenter import Segmenter
from rootlets_task.io.metrics import agreement
from rootlets_task.io.phantom import make_phantom

needs_int8 = pytest.mark.skipif(not (backends.openvino_available() and int8.nncf_available()),
                                reason="int8 extra (openvino, nncf) not installed")
FAST = int8.Int8Options(max_tiles=4)


def _entries(cache: Path) -> list[Path]:
    return sorted((cache / "openvino-int8").glob("*"))


@needs_int8
def test_int8_runs_end_to_end_and_is_cached(phantom_folder, phantom_image, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("ROOTLETS_TASK_CACHE", str(cache))
    exact = Segmenter(phantom_folder, device="cpu", verbose=0).segment_image(phantom_image)
    seg = Segmenter(phantom_folder, device="cpu", verbose=0, precision="int8", int8_options=FAST)
    assert seg.precision == "int8" and seg.settings["Precision"] == "int8" and seg.backend == "openvino"
    labels = seg.segment_image(phantom_image)
    assert labels.shape == phantom_image.shape and len(np.unique(labels)) > 2
    close = agreement(exact, labels)
    # int8 moves labels a little: the crop lever's bound on voxels (test_speed.py), most labelled voxels kept
    assert close["voxel_agreement"] >= 0.995 and close["foreground_agreement"] >= 0.8, close
    (entry,) = _entries(cache)
    check = json.loads((entry / "check.json").read_text())
    assert check["tiles"] == 4 and check["label_agreement"] >= 0.9

    import nncf

    def no_quantisation(*args, **kwargs):
        raise AssertionError("quantised again despite the cache")

    monkeypatch.setattr(nncf, "quantize", no_quantisation)
    again = Segmenter(phantom_folder, device="cpu", verbose=0, precision="int8", int8_options=FAST)
    assert again.precision == "int8" and np.array_equal(again.segment_image(phantom_image), labels)
    assert _entries(cache) == [entry]


def test_cache_key_follows_the_calibration_data():
    a, b = (make_phantom("LPI", (2.0, 2.0, 2.0), seed=s).nifti("image") for s in (1, 2))
    plans = {"configurations": {"3d_fullres": {"patch_size": [64, 32, 32]}}}
    key = int8.calibration_digest([a], plans, FAST)
    assert key == int8.calibration_digest([a], plans, FAST)
    assert len({key, int8.calibration_digest([b], plans, FAST), int8.calibration_digest([a, b], plans, FAST),
                int8.calibration_digest([a], plans, int8.Int8Options(max_tiles=8)),
                int8.calibration_digest([a], {"other": "plans"}, FAST)}) == 5


@needs_int8
def test_other_calibration_images_make_another_entry(phantom_folder, phantom_image, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("ROOTLETS_TASK_CACHE", str(cache))
    Segmenter(phantom_folder, device="cpu", verbose=0, precision="int8", int8_options=FAST)
    seg = Segmenter(phantom_folder, device="cpu", verbose=0, precision="int8", int8_options=FAST,
                    calibration=[phantom_image])
    assert seg.precision == "int8" and len(_entries(cache)) == 2


QUANTISE = """
import sys
from rootlets_task.inference.segmenter import Segmenter
from rootlets_task.inference.int8 import Int8Options
seg = Segmenter(sys.argv[1], device="cpu", verbose=0, precision="int8", int8_options=Int8Options(max_tiles=4))
print(seg.precision)
"""


def _quantiser(folder: Path, cache: Path) -> subprocess.Popen:
    """A process quantising into ``cache``, which starts with the session's float32 OpenVINO conversions (content-
    addressed, so only the int8 step runs in it)."""
    Segmenter(folder, device="cpu", verbose=0)  # makes sure the session cache holds them
    if not (cache / "openvino").exists():
        shutil.copytree(Path(os.environ["ROOTLETS_TASK_CACHE"]) / "openvino", cache / "openvino")
    return subprocess.Popen([sys.executable, "-c", QUANTISE, str(folder)], env={**os.environ, "ROOTLETS_TASK_CACHE": str(cache)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _complete(entry: Path) -> bool:
    return all((entry / name).is_file() for name in ("network.xml", "network.bin", "check.json"))


@needs_int8
def test_killed_quantisation_leaves_no_entry(phantom_folder, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    proc = _quantiser(phantom_folder, cache)
    deadline = time.monotonic() + 300
    while not list((cache / "openvino-int8").glob(".*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL  # killed while quantising, not after
    assert not [e for e in _entries(cache) if not e.name.startswith(".")]  # only the private folder, never an entry
    monkeypatch.setenv("ROOTLETS_TASK_CACHE", str(cache))
    assert Segmenter(phantom_folder, device="cpu", verbose=0, precision="int8", int8_options=FAST).precision == "int8"
    assert all(_complete(e) for e in _entries(cache) if not e.name.startswith("."))


@needs_int8
def test_concurrent_quantisations_leave_one_complete_entry(phantom_folder, tmp_path):
    cache = tmp_path / "cache"
    procs = [_quantiser(phantom_folder, cache) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    assert [out.split()[-1] for out, _ in outs] == ["int8", "int8"]
    (entry,) = _entries(cache)  # the second to finish discarded its copy; no private folder is left
    assert _complete(entry)


def test_int8_refused_in_one_line_without_nncf(phantom_folder, monkeypatch):
    """NNCF is installed here: a ``None`` entry in ``sys.modules`` makes it missing for this test."""
    monkeypatch.setitem(sys.modules, "nncf", None)
    with pytest.raises(RootletsError, match=r"NNCF is not installed; run `pip install 'rootlets_task\[int8\]'`") as exc:
        Segmenter(phantom_folder, device="cpu", verbose=0, precision="int8")
    assert "\n" not in str(exc.value)


@needs_int8
def test_int8_needs_the_openvino_backend(phantom_folder):
    with pytest.raises(RootletsError, match="precision int8: needs the OpenVINO backend"):
        Segmenter(phantom_folder, device="cpu", verbose=0, backend="torch", precision="int8")
    with pytest.raises(RootletsError, match="precision 'fp16': unknown"):
        Segmenter(phantom_folder, device="cpu", verbose=0, precision="fp16")


class _Boxes:
    def __init__(self, xywhn: list[list[float]]):
        self.xywhn, self.conf = np.asarray(xywhn, float).reshape(-1, 4), np.ones(len(xywhn))

    def __len__(self) -> int:
        return len(self.xywhn)


def _true_cord_detector(cord_img):
    """An ``ultralytics`` module whose YOLO reports the true cord's box on each slice sc-crop builds.

    It stands in for sc-crop's YOLO detector (weights fetched from outside at run time, ultralytics needs torchvision),
    using sc-crop's own reorientation and resampling and the inverse of its box aggregation (``aggregate_bbox_3d``).
    """
    from sc_crop.crop import load_config, reorient_to_las, resample_for_inference

    config = load_config()
    mask = resample_for_inference(reorient_to_las(cord_img), config["si_res"], config["inplane_res"]).get_fdata() > 0.5

    class YOLO:
        def __init__(self, *args, **kwargs):
            pass

        def predict(self, slices, **kwargs):
            results = []
            for las_idx in range(mask.shape[2] - 1, -1, -1):  # sc-crop's slice order: superior to inferior
                rl, ap = (np.flatnonzero(mask[:, :, las_idx].any(axis)) for axis in (1, 0))
                boxes = [] if not len(rl) else [[(rl[0] + rl[-1] + 1) / 2 / mask.shape[0],
                                                 1 - (ap[0] + ap[-1] + 1) / 2 / mask.shape[1],
                                                 (rl[-1] + 1 - rl[0]) / mask.shape[0], (ap[-1] + 1 - ap[0]) / mask.shape[1]]]
                results.append(types.SimpleNamespace(boxes=_Boxes(boxes)))
            assert len(results) == len(slices)
            return results

    return types.SimpleNamespace(YOLO=YOLO)


@pytest.mark.parametrize(("orient", "spacing"), [("LPI", (1.0, 1.0, 1.0)), ("PSR", (0.8, 0.8, 1.2))])
def test_sc_crop_box_holds_the_cord(orient, spacing, monkeypatch, tmp_path):
    pytest.importorskip("sc_crop")
    pytest.importorskip("onnxruntime")  # sc_crop.detect imports it
    ph = make_phantom(orient, spacing, seed=5)
    img, cord = ph.nifti("image"), ph.nifti("cord")
    monkeypatch.setitem(sys.modules, "ultralytics", _true_cord_detector(cord))
    box = detected_box(img, CROP_MARGIN_MM, model_path=str(tmp_path / "det_model.onnx"), regularization="none")
    assert ph.cord[box].sum() == ph.cord.sum() > 0 and ph.rootlets[box].sum() == ph.rootlets.sum()
    reference = crop_box(img, cord, CROP_MARGIN_MM)  # the box a cord mask gives: sc-crop's is within 2 voxels of it
    assert all(abs(a.start - b.start) <= 2 and abs(a.stop - b.stop) <= 2 for a, b in zip(box, reference, strict=True))


def test_sc_crop_missing_is_one_line(monkeypatch):
    """sc-crop may be installed here: a ``None`` entry in ``sys.modules`` makes it missing for this test."""
    monkeypatch.setitem(sys.modules, "sc_crop", None)
    with pytest.raises(RootletsError, match=r"no cord mask was given and sc-crop is not installed; run `pip install sc-crop`"):
        detected_box(make_phantom("LPI", (2.0, 2.0, 2.0)).nifti("image"), CROP_MARGIN_MM)
