"""Our numbers next to the lab's published scripts' numbers (issue #15 "Done when"): rerun to regenerate the table.

    python benchmarks/lab_comparison.py [--csv FILE] [--t2 DIR]

Every row: what, ours, the lab's, ours - lab's. The lab's numbers are the committed test data of
tests/data/lab_reference (README there: how each was made with the lab's scripts, unchanged):

1. distances, level heights and slices: the lab's 02a_rootlets_to_spinal_levels.py and discs_to_vertebral_levels.py
   run with a real SCT (sct/) on the tilted phantom (seed 0, rebuilt here bit for bit) and on SCT's t2 data (manual
   and r20250318 rootlets, PMJ on the cord's top slice), against ``rootlets levels -method reference`` in the lab's
   CSV layout (``*_levels_lab.csv``); the lab's origin offset (how far its distance 0 lies above the PMJ);
2. body-height normalisation, pairings and group statistics: ``rootlets stats`` on the hand-built 12-subject table
   (and the one with three level rows removed) against bland-altman-analysis.py, bland-altman-all-levels-analysis.py
   and get_distributions_and_sizes.py (expected.json).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from rootlets_task.io.phantom import write_phantom
from rootlets_task.levels.compute import levels_from_files
from rootlets_task.levels.stats import group_stats

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "lab_reference"
T2 = Path("/work/shared/data/sct_testing_data/t2")
PAIRING = {"not_shifted": "unshifted", "shifted": "shifted"}
GLOBAL = (("bias_mm", "median"), ("loa_low_mm", "p2_5"), ("loa_high_mm", "p97_5"), ("spearman_rho", "spearman_rho"),
          ("spearman_p", "spearman_p"), ("slope", "slope"), ("intercept", "intercept"), ("r2", "r2"),
          ("regression_p", "regression_p"), ("shapiro_w", "shapiro_w"), ("shapiro_p", "shapiro_p"))
LAB_COLUMNS = {"distance_from_pmj_end": "rostral mm", "distance_from_pmj_start": "caudal mm", "height": "height mm",
               "slice_end": "rostral slice (RPI z)", "slice_start": "caudal slice (RPI z)"}


def _row(section: str, case: str, item: str, quantity: str, ours: float, lab: float | None) -> dict:
    lab = float("nan") if lab is None else float(lab)
    return {"section": section, "case": case, "item": item, "quantity": quantity, "ours": float(ours), "lab": lab,
            "difference": float(ours) - lab}


def level_rows(case: str, ours_csv: Path, lab_csv: Path, kind: str) -> list[dict]:
    """Per level of the lab's CSV: distances, height and slices, ours (lab layout) and the lab's."""
    ours = pd.read_csv(ours_csv)
    ours = ours[ours.spinal_level_type == kind].set_index("spinal_level")
    rows = []
    for level, lab in pd.read_csv(lab_csv).set_index("spinal_level").iterrows():
        name = f"{'SL' if kind == 'rootlets' else 'VL'} {level}"
        rows += [_row("distances", case, name, label, ours.loc[level, column], lab[column])
                 for column, label in LAB_COLUMNS.items()]
    return rows


def _lab_pmj_distance(centerline_csv: Path, pmj: Path) -> float:
    """The lab's distance (02a's get_distance_from_pmj, from the top of SCT's centerline) of the PMJ label's slice."""
    from rootlets_task.io.labels import read
    from rootlets_task.levels import sctline

    img, data = read(pmj, "pmj")
    grid = sctline.rpi(data.shape, img.affine)
    z = int(np.argwhere(grid.array(data) > 0)[0][2])
    return sctline.distance_from_top(np.genfromtxt(centerline_csv, delimiter=","), grid.zooms)[z]


def sct_rows(work: Path, t2: Path) -> list[dict]:
    files = write_phantom(work / "phantom", "LPI", (1.0, 1.0, 1.0), 0, 15.0)
    out, res = levels_from_files(files["rootlets"], files["cord"], files["discs"], files["pmj"], out_dir=work / "ours",
                                 method="reference")
    lab = DATA / "sct" / "cases" / "tilt15"
    rows = level_rows("phantom -tilt 15", out["lab"], lab / "phantom_T2w_label-rootlets_dseg_pmj_distance.csv", "rootlets")
    rows += level_rows("phantom -tilt 15", out["lab"],
                       lab / "phantom_T2w_label-discs_dlabel_centerline_pmj_distance_vertebral_disc.csv", "vertebrae")
    rows.append(_row("distances", "phantom -tilt 15", "origin", "lab's distance of the PMJ slice (mm)",
                     res.origin.offset_mm, _lab_pmj_distance(lab / "phantom_T2w_label-SC_seg_centerline_extrapolated.csv",
                                                             files["pmj"])))
    if (t2 / "t2.nii.gz").exists():
        for name in ("t2_seg-deepseg_rootlets-manual", "t2_seg-deepseg_rootlets"):
            out, _ = levels_from_files(t2 / f"{name}.nii.gz", t2 / "t2_seg-manual.nii.gz",
                                       pmj=DATA / "sct" / "t2" / "t2_pmj-topcord.nii.gz", out_dir=work / name,
                                       method="reference")
            rows += level_rows(f"t2 {name}", out["lab"], DATA / "sct" / "t2" / f"{name}_pmj_distance.csv", "rootlets")
    return rows


def midpoint_rows(midpoints: pd.DataFrame, case: str, want: dict) -> list[dict]:
    """Every subject's height-normalised level midpoint, ours and the lab's (its pivot tables)."""
    rows = []
    for kind, columns in want.items():
        for column, by_subject in columns.items():
            level = column.split()[-1]
            for subject, value in by_subject.items():
                got = midpoints[(midpoints.kind == kind) & (midpoints.level == level) & (midpoints.participant == subject)]
                if value is not None:
                    rows.append(_row("body heights", case, f"{subject} {kind} {level}", "normalised midpoint",
                                     got.analysed_mid_mm.iloc[0], value))
    return rows


def stats_rows(work: Path, table: str, case: str) -> list[dict]:
    """``rootlets stats`` (normalised) against the lab's three analysis scripts on one hand-built table."""
    expected = json.loads((DATA / "expected.json").read_text())["runs"]
    ba = expected[f"{case}/bland-altman-analysis"]["values"]
    sizes = expected[f"{case}/get_distributions_and_sizes -normalised y"]["values"]
    out = group_stats([DATA / table], work / case, participants=DATA / "participants.tsv")
    shift = pd.read_csv(out["shift"]).set_index(["pairing", "pair"])
    levels = pd.read_csv(out["levels"]).set_index(["kind", "level"])
    medians = json.loads(out["json"].read_text())["settings"]["median_body_height"]
    rows = [_row("body heights", case, "median body height", kind, medians[ours], ba["median_height"][lab])
            for ours, lab, kind in (("spinal", "rootlets", "over rootlet rows"), ("vertebral", "vertebrae",
                                                                                  "over vertebra rows"))]
    rows += midpoint_rows(pd.read_csv(out["midpoints"]), case,
                          expected[f"{case}/bland-altman-all-levels-analysis -normalise y"]["values"]["midpoints"])
    for pairing, pairs in ba["per_pair"].items():
        for pair, want in pairs.items():
            got = shift.loc[(PAIRING[pairing], pair)]
            rows.append(_row("pairings", case, f"{pairing} {pair}", "n (lab: n less NaN)", got.n,
                             want["n"] - want["n_nan"]))
            rows += [_row("pairings", case, f"{pairing} {pair}", theirs, got[ours], want[theirs])
                     for ours, theirs in (("bias_mm", "median"), ("loa_low_mm", "p2_5"), ("loa_high_mm", "p97_5"),
                                          ("slope", "slope"), ("shapiro_p", "shapiro_p"))]
            rows.append(_row("pairings", case, f"{pairing} {pair}", "rmse", got.rmse_mm, sizes["rmse"][pairing][pair]))
    for pairing, want in ba["global"].items():
        got = shift.loc[(PAIRING[pairing], "all")]
        rows += [_row("group statistics", case, f"{pairing} all pairs", theirs, got[ours], want[theirs])
                 for ours, theirs in GLOBAL]
        rows.append(_row("group statistics", case, f"{pairing} all pairs", "rmse", got.rmse_mm,
                         sizes["rmse"][pairing]["overall"]))
    for kind, by_level in sizes["level_size_rounded_2"].items():
        for level, want in by_level.items():
            got = levels.loc[(kind, level)]
            rows += [_row("level sizes", case, f"{kind} {level}", f"{q} height (lab rounds to 0.01)", round(got[c], 2),
                          want[q]) for c, q in (("mean_height_mm", "mean"), ("sd_height_mm", "sd"))]
    for kind, by_level in sizes["midpoint_distribution"].items():
        for level, want in by_level.items():
            got = levels.loc[(kind, level)]
            rows += [_row("level distributions", case, f"{kind} {level}", f"normal fit {q}", got[c], want[q])
                     for c, q in (("fit_mu_mm", "mu"), ("fit_sigma_mm", "sigma"))]
    return rows


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per section, case and quantity: the largest |ours - lab's| (NaN: the lab gave no number)."""
    table = table.assign(abs_difference=table.difference.abs(), lab_nan=table.lab.isna())
    return table.groupby(["section", "case", "quantity"], sort=False).agg(
        rows=("ours", "size"), max_abs_difference=("abs_difference", "max"), lab_nan=("lab_nan", "sum")).reset_index()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--csv", type=Path, help="write every row here")
    parser.add_argument("--t2", type=Path, default=T2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows = sct_rows(work, args.t2) + stats_rows(work, "spinal_vs_vertebral_levels.csv", "complete") + \
            stats_rows(work, "spinal_vs_vertebral_levels_missing.csv", "missing")
    table = pd.DataFrame(rows)
    pd.set_option("display.width", 250)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.6g}"))
    print("\nLargest |ours - lab's| per quantity:")
    print(summary(table).to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    if args.csv:
        table.to_csv(args.csv, index=False)


if __name__ == "__main__":
    main()
