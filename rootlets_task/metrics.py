"""Overlap of label maps: the one Dice used by the demo, the tests, the benchmarks and the phantom-release build."""

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
