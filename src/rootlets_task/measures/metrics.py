"""Statistics of a map within a mask over a group of slices, as SCT's ``sct_extract_metric`` computes them.

Read from SCT's ``spinalcordtoolbox/aggregate_slicewise.py`` (``aggregate_per_slice_or_level``, ``func_bin``,
``func_wa``, ``func_std``, ``func_median``). Over the slices of one level:

* voxels: the sum of the mask's values (SCT's ``Size [vox]``: the voxel count of a binary mask), before the next step;
* non-finite map values are set to 0 and their mask weight to 0;
* ``wa`` mean: the mask-weighted average; ``bin`` mean: the average over mask voxels >= 0.5 (binarized weights);
* SD: the mask-weighted standard deviation around the weighted mean, with the mask's own (not binarized) weights in
  both methods, as SCT's ``STD`` column;
* median: the weighted median of ``wquantiles`` (SCT's ``median`` method) with the method's weights, over the voxels
  of non-zero weight only (SCT passes every voxel of the slices, so voxels outside the mask can move its
  interpolation; here they cannot).

A level where the mask holds no weight gives NaN, never 0 (the caller warns).
"""

from __future__ import annotations

import numpy as np

from rootlets_task.core.options import MEASURE_METHODS as METHODS

STATISTICS = ("mean", "median", "sd", "voxels")


def weighted_median(data: np.ndarray, weights: np.ndarray) -> float:
    """``wquantiles.median``: interpolated where the cumulative weight crosses half, over voxels of non-zero weight."""
    keep = weights > 0
    data, weights = data[keep], weights[keep]
    order = np.argsort(data)
    data, weights = data[order], weights[order]
    cumulative = np.cumsum(weights)
    return float(np.interp(0.5, (cumulative - 0.5 * weights) / cumulative[-1], data))


def map_statistics(data: np.ndarray, mask: np.ndarray, method: str = "bin") -> dict[str, float]:
    """Mean, median, SD and voxel count of ``data`` within ``mask`` (same shape, the slices of one level)."""
    if method not in METHODS:
        raise ValueError(f"method {method!r}: use one of {', '.join(METHODS)}")
    data = np.asarray(data, dtype=np.float64).copy()
    weights = np.asarray(mask, dtype=np.float64).copy()
    voxels = float(weights.sum())
    bad = ~np.isfinite(data)
    data[bad], weights[bad] = 0.0, 0.0
    chosen = np.where(weights >= 0.5, 1.0, 0.0) if method == "bin" else weights
    if weights.sum() == 0 or chosen.sum() == 0:
        return {"mean": np.nan, "median": np.nan, "sd": np.nan, "voxels": voxels}
    mean = float(np.average(data, weights=chosen))
    around = np.average(data, weights=weights)
    sd = float(np.sqrt(np.average((data - around) ** 2, weights=weights)))
    return {"mean": mean, "median": weighted_median(data.ravel(), chosen.ravel()), "sd": sd, "voxels": voxels}
