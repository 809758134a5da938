"""What the numbering check says on every case of issue #15 item 1, as tables (rerun to regenerate them).

    python benchmarks/numbering_cases.py [--json FILE] [--method gapfree|reference] [--t2 DIR]

1. The phantoms of 4 grids x 3 seeds (the grids of tests/test_numbering.py), unchanged and with their rootlets
   relabelled +1 / -1 / +2, through :func:`rootlets_task.levels.compute.compute_levels` (discs and PMJ of the phantom):
   status, whether it warns, the suggested offset and the evidence (median |residual| as named and under the
   suggestion, and the shift vertebral - spinal midpoint of every pairing under both numberings).
2. SCT's t2 test data (README of ``--t2``): the manual rootlets and the r20250318 model output, each against the
   image's three vertebral-label files (body labels 3, 5; body centres 3, 4, 5; the cord labelled by vertebral level),
   with :func:`numbering.check` on the rootlets' midpoints and the vertebral midpoints those files give along the
   manual cord's centerline (the data has no disc file, so ``compute_levels`` alone cannot check it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import nibabel as nib
import numpy as np

from rootlets_task.io.phantom import make_phantom
from rootlets_task.levels import numbering
from rootlets_task.levels.centerline import cord_centerline
from rootlets_task.levels.compute import compute_levels

GRIDS = {"iso1 LPI": ("LPI", (1.0, 1.0, 1.0), 0.0), "axial RPI 0.5x0.5x3": ("RPI", (0.5, 0.5, 3.0), 0.0),
         "tilted AIL": ("AIL", (1.0, 1.0, 1.0), 15.0), "PSR 1.2": ("PSR", (1.2, 1.2, 1.2), 0.0)}
SEEDS = (0, 1, 2)
RELABELS = (0, +1, -1, +2)
T2 = Path("/work/shared/data/sct_testing_data/t2")
ROOTLETS = {"manual": "t2_seg-deepseg_rootlets-manual.nii.gz", "r20250318": "t2_seg-deepseg_rootlets.nii.gz"}
VERTEBRAL = {"labels.nii.gz (bodies 3, 5)": "labels.nii.gz",
             "t2_labeled_center_manual (bodies 3, 4, 5)": "t2_labeled_center_manual.nii.gz",
             "t2_seg-manual_labeled (cord by level 2-5)": "t2_seg-manual_labeled.nii.gz"}


def _row(case: dict, found: numbering.NumberingCheck) -> dict:
    """One case: the check's verdict and its evidence (pairs as named and under the suggested numbering)."""
    as_named, best = found.pairing(0), found.pairing(found.offset)
    return {**case, "status": found.status, "warns": found.warns, "suggested_offset": found.offset,
            "tolerance_mm": round(found.tolerance_mm, 2),
            "as_named": {"n": as_named.n, "score_mm": as_named.score_mm, "pairs": _pairs(as_named)},
            "suggested": {"n": best.n, "score_mm": best.score_mm, "pairs": _pairs(best)} if found.offset else None,
            "text": found.text}


def _pairs(p: numbering.Pairing) -> str:
    return ", ".join(f"VL {q['vertebral_level']}/SL {q['renamed']} {q['shift_mm']:+.1f}" for q in p.pairs)


def phantom_cases(method: str) -> list[dict]:
    rows = []
    for grid, (orient, spacing, tilt) in GRIDS.items():
        for seed in SEEDS:
            ph = make_phantom(orient, spacing, seed=seed, tilt_deg=tilt)
            for relabel in RELABELS:
                rootlets = np.where(ph.rootlets > 0, ph.rootlets.astype(np.int32) + relabel, 0)
                res = compute_levels(rootlets, ph.cord, ph.affine, ph.discs, ph.pmj, method=method)
                rows.append(_row({"case": f"phantom {grid} seed {seed}", "relabel": relabel,
                                  "expected_offset": -relabel}, res.numbering))
    return rows


def t2_cases(folder: Path) -> list[dict]:
    def load(name: str) -> np.ndarray:
        return np.asarray(nib.load(folder / name).dataobj)

    affine = nib.load(folder / "t2.nii.gz").affine
    cord = load("t2_seg-manual.nii.gz") > 0
    line = cord_centerline(cord, affine)
    vertebral = {}
    for name, file in VERTEBRAL.items():
        data = np.round(load(file)).astype(int)
        vertebral[name] = (numbering.vertebral_from_labelled_cord(data, line) if "labeled." in file
                           else numbering.vertebral_from_bodies(data, line, affine))
    rows = []
    for rname, file in ROOTLETS.items():
        res = compute_levels(load(file), cord, affine, method="reference")
        spinal = {int(r.value): float(r.mid_mm) for r in res.levels.itertuples() if r.status == "ok"}
        for vname, mids in vertebral.items():
            case = {"case": f"t2 {rname} {sorted(spinal)} vs {vname} {sorted(mids)}", "relabel": None,
                    "expected_offset": None}
            rows.append(_row(case, numbering.check(spinal, mids)))
    return rows


def _print(rows: list[dict]) -> None:
    print("| case | relabel | status | warns | suggested | as named: n, med abs resid | suggested: n, med abs resid |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        s, relabel = r["suggested"], "" if r["relabel"] is None else f"{r['relabel']:+d}"
        print(f"| {r['case']} | {relabel} | {r['status']} | {'yes' if r['warns'] else 'no'} | "
              f"{r['suggested_offset']:+d} | {r['as_named']['n']}, {_mm(r['as_named']['score_mm'])} | "
              + ("" if s is None else f"{s['n']}, {_mm(s['score_mm'])}") + " |")
    print("\nEvidence (shift = vertebral - spinal midpoint per pairing, mm; the paper's median 0 to 8.15 mm):")
    for r in rows:
        relabel = "" if r["relabel"] is None else f" relabel {r['relabel']:+d}"
        print(f"- {r['case']}{relabel}: as named [{r['as_named']['pairs']}]"
              + (f"; suggested {r['suggested_offset']:+d} [{r['suggested']['pairs']}]" if r["suggested"] else ""))


def _mm(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--method", default="gapfree", choices=["gapfree", "reference"])
    parser.add_argument("--t2", type=Path, default=T2)
    args = parser.parse_args()
    rows = phantom_cases(args.method)
    wrong = [r for r in rows if r["suggested_offset"] != r["expected_offset"]]
    rows += t2_cases(args.t2) if (args.t2 / "t2.nii.gz").exists() else []
    _print(rows)
    print(f"\nphantom cases: {len(rows) - sum(r['relabel'] is None for r in rows)}, "
          f"suggested offset != -relabel: {len(wrong)}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
