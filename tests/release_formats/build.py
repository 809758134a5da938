"""Build one tiny model release zip with the nnU-Net version installed in the running Python.

Run it with the Python of a side virtual environment that holds exactly one nnU-Net v2 version (``nnunetv2`` or
``nnunetv2-neuropoly``); see README.md beside this file for the versions, pins and the rebuild script. Everything is
that version's own: fingerprint, planner, preprocessing (its command-line tools), trainer class, checkpoint writer.

Steps: seeded phantoms (``rootlets_task.io.phantom``, 2 mm, labels background + lvl1..lvl9) -> nnU-Net raw dataset ->
``nnUNetv2_plan_and_preprocess --no_pp`` -> the planned ``3d_fullres`` shrunk in place (3
stages, 4-16 features, patch 32^3) -> ``nnUNetv2_preprocess`` -> ``fold_all`` trained on CPU by the real trainer
class (``nnUNetTrainer_2000epochs``, or the custom class of ``trainer_class.py``) with its schedule cut on the
instance to a few iterations -> zip laid out like the RootletSeg releases, checkpoint byte-for-byte as nnU-Net wrote
it -> the writing version's own predictor tries the zip -> an entry in ``manifest.json``.

Usage: ``VENV/bin/python tests/release_formats/build.py [--variant plain|trainer_class|crop_metadata]
[--checkpoint final|best] [--out tests/data/release_formats]``.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib.util
import inspect
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
from pickle_globals import checkpoint_globals, data_pkl, pickle_protocol  # noqa: E402

from rootlets_task.io.phantom import make_phantom  # noqa: E402

DATASET_ID, DATASET_NAME = 571, "Dataset571_RootletsFormats"
CONFIGURATION = "3d_fullres"
TRAINER = "nnUNetTrainer_2000epochs"  # the class of the RootletSeg releases (r20240129 ... r20250318)
LABELS = {"background": 0, **{f"lvl{k}": k for k in range(1, 10)}}
SPACING = (2.0, 2.0, 2.0)
SEEDS = (100, 101, 102, 103)
EPOCHS, ITERATIONS, VAL_ITERATIONS = 2, 3, 1
FEATURES, PATCH = (4, 8, 16), (32, 32, 32)
# crop_metadata.json as SCT HEAD reads it (deepseg/models.py CROP_PAD_KEYS); sc_crop.detect() takes them in mm
CROP_METADATA = {"pad_superior": 40.0, "pad_inferior": 100.0, "pad_left": 15.0, "pad_right": 15.0,
                 "pad_anterior": 15.0, "pad_posterior": 22.0}
FIXED_TIME = (2025, 1, 1, 0, 0, 0)
MAX_ZIP_BYTES = 1 << 20


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def nnunet_distribution() -> tuple[str, str]:
    """(distribution, version) of the nnU-Net v2 installed here: ``nnunetv2`` or ``nnunetv2-neuropoly``."""
    found = []
    for dist in ("nnunetv2", "nnunetv2-neuropoly"):
        try:
            found.append((dist, metadata.version(dist)))
        except metadata.PackageNotFoundError:
            pass
    if len(found) != 1:
        raise SystemExit(f"need exactly one nnU-Net v2 distribution in this Python, found {found or 'none'}")
    return found[0]


def versions() -> dict:
    """Versions of everything that shapes the checkpoint and plans."""
    out = {"python": platform.python_version()}
    for dist in ("torch", "numpy", "dynamic-network-architectures", "acvl-utils", "batchgenerators",
                 "batchgeneratorsv2", "blosc2", "SimpleITK", "nibabel", "scipy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


# ---------------------------------------------------------------------------------------------- dataset and plans
def write_raw_dataset(raw: Path) -> None:
    """Four 2 mm phantoms (SCT LPI, the orientation SCT feeds a release) as an nnU-Net raw dataset."""
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    for seed in SEEDS:
        ph = make_phantom("LPI", SPACING, seed=seed)
        image = nib.Nifti1Image(ph.image, ph.affine)  # int16, as write_phantom saves it
        label = nib.Nifti1Image(ph.rootlets.astype(np.uint8), ph.affine)
        for img in (image, label):
            img.set_qform(ph.affine, code=1)
            img.set_sform(ph.affine, code=1)
        nib.save(image, raw / "imagesTr" / f"phantom_{seed}_0000.nii.gz")
        nib.save(label, raw / "labelsTr" / f"phantom_{seed}.nii.gz")
    dataset = {"channel_names": {"0": "T2w"}, "labels": LABELS, "numTraining": len(SEEDS), "file_ending": ".nii.gz",
               "name": "RootletsFormats", "description": "rootlets_task phantom, 2 mm; format test release only"}
    (raw / "dataset.json").write_text(json.dumps(dataset, indent=2))


def nnunet_cli(tool: str, *args: str) -> None:
    """Run one of this version's own command-line tools (beside the running Python)."""
    exe = Path(sys.executable).parent / tool
    log(f"{tool} {' '.join(args)}")
    subprocess.run([str(exe), *args], check=True, stdout=subprocess.DEVNULL)


