"""Build the tiny ``phantom`` model release: train a real nnU-Net v2 on synthetic phantoms on CPU and package it.

The result is shaped exactly like a RootletSeg release zip (one ``nnUNetTrainer__nnUNetPlans__3d_fullres/`` folder
with ``dataset.json``, ``plans.json`` and ``fold_0/checkpoint_final.pth``), so the package's install and inference
code paths are exercised for real, offline, in seconds. It is a test and demo model: it only knows the phantom.

Steps: seeded phantoms (SCT LPI = nibabel RAS, the orientation SCT feeds the model) -> nnU-Net raw dataset ->
nnU-Net's own fingerprint + planner -> the planned ``3d_fullres`` configuration shrunk to a tiny network and a patch
that fits the phantom -> nnU-Net preprocessing -> short CPU training with a subclass of ``nnUNetTrainer`` ->
checkpoint stripped to the inference keys with ``trainer_name`` set to the built-in ``nnUNetTrainer`` -> zip ->
held-out Dice per level, predicted from the zip exactly as SCT runs a release -> manifest.

Usage: ``python model_release/build_phantom_release.py [--epochs N] [--iterations N] [--work DIR] [--keep]``.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rootlets_task.io.metrics import dice_per_level  # noqa: E402
from rootlets_task.io.nifti import reorient, sct_to_axcodes, undo_reorient  # noqa: E402
from rootlets_task.io.phantom import SPINAL_LEVELS, make_phantom  # noqa: E402

DATA_DIR = REPO / "src" / "rootlets_task" / "data"
ZIP_NAME = "model-spinal-rootlets-phantom.zip"
MANIFEST_NAME = "phantom_manifest.json"
DATASET_ID, DATASET_NAME = 501, "Dataset501_RootletsPhantom"
CONFIGURATION = "3d_fullres"
TRAINER_FOLDER = f"nnUNetTrainer__nnUNetPlans__{CONFIGURATION}"
MODEL_ORIENTATION = "LPI"  # SCT code; what SCT feeds a model whose dataset.json has no image_orientation
LABELS = {"background": 0, **{f"lvl{k}": k for k in range(1, 10)}}  # lvl1 (C1) exists but is never trained
MAX_ZIP_BYTES = 2 * 1024 * 1024


@dataclass
class Settings:
    """Everything that decides the release; recorded in the manifest so a rebuild can be compared."""

    train_seeds: list[int] = field(default_factory=lambda: list(range(100, 116)))
    # Per-array-axis spacing (LPI: x=R-L, y=A-P, z=S-I); cycled over the training seeds.
    train_spacings: list[tuple[float, float, float]] = field(default_factory=lambda: [
        (1.0, 1.0, 1.0), (0.8, 0.8, 0.8), (1.2, 1.2, 1.2), (0.9, 0.9, 1.1), (1.1, 1.1, 0.9),
        (0.8, 0.8, 1.6), (0.6, 0.6, 2.0), (1.0, 1.0, 1.0)])
    train_tilts: list[float] = field(default_factory=lambda: [0.0, 0.0, 6.0, 0.0, -6.0, 0.0, 0.0, 3.0])
    target_spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    patch_size: tuple[int, int, int] = (64, 32, 32)  # (S-I, A-P, R-L) after nnU-Net's [2,1,0] transpose
    features_per_stage: tuple[int, ...] = (8, 16, 32, 32)
    n_conv_per_stage: tuple[int, ...] = (1, 2, 2, 2)
    batch_size: int = 2
    epochs: int = 100
    iterations_per_epoch: int = 50
    val_iterations_per_epoch: int = 3
    initial_lr: float = 1e-2
    head_lr_scale: float = 30.0
    mirror_axes: str = "R-L"  # the phantom is left-right symmetric: the only anatomically true flip
    rotation_deg: float = 10.0
    scaling: tuple[float, float] = (0.85, 1.15)
    oversample_foreground: float = 0.66
    init_from: str | None = None  # checkpoint whose network_weights start the training (None = from scratch)
    torch_threads: int = 1  # on a shared 2-core machine, 2 threads were 10x slower than 1 (spin-waiting)
    seed: int = 12345
    heldout: list[tuple[int, str, tuple[float, float, float]]] = field(default_factory=lambda: [
        (900, "LPI", (1.0, 1.0, 1.0)), (901, "RPI", (0.8, 0.8, 0.8)), (902, "PSR", (1.0, 1.0, 1.0)),
        (903, "AIL", (0.9, 0.9, 0.9)), (904, "LPI", (0.7, 0.7, 1.5)), (905, "RPI", (1.1, 1.1, 1.1))])


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------- dataset and plans
def write_raw_dataset(raw_dir: Path, settings: Settings) -> list[str]:
    """Training phantoms in the model orientation as an nnU-Net raw dataset; returns the case ids."""
    images, labels = raw_dir / "imagesTr", raw_dir / "labelsTr"
    images.mkdir(parents=True)
    labels.mkdir()
    cases = []
    for i, seed in enumerate(settings.train_seeds):
        spacing = settings.train_spacings[i % len(settings.train_spacings)]
        tilt = settings.train_tilts[i % len(settings.train_tilts)]
        ph = make_phantom(MODEL_ORIENTATION, spacing, seed=seed, tilt_deg=tilt)
        case = f"phantom_{seed:03d}"
        nib.save(ph.nifti("image"), images / f"{case}_0000.nii.gz")
        nib.save(ph.nifti("rootlets"), labels / f"{case}.nii.gz")
        cases.append(case)
    dataset = {"channel_names": {"0": "T2w"}, "labels": LABELS, "numTraining": len(cases), "file_ending": ".nii.gz",
               "name": "RootletsPhantom", "description": "Synthetic rootlets phantom (rootlets_task.io.phantom); "
               "values = spinal levels 2..9 (C2..T1)", "licence": "MIT"}
    (raw_dir / "dataset.json").write_text(json.dumps(dataset, indent=2))
    return cases


def tiny_configuration(config: dict, settings: Settings) -> dict:
    """Shrink the planner's 3d_fullres configuration: tiny U-Net, patch fitted to the phantom, fixed spacing."""
    config = json.loads(json.dumps(config))
    n = len(settings.features_per_stage)
    arch = config["architecture"]["arch_kwargs"]
    arch.update(n_stages=n, features_per_stage=list(settings.features_per_stage),
                kernel_sizes=[[3, 3, 3]] * n, strides=[[1, 1, 1]] + [[2, 2, 2]] * (n - 1),
                n_conv_per_stage=list(settings.n_conv_per_stage), n_conv_per_stage_decoder=list(settings.n_conv_per_stage[:-1]))
    divisor = 2 ** (n - 1)
    if any(p % divisor for p in settings.patch_size):
        raise ValueError(f"patch {settings.patch_size} must be divisible by {divisor} for {n} stages")
    config.update(patch_size=list(settings.patch_size), batch_size=settings.batch_size, batch_dice=True,
                  spacing=list(settings.target_spacing))
    return config


