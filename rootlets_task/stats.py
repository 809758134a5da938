"""Group statistics over many subjects' level tables: the RootletSeg paper's Bland-Altman convention.

Per vertebral/spinal pair (both pairings): n, bias = median of vertebral − spinal midpoint, limits of agreement =
2.5th and 97.5th percentiles (non-parametric, as in the paper's ``bland-altman-analysis.py``), and the mean of the
two midpoints (the Bland-Altman x axis). Per level and kind: n, mean and SD of the level height and midpoint.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from rootlets_task.errors import RootletsError
from rootlets_task.files import atomic_path
from rootlets_task.levels import LEVEL_COLUMNS, SHIFT_COLUMNS

SHIFT_STATS = ["pairing", "vertebral_level", "spinal_level", "n", "bias_mm", "loa_low_mm", "loa_high_mm", "mean_mid_mm"]
LEVEL_STATS = ["kind", "level", "n", "mean_height_mm", "sd_height_mm", "mean_mid_mm", "sd_mid_mm"]
OUTPUTS = {"shift": "shift_stats.csv", "levels": "level_stats.csv", "plot": "bland_altman.png"}


def _order(name: str) -> tuple[int, int]:
    """Sort key of a level name: C1..C8 before T1..T12 before L1.. before S1.."""
    match = re.fullmatch(r"([CTLS])(\d+)", str(name))
    return ("CTLS".index(match[1]), int(match[2])) if match else (9, 0)


def _collect(files: list[str | os.PathLike]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read every *_shift.csv and *_levels.csv (folders are searched recursively); add a ``subject`` column."""
    paths: list[Path] = []
    for item in map(Path, files):
        if item.is_dir():
            paths += sorted(p for p in item.rglob("*.csv") if p.name.endswith(("_shift.csv", "_levels.csv")))
        elif item.is_file():
            paths.append(item)
        else:
            raise RootletsError(f"{item}: no such file or folder; check the path")
    shifts, levels = [], []
    for path in paths:
        kind = "shift" if path.name.endswith("_shift.csv") else "levels" if path.name.endswith("_levels.csv") else None
        if kind is None:
            raise RootletsError(f"{path}: not a *_shift.csv or *_levels.csv table from `rootlets levels`")
        try:
            table = pd.read_csv(path)
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            raise RootletsError(f"{path}: unreadable CSV ({exc}); re-run `rootlets levels`") from None
        needed = SHIFT_COLUMNS if kind == "shift" else LEVEL_COLUMNS
        missing = [c for c in needed if c not in table.columns]
        if missing:
            raise RootletsError(f"{path}: missing columns {missing}; is it a table written by `rootlets levels`?")
        table["subject"] = path.name[: -len(f"_{kind}.csv")]
        (shifts if kind == "shift" else levels).append(table)
    if not shifts and not levels:
        raise RootletsError(f"no *_shift.csv or *_levels.csv among {', '.join(map(str, files))}; run `rootlets levels` first")
    shift = pd.concat(shifts, ignore_index=True) if shifts else pd.DataFrame(columns=[*SHIFT_COLUMNS, "subject"])
    level = pd.concat(levels, ignore_index=True) if levels else pd.DataFrame(columns=[*LEVEL_COLUMNS, "subject"])
    return shift, level[level["status"] == "ok"]


def shift_stats(shift: pd.DataFrame) -> pd.DataFrame:
    """Bias (median) and 2.5/97.5 percentile limits of agreement per pair, plus one ``all`` row per pairing."""
    shift = shift.assign(mean_mid_mm=(shift["vertebral_mid_mm"] + shift["spinal_mid_mm"]) / 2)
    records = []
    for pairing in ("unshifted", "shifted"):
        rows = shift[shift["pairing"] == pairing]
        groups = sorted(rows.groupby(["vertebral_level", "spinal_level"]), key=lambda g: _order(g[0][0]))
        for (vl, sl), group in [*groups, (("all", "all"), rows)]:
            if len(group):
                d = group["shift_mm"].to_numpy(float)
                records.append({"pairing": pairing, "vertebral_level": vl, "spinal_level": sl, "n": len(d),
                                "bias_mm": float(np.median(d)), "loa_low_mm": float(np.percentile(d, 2.5)),
                                "loa_high_mm": float(np.percentile(d, 97.5)),
                                "mean_mid_mm": float(group["mean_mid_mm"].mean())})
    return pd.DataFrame.from_records(records, columns=SHIFT_STATS)