def shrink(config: dict) -> str:
    """Shrink the planned 3d_fullres in place (either plans format); returns the format's name."""
    n = len(FEATURES)
    kernels, strides = [[3, 3, 3]] * n, [[1, 1, 1]] + [[2, 2, 2]] * (n - 1)
    config.update(patch_size=list(PATCH), batch_size=2)
    if "architecture" in config:  # nnU-Net >= 2.4: network class + kwargs
        config["architecture"]["arch_kwargs"].update(
            n_stages=n, features_per_stage=list(FEATURES), kernel_sizes=kernels, strides=strides,
            n_conv_per_stage=[2] * n, n_conv_per_stage_decoder=[2] * (n - 1))
        return "architecture"
    config.update(UNet_base_num_features=FEATURES[0], unet_max_num_features=FEATURES[-1], conv_kernel_sizes=kernels,
                  pool_op_kernel_sizes=strides, num_pool_per_axis=[n - 1] * 3, n_conv_per_stage_encoder=[2] * n,
                  n_conv_per_stage_decoder=[2] * (n - 1))
    return "UNet_class_name"


def plan_and_preprocess(work: Path) -> str:
    """This version's fingerprint, planner and preprocessing, with the tiny 3d_fullres; returns the plans format."""
    # fingerprint + plan in one tool: 2.1's nnUNetv2_plan_experiment entry point runs the preprocessing instead
    nnunet_cli("nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-npfp", "1", "--verify_dataset_integrity",
               "--no_pp")
    plans_file = work / "nnUNet_preprocessed" / DATASET_NAME / "nnUNetPlans.json"
    plans = json.loads(plans_file.read_text())
    plans_format = shrink(plans["configurations"][CONFIGURATION])
    plans_file.write_text(json.dumps(plans, indent=4))
    nnunet_cli("nnUNetv2_preprocess", "-d", str(DATASET_ID), "-c", CONFIGURATION, "-np", "1")
    return plans_format