def plan_and_preprocess(settings: Settings, cases: list[str], preprocessed: Path) -> dict:
    """nnU-Net fingerprint + ExperimentPlanner, then the tiny 3d_fullres, then nnU-Net preprocessing."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprint_dataset,
        plan_experiment_dataset,
        preprocess_dataset,
    )

    extract_fingerprint_dataset(DATASET_ID, num_processes=1, check_dataset_integrity=True, verbose=False,
                                show_progress_bar=False)
    plan_experiment_dataset(DATASET_ID, overwrite_target_spacing=settings.target_spacing)
    plans_file = preprocessed / DATASET_NAME / "nnUNetPlans.json"
    plans = json.loads(plans_file.read_text())
    plans["configurations"] = {CONFIGURATION: tiny_configuration(plans["configurations"][CONFIGURATION], settings)}
    plans_file.write_text(json.dumps(plans, indent=2))
    preprocess_dataset(DATASET_ID, "nnUNetPlans", [CONFIGURATION], [1], verbose=False, show_progress_bar=False)
    # One fold: train on all but one case; the held-out evaluation uses unseen seeds anyway.
    splits = [{"train": cases[1:], "val": cases[:1]}]
    (preprocessed / DATASET_NAME / "splits_final.json").write_text(json.dumps(splits, indent=2))
    return plans


# ------------------------------------------------------------------------------------------------------ training
def train(settings: Settings, plans: dict, dataset_json: dict) -> Path:
    """Short CPU training with a subclass of the stock trainer; returns the final checkpoint."""
    import torch
    from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform
    from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
    from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
    from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
    from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform
    from batchgeneratorsv2.transforms.utils.random import RandomTransform
    from batchgeneratorsv2.transforms.utils.remove_label import RemoveLabelTansform
    from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    # Array axes seen by the network: nibabel (x=R-L, y=A-P, z=S-I) transposed [2,1,0], then transpose_forward.
    lr_axis = plans["transpose_forward"].index(2)
    rotation = np.deg2rad(settings.rotation_deg)

    class GroupPolyLR(PolyLRScheduler):
        """nnU-Net's polynomial decay, keeping each parameter group's ``lr_scale``."""

        def step(self, current_step=None):
            super().step(current_step)
            for group in self.optimizer.param_groups:
                group["lr"] *= group["lr_scale"]
            self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    class PhantomTrainer(nnUNetTrainer):
        """Stock nnUNetTrainer with a short schedule and augmentation that keeps the phantom's level cue.

        The level of a rootlet is its grey value, so the stock gamma/contrast/brightness augmentations (which
        remap grey values) are left out; spatial (small rotation, scaling), blur and left-right mirroring stay.
        """

        def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                     device: torch.device | None = None):
            super().__init__(plans, configuration, fold, dataset_json, device or torch.device("cpu"))
            self.num_epochs = settings.epochs
            self.num_iterations_per_epoch = settings.iterations_per_epoch
            self.num_val_iterations_per_epoch = settings.val_iterations_per_epoch
            self.initial_lr = settings.initial_lr
            self.oversample_foreground_percent = settings.oversample_foreground
            self.save_every = 10 ** 9

        def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
            _, dummy_2d, _, _ = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
            from nnunetv2.training.data_augmentation.compute_initial_patch_size import get_patch_size

            patch = self.configuration_manager.patch_size
            initial = get_patch_size(patch, (-rotation, rotation), (-rotation, rotation), (-rotation, rotation),
                                     settings.scaling)
            self.inference_allowed_mirroring_axes = (lr_axis,)
            return (-rotation, rotation), dummy_2d, initial, (lr_axis,)

        @staticmethod
        def get_training_transforms(patch_size, rotation_for_DA, deep_supervision_scales, mirror_axes,
                                    do_dummy_2d_data_aug, **_):
            return ComposeTransforms([
                SpatialTransform(patch_size, patch_center_dist_from_border=0, random_crop=False, p_elastic_deform=0,
                                 p_rotation=0.3, rotation=rotation_for_DA, p_scaling=0.3, scaling=settings.scaling,
                                 p_synchronize_scaling_across_axes=1, bg_style_seg_sampling=False,
                                 border_mode_seg="constant", padding_value_seg=-1),
                RandomTransform(GaussianBlurTransform(blur_sigma=(0.3, 0.8), synchronize_channels=True,
                                                      synchronize_axes=False, p_per_channel=1), apply_probability=0.2),
                MirrorTransform(allowed_axes=mirror_axes),
                RemoveLabelTansform(-1, 0),
                DownsampleSegForDSTransform(ds_scales=deep_supervision_scales),
            ])

        def configure_optimizers(self):
            # Rootlet levels differ by a small grey-value step, so the output layers need large weights; Adam moves
            # each weight by about lr per step, so the segmentation heads get a larger learning rate. With nnU-Net's
            # SGD, or Adam at one rate, the network labelled every rootlet with one level for hundreds of iterations.
            heads = [p for name, p in self.network.named_parameters() if "seg_layers" in name]
            head_ids = {id(p) for p in heads}
            body = [p for p in self.network.parameters() if id(p) not in head_ids]
            optimizer = torch.optim.AdamW([{"params": body, "lr_scale": 1.0},
                                           {"params": heads, "lr_scale": settings.head_lr_scale}],
                                          self.initial_lr, weight_decay=self.weight_decay)
            return optimizer, GroupPolyLR(optimizer, self.initial_lr, self.num_epochs)

        def plot_network_architecture(self):
            pass  # needs hiddenlayer/graphviz; irrelevant here

    os.environ["nnUNet_n_proc_DA"] = "0"  # single-threaded augmentation: no worker processes
    torch.manual_seed(settings.seed)
    np.random.seed(settings.seed)
    torch.set_num_threads(settings.torch_threads)
    plans = dict(plans, continue_training=False)
    trainer = PhantomTrainer(plans, CONFIGURATION, 0, dataset_json, device=torch.device("cpu"))
    if settings.init_from:  # continue from an earlier build's weights (a longer schedule in several sittings)
        trainer.initialize()
        weights = torch.load(settings.init_from, map_location="cpu", weights_only=False)["network_weights"]
        trainer.network.load_state_dict(weights)
    trainer.run_training()
    return Path(trainer.output_folder) / "checkpoint_final.pth"


# ----------------------------------------------------------------------------------------------------- packaging
def package(checkpoint: Path, plans: dict, dataset_json: dict, zip_path: Path) -> None:
    """Write the release zip: one trainer folder, dataset.json, plans.json, fold_0 with a stock-loadable checkpoint."""
    import torch

    full = torch.load(checkpoint, map_location="cpu", weights_only=False)
    slim = {
        "network_weights": full["network_weights"],  # decoder.encoder.* shares storage with encoder.*: saved once
        "trainer_name": "nnUNetTrainer",  # built-in, so stock nnUNetPredictor needs no custom trainer class
        "init_args": {"configuration": CONFIGURATION, "fold": 0},
        "inference_allowed_mirroring_axes": tuple(int(a) for a in full["inference_allowed_mirroring_axes"]),
    }
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "checkpoint_final.pth"
        torch.save(slim, ckpt)
        fixed = (2025, 1, 1, 0, 0, 0)  # fixed timestamps: same content -> same zip bytes
        zip_path.parent.mkdir(parents=True, exist_ok=True)
        partial = zip_path.with_name(zip_path.name + ".partial")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
            for name, payload in ((f"{TRAINER_FOLDER}/dataset.json", json.dumps(dataset_json, indent=2).encode()),
                                  (f"{TRAINER_FOLDER}/plans.json", json.dumps(plans, indent=2).encode()),
                                  (f"{TRAINER_FOLDER}/fold_0/checkpoint_final.pth", ckpt.read_bytes())):
                info = zipfile.ZipInfo(name, date_time=fixed)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                zf.writestr(info, payload)
        os.replace(partial, zip_path)


# ---------------------------------------------------------------------------------------------------- evaluation
def evaluate(zip_path: Path, settings: Settings) -> dict:
    """Held-out Dice per level, predicting from the packaged zip the way SCT runs a release."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(tmp)
        predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                    perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                                    verbose_preprocessing=False, allow_tqdm=False)
        predictor.initialize_from_trained_model_folder(str(Path(tmp) / TRAINER_FOLDER), use_folds=(0,))
        cases = []
        for seed, orient, spacing in settings.heldout:
            ph = make_phantom(orient, spacing, seed=seed)
            data, lpi_spacing, inverse = reorient(ph.nifti("image"), sct_to_axcodes(MODEL_ORIENTATION))
            x = np.asarray(data, np.float32).transpose(2, 1, 0)[None]
            seg = predictor.predict_single_npy_array(x, {"spacing": list(lpi_spacing[::-1])})
            pred = undo_reorient(np.asarray(seg).transpose(2, 1, 0).astype(np.uint8), inverse)
            per_level = {str(k): v for k, v in dice_per_level(pred, ph.rootlets, SPINAL_LEVELS).items()}
            cases.append({"seed": seed, "orientation": orient, "spacing": list(spacing), "dice": per_level,
                          "mean": float(np.nanmean(list(per_level.values())))})
            log(f"held-out seed {seed} {orient} {spacing}: mean Dice {cases[-1]['mean']:.3f}")
    per_level = {str(k): round(float(np.nanmean([c["dice"][str(k)] for c in cases])), 4) for k in SPINAL_LEVELS}
    for c in cases:
        c["dice"] = {k: round(v, 4) for k, v in c["dice"].items()}
        c["mean"] = round(c["mean"], 4)
    return {"per_level": per_level, "mean": round(float(np.mean(list(per_level.values()))), 4), "cases": cases}


