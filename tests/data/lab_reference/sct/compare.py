"""Compare the lab's 02a / discs CSVs (real SCT) with ours (`rootlets levels -method reference`).

Usage: python compare.py WORK (the folder run_lab_sct.sh filled); prints the tables, writes WORK/comparison.csv.
``offset`` = the lab's distance of the PMJ slice, i.e. how far the lab's origin (the top of SCT's extrapolated
centerline of cord + PMJ) lies above the PMJ.
"""

import os
import sys

import nibabel as nib
import numpy as np
import pandas as pd

PHANTOM = "phantom/phantom_T2w_label-"
T2_ROOTLETS = ("t2_seg-deepseg_rootlets-manual", "t2_seg-deepseg_rootlets")


def top_distance(csv: str, voxel: tuple) -> dict[int, float]:
    """mm along the lab's centerline from its top (largest z) to every z slice (the lab's formula, written anew)."""
    c = np.genfromtxt(csv, delimiter=",")
    steps = np.sqrt(((np.diff(c, axis=1).T * np.asarray(voxel)) ** 2).sum(1))
    top = int(np.argmax(c[2]))
    dist = np.concatenate([np.cumsum(steps[:top][::-1])[::-1], [0.0]])
    return dict(zip(c[2][: top + 1].astype(int), dist, strict=True))


def compare(case: str, lab_csvs: list[tuple[str, str]], ours_csv: str, centerline: str, pmj: str, grid: str):
    img = nib.load(grid)
    axis = int(np.argmax(np.abs(img.affine[2, :3]) / np.linalg.norm(img.affine[:3, :3], axis=0)))
    up, n = img.affine[2, axis] > 0, img.shape[axis]
    pmj_z = int(np.argwhere(np.asarray(nib.as_closest_canonical(nib.load(pmj)).dataobj) > 0)[0][2])
    dist = top_distance(centerline, nib.as_closest_canonical(img).header.get_zooms()[:3])
    offset = dist[pmj_z]
    print(f"\n## {case}: lab origin = centerline top z={max(dist)}, PMJ at RPI z={pmj_z}, offset {offset:.3f} mm")
    ours = pd.read_csv(ours_csv)
    ours = ours[ours.status == "ok"]
    rows = []
    for kind, csv in lab_csvs:
        for r in pd.read_csv(csv).itertuples():
            match = ours[(ours.kind == kind) & (ours.value == r.spinal_level)]
            if match.empty:
                continue
            o = match.iloc[0]
            lab_mid = (r.distance_from_pmj_start + r.distance_from_pmj_end) / 2
            rows.append({"case": case, "kind": kind, "level": o.level, "offset": offset,
                         "lab_rostral": r.distance_from_pmj_end, "lab_caudal": r.distance_from_pmj_start,
                         "lab_mid": lab_mid, "ours_rostral": o.start_mm, "ours_caudal": o.end_mm, "ours_mid": o.mid_mm,
                         "mid_diff": lab_mid - o.mid_mm, "mid_diff_minus_offset": lab_mid - o.mid_mm - offset,
                         "lab_height": r.height, "ours_height": o.height_mm,
                         "lab_z_rostral": r.slice_end, "ours_z_rostral": o.start_slice if up else n - 1 - o.start_slice,
                         "lab_z_caudal": r.slice_start, "ours_z_caudal": o.end_slice if up else n - 1 - o.end_slice})
    table = pd.DataFrame(rows)
    print(table.drop(columns=["case", "offset"]).to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    return table


def main() -> None:
    os.chdir(sys.argv[1])
    lab = "lab_phantom/phantom_T2w_label-"
    tables = [compare("phantom -tilt 15", [("spinal", f"{lab}rootlets_dseg_pmj_distance.csv"),
                                           ("vertebral", f"{lab}discs_dlabel_centerline_pmj_distance_vertebral_disc.csv")],
                      "ours_phantom/phantom_T2w_label-rootlets_dseg_levels.csv", f"{lab}SC_seg_centerline_extrapolated.csv",
                      f"{PHANTOM}PMJ_dlabel.nii.gz", f"{PHANTOM}rootlets_dseg.nii.gz")]
    for r in T2_ROOTLETS:
        tables.append(compare(f"t2 {r}", [("spinal", f"lab_t2/{r}_pmj_distance.csv")], f"ours_t2/{r}_levels.csv",
                              "lab_t2/t2_seg-manual_centerline_extrapolated.csv", "t2/t2_pmj-topcord.nii.gz",
                              f"t2/{r}.nii.gz"))
    pd.concat(tables).to_csv("comparison.csv", index=False)


if __name__ == "__main__":
    main()
