"""Overlap of label maps: the one Dice (and agreement) used by the demo, the tests, the benchmarks and the release build."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def dice(a: np.ndarray, b: np.ndarray, empty: float = np.nan) -> float:
    """Dice of two boolean masks; ``empty`` when both are empty (undefined, NaN unless the caller decides)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = int(a.sum()) + int(b.sum())
    return float(2 * np.logical_and(a, b).sum() / total) if total else empty


def dice_per_level(prediction: np.ndarray, truth: np.ndarray, levels: Iterable[int] | None = None,
                   empty: float = np.nan) -> dict[int, float]:
    """Dice of every level value between two label maps on one grid.

    ``levels``: the values to score (default: every non-zero value present in either map). A level absent from both
    maps scores ``empty`` (NaN: average with ``np.nanmean``); absent from one only, it scores 0.
    """
    prediction, truth = np.asarray(prediction), np.asarray(truth)
    if levels is None:
        levels = np.union1d(np.unique(prediction), np.unique(truth))
    return {int(k): dice(prediction == k, truth == k, empty) for k in levels if k != 0}


def agreement(reference: np.ndarray, other: np.ndarray, levels: Iterable[int] | None = None) -> dict:
    """How far ``other`` agrees with ``reference``: share of equal voxels, of equal voxels where either is labelled
    (1.0 when neither is), and the per-level Dice (:func:`dice_per_level` over ``levels``)."""
    reference, other = np.asarray(reference), np.asarray(other)
    equal, labelled = reference == other, (reference > 0) | (other > 0)
    return {"voxel_agreement": float(equal.mean()),
            "foreground_agreement": float(equal[labelled].mean()) if labelled.any() else 1.0,
            "dice": dice_per_level(other, reference, levels)}
