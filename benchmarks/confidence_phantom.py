"""The confidence per level on the bundled phantom release: what a reviewer would see in the sidecar and QC index.

    python benchmarks/confidence_phantom.py [--json FILE]

The phantom release (rootlets_task/data, a real nnU-Net trained on phantoms) segments phantoms of 4 grids x 3 seeds
(``Segmenter.predict``: labels and confidence from the same logits). Per image: the sidecar summary (mean probability
over all rootlet voxels, fraction below 0.5, the lowest level); per level: voxels, mean probability, fraction
below 0.5 and the Dice with the phantom's truth, so one can see whether low confidence goes with poor agreement.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import phantom_release  # noqa: E402

GRIDS = {"iso1 LPI": ("LPI", (1.0, 1.0, 1.0), 0.0), "axial RPI 0.5x0.5x3": ("RPI", (0.5, 0.5, 3.0), 0.0),
         "tilted AIL": ("AIL", (1.0, 1.0, 1.0), 15.0), "PSR 1.2": ("PSR", (1.2, 1.2, 1.2), 0.0)}
SEEDS = (0, 1, 2)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return float(2 * (a & b).sum() / total) if total else float("nan")


def main() -> None:
    from rootlets_task.inference.segmenter import Segmenter
    from rootlets_task.io.phantom import make_phantom

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        segmenter = Segmenter(phantom_release(Path(tmp)), verbose=0)
        for grid, (orient, spacing, tilt) in GRIDS.items():
            for seed in SEEDS:
                ph = make_phantom(orient, spacing, seed=seed, tilt_deg=tilt)
                pred = segmenter.predict(ph.nifti("image"))
                c = pred.confidence
                levels = {r["Level"]: {"voxels": r["Voxels"], "mean_p": round(r["MeanProbability"], 4),
                                       "below_half": round(r["FractionBelowHalf"], 4),
                                       "dice": round(dice(pred.labels == int(v), ph.rootlets == int(v)), 3)}
                          for v, r in c["Levels"].items()}
                rows.append({"grid": grid, "seed": seed, "mean_p": round(c["MeanProbability"], 4),
                             "below_half": round(c["FractionBelowHalf"], 4), "lowest": c["LowestLevel"],
                             "lowest_mean_p": round(c["LowestMeanProbability"], 4),
                             "dice_all": round(dice(pred.labels > 0, ph.rootlets > 0), 3), "levels": levels})
    print("| grid | seed | mean p (all rootlet voxels) | fraction < 0.5 | lowest level (mean p) | Dice all |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['grid']} | {r['seed']} | {r['mean_p']:.3f} | {r['below_half']:.3f} | {r['lowest']} "
              f"({r['lowest_mean_p']:.3f}) | {r['dice_all']:.3f} |")
    print("\nPer level (mean p / fraction < 0.5 / Dice with the truth):")
    for r in rows:
        print(f"- {r['grid']} seed {r['seed']}: " + ", ".join(
            f"{name} {v['mean_p']:.3f}/{v['below_half']:.3f}/{v['dice']:.2f}" for name, v in r["levels"].items()))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
