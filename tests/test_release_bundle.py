"""The bundled phantom release is shaped exactly like a real RootletSeg release and loads in stock nnU-Net."""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import rootlets_task

DATA = Path(rootlets_task.__file__).parent / "data"
ZIP = DATA / "model-spinal-rootlets-phantom.zip"
MANIFEST = DATA / "phantom_manifest.json"
TRAINER_FOLDER = re.compile(r"nnUNetTrainer\w*__nnUNetPlans__3d_fullres")
INFERENCE_KEYS = {"network_weights", "trainer_name", "init_args", "inference_allowed_mirroring_axes"}


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads(MANIFEST.read_text())


@pytest.fixture(scope="module")
def members() -> dict[str, bytes]:
    with zipfile.ZipFile(ZIP) as zf:
        return {info.filename: zf.read(info) for info in zf.infolist() if not info.is_dir()}


def test_manifest_describes_the_zip(manifest):
    data = ZIP.read_bytes()
    assert manifest["tag"] == "phantom" and manifest["file"] == ZIP.name
    assert manifest["sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["size_bytes"] == len(data) < 2 * 1024 * 1024
    assert manifest["levels"] == list(range(2, 10)) and manifest["contrasts"] == ["T2w"]
    scores = manifest["heldout_dice"]
    assert set(scores["per_level"]) == {str(k) for k in range(2, 10)}
    assert scores["mean"] == pytest.approx(np.mean(list(scores["per_level"].values())), abs=1e-3)
    assert scores["mean"] >= 0.6, "the phantom release must really segment the phantom"


def test_layout_of_a_real_release(members, manifest):
    tops = {name.split("/")[0] for name in members}
    assert len(tops) == 1, f"one trainer folder expected, got {tops}"
    (top,) = tops
    assert TRAINER_FOLDER.fullmatch(top) and top == manifest["trainer_folder"]
    assert all(not name.startswith("/") and ".." not in name.split("/") for name in members)

    dataset = json.loads(members[f"{top}/dataset.json"])
    assert list(dataset["labels"].items()) == [("background", 0)] + [(f"lvl{k}", k) for k in range(1, 10)]
    assert dataset["labels"] == manifest["labels"]
    assert dataset["channel_names"] == {"0": "T2w"} and dataset["file_ending"] == ".nii.gz"
    plans = json.loads(members[f"{top}/plans.json"])
    assert "3d_fullres" in plans["configurations"]

    checkpoints = [name for name in members if re.fullmatch(rf"{top}/fold_(\d+|all)/checkpoint_final\.pth", name)]
    assert checkpoints
    for name in checkpoints:
        # weights_only=True: the slim checkpoint holds only tensors and plain Python values.
        ckpt = torch.load(io.BytesIO(members[name]), map_location="cpu", weights_only=True)
        assert set(ckpt) == INFERENCE_KEYS
        assert ckpt["trainer_name"] == "nnUNetTrainer"
        assert ckpt["init_args"]["configuration"] == "3d_fullres"


def test_stock_predictor_loads_and_runs_it(tmp_path, members):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    with zipfile.ZipFile(ZIP) as zf:
        zf.extractall(tmp_path)
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    predictor = nnUNetPredictor(use_mirroring=False, perform_everything_on_device=False, device=torch.device("cpu"),
                                allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(folder), use_folds=None)
    assert predictor.trainer_name == "nnUNetTrainer"
    assert predictor.label_manager.all_labels == list(range(10))
    predictor.network.load_state_dict(predictor.list_of_parameters[0])  # strict: weights fit the planned network
    patch = predictor.configuration_manager.patch_size
    with torch.no_grad():
        logits = predictor.network.eval()(torch.zeros(1, 1, *patch))
    assert tuple(logits.shape) == (1, 10, *patch)
