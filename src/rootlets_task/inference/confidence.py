"""How sure the network was of each level: statistics of its probabilities over the voxels of each rootlet label.

The probability of a voxel is the softmax probability of the label it got (the largest class probability of the
fold-averaged logits nnU-Net takes the argmax of), computed from the same logits in the same export step: no second
inference pass, and the labels are nnU-Net's own. Per level value: the voxels, their mean probability and the
fraction below 0.5 (with ten classes a voxel can win with less than 0.5: the network hesitated there); per image:
the same over every rootlet voxel and the level with the lowest mean. A reviewer of many subjects starts with the
lowest.

The statistics travel with the segmentation (rootlets sidecar ``Confidence``), keyed to its exact voxels by a
sha256 of the label array (:func:`digest`), so a file corrected by hand after segmentation is never credited with
the network's confidence (:func:`matching`).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from rootlets_task.core.names import level_name

MEASURE = ("softmax probability of each voxel's label (the fold-averaged network output nnU-Net takes the argmax of), "
           "over the voxels of each rootlet label")
CHUNK = 8  # slices along the first spatial axis per softmax (bounds the temporary to CHUNK / depth of the logits)


def max_probability(logits) -> np.ndarray:
    """(c, z, y, x) logits -> (z, y, x) float32 probability of the winning class, softmax in chunks (small temporaries)."""
    import torch

    logits = torch.as_tensor(logits)
    out = torch.empty(logits.shape[1:], dtype=torch.float32)
    with torch.inference_mode():
        for start in range(0, logits.shape[1], CHUNK):
            part = logits[:, start:start + CHUNK].float()
            out[start:start + CHUNK] = 1.0 / torch.exp(part - part.amax(0, keepdim=True)).sum(0)
    return out.numpy()


def digest(labels: np.ndarray) -> str:
    """sha256 of a label array as the segmentation stores it (uint8, C order, with its shape)."""
    data = np.ascontiguousarray(np.asarray(labels).astype(np.uint8))
    return hashlib.sha256(str(data.shape).encode() + data.tobytes()).hexdigest()


def summarise(labels: np.ndarray, probability: np.ndarray) -> dict:
    """The sidecar's ``Confidence``: per label value and over all rootlet voxels (mean, fraction below 0.5)."""
    flat = np.asarray(labels).ravel().astype(np.int64)
    p = np.asarray(probability, dtype=np.float64).ravel()
    count = np.bincount(flat)
    total = np.bincount(flat, weights=p)
    low = np.bincount(flat, weights=(p < 0.5).astype(np.float64))
    levels: dict[str, dict[str, Any]] = {
        str(v): {"Level": level_name(v, "spinal"), "Voxels": int(count[v]), "MeanProbability": float(total[v] / count[v]),
                 "FractionBelowHalf": float(low[v] / count[v])}
        for v in range(1, len(count)) if count[v]}
    n = int(count[1:].sum())
    lowest = min(levels.values(), key=lambda r: r["MeanProbability"], default=None)
    return {"Measure": MEASURE, "LabelsSHA256": digest(labels), "Voxels": n,
            "MeanProbability": float(total[1:].sum() / n) if n else None,
            "FractionBelowHalf": float(low[1:].sum() / n) if n else None,
            "LowestLevel": lowest["Level"] if lowest else None,
            "LowestMeanProbability": lowest["MeanProbability"] if lowest else None, "Levels": levels}


def matching(confidence: dict | None, labels: np.ndarray) -> dict | None:
    """``confidence`` if it was computed on exactly these labels, else None."""
    if not isinstance(confidence, dict) or confidence.get("LabelsSHA256") != digest(labels):
        return None
    return confidence


def per_level(confidence: dict | None) -> dict[int, tuple[float, float]]:
    """{label value: (mean probability, fraction below 0.5)} of a ``Confidence`` dict (empty without one)."""
    if not isinstance(confidence, dict) or not isinstance(confidence.get("Levels"), dict):
        return {}
    return {int(v): (float(r["MeanProbability"]), float(r["FractionBelowHalf"])) for v, r in confidence["Levels"].items()}


def summary(confidence: dict | None) -> dict | None:
    """The per-image figures of a ``Confidence`` dict, for indexes and summaries (None without one)."""
    if not isinstance(confidence, dict) or confidence.get("MeanProbability") is None:
        return None
    return {k: confidence.get(k) for k in ("LowestLevel", "LowestMeanProbability", "MeanProbability", "FractionBelowHalf",
                                           "Voxels")}


def from_levels_table(levels) -> dict | None:
    """The per-image figures from a levels table's spinal rows (voxel-weighted), when it has confidence columns."""
    if levels is None or "mean_probability" not in levels:
        return None
    rows = levels[(levels["kind"] == "spinal") & levels["mean_probability"].notna() & (levels["n_voxels"] > 0)]
    if rows.empty:
        return None
    n = rows["n_voxels"].astype(float)
    lowest = rows.loc[rows["mean_probability"].astype(float).idxmin()]
    return {"LowestLevel": str(lowest["level"]), "LowestMeanProbability": float(lowest["mean_probability"]),
            "MeanProbability": float((rows["mean_probability"] * n).sum() / n.sum()),
            "FractionBelowHalf": float((rows["fraction_below_half"] * n).sum() / n.sum()), "Voxels": int(n.sum())}
