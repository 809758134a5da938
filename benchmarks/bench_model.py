"""Build (once) the realistic benchmark model: nnU-Net v2 3d_fullres planned for 64x320x320 T2w at 0.8 mm, random weights.

nnU-Net's own fingerprinting and experiment planning run on a few synthetic cases, so patch size, network depth and
feature counts are what nnU-Net chooses for images like RootletSeg's. The weights are random (seeded): the model is
for timing and for backend-vs-PyTorch numerical checks, not for agreement (the phantom release covers that).
The release folder is cached outside the repository, by default in ~/.cache/rootlets_task/bench.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np

SHAPE = (64, 320, 320)  # nibabel x, y, z (LPI / RAS): 64 sagittal slices
SPACING = 0.8
N_CASES = 3
DATASET_ID, DATASET_NAME = 991, "Dataset991_RootletsBench"
TRAINER_DIR = "nnUNetTrainer__nnUNetPlans__3d_fullres"
LABELS = {"background": 0, **{f"lvl{i}": i for i in range(1, 10)}}


def cache_dir() -> Path:
    """Benchmark cache root (``ROOTLETS_BENCH_CACHE`` overrides ~/.cache/rootlets_task/bench)."""
    return Path(os.environ.get("ROOTLETS_BENCH_CACHE", Path.home() / ".cache" / "rootlets_task" / "bench"))


def synthetic_case(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A T2w-like volume (bright canal, darker cord, noise) with 9 label blobs along the cord: image, labels, cord, affine."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in SHAPE], indexing="ij")
    cx, cy = SHAPE[0] / 2 + rng.normal(0, 2), SHAPE[1] / 2 + 10 * np.sin(z / 90.0)
    r = np.hypot((x - cx) / 1.0, (y - cy) / 0.7)
    image = 0.3 + 0.7 * (r < 18) - 0.4 * (r < 8) + rng.normal(0, 0.05, SHAPE).astype(np.float32)
    labels = np.zeros(SHAPE, np.uint8)
    for level in range(1, 10):
        zc = 20 + level * 30
        blob = (np.abs(z - zc) < 6) & (r > 8) & (r < 14)
        labels[blob] = level
        image[blob] -= 0.3
    affine = np.diag([SPACING, SPACING, SPACING, 1.0])
    return (image * 1000).astype(np.float32), labels, (r < 8).astype(np.uint8), affine


def _plan(work: Path) -> Path:
    """Run nnU-Net fingerprinting and 3d_fullres planning on synthetic cases; return the plans file."""
    raw, pre = work / "nnUNet_raw", work / "nnUNet_preprocessed"
    os.environ.update(nnUNet_raw=str(raw), nnUNet_preprocessed=str(pre), nnUNet_results=str(work / "nnUNet_results"))
    ds = raw / DATASET_NAME
    (ds / "imagesTr").mkdir(parents=True, exist_ok=True)
    (ds / "labelsTr").mkdir(parents=True, exist_ok=True)
    for i in range(N_CASES):
        image, labels, _, affine = synthetic_case(i)
        nib.save(nib.Nifti1Image(image, affine), ds / "imagesTr" / f"case_{i:03d}_0000.nii.gz")
        nib.save(nib.Nifti1Image(labels, affine), ds / "labelsTr" / f"case_{i:03d}.nii.gz")
    (ds / "dataset.json").write_text(json.dumps({"channel_names": {"0": "T2w"}, "labels": LABELS,
                                                 "numTraining": N_CASES, "file_ending": ".nii.gz"}, indent=2))
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, plan_experiments

    extract_fingerprints([DATASET_ID], num_processes=1, check_dataset_integrity=True)
    plan_experiments([DATASET_ID])
    return pre / DATASET_NAME / "nnUNetPlans.json"


def build_release(dest: Path, plans_file: Path, seed: int = 0) -> Path:
    """Write a release folder (dataset.json, plans.json, fold_0/checkpoint_final.pth) with seeded random weights."""
    import torch
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = json.loads(plans_file.read_text())
    cm = PlansManager(plans).get_configuration("3d_fullres")
    torch.manual_seed(seed)
    net = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                 cm.network_arch_init_kwargs_req_import, 1, len(LABELS), deep_supervision=False)
    folder = dest / TRAINER_DIR
    (folder / "fold_0").mkdir(parents=True, exist_ok=True)
    (folder / "plans.json").write_text(json.dumps(plans, indent=2))
    (folder / "dataset.json").write_text(json.dumps({"channel_names": {"0": "T2w"}, "labels": LABELS, "numTraining": N_CASES,
                                                     "file_ending": ".nii.gz"}, indent=2))
    torch.save({"network_weights": net.state_dict(), "trainer_name": "nnUNetTrainer",
                "init_args": {"configuration": "3d_fullres"}, "inference_allowed_mirroring_axes": (0, 1, 2)},
               folder / "fold_0" / "checkpoint_final.pth")
    return folder


def benchmark_model(rebuild: bool = False) -> Path:
    """Return the cached realistic model folder (``.../model/nnUNetTrainer__nnUNetPlans__3d_fullres``), building it if needed."""
    root = cache_dir()
    folder = root / "model" / TRAINER_DIR
    if (folder / "fold_0" / "checkpoint_final.pth").exists() and not rebuild:
        return folder
    work = root / "planning"
    shutil.rmtree(work, ignore_errors=True)
    plans_file = _plan(work)
    shutil.rmtree(root / "model", ignore_errors=True)
    return build_release(root / "model", plans_file)


def write_benchmark_image(path: Path, seed: int = 100) -> Path:
    """A 64x320x320 0.8 mm LPI image like the planning cases, and its cord mask beside it (``*_cord.nii.gz``)."""
    image, _, cord, affine = synthetic_case(seed)
    nib.save(nib.Nifti1Image(image, affine), path)
    nib.save(nib.Nifti1Image(cord, affine), path.with_name(path.name.replace(".nii.gz", "_cord.nii.gz")))
    return path


if __name__ == "__main__":
    print(benchmark_model(rebuild=True))
