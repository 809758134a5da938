"""A release's ``plans.json`` checked as data: types, ranges and the memory one tile needs.

nnU-Net trusts its plans: a text, negative or huge patch size, or a spacing of 0 or 1e308, only fails deep inside
the sliding window (a ZeroDivisionError, or an allocation of petabytes) after the model has loaded. The checks here
run when a release is installed (:func:`rootlets_task.models.archive.validate_release_zip`) and again before a model
loads (:class:`rootlets_task.inference.segmenter.Segmenter`), so a bad plan is one line naming the file, early.
"""

from __future__ import annotations

import math
import os

MAX_PATCH_VOXELS = 512**3 // 8  # per tile; nnU-Net plans a few million at most
SPACING_MM = (0.01, 100.0)  # what an MRI voxel can be
CLASSES = 16  # logits kept per voxel in the estimate (RootletSeg has 10)
MAX_TILE_BYTES = 32 << 30


def physical_memory() -> int | None:
    """Bytes of RAM of this machine, or None where the system does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def tile_bytes(patch: list[int], features: int) -> int:
    """Estimated bytes one tile needs: the patch, its logits and the first stage's feature maps (float32)."""
    return math.prod(patch) * 4 * (1 + CLASSES + 4 * features)


def plans_problem(plans) -> str | None:
    """Why ``plans`` (parsed ``plans.json``) cannot be run, or None: every configuration's ``patch_size`` (2 or 3
    whole numbers from 1 to 4096, at most :data:`MAX_PATCH_VOXELS` voxels), ``spacing`` (as many numbers, within
    :data:`SPACING_MM`), ``transpose_forward`` (a permutation) and the memory of one tile (:func:`tile_bytes`, at most
    :data:`MAX_TILE_BYTES` and the machine's RAM)."""
    if not isinstance(plans, dict) or not isinstance(plans.get("configurations", {}), dict):
        return "not an nnU-Net plans object (configurations missing or malformed)"
    transpose = plans.get("transpose_forward", [0, 1, 2])
    if not (isinstance(transpose, list) and sorted(t for t in transpose if isinstance(t, int)) == list(range(len(transpose)))
            and len(transpose) in (2, 3)):
        return f"transpose_forward {str(transpose)[:40]} is not a permutation of the axes"
    memory = min(MAX_TILE_BYTES, physical_memory() or MAX_TILE_BYTES)
    for name, config in plans.get("configurations", {}).items():
        if not isinstance(config, dict):
            return f"configuration {str(name)[:40]} is not an object"
        patch, spacing = config.get("patch_size"), config.get("spacing")
        if "patch_size" in config:  # a configuration may inherit it from another one
            if not (isinstance(patch, list) and len(patch) in (2, 3)
                    and all(isinstance(p, int) and not isinstance(p, bool) and 1 <= p <= 4096 for p in patch)):
                return f"{name}: patch_size {str(patch)[:40]} is not 2 or 3 whole numbers from 1 to 4096"
            if math.prod(patch) > MAX_PATCH_VOXELS:
                return f"{name}: patch_size {patch} has {math.prod(patch)} voxels, above {MAX_PATCH_VOXELS}"
            arch = config.get("architecture", {})
            kwargs = arch.get("arch_kwargs", {}) if isinstance(arch, dict) else {}
            features = kwargs.get("features_per_stage", [32]) if isinstance(kwargs, dict) else [32]
            first = features[0] if isinstance(features, list) and features and _number(features[0]) else 32
            if not 1 <= first <= 4096:
                return f"{name}: features_per_stage starts with {first}"
            need = tile_bytes(patch, int(first))
            if need > memory:
                return f"{name}: one tile of patch_size {patch} needs about {need >> 30} GiB, more than {memory >> 30} GiB"
        if "spacing" in config:
            if not (isinstance(spacing, list) and len(spacing) in (2, 3) and all(_number(s) for s in spacing)):
                return f"{name}: spacing {str(spacing)[:40]} is not 2 or 3 numbers"
            if not all(SPACING_MM[0] <= s <= SPACING_MM[1] for s in spacing):
                return f"{name}: spacing {spacing} mm is outside {SPACING_MM[0]} to {SPACING_MM[1]} mm"
            if isinstance(patch, list) and len(spacing) != len(patch):
                return f"{name}: spacing has {len(spacing)} values, patch_size {len(patch)}"
    return None
