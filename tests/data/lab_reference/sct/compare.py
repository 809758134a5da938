"""Compare the lab's 02a / discs CSVs (real SCT, run_lab_sct.sh) with ours (`-method reference`), number for number.

Usage: python compare.py WORK [DEST]  (WORK: the folder run_lab_sct.sh filled). Runs ours on every case, prints the
per-level table and the maximum difference per quantity and case, writes WORK/comparison.csv and
WORK/max_differences.csv, and with DEST copies the lab's CSVs and both tables there (this folder: cases/<case>/, t2/).
Run with the project's Python and tests/ on PYTHONPATH (support.lab_cases).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pandas as pd

from rootlets_task.levels.compute import levels_from_files

P = "phantom_T2w_label-"
LAB_CSV = {"rootlets": f"{P}rootlets_dseg_pmj_distance.csv",
           "vertebrae": f"{P}discs_dlabel_centerline_pmj_distance_vertebral_disc.csv"}
T2_ROOTLETS = ("t2_seg-deepseg_rootlets-manual", "t2_seg-deepseg_rootlets")
DISTANCES = ("distance_from_pmj_start", "distance_from_pmj_end", "height")
SLICES = ("slice_start", "slice_end")


def side_by_side(ours_lab_csv: Path, theirs_csv: Path, kind: str) -> pd.DataFrame:
    """Per level of the lab's CSV: ours and theirs (the lab's columns) and ours - theirs."""
    ours = pd.read_csv(ours_lab_csv)
    ours = ours[ours.spinal_level_type == kind].set_index("spinal_level")
    theirs = pd.read_csv(theirs_csv).set_index("spinal_level")
    missing = sorted(set(theirs.index) - set(ours.index))
    if missing:
        raise AssertionError(f"{theirs_csv}: levels {missing} are not in ours ({ours_lab_csv})")
    both = ours.loc[theirs.index, [*SLICES, *DISTANCES]].add_suffix("_ours").join(
        theirs[[*SLICES, *DISTANCES]].add_suffix("_lab"))
    for column in (*SLICES, *DISTANCES):
        both[f"{column}_diff"] = both[f"{column}_ours"] - both[f"{column}_lab"]
    return both.reset_index()


def maxima(both: pd.DataFrame) -> dict:
    """Slices that differ (count) and the largest |difference| of each distance."""
    return {"levels": len(both), "slices_differ": int(sum((both[f"{c}_diff"] != 0).sum() for c in SLICES)),
            **{f"max_abs_{c}_mm": float(both[f"{c}_diff"].abs().max()) for c in DISTANCES}}


def main() -> None:
    work = Path(sys.argv[1]).resolve()
    dest = Path(sys.argv[2]).resolve() if len(sys.argv) > 2 else None
    rows, summary = [], []
    runs = []
    for case in sorted(p.name for p in (work / "cases").iterdir()):
        inputs = work / "cases" / case
        files = [inputs / f"{P}{k}.nii.gz" for k in ("rootlets_dseg", "SC_seg", "discs_dlabel", "PMJ_dlabel")]
        runs.append((case, files, {k: work / "lab" / case / v for k, v in LAB_CSV.items()}))
    for r in T2_ROOTLETS:
        t2 = work / "lab" / "t2"
        runs.append((f"t2 {r}", [t2 / f"{r}.nii.gz", t2 / "t2_seg-manual.nii.gz", None, t2 / "t2_pmj-topcord.nii.gz"],
                     {"rootlets": t2 / f"{r}_pmj_distance.csv"}))
    for case, (rootlets, cord, discs, pmj), lab in runs:
        outputs, _ = levels_from_files(rootlets, cord, discs, pmj, out_dir=work / "ours" / case.replace(" ", "_"),
                                       method="reference")
        for kind, csv in lab.items():
            both = side_by_side(outputs["lab"], csv, kind)
            rows.append(both.assign(case=case, kind="spinal" if kind == "rootlets" else "vertebral"))
            summary.append({"case": case, "kind": rows[-1]["kind"].iloc[0], **maxima(both)})
    table, worst = pd.concat(rows), pd.DataFrame(summary)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(worst.to_string(index=False, float_format=lambda v: f"{v:.2e}"))
    table.to_csv(work / "comparison.csv", index=False)
    worst.to_csv(work / "max_differences.csv", index=False)
    if dest:
        for case, _, lab in runs:
            folder = dest / ("t2" if case.startswith("t2") else f"cases/{case}")
            folder.mkdir(parents=True, exist_ok=True)
            for csv in lab.values():
                shutil.copy(csv, folder / csv.name)
            if not case.startswith("t2"):
                shutil.copy(work / "lab" / case / f"{P}SC_seg_centerline_extrapolated.csv", folder)
        shutil.copy(work / "lab" / "t2" / "t2_seg-manual_centerline_extrapolated.csv", dest / "t2")
        shutil.copy(work / "comparison.csv", dest)
        shutil.copy(work / "max_differences.csv", dest)


if __name__ == "__main__":
    main()