# ------------------------------------------------------------------------------------------------------ training
def trainer_class(variant: str):
    """The real class to train with: ``nnUNetTrainer_2000epochs``, or ``get_trainer_class()`` of trainer_class.py."""
    if variant == "trainer_class":
        spec = importlib.util.spec_from_file_location("trainer_class", HERE / "trainer_class.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.get_trainer_class()
    from nnunetv2.training.nnUNetTrainer.variants.training_length.nnUNetTrainer_Xepochs import (
        nnUNetTrainer_2000epochs,
    )

    return nnUNetTrainer_2000epochs


def lr_scheduler_shim() -> list[str]:
    """torch >= 2.7 dropped ``LRScheduler(optimizer, last_epoch, verbose)``; nnU-Net <= 2.5's PolyLRScheduler still
    passes ``verbose=False`` positionally. Accept and ignore it (the scheduler is not part of the checkpoint)."""
    from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
    from torch.optim.lr_scheduler import LRScheduler

    passes_verbose = "-1, False)" in inspect.getsource(PolyLRScheduler.__init__)
    if not passes_verbose or "verbose" in inspect.signature(LRScheduler.__init__).parameters:
        return []
    original = LRScheduler.__init__

    def init(self, optimizer, last_epoch=-1, verbose=None):  # noqa: ARG001 - the argument torch removed
        original(self, optimizer, last_epoch)

    LRScheduler.__init__ = init
    return ["torch.optim.lr_scheduler.LRScheduler.__init__ accepts and ignores the removed positional `verbose` "
            "argument that nnU-Net <= 2.5's PolyLRScheduler passes (torch >= 2.7 removed it)"]


def augmenter_finish_shim() -> list[str]:
    """nnU-Net 2.2.1's on_train_end calls ``_finish()`` on its data loaders unguarded; the single-threaded augmenter
    (``nnUNet_n_proc_DA=0``, used here to keep the load low) has none. Give it a no-op (after the final checkpoint)."""
    from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    source = inspect.getsource(nnUNetTrainer.on_train_end)
    if "_finish" not in source or "isinstance" in source or hasattr(SingleThreadedAugmenter, "_finish"):
        return []
    SingleThreadedAugmenter._finish = lambda self: None
    return ["batchgenerators SingleThreadedAugmenter gets a no-op _finish(), which this version's on_train_end "
            "calls after writing checkpoint_final.pth"]


def train(work: Path, variant: str) -> tuple[Path, list[str]]:
    """Train fold_all on CPU; returns the trainer's output folder (nnU-Net's results layout) and the shims used."""
    import torch

    shims = lr_scheduler_shim() + augmenter_finish_shim()
    os.environ["nnUNet_n_proc_DA"] = "0"  # single-threaded augmentation: no worker processes
    cls = trainer_class(variant)
    pre = work / "nnUNet_preprocessed" / DATASET_NAME
    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    dataset_json = json.loads((pre / "dataset.json").read_text())
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    if "continue_training" in inspect.getsource(nnUNetTrainer.__init__):  # nnU-Net >= 2.7: run_training sets it
        plans["continue_training"] = False
    kwargs = {"device": torch.device("cpu")}
    if "unpack_dataset" in inspect.signature(cls.__init__).parameters:  # nnU-Net < 2.6
        kwargs["unpack_dataset"] = True
    torch.manual_seed(0)
    np.random.seed(0)
    trainer = cls(plans, CONFIGURATION, "all", dataset_json, **kwargs)
    # The real class, its schedule cut on the instance (num_epochs is not saved in the checkpoint).
    trainer.num_epochs, trainer.num_iterations_per_epoch = EPOCHS, ITERATIONS
    trainer.num_val_iterations_per_epoch = VAL_ITERATIONS
    log(f"training {cls.__name__}: {EPOCHS} epochs x {ITERATIONS} iterations on CPU")
    trainer.run_training()
    return Path(trainer.output_folder_base), shims


# ----------------------------------------------------------------------------------------------------- packaging
def package(results: Path, checkpoint: str, variant: str, zip_path: Path) -> list[str]:
    """Zip the trainer folder as the real releases are laid out; returns the members written."""
    folder = results.name
    entries = [(f"{folder}/{name}", results / name) for name in ("dataset.json", "plans.json", "dataset_fingerprint.json")]
    entries.append((f"{folder}/fold_all/{checkpoint}", results / "fold_all" / checkpoint))
    if variant == "trainer_class":  # SCT reads <nnUNetTrainer* folder>/trainer_class.py
        entries.append((f"{folder}/trainer_class.py", HERE / "trainer_class.py"))
    payloads = [(name, path.read_bytes()) for name, path in entries]
    if variant == "crop_metadata":  # SCT reads <installed model folder>/crop_metadata.json, beside the trainer folder
        payloads.append(("crop_metadata.json", (json.dumps(CROP_METADATA, indent=4) + "\n").encode()))
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    partial = zip_path.with_name(zip_path.name + ".partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, payload in payloads:
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, payload)
    os.replace(partial, zip_path)
    return [name for name, _ in payloads]


def self_load(zip_path: Path, checkpoint: str) -> dict:
    """Does the version that wrote the zip load and run it (its own inference code, with this torch)?"""
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(tmp)
        folder = next(Path(tmp).glob("nnUNetTrainer*"))
        try:
            return _own_inference(folder, checkpoint)
        except Exception as exc:  # noqa: BLE001 - recorded: which versions cannot load their own zip here
            return {"ok": False, "error": error_line(exc)}


def error_line(exc: BaseException) -> str:
    """The informative line of an exception (for torch's weights_only refusal: the unsupported global)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    detail = next((ln for ln in lines if "Unsupported global" in ln or "WeightsUnpickler error" in ln), None)
    return f"{type(exc).__name__}: {detail or (lines[0] if lines else '')}"


def _own_inference(folder: Path, checkpoint: str) -> dict:
    """nnUNetPredictor.predict_single_npy_array on a phantom (nnU-Net >= 2.2); 2.1 has no predictor class, so its
    ``load_what_we_need`` (what its ``predict_from_raw_data`` calls) plus one forward pass of a patch."""
    import torch

    try:
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    except ImportError:
        from nnunetv2.inference.predict_from_raw_data import load_what_we_need

        loaded = load_what_we_need(str(folder), ("all",), checkpoint)
        network, parameters, configuration = loaded[5], loaded[0], loaded[1]
        network.load_state_dict(parameters[0])
        with torch.no_grad():
            logits = network(torch.zeros((1, 1, *configuration.patch_size)))
        return {"ok": True, "api": "load_what_we_need + forward", "output_shape": list(logits.shape)}
    accepted = inspect.signature(nnUNetPredictor.__init__).parameters
    options = {"tile_step_size": 0.5, "use_gaussian": True, "use_mirroring": False, "device": torch.device("cpu"),
               "perform_everything_on_device": False, "perform_everything_on_gpu": False, "allow_tqdm": False}
    predictor = nnUNetPredictor(**{k: v for k, v in options.items() if k in accepted})
    extra = {}
    if (folder / "trainer_class.py").is_file():  # what SCT does with the NeuroPoly fork
        spec = importlib.util.spec_from_file_location("trainer_class", folder / "trainer_class.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        extra["trainer_class"] = module.get_trainer_class()
    predictor.initialize_from_trained_model_folder(str(folder), ("all",), checkpoint, **extra)
    ph = make_phantom("LPI", SPACING, seed=900)
    data = ph.image.astype(np.float32).transpose(2, 1, 0)[None]
    seg = np.asarray(predictor.predict_single_npy_array(data, {"spacing": list(SPACING[::-1])}, None, None, False))
    return {"ok": True, "api": "nnUNetPredictor.predict_single_npy_array", "output_shape": list(seg.shape),
            "labels": sorted(int(v) for v in np.unique(seg))}


def describe_checkpoint(zip_path: Path, member: str) -> dict:
    """Keys and pickle globals of the packed checkpoint, read without unpickling."""
    import torch

    with zipfile.ZipFile(zip_path) as zf:
        raw = zf.read(member)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ckpt.pth"
        path.write_bytes(raw)
        ckpt = torch.load(path, map_location="cpu", weights_only=False)  # our own fresh file, built just now
    return {
        "keys": sorted(ckpt),
        "trainer_name": ckpt["trainer_name"],
        "init_args_keys": sorted(ckpt["init_args"]),
        "init_args_types": {k: type(v).__name__ for k, v in sorted(ckpt["init_args"].items())},
        "inference_allowed_mirroring_axes": repr(ckpt.get("inference_allowed_mirroring_axes")),
        "current_epoch": ckpt.get("current_epoch"),
        "pickle_protocol": pickle_protocol(data_pkl(raw)),
        "pickle_globals": checkpoint_globals(raw),
        "bytes": len(raw),
    }


# ---------------------------------------------------------------------------------------------------------- main
def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def update_manifest(out: Path, entry: dict) -> None:
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {"zips": {}}
    manifest["zips"][entry["file"]] = entry
    manifest["zips"] = dict(sorted(manifest["zips"].items()))
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")


def build(variant: str, checkpoint: str, out: Path, work: Path) -> dict:
    dist, version = nnunet_distribution()
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ[name] = str(work / name)
        (work / name).mkdir(parents=True, exist_ok=True)
    # the planner of some versions sets torch threads from nnUNet_n_proc_DA (must be >= 1); train() sets 0
    os.environ.update(nnUNet_n_proc_DA="1", nnUNet_def_n_proc="1", nnUNet_compile="false", OMP_NUM_THREADS="1")
    import torch

    torch.set_num_threads(1)
    start = time.time()
    write_raw_dataset(work / "nnUNet_raw" / DATASET_NAME)
    plans_format = plan_and_preprocess(work)
    results, shims = train(work, variant)
    ckpt_file = f"checkpoint_{checkpoint}.pth"
    zip_path = out / f"{dist}-{version}{'' if variant == 'plain' else '-' + variant}.zip"
    members = package(results, ckpt_file, variant, zip_path)
    size = zip_path.stat().st_size
    if size > MAX_ZIP_BYTES:
        raise SystemExit(f"{zip_path} is {size} bytes, over {MAX_ZIP_BYTES}")
    log(f"packed {zip_path} ({size} bytes); trying it with {dist} {version}'s own predictor")
    entry = {
        "file": zip_path.name,
        "nnunet_distribution": dist,
        "nnunet_version": version,
        "variant": variant,
        "trainer_folder": results.name,
        "folds": ["all"],
        "checkpoint": ckpt_file,
        "sha256": sha256(zip_path),
        "size": size,
        "members": members,
        "plans_format": plans_format,
        "checkpoint_contents": describe_checkpoint(zip_path, f"{results.name}/fold_all/{ckpt_file}"),
        "self_load_with_writing_version": self_load(zip_path, ckpt_file),
        "versions": versions(),
        "compat_shims": shims,
        "training": {"epochs": EPOCHS, "iterations_per_epoch": ITERATIONS, "val_iterations_per_epoch": VAL_ITERATIONS,
                     "features_per_stage": list(FEATURES), "patch_size": list(PATCH), "spacing": list(SPACING),
                     "seeds": list(SEEDS), "fold": "all"},
        "build_date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "build_seconds": round(time.time() - start, 1),
    }
    update_manifest(out, entry)
    log(f"self-load: {entry['self_load_with_writing_version']}")
    return entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=("plain", "trainer_class", "crop_metadata"), default="plain")
    parser.add_argument("--checkpoint", choices=("final", "best"), default="final",
                        help="which checkpoint the zip keeps (nnU-Net writes both)")
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "data" / "release_formats")
    parser.add_argument("--work", type=Path, help="work folder, kept (default: a temporary folder, deleted)")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="release_formats_"))
    try:
        build(args.variant, args.checkpoint, args.out.resolve(), work.resolve())
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
