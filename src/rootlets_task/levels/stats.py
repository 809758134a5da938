"""Group statistics over many subjects' level tables: the lab's published spinal-vs-vertebral analysis.

Reproduces ``ivadomed/model-spinal-rootlets`` ``utilities/hc-leipzig-7t-mp2rage/analysis_MP2RAGE_T2w``
(``bland-altman-analysis.py``, ``bland-altman-all-levels-analysis.py``, ``get_distributions_and_sizes.py``):

* levels kept: spinal C2-T1 (values 2-9) and vertebral C2-T1 (values 2-8), as ``get_vertebral_spinal_levels_one_table.py``;
* midpoint = mean of the level's two distances from the reference (the PMJ);
* height normalisation (optional, the paper's default): midpoint / subject's body height × the median body height,
  the median taken over the level rows of that kind (spinal and vertebral separately), as the lab does;
* pairings: unshifted VL C2-SL C2 ... VL C7-SL C7, VL T1-SL C8; shifted VL C2-SL C3 ... VL C7-SL C8, VL T1-SL T1;
* per pair and over all seven pairs: difference = vertebral − spinal midpoint, bias = median, limits of agreement =
  2.5th/97.5th percentiles, Spearman correlation, OLS regression of vertebral on spinal, Shapiro-Wilk on the
  differences, RMSE; per level: size (level height) mean/SD, normal fit and Shapiro-Wilk of the midpoints.

Deviations, all where the lab's scripts give NaN or misalign: pairs are matched by subject (the lab matches rows by
position), and a subject missing one level of a pair is left out of that pair (the lab's NaN then turns most of its
statistics into NaN). Inputs are ``*_levels.csv`` of ``rootlets levels`` or the lab's own tables
(``*_pmj_distance*.csv`` of 02a / ``discs_to_vertebral_levels.py``, or their combined ``spinal_vs_vertebral_levels.csv``);
:func:`lab_table` writes ours in the lab's layout.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats as scistats

from rootlets_task.core.errors import RootletsError
from rootlets_task.core.files import atomic_path, check_size, keep_inputs, load_json
from rootlets_task.core.names import level_name
from rootlets_task.core.places import active, portable, shared_paths
from rootlets_task.io.tables import SHIFT_COLUMNS, is_levels_table, upgrade, write_csv

log = logging.getLogger(__name__)

LAB_COLUMNS = ["spinal_level", "fname", "slice_start", "slice_end", "distance_from_pmj_start", "distance_from_pmj_end",
               "height"]
LAB_TABLE_COLUMNS = [*LAB_COLUMNS, "spinal_level_type", "subject"]
LAB_KINDS = {"rootlets": "spinal", "vertebrae": "vertebral"}
LAB_VALUES = {"spinal": range(2, 10), "vertebral": range(2, 9)}
PAIRINGS = {"unshifted": {v: v for v in range(2, 9)}, "shifted": {v: v + 1 for v in range(2, 9)}}  # vertebral -> spinal
ID_COLUMNS = ("participant_id", "subject")  # BIDS, the lab's
HEIGHT_COLUMNS = ("height", "height_sub")  # BIDS, the lab's
MAX_HEIGHT = 10_000.0  # a body height in cm or mm is below this; a larger number (1e308, inf) is not one
SHIFT_STATS = ["pairing", "pair", "vertebral_level", "spinal_level", "n", "bias_mm", "loa_low_mm", "loa_high_mm",
               "mean_mid_mm", "spearman_rho", "spearman_p", "slope", "intercept", "r2", "regression_p",
               "regression_stderr", "shapiro_w", "shapiro_p", "rmse_mm"]
LEVEL_STATS = ["kind", "level", "n", "mean_height_mm", "sd_height_mm", "mean_mid_mm", "sd_mid_mm", "fit_mu_mm",
               "fit_sigma_mm", "shapiro_w", "shapiro_p"]
MIDPOINT_COLUMNS = ["unit", "participant", "kind", "level", "value", "rostral_mm", "caudal_mm", "mid_mm", "height_mm",
                    "body_height", "analysed_mid_mm", "source"]
OUTPUTS = {"shift": "shift_stats.csv", "levels": "level_stats.csv", "midpoints": "midpoints.csv", "json": "stats.json",
           "plot": "bland_altman.png", "lab": "spinal_vs_vertebral_levels.csv"}
LAB_SOURCE = "model-spinal-rootlets scripts"


@dataclass
class Table:
    """One input table: its level rows (``MIDPOINT_COLUMNS`` less the analysis ones) and provenance."""

    path: Path
    rows: pd.DataFrame
    provenance: dict[str, str | None]  # source, method, version, reference
    inputs: dict[str, str] = field(default_factory=dict)
    grid: tuple[int, bool] | None = None  # (slices along S-I, index grows superiorly); None: read from ``inputs``


# ----------------------------------------------------------------------------------------------- reading


def _participant(name: str) -> str:
    """Participant of a file name: its BIDS ``sub-<label>`` entity, else the text before the first ``_`` (the lab's rule)."""
    match = re.search(r"(?:^|_)(sub-[A-Za-z0-9]+)", name)
    return match[1] if match else name.split("_")[0]


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(check_size(path, "table"))
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise RootletsError(f"{path}: unreadable CSV ({exc}); re-run `rootlets levels`") from None


def _ours(path: Path, table: pd.DataFrame) -> Table:
    """A ``*_levels.csv`` of ``rootlets levels`` (any version); method and version from its ``_levels.json``."""
    unit = path.name[: -len("_levels.csv")] if path.name.endswith("_levels.csv") else path.stem
    sidecar = path.with_name(f"{unit}_levels.json")
    document: dict = {}
    if sidecar.is_file():
        document = load_json(sidecar, "levels document", limit=16 << 20, fix="re-run `rootlets levels`")
        if not isinstance(document, dict):
            raise RootletsError(f"levels document {sidecar}: not a document of `rootlets levels`; re-run `rootlets levels`")
    return our_table(path, table, document)


def _source(path: Path) -> str:
    """The table's file as a group's outputs record it (no local folders while paths are shared)."""
    return portable(path) if active() else str(path)


def our_table(path: Path, table: pd.DataFrame, document: dict, grid: tuple[int, bool] | None = None) -> Table:
    """One subject's levels table of ours (old column names too) and its ``_levels.json`` content, as a :class:`Table`.

    Method and version come from the table's own columns or the document (``rootlets_task_*`` in early versions).
    """
    unit = path.name[: -len("_levels.csv")] if path.name.endswith("_levels.csv") else path.stem
    table = upgrade(table)
    provenance: dict[str, str | None] = {"source": "rootlets levels"}
    for key in ("method", "version", "reference"):
        values = table[key].dropna().astype(str).unique() if key in table.columns else []
        if len(values) > 1:
            raise RootletsError(f"{path}: rows of different {key}s ({', '.join(values)}) in one table; re-run `rootlets levels`")
        provenance[key] = values[0] if len(values) else document.get(key, document.get(f"rootlets_task_{key}"))
    ok = table[table["status"] == "ok"]
    rows = pd.DataFrame({"unit": unit, "participant": _participant(unit), "kind": ok["kind"],
                         "value": ok["value"].astype(int), "rostral_mm": ok["rostral_mm"].astype(float),
                         "caudal_mm": ok["caudal_mm"].astype(float), "height_mm": ok["height_mm"].astype(float),
                         "source": _source(path)})
    rows["rostral_slice"], rows["caudal_slice"] = ok["rostral_slice"], ok["caudal_slice"]
    inputs = document.get("inputs", {})
    names = {kind: Path(inputs[key]).name if key in inputs else path.name
             for kind, key in (("spinal", "rootlets"), ("vertebral", "discs"))}
    rows["fname"] = rows["kind"].map(names)  # the lab's fname: the rootlets / disc-label file the level came from
    return Table(path, rows, provenance, inputs, grid)


def _lab(path: Path, table: pd.DataFrame) -> Table:
    """A table of the lab's scripts: one 02a / discs CSV, or their combined ``spinal_vs_vertebral_levels.csv``."""
    if "spinal_level_type" not in table.columns:  # what get_vertebral_spinal_levels_one_table.py derives from fname
        table = table.assign(spinal_level_type=table["fname"].astype(str).map(
            lambda f: "rootlets" if "rootlets" in f else "vertebrae"))
    if "subject" not in table.columns:
        table = table.assign(subject=table["fname"].astype(str).map(lambda f: os.path.basename(f).split("_")[0]))
    unknown = sorted(set(table["spinal_level_type"].astype(str)) - set(LAB_KINDS))
    if unknown:
        raise RootletsError(f"{path}: spinal_level_type {unknown} is not 'rootlets' or 'vertebrae'; fix the column")
    rostral = table["distance_from_pmj_end"].astype(float)  # the lab's end is the rostral end
    caudal = table["distance_from_pmj_start"].astype(float)
    rows = pd.DataFrame({"unit": table["subject"].astype(str), "participant": table["subject"].astype(str),
                         "kind": table["spinal_level_type"].map(LAB_KINDS), "value": table["spinal_level"].astype(int),
                         "rostral_mm": rostral, "caudal_mm": caudal, "height_mm": table["height"].astype(float),
                         "source": _source(path), "rostral_slice": table["slice_end"], "caudal_slice": table["slice_start"],
                         "fname": table["fname"]})
    provenance = {"source": LAB_SOURCE, "method": "02a", "version": None,
                  "reference": "PMJ (top of SCT's extrapolated centerline)"}
    return Table(path, rows, provenance)


def _files(items: list[str | os.PathLike]) -> list[Path]:
    """Files given, and in folders (recursively) every ``*_levels.csv`` and the lab's ``*pmj_distance*.csv``."""
    paths: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            found = sorted(p for p in item.rglob("*.csv") if p.name.endswith("_levels.csv") or "pmj_distance" in p.name)
            paths += found
        elif item.is_file():
            paths.append(item)
        else:
            raise RootletsError(f"{item}: no such file or folder; check the path")
    return paths


def read_tables(items: list[str | os.PathLike]) -> list[Table]:
    """Read level tables (ours or the lab's; folders searched recursively); ``*_shift.csv`` and ``*_levels_lab.csv``
    (our levels in the lab's layout) are derived, so skipped when their ``*_levels.csv`` is given too."""
    paths = _files(items)
    given = {p.resolve() for p in paths}
    tables = []
    for path in paths:
        if path.name.endswith("_levels_lab.csv") and \
                path.with_name(path.name[: -len("_lab.csv")] + ".csv").resolve() in given:
            continue
        if path.name.endswith("_shift.csv"):
            if path.with_name(path.name[: -len("_shift.csv")] + "_levels.csv").resolve() not in given:
                raise RootletsError(f"{path}: a shift table; give its *_levels.csv instead (the statistics start "
                                    "from each subject's levels)")
            continue
        table = _read_csv(path)
        reader = _ours if is_levels_table(table.columns) else \
            _lab if all(c in table.columns for c in LAB_COLUMNS) else None
        if reader is not None:
            try:
                tables.append(reader(path, table))
            except (ValueError, TypeError) as exc:  # e.g. an empty or non-numeric level value or distance
                raise RootletsError(f"{path}: a value is missing or not a number ({exc}); fix or re-make the table") from None
        elif all(c in table.columns for c in SHIFT_COLUMNS):
            raise RootletsError(f"{path}: a shift table; give its *_levels.csv instead")
        else:
            raise RootletsError(f"{path}: neither a *_levels.csv of `rootlets levels` nor a table of the lab's scripts "
                                f"(columns {', '.join(LAB_COLUMNS)}); check the file")
    if not tables:
        raise RootletsError(f"no *_levels.csv among {', '.join(map(str, items))}; run `rootlets levels` first")
    return tables


def _check_uniform(tables: list[Table]) -> None:
    """Refuse tables of different sources, methods, package versions or distance references."""
    first = tables[0]
    fixes = {"source": "analyse the lab's tables and ours separately (their distances are measured differently)",
             "method": "re-run `rootlets levels` with one -method for every subject",
             "version": "re-run `rootlets levels` with one version of rootlets_task for every subject",
             "reference": "give every subject the same reference landmark (e.g. a PMJ label for all)"}
    for table in tables[1:]:
        for key, fix in fixes.items():
            if table.provenance.get(key) != first.provenance.get(key):
                raise RootletsError(f"{table.path}: {key} {table.provenance.get(key) or 'unknown'!s} differs from "
                                    f"{first.provenance.get(key) or 'unknown'!s} of {first.path}; {fix}")


def _combine(tables: list[Table]) -> pd.DataFrame:
    """All level rows within the lab's level ranges, one per unit, kind and value."""
    rows = pd.concat([t.rows for t in tables], ignore_index=True)
    keep = pd.Series(False, index=rows.index)
    for kind, values in LAB_VALUES.items():
        keep |= (rows["kind"] == kind) & rows["value"].isin(list(values))
    if (~keep).any():
        log.info("left out %d level rows outside spinal C2-T1 / vertebral C2-T1 (the lab's analysis range)", (~keep).sum())
    rows = rows[keep].reset_index(drop=True)
    twice = rows[rows.duplicated(["unit", "kind", "value"], keep=False)]
    if len(twice):
        first = twice.iloc[0]
        files = sorted(set(twice[(twice.unit == first.unit) & (twice.value == first.value)]["source"]))
        raise RootletsError(f"{files[-1]}: a second {first.kind} level {level_name(int(first.value), first.kind)} for "
                            f"{first.unit} (also in {files[0]}); give one table per subject and image")
    if not len(rows):
        raise RootletsError(f"no level of spinal C2-T1 or vertebral C2-T1 with status ok in {tables[0].path} ...; "
                            "check the `rootlets levels` warnings of these subjects")
    rows["level"] = [level_name(int(v), k) for v, k in zip(rows["value"], rows["kind"], strict=True)]
    rows["mid_mm"] = rows[["rostral_mm", "caudal_mm"]].mean(axis=1)
    return rows


# ----------------------------------------------------------------------------------------------- normalisation


def read_heights(path: str | os.PathLike) -> tuple[dict[str, float], str]:
    """{participant: body height} from a BIDS ``participants.tsv`` (``participant_id``, ``height``) or the lab's file
    (``subject``, ``height_sub``); also returns the height column used."""
    path = Path(path)
    try:
        table = pd.read_csv(check_size(path, "participants file"), sep="," if path.suffix == ".csv" else "\t",
                            na_values=["n/a"], dtype=str)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise RootletsError(f"{path}: unreadable participants file ({exc}); give a tab-separated participants.tsv") from None
    ids = next((c for c in ID_COLUMNS if c in table.columns), None)
    column = next((c for c in HEIGHT_COLUMNS if c in table.columns), None)
    if ids is None:
        raise RootletsError(f"{path}: no participant_id column (BIDS) or subject column; add one")
    if column is None:
        raise RootletsError(f"{path}: no height column; add 'height' (body height, as BIDS) or 'height_sub' (the lab's)")
    heights = pd.to_numeric(table[column], errors="coerce")
    if table[ids].duplicated().any():
        raise RootletsError(f"{path}: participant {table[ids][table[ids].duplicated()].iloc[0]} is listed twice; keep one row")
    return dict(zip(table[ids].astype(str), heights.astype(float), strict=True)), column


def normalise_rows(rows: pd.DataFrame, heights: dict[str, float], path: str | os.PathLike) -> tuple[pd.DataFrame, dict]:
    """Midpoint / body height × median body height, the median over the rows of each kind (the lab's order of operations)."""
    body = rows["participant"].map(heights).astype(float)
    plausible = np.isfinite(body) & (body > 0) & (body < MAX_HEIGHT)
    bad = sorted(set(rows.loc[~plausible, "participant"]))  # missing, text, NaN, <= 0, infinite or huge
    if bad:
        listed = ", ".join(bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise RootletsError(f"{path}: no plausible height (a number above 0 and below {MAX_HEIGHT:g}, in cm or mm) for "
                            f"{len(bad)} subject(s) ({listed}); add their heights or leave out -participants / use "
                            "-normalise n")
    rows = rows.assign(body_height=body.astype(float))
    medians = {kind: float(rows.loc[rows.kind == kind, "body_height"].median()) for kind in ("spinal", "vertebral")}
    rows["analysed_mid_mm"] = rows["mid_mm"] / rows["body_height"] * rows["kind"].map(medians)
    return rows, medians


# ----------------------------------------------------------------------------------------------- statistics


def pair_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Every subject's vertebral/spinal midpoint pairs of both pairings (``analysed_mid_mm``), matched by subject."""
    mids = rows.set_index(["unit", "kind", "value"])["analysed_mid_mm"]
    records = []
    for pairing, pairs in PAIRINGS.items():
        for vertebral, spinal in pairs.items():
            vl, sl = level_name(vertebral, "vertebral"), level_name(spinal, "spinal")
            for unit in sorted(rows["unit"].unique()):
                v, s = mids.get((unit, "vertebral", vertebral)), mids.get((unit, "spinal", spinal))
                if v is not None and s is not None:
                    records.append({"pairing": pairing, "pair": f"VL{vl}-SL{sl}", "vertebral_level": vl,
                                    "spinal_level": sl, "unit": unit, "vertebral_mid_mm": v, "spinal_mid_mm": s,
                                    "diff_mm": v - s, "mean_mm": (s + v) / 2})
    columns = ["pairing", "pair", "vertebral_level", "spinal_level", "unit", "vertebral_mid_mm", "spinal_mid_mm",
               "diff_mm", "mean_mm"]
    return pd.DataFrame.from_records(records, columns=columns)


def agreement(spinal: np.ndarray, vertebral: np.ndarray) -> dict[str, float]:
    """Bland-Altman (median bias, 2.5/97.5 percentile limits), Spearman, OLS of vertebral on spinal, Shapiro-Wilk of
    the differences and RMSE; NaN where there are too few pairs (Shapiro-Wilk needs 3) or no spread."""
    s, v = np.asarray(spinal, float), np.asarray(vertebral, float)
    d = v - s
    out = dict.fromkeys(SHIFT_STATS[4:], float("nan"))
    out["n"] = len(d)
    if not len(d):
        return out
    out.update(bias_mm=float(np.median(d)), loa_low_mm=float(np.percentile(d, 2.5)),
               loa_high_mm=float(np.percentile(d, 97.5)), mean_mid_mm=float(np.mean((s + v) / 2)),
               rmse_mm=float(np.sqrt(np.mean(d**2))))
    with warnings.catch_warnings():  # constant or tiny samples: scipy warns and returns NaN, which we report as such
        warnings.simplefilter("ignore")
        if len(d) >= 2 and np.ptp(s) > 0 and np.ptp(v) > 0:
            rho, p = scistats.spearmanr(s, v)
            fit = scistats.linregress(s, v)
            out.update(spearman_rho=float(rho), spearman_p=float(p), slope=float(fit.slope),
                       intercept=float(fit.intercept), r2=float(fit.rvalue) ** 2, regression_p=float(fit.pvalue),
                       regression_stderr=float(fit.stderr))
        if len(d) >= 3 and np.ptp(d) > 0:
            w, p = scistats.shapiro(d)
            out.update(shapiro_w=float(w), shapiro_p=float(p))
    return out


def shift_stats(pairs: pd.DataFrame) -> pd.DataFrame:
    """:func:`agreement` per pair and over the seven pairs (``all``) of each pairing."""
    records = []
    for pairing in PAIRINGS:
        rows = pairs[pairs["pairing"] == pairing]
        groups = list(rows.groupby(["pair", "vertebral_level", "spinal_level"], sort=False))
        for (pair, vl, sl), group in [*groups, (("all", "all", "all"), rows)]:
            stats = agreement(group["spinal_mid_mm"], group["vertebral_mid_mm"])
            records.append({"pairing": pairing, "pair": pair, "vertebral_level": vl, "spinal_level": sl, **stats})
    return pd.DataFrame.from_records(records, columns=SHIFT_STATS)


def level_stats(rows: pd.DataFrame) -> pd.DataFrame:
    """Per kind and level: level height mean/SD (ddof 1), midpoint mean/SD, and the lab's normal fit (mean and
    ddof-0 SD) and Shapiro-Wilk of the analysed midpoints."""
    records = []
    for (kind, value), group in rows.groupby(["kind", "value"]):
        h, m, a = (group[c].astype(float) for c in ("height_mm", "mid_mm", "analysed_mid_mm"))
        mu, sigma = scistats.norm.fit(a)
        w = p = float("nan")
        if len(a) >= 3 and np.ptp(a) > 0:
            w, p = scistats.shapiro(a)
        records.append({"kind": kind, "level": level_name(int(value), kind), "n": len(group), "mean_height_mm": h.mean(),
                        "sd_height_mm": h.std(ddof=1), "mean_mid_mm": m.mean(), "sd_mid_mm": m.std(ddof=1),
                        "fit_mu_mm": float(mu), "fit_sigma_mm": float(sigma), "shapiro_w": float(w), "shapiro_p": float(p)})
    table = pd.DataFrame.from_records(records, columns=LEVEL_STATS)
    return table.sort_values("kind", key=lambda k: k.map({"spinal": 0, "vertebral": 1}), kind="stable")


def agreement_figure(pairs: pd.DataFrame, stats: pd.DataFrame, normalised: bool) -> Figure:
    """Per pairing (rows): scatter with the regression and y = x (left), Bland-Altman (right); one colour per pair,
    the colour of its spinal level (:func:`rootlets_task.core.colours.level_colour`), the same in both panels."""
    from rootlets_task.core.colours import level_colour

    fig = Figure(figsize=(13, 10), layout="constrained")
    what = "height-normalised midpoint" if normalised else "midpoint"
    for (reg, ba), pairing in zip(fig.subplots(2, 2), PAIRINGS, strict=True):
        rows = pairs[pairs["pairing"] == pairing]
        for pair, group in rows.groupby("pair", sort=False):
            colour = level_colour(group["spinal_level"].iloc[0])
            reg.scatter(group["spinal_mid_mm"], group["vertebral_mid_mm"], s=18, alpha=0.8, color=colour, label=pair)
            ba.scatter(group["mean_mm"], group["diff_mm"], s=18, alpha=0.8, color=colour, label=pair)
        overall = stats[(stats["pairing"] == pairing) & (stats["pair"] == "all")].iloc[0]
        if len(rows):
            x = np.array([rows["spinal_mid_mm"].min(), rows["spinal_mid_mm"].max()])
            reg.plot(x, x, color="grey", linestyle="--", linewidth=1, label="y = x")
            if np.isfinite(overall.slope):
                reg.plot(x, overall.slope * x + overall.intercept, color="black", linewidth=1.5,
                         label=f"y = {overall.slope:.2f}x {overall.intercept:+.2f}, R² = {overall.r2:.2f}")
            for y, width, text in ((overall.bias_mm, 2, "median"), (overall.loa_low_mm, 1, "2.5 percentile"),
                                   (overall.loa_high_mm, 1, "97.5 percentile")):
                ba.axhline(y, color="black", linestyle="--", linewidth=width)
                ba.annotate(f"{text} {y:.2f}", (1, y), xycoords=("axes fraction", "data"), ha="right", va="bottom",
                            fontsize=8)
            reg.legend(fontsize=7, loc="upper left")
            ba.legend(fontsize=7, loc="best")
        units = rows["unit"].nunique() if len(rows) else 0
        reg.set_title(f"{pairing}: regression ({units} subjects)")
        ba.set_title(f"{pairing}: Bland-Altman, vertebral − spinal")
        reg.set_xlabel(f"spinal level {what} (mm)")
        reg.set_ylabel(f"vertebral level {what} (mm)")
        ba.set_xlabel(f"mean of the two {what}s (mm)")
        ba.set_ylabel("difference (mm)")
    return fig


# ----------------------------------------------------------------------------------------------- the lab's layout


def _rpi(inputs: dict[str, str], base: Path) -> tuple[int, bool] | None:
    """(slices along the superior-inferior axis, index grows superiorly) of the grid a levels table was made on."""
    import nibabel as nib

    from rootlets_task.io.nifti import si_axis

    name = inputs.get("image") or inputs.get("rootlets")
    if not name:
        return None
    path = Path(name) if Path(name).is_absolute() or Path(name).is_file() else base / Path(name).name
    try:
        img = cast(nib.Nifti1Image, nib.load(path))
    except (OSError, ValueError, nib.filebasedimages.ImageFileError):
        return None
    axis = si_axis(img.affine)
    return int(img.shape[axis]), bool(img.affine[2, axis] > 0)


def lab_table(tables: list[Table]) -> pd.DataFrame:
    """Level rows in the layout of the lab's ``spinal_vs_vertebral_levels.csv`` (start = caudal end; slices as RPI
    z indices; ``subject`` = participant). Slices are left empty where the grid file is not found."""
    frames = []
    for table in tables:
        rows = table.rows.reset_index(drop=True)
        slice_start, slice_end = rows["caudal_slice"], rows["rostral_slice"]
        if table.provenance["source"] != LAB_SOURCE:
            grid = table.grid or _rpi(table.inputs, table.path.parent)
            if grid is None:
                log.warning("%s: grid file not found; slice_start/slice_end left empty", table.path)
                slice_start = slice_end = pd.Series(pd.NA, index=rows.index, dtype="Int64")
            else:
                n, up = grid
                slice_start, slice_end = ((s if up else n - 1 - s).astype("Int64") for s in (slice_start, slice_end))
        frames.append(pd.DataFrame({
            "spinal_level": rows["value"], "fname": rows["fname"],
            "slice_start": slice_start, "slice_end": slice_end, "distance_from_pmj_start": rows["caudal_mm"],
            "distance_from_pmj_end": rows["rostral_mm"], "height": rows["height_mm"],
            "spinal_level_type": rows["kind"].map({v: k for k, v in LAB_KINDS.items()}), "subject": rows["participant"]}))
    table = pd.concat(frames, ignore_index=True)
    return table.sort_values(["subject", "spinal_level_type", "spinal_level"], kind="stable")[LAB_TABLE_COLUMNS]


# ----------------------------------------------------------------------------------------------- the whole job


def _settings(tables: list[Table], rows: pd.DataFrame, participants, column, medians) -> dict:
    return {"normalised": participants is not None, "participants": None if participants is None else _source(participants),
            "height_column": column, "median_body_height": medians,
            "inputs": [_source(t.path) for t in tables], "units": int(rows["unit"].nunique()),
            **{k: tables[0].provenance.get(k) for k in ("source", "method", "version", "reference")},
            "pairings": {p: {f"VL{level_name(v, 'vertebral')}": f"SL{level_name(s, 'spinal')}" for v, s in m.items()}
                         for p, m in PAIRINGS.items()}}


def group_stats(files: Sequence[str | os.PathLike], out_dir: str | os.PathLike, participants: str | os.PathLike | None = None,
                normalise: bool | None = None) -> dict[str, Path]:
    """The lab's analysis over many subjects' level tables (files or folders, ours or the lab's).

    ``normalise`` (default: when ``participants`` is given, as in the paper) divides each midpoint by the subject's
    body height and multiplies by the median height. Writes ``shift_stats.csv``, ``level_stats.csv``,
    ``midpoints.csv``, ``stats.json``, ``bland_altman.png`` and the levels in the lab's layout
    (``spinal_vs_vertebral_levels.csv``) into ``out_dir``; returns {"shift", "levels", "midpoints", "json", "plot",
    "lab": path}, without "shift" and "plot" when no subject has both kinds of levels. Bad input raises
    :class:`RootletsError` before anything is written.
    """
    normalise = participants is not None if normalise is None else normalise
    if normalise and participants is None:
        raise RootletsError("height normalisation needs a participants file (-participants participants.tsv with a "
                            "height column); or use -normalise n")
    with shared_paths(out_dir, keep=True):  # each row's source file relative to the outputs (a batch: its derivative)
        tables = read_tables(list(files))
    keep_inputs([Path(out_dir) / name for name in OUTPUTS.values()], [t.path for t in tables] + [participants], "-o")
    _check_uniform(tables)
    rows = _combine(tables)
    column, medians = None, None
    if normalise:
        assert participants is not None  # refused above
        heights, column = read_heights(participants)
        rows, medians = normalise_rows(rows, heights, participants)
    else:
        rows = rows.assign(body_height=float("nan"), analysed_mid_mm=rows["mid_mm"])
        if participants is not None:
            log.info("not normalised by body height (-normalise n); %s is not used", participants)
    pairs = pair_table(rows)
    s_stats, l_stats = shift_stats(pairs), level_stats(rows)
    with shared_paths(out_dir, keep=True):
        settings = _settings(tables, rows, participants if normalise else None, column, medians)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RootletsError(f"output folder {out_dir}: cannot be created ({exc.strerror}); choose another -o") from None
    outputs = {k: out_dir / name for k, name in OUTPUTS.items()}
    if not len(pairs):
        log.warning("no subject has both spinal and vertebral levels: no pair statistics (give disc labels to "
                    "`rootlets levels`)")
        del outputs["shift"], outputs["plot"]
    document = {"settings": settings, "shift_stats": json.loads(s_stats.to_json(orient="records")) if len(pairs) else [],
                "level_stats": json.loads(l_stats.to_json(orient="records"))}
    with contextlib.ExitStack() as stack:
        tmp = {k: stack.enter_context(atomic_path(p)) for k, p in outputs.items()}
        if len(pairs):
            write_csv(s_stats, tmp["shift"])
            agreement_figure(pairs, s_stats, normalise).savefig(tmp["plot"], dpi=120, format="png")
        write_csv(l_stats, tmp["levels"])
        write_csv(rows[MIDPOINT_COLUMNS], tmp["midpoints"])
        tmp["json"].write_text(json.dumps(document, indent=1))
        write_csv(lab_table(tables), tmp["lab"])
    return outputs