# ---------------------------------------------------------------------------------------------------------- main
def build(settings: Settings, work: Path, out_dir: Path) -> dict:
    """Run every step in ``work``; write the zip and manifest into ``out_dir``; return the manifest."""
    start = time.time()
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ[name] = str(work / name)
        (work / name).mkdir(parents=True, exist_ok=True)
    os.environ["nnUNet_n_proc_DA"] = "1"  # the planner needs >= 1 (it sets torch threads from it); see train()
    os.environ["nnUNet_def_n_proc"] = "1"
    os.environ["nnUNet_compile"] = "false"

    import nnunetv2
    import torch

    log("writing training phantoms")
    cases = write_raw_dataset(work / "nnUNet_raw" / DATASET_NAME, settings)
    log("planning and preprocessing with nnU-Net")
    plans = plan_and_preprocess(settings, cases, work / "nnUNet_preprocessed")
    dataset_json = json.loads((work / "nnUNet_raw" / DATASET_NAME / "dataset.json").read_text())
    log("training on CPU")
    t_train = time.time()
    checkpoint = train(settings, plans, dataset_json)
    train_seconds = time.time() - t_train
    log(f"training took {train_seconds:.0f} s")

    zip_path = out_dir / ZIP_NAME
    package(checkpoint, plans, dataset_json, zip_path)
    size = zip_path.stat().st_size
    if size >= MAX_ZIP_BYTES:
        raise SystemExit(f"{zip_path} is {size} bytes, over the 2 MB limit: shrink features_per_stage")
    log(f"packaged {zip_path} ({size} bytes); evaluating on held-out phantoms")
    scores = evaluate(zip_path, settings)
    manifest = {
        "tag": "phantom",
        "file": ZIP_NAME,
        "sha256": sha256(zip_path),
        "size_bytes": size,
        "trainer_folder": TRAINER_FOLDER,
        "folds": [0],
        "labels": LABELS,
        "levels": list(SPINAL_LEVELS),
        "contrasts": ["T2w"],
        "image_orientation": MODEL_ORIENTATION,
        "description": "Tiny nnU-Net v2 trained on CPU on the synthetic rootlets phantom (rootlets_task.io.phantom); "
                       "test and demo release only, it does not segment real MRI. Built by "
                       "model_release/build_phantom_release.py.",
        "heldout_dice": scores,
        "training": {k: v for k, v in asdict(settings).items() if k != "heldout"},
        "training_wall_time_s": round(train_seconds, 1),
        "versions": {"nnunetv2": nnunetv2.__version__ if hasattr(nnunetv2, "__version__") else _dist_version("nnunetv2"),
                     "torch": torch.__version__, "python": sys.version.split()[0]},
        "build_date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": round(time.time() - start, 1),
    }
    (out_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    log(f"held-out mean Dice {scores['mean']:.3f} per level {scores['per_level']}; total {manifest['wall_time_s']} s")
    return manifest


def _dist_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=Settings.epochs)
    parser.add_argument("--iterations", type=int, default=Settings.iterations_per_epoch, help="training iterations per epoch")
    parser.add_argument("--lr", type=float, default=Settings.initial_lr, help="initial learning rate (AdamW)")
    parser.add_argument("--init-from", help="start from this checkpoint's network_weights (e.g. a previous build's "
                        "fold_0/checkpoint_final.pth) instead of random weights")
    parser.add_argument("--threads", type=int, default=Settings.torch_threads, help="torch threads for training")
    parser.add_argument("--out", type=Path, default=DATA_DIR, help="folder for the zip and manifest (default: %(default)s)")
    parser.add_argument("--work", type=Path, help="work folder (default: a temporary folder, deleted afterwards)")
    parser.add_argument("--min-dice", type=float, default=0.6, help="fail if the held-out mean Dice is lower")
    args = parser.parse_args(argv)
    settings = Settings(epochs=args.epochs, iterations_per_epoch=args.iterations, torch_threads=args.threads,
                        initial_lr=args.lr, init_from=args.init_from)
    work = args.work or Path(tempfile.mkdtemp(prefix="rootlets_phantom_release_"))
    try:
        manifest = build(settings, work, args.out)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    if manifest["heldout_dice"]["mean"] < args.min_dice:
        print(f"held-out mean Dice {manifest['heldout_dice']['mean']} < {args.min_dice}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