def level_stats(levels: pd.DataFrame) -> pd.DataFrame:
    """Mean and SD (ddof 1) of level height and midpoint per kind and level."""
    records = []
    for kind in ("spinal", "vertebral"):
        rows = levels[levels["kind"] == kind]
        for level, group in sorted(rows.groupby("level"), key=lambda g: _order(g[0])):
            h, m = group["height_mm"].astype(float), group["mid_mm"].astype(float)
            records.append({"kind": kind, "level": level, "n": len(group), "mean_height_mm": h.mean(),
                            "sd_height_mm": h.std(ddof=1), "mean_mid_mm": m.mean(), "sd_mid_mm": m.std(ddof=1)})
    return pd.DataFrame.from_records(records, columns=LEVEL_STATS)


def bland_altman_figure(shift: pd.DataFrame, stats: pd.DataFrame) -> Figure:
    """One Bland-Altman panel per pairing: points per pair, median bias and 2.5/97.5 percentile lines."""
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, pairing in zip(axes, ("unshifted", "shifted"), strict=True):
        rows = shift[shift["pairing"] == pairing]
        pairs = sorted(rows.groupby(["vertebral_level", "spinal_level"]), key=lambda g: _order(g[0][0]))
        for (vl, sl), group in pairs:
            x = (group["vertebral_mid_mm"] + group["spinal_mid_mm"]) / 2
            ax.scatter(x, group["shift_mm"], s=18, label=f"VL {vl} - SL {sl}")
        overall = stats[(stats["pairing"] == pairing) & (stats["vertebral_level"] == "all")]
        if len(overall):
            row = overall.iloc[0]
            for y, style, text in ((row.bias_mm, "-", "median"), (row.loa_low_mm, "--", "2.5%"),
                                   (row.loa_high_mm, "--", "97.5%")):
                ax.axhline(y, color="k", linestyle=style, linewidth=1)
                ax.annotate(f"{text} {y:.1f} mm", (1, y), xycoords=("axes fraction", "data"), ha="right", va="bottom",
                            fontsize=8)
        ax.axhline(0, color="grey", linewidth=0.5)
        ax.set_title(f"{pairing} pairing (n = {rows['subject'].nunique() if len(rows) else 0} subjects)")
        ax.set_xlabel("mean of vertebral and spinal midpoints (mm)")
        if len(rows):
            ax.legend(fontsize=7, loc="best")
    axes[0].set_ylabel("vertebral − spinal midpoint (mm)")
    return fig


def group_stats(files: list[str | os.PathLike], out_dir: str | os.PathLike) -> dict[str, Path]:
    """Statistics over many subjects' ``*_shift.csv`` / ``*_levels.csv`` (files or folders).

    Writes ``shift_stats.csv`` (with shift tables), ``level_stats.csv`` (with level tables) and
    ``bland_altman.png`` (with shift tables) into ``out_dir``; returns {"shift", "levels", "plot": path}.
    """
    shift, levels = _collect(list(files))
    if not len(shift) and not len(levels):
        raise RootletsError(f"no level with status ok and no level pair in {', '.join(map(str, files))}; "
                            "check the `rootlets levels` warnings of these subjects")
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RootletsError(f"output folder {out_dir}: cannot be created ({exc.strerror}); choose another -o") from None
    outputs = {k: out_dir / name for k, name in OUTPUTS.items()}
    if not len(shift):
        del outputs["shift"], outputs["plot"]
    if not len(levels):
        del outputs["levels"]
    s_stats = shift_stats(shift) if len(shift) else None
    with contextlib.ExitStack() as stack:
        tmp = {k: stack.enter_context(atomic_path(p)) for k, p in outputs.items()}
        if s_stats is not None:
            s_stats.to_csv(tmp["shift"], index=False)
            bland_altman_figure(shift, s_stats).savefig(tmp["plot"], dpi=120, format="png")
        if len(levels):
            level_stats(levels).to_csv(tmp["levels"], index=False)
    return outputs
