"""Choose and check the crop margin of the crop lever (``crop_box(img, cord, margin)``): what cropping costs in labels.

    python benchmarks/crop_margin.py [--margins 5,10,15,25] [--seeds 6] [--sct-t2 DIR] [--json OUT]

Phantoms (bundled phantom release, a trained model; several orientations and spacings): per margin, the share of
sliding-window tiles run, the agreement of the cropped labels with the uncropped ones (voxels, foreground, worst
per-level Dice) and the mean per-level Dice of both against the phantom truth (does cropping cost accuracy?).
Baseline: the same uncropped path on the same phantoms with 1, 2 or 4 voxels removed from one in-plane edge of the field
of view (background only): how much the model's labels move when only the tiling moves, without any crop.
Real anatomy (``--sct-t2``, SCT's testing data ``t2/`` folder): how far the manual and the r20250318 rootlets lie
outside the manual cord's box in the axial plane, i.e. the smallest margin that loses no rootlet there.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import count_tiles, phantom_release  # noqa: E402

from rootlets_task.inference.cropping import crop_box  # noqa: E402
from rootlets_task.inference.segmenter import Segmenter  # noqa: E402
from rootlets_task.io import nifti  # noqa: E402
from rootlets_task.io.metrics import agreement, dice_per_level  # noqa: E402
from rootlets_task.io.phantom import make_phantom  # noqa: E402

ORIENTS = ("LPI", "AIL", "RPI", "PSR")


def _count_tiles(segmenter: Segmenter, img, cord, margin: float) -> tuple[np.ndarray, int]:
    """Segment (cropped to the cord's box plus ``margin`` when ``cord`` is given) and count the network calls."""
    return count_tiles(segmenter, img, None if cord is None else crop_box(img, cord, margin))


def _truth_dice(truth: np.ndarray, labels: np.ndarray) -> float:
    """Mean per-level Dice against the truth, over the levels of the truth."""
    return float(np.nanmean(list(dice_per_level(labels, truth, np.unique(truth)).values())))


def _phantom(seed: int):
    spacing = (0.8, 0.8, 0.8) if seed % 3 == 0 else (1.0, 1.0, 1.0)
    return make_phantom(ORIENTS[seed % len(ORIENTS)], spacing, seed=300 + seed)


def _agreement(row: dict, a: np.ndarray, b: np.ndarray) -> None:
    """Worst-so-far voxel / foreground agreement and per-level Dice (over the levels of ``a``) of ``b`` against ``a``."""
    now = agreement(a, b, np.unique(a))
    for key in ("voxel_agreement", "foreground_agreement"):
        row[key] = min(row[key], now[key])
    row["min_level_dice"] = min([row["min_level_dice"], *now["dice"].values()])


def fov_baseline(segmenter: Segmenter, seeds: int, drops=(1, 2, 4)) -> dict:
    """Uncropped labels of each phantom vs those of the phantom with ``k`` edge voxels removed from one in-plane axis."""
    rows = {k: {"voxel_agreement": 1.0, "foreground_agreement": 1.0, "min_level_dice": 1.0} for k in drops}
    for seed in range(seeds):
        ph = _phantom(seed)
        img = ph.nifti("image")
        full = segmenter.segment_image(img)
        axis = next(a for a in range(3) if a != nifti.si_axis(img.affine))
        for k in drops:
            cut = tuple(slice(k, None) if a == axis else slice(None) for a in range(3))
            _agreement(rows[k], full[cut], segmenter.segment_image(img.slicer[cut]))
    return rows


def phantoms(margins: list[float], seeds: int) -> dict:
    rows = {m: {"tiles_fraction": 0.0, "voxel_agreement": 1.0, "foreground_agreement": 1.0, "min_level_dice": 1.0,
                "truth_dice_uncropped": [], "truth_dice_cropped": []} for m in margins}
    with tempfile.TemporaryDirectory() as tmp:
        segmenter = Segmenter(phantom_release(Path(tmp)), device="cpu", verbose=0)
        for seed in range(seeds):
            ph = _phantom(seed)
            img, cord = ph.nifti("image"), ph.nifti("cord")
            full, n_full = _count_tiles(segmenter, img, None, 0.0)
            for m in margins:
                cropped, n_crop = _count_tiles(segmenter, img, cord, m)
                row = rows[m]
                row["tiles_fraction"] = max(row["tiles_fraction"], n_crop / n_full)
                _agreement(row, full, cropped)
                row["truth_dice_uncropped"].append(_truth_dice(ph.rootlets, full))
                row["truth_dice_cropped"].append(_truth_dice(ph.rootlets, cropped))
            print(seed, json.dumps({m: {k: v[-1] if isinstance(v, list) else v for k, v in r.items()} for m, r in rows.items()}),
                  flush=True)
        baseline = fov_baseline(segmenter, seeds)
    for row in rows.values():
        for key in ("truth_dice_uncropped", "truth_dice_cropped"):
            row[key] = float(np.mean(row[key]))
    return {"margins": rows, "uncropped_fov_edge_removed": baseline}


def outside_cord_box_mm(folder: Path) -> dict:
    """Largest distance (mm) of rootlet voxels outside the cord's box along each axial axis, per rootlets file."""
    cord_img = nib.load(folder / "t2_seg-manual.nii.gz")
    cord = np.asarray(cord_img.dataobj) > 0
    si = nifti.si_axis(cord_img.affine)
    zooms = cord_img.header.get_zooms()[:3]
    result = {}
    for name in ("t2_seg-deepseg_rootlets-manual.nii.gz", "t2_seg-deepseg_rootlets.nii.gz"):
        rootlets = np.asarray(nib.load(folder / name).dataobj) > 0
        worst = 0.0
        for axis in (a for a in range(3) if a != si):
            others = tuple(a for a in range(3) if a != axis)
            c, r = np.flatnonzero(cord.any(others)), np.flatnonzero(rootlets.any(others))
            worst = max(worst, max(c[0] - r[0], r[-1] - c[-1], 0) * float(zooms[axis]))
        result[name] = worst
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--margins", default="5,10,15,25")
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--sct-t2", type=Path, help="SCT testing data t2/ folder (real anatomy check)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    result = phantoms([float(m) for m in args.margins.split(",")], args.seeds)
    if args.sct_t2:
        result["sct_t2_rootlets_outside_cord_box_mm"] = outside_cord_box_mm(args.sct_t2)
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
