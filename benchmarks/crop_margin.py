"""Measure the crop margin that leaves the segmentation unchanged: crop around the cord vs the whole image.

    python benchmarks/crop_margin.py [--margins 5,10,15,20,25,30] [--seeds 3] [--json OUT]

Uses the bundled phantom release (a trained model) on phantoms in several orientations and reports, per margin,
the worst voxel agreement inside the union of both label maps and the worst per-level Dice of the cropped result
against the uncropped one, the share of voxels the crop box keeps and the share of sliding-window tiles run.
(Inside the box the labels are identical by construction; what the margin decides is whether labels outside it
are lost.)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_inference import dice, phantom_release  # noqa: E402

from rootlets_task.inference import Segmenter, crop_box  # noqa: E402
from rootlets_task.phantom import make_phantom  # noqa: E402

ORIENTS = ("LPI", "AIL", "RPI", "PSR")


def _count_tiles(segmenter: Segmenter, img, cord, margin: float) -> tuple[np.ndarray, int]:
    """Segment and count the network calls (one per tile without test-time augmentation)."""
    net, calls = segmenter.predictor.network, []
    forward = net.forward
    net.forward = lambda x: calls.append(1) or forward(x)
    try:
        return segmenter.segment_image(img, cord=cord, margin_mm=margin), len(calls)
    finally:
        del net.forward


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--margins", default="5,10,15,20,25,30")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    margins = [float(m) for m in args.margins.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        segmenter = Segmenter(phantom_release(Path(tmp)), device="cpu", verbose=0)
        rows = {m: {"foreground_agreement": 1.0, "min_level_dice": 1.0, "kept_fraction": 0.0} for m in margins}
        for seed in range(args.seeds):
            ph = make_phantom(ORIENTS[seed % len(ORIENTS)], (1.0, 1.0, 1.0), seed=200 + seed)
            img, cord = ph.nifti("image"), ph.nifti("cord")
            full, n_full = _count_tiles(segmenter, img, None, 0.0)
            for m in margins:
                cropped, n_crop = _count_tiles(segmenter, img, cord, m)
                rows[m]["tiles_fraction"] = max(rows[m].get("tiles_fraction", 0.0), n_crop / n_full)
                fg = (full > 0) | (cropped > 0)
                row = rows[m]
                row["foreground_agreement"] = min(row["foreground_agreement"], float((full == cropped)[fg].mean()))
                levels = np.unique(full[full > 0])
                row["min_level_dice"] = min([row["min_level_dice"], *(dice(full == v, cropped == v) for v in levels)])
                kept = np.prod([s.stop - s.start for s in crop_box(img, cord, m)]) / np.prod(img.shape)
                row["kept_fraction"] = max(row["kept_fraction"], float(kept))
            print(seed, json.dumps(rows), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
