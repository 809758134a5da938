"""A structurally real nnU-Net v2 model folder with untrained weights, built in under a second.

It is the network nnU-Net itself builds from a (tiny) 3d_fullres plan, saved with the checkpoint keys
``initialize_from_trained_model_folder`` reads. Its labels are meaningless, but the I/O path is the real one:
tests that check grids, orientations, errors and the command line use it when no trained model is needed.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

LABELS = {"background": 0, **{f"lvl{i}": i for i in range(1, 10)}}


def plans(spacing=(2.0, 2.0, 2.0), patch=(32, 32, 32)) -> dict:
    """A minimal nnUNetPlans with one tiny 3d_fullres configuration (3 stages, 4-16 features, coarse 2 mm grid)."""
    return {
        "dataset_name": "Dataset999_RandomRootlets",
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": list(spacing),
        "original_median_shape_after_transp": [64, 64, 64],
        "image_reader_writer": "NibabelIOWithReorient",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": {
            "max": 1000.0, "mean": 300.0, "median": 300.0, "min": 0.0,
            "percentile_00_5": 0.0, "percentile_99_5": 1000.0, "std": 200.0}},
        "configurations": {"3d_fullres": {
            "data_identifier": "nnUNetPlans_3d_fullres",
            "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 2,
            "patch_size": list(patch),
            "median_image_size_in_voxels": [64, 64, 64],
            "spacing": list(spacing),
            "normalization_schemes": ["ZScoreNormalization"],
            "use_mask_for_norm": [False],
            "resampling_fn_data": "resample_data_or_seg_to_shape",
            "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
            "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
            "batch_dice": False,
            "architecture": {
                "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                "arch_kwargs": {
                    "n_stages": 3, "features_per_stage": [4, 8, 16], "conv_op": "torch.nn.modules.conv.Conv3d",
                    "kernel_sizes": [[3, 3, 3]] * 3, "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
                    "n_conv_per_stage": [1, 1, 1], "n_conv_per_stage_decoder": [1, 1], "conv_bias": True,
                    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                    "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
                    "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}},
                "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
        }},
    }


def write_random_model(root: Path, folds=("all",), seed: int = 0, orientation: str | None = None,
                       checkpoint: str = "checkpoint_final.pth") -> Path:
    """Write ``root/nnUNetTrainer__nnUNetPlans__3d_fullres`` with untrained weights; returns that folder."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    folder = Path(root) / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    folder.mkdir(parents=True, exist_ok=True)
    dataset = {"channel_names": {"0": "T2w"}, "labels": LABELS, "numTraining": 1, "file_ending": ".nii.gz"}
    if orientation:
        dataset["image_orientation"] = orientation
    p = plans()
    (folder / "dataset.json").write_text(json.dumps(dataset))
    (folder / "plans.json").write_text(json.dumps(p))
    manager = PlansManager(p)
    torch.manual_seed(seed)
    network = nnUNetTrainer.build_network_architecture(manager, manager.get_configuration("3d_fullres"), 1,
                                                       len(LABELS), enable_deep_supervision=False)
    for fold in folds:
        (folder / f"fold_{fold}").mkdir(exist_ok=True)
        torch.save({"network_weights": network.state_dict(), "trainer_name": "nnUNetTrainer",
                    "init_args": {"configuration": "3d_fullres"}, "inference_allowed_mirroring_axes": (0, 1, 2)},
                   folder / f"fold_{fold}" / checkpoint)
    return folder
