"""Write the hand-built inputs of the lab-reference test: a level table in the layout of the lab's
``get_vertebral_spinal_levels_one_table.py`` and a participants file with body heights.

Twelve made-up subjects (named like spine-generic ones); distances (mm from the PMJ) are plausible adult values
scaled by body height plus noise. Spinal levels C2-T1 (values 2-9) have gaps between them; vertebral levels C2-T1
(values 2-8) are contiguous, as levels between discs are. ``spinal_vs_vertebral_levels_missing.csv`` drops three
rows to show what the lab's scripts do with missing levels. Run: ``python make_input.py`` (numpy and pandas only;
the output is deterministic).
"""

from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).parent
SPINAL_MID = {2: 20.0, 3: 33.0, 4: 46.0, 5: 60.0, 6: 75.0, 7: 91.0, 8: 106.0, 9: 121.0}
SPINAL_HEIGHT = {2: 10.0, 3: 12.0, 4: 12.0, 5: 13.0, 6: 14.0, 7: 14.0, 8: 13.0, 9: 13.0}
DISCS = {2: 24.0, 3: 44.0, 4: 58.0, 5: 72.0, 6: 87.0, 7: 102.0, 8: 117.0, 9: 133.0}  # C1/C2 ... T1/T2
# the first eight are the subjects the lab's one-table script draws (hard-coded there; an empty figure crashes it)
SUBJECTS = ["sub-barcelona03", "sub-fslAchieva04", "sub-brnoUhb01", "sub-amu02", "sub-mountSinai03", "sub-oxfordFmrib06",
            "sub-sherbrooke07", "sub-tehranS02", "sub-amu01", "sub-beijingPrisma02", "sub-cmrra03", "sub-geneva01"]
VOXEL_MM, TOP_SLICE = 0.8, 350  # slices: RPI z index, the PMJ near the top slice


def _row(subject, level, kind, start_mm, end_mm):
    fname = f"{subject}_T2w_label-rootlets_dseg.nii.gz" if kind == "rootlets" else f"{subject}_T2w_labels-disc_centerline.nii.gz"
    return {"spinal_level": level, "fname": fname,
            "slice_start": TOP_SLICE - int(round(start_mm / VOXEL_MM)),
            "slice_end": TOP_SLICE - int(round(end_mm / VOXEL_MM)),
            "distance_from_pmj_start": start_mm, "distance_from_pmj_end": end_mm, "height": start_mm - end_mm,
            "spinal_level_type": kind, "subject": subject}


def main() -> None:
    rng = np.random.default_rng(20261121)
    rows, people = [], []
    for n in range(1, 13):
        subject = SUBJECTS[n - 1]
        body = round(float(rng.normal(174, 9)), 1)
        scale = body / 174 * float(rng.normal(1, 0.03))
        people.append({"subject": subject, "age": int(rng.integers(21, 60)), "sex": "FM"[n % 2], "height_sub": body})
        for level, mid in SPINAL_MID.items():
            centre = round(mid * scale + float(rng.normal(0, 2.5)), 2)
            half = round(SPINAL_HEIGHT[level] * scale * float(rng.normal(1, 0.1)) / 2, 2)
            rows.append(_row(subject, level, "rootlets", centre + half, centre - half))
        discs = {d: round(mm * scale + float(rng.normal(0, 1.5)), 2) for d, mm in DISCS.items()}
        for level in range(2, 9):
            rows.append(_row(subject, level, "vertebrae", discs[level + 1], discs[level]))
    table = pd.DataFrame(rows).sort_values(["subject", "spinal_level_type", "spinal_level"])
    table.to_csv(HERE / "spinal_vs_vertebral_levels.csv", index=False)
    drop = ((table.subject == SUBJECTS[2]) & (table.spinal_level_type == "rootlets") & (table.spinal_level == 9)) | \
           ((table.subject == SUBJECTS[6]) & (table.spinal_level_type == "vertebrae") & (table.spinal_level == 4)) | \
           ((table.subject == SUBJECTS[10]) & (table.spinal_level_type == "rootlets") & (table.spinal_level == 2))
    table[~drop].to_csv(HERE / "spinal_vs_vertebral_levels_missing.csv", index=False)
    pd.DataFrame(people).to_csv(HERE / "participants.tsv", sep="\t", index=False)


if __name__ == "__main__":
    main()
