"""The levels and shift tables: their columns, the names earlier versions used, and reading any version's table.

One row per level (``kind`` spinal or vertebral). Ends are named by anatomy, not by reading order:
``rostral_slice``/``caudal_slice`` (indices along the grid's superior-inferior array axis, in the file's own
orientation) and ``rostral_mm``/``caudal_mm`` (distance along the cord from the origin named in ``reference``).
Tables of versions up to 0.x named them ``start_*`` (rostral) and ``end_*`` (caudal): :func:`upgrade` renames them,
and the columns a table lacks (confidence, numbering) are added empty, so every reader sees one layout.

The shift table (vertebral minus spinal midpoint per level pair) uses the RootletSeg paper's two pairings, by label
value (:data:`PAIRINGS`): ``unshifted`` VL v with SL v (VL C7-SL C7, VL T1-SL C8) and ``shifted`` VL v with SL v+1
(VL C7-SL C8, VL T1-SL T1). Versions up to 0.x paired VL T1 (and below) with SL T1 under ``unshifted``:
:func:`upgrade_shift` renames every row by the pair it holds, so old files read in the paper's words.
"""

from __future__ import annotations

import os

import pandas as pd

from rootlets_task.core.files import check_size
from rootlets_task.core.names import level_name, level_value

LEVEL_COLUMNS = ["kind", "level", "value", "rostral_slice", "caudal_slice", "mid_slice", "rostral_mm", "caudal_mm",
                 "mid_mm", "height_mm", "reference", "n_voxels", "volume_mm3", "mean_probability", "fraction_below_half",
                 "numbering", "suggested_level", "original_level", "status"]
REQUIRED_COLUMNS = ["kind", "level", "value", "rostral_mm", "caudal_mm", "mid_mm", "height_mm", "status"]
OLD_COLUMNS = {"start_slice": "rostral_slice", "end_slice": "caudal_slice", "start_mm": "rostral_mm", "end_mm": "caudal_mm"}
SHIFT_COLUMNS = ["pairing", "vertebral_level", "spinal_level", "vertebral_mid_mm", "spinal_mid_mm", "shift_mm"]
PAIRINGS = {"unshifted": 0, "shifted": 1}  # spinal value - vertebral value of a pair (the paper's not-shifted/shifted)
PAIRING_TEXT = {"unshifted": "VL n with SL n by value: VL C2-SL C2 ... VL C7-SL C7, VL T1-SL C8 (the paper's not shifted)",
                "shifted": "VL n with SL n+1 by value: VL C2-SL C3 ... VL C7-SL C8, VL T1-SL T1, VL L1-SL L1 (the paper's "
                           "shifted, the anatomical correspondence)"}
INTEGER_COLUMNS = ("value", "rostral_slice", "caudal_slice", "mid_slice", "n_voxels")
FLOAT_COLUMNS = ("rostral_mm", "caudal_mm", "mid_mm", "height_mm", "volume_mm3", "mean_probability", "fraction_below_half")
TEXT_COLUMNS = ("numbering", "suggested_level", "original_level")


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet reads as the start of a formula (OWASP)


def neutralise(value):
    """A text cell a spreadsheet would run as a formula (``=cmd|' /C calc'!A0``), prefixed with ``'`` as OWASP advises
    for CSV injection; numbers (``-1.5``) and every other value unchanged."""
    if not isinstance(value, str) or not value.startswith(FORMULA_STARTS):
        return value
    try:
        float(value)
        return value
    except ValueError:
        return "'" + value


def write_csv(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """``table`` as CSV (no index), its text cells neutralised (:func:`neutralise`): names that came from files, folders
    or a participants.tsv reach the tables the package writes, and those are opened in spreadsheets."""
    text = [c for c in table.columns if table[c].dtype == object or pd.api.types.is_string_dtype(table[c])]
    table.assign(**{c: table[c].map(neutralise) for c in text}).to_csv(path, index=False)


def is_levels_table(columns) -> bool:
    """Whether ``columns`` are those of a levels table of any version."""
    names = {OLD_COLUMNS.get(c, c) for c in columns}
    return all(c in names for c in REQUIRED_COLUMNS)


def upgrade(table: pd.DataFrame) -> pd.DataFrame:
    """A levels table of any version in today's layout: old column names renamed, missing optional columns empty,
    typed, and each level named from its kind and value (versions up to 0.x named vertebral 20-30 "T13" ... "T23")."""
    table = table.rename(columns={old: new for old, new in OLD_COLUMNS.items() if old in table and new not in table})
    for column in LEVEL_COLUMNS:
        if column not in table:
            table[column] = pd.NA
    known = table["kind"].isin(("spinal", "vertebral")) & pd.to_numeric(table["value"], errors="coerce").notna()
    if not pd.api.types.is_string_dtype(table["level"]):  # added empty above: numeric for pandas, names go in
        table["level"] = table["level"].astype(object)
    table.loc[known, "level"] = [level_name(int(v), k) for v, k in zip(pd.to_numeric(table.loc[known, "value"]),
                                                                       table.loc[known, "kind"], strict=True)]
    return typed(table[LEVEL_COLUMNS + [c for c in table.columns if c not in LEVEL_COLUMNS]])


def typed(table: pd.DataFrame) -> pd.DataFrame:
    """Column types: whole numbers nullable (missing levels have no slices), distances float, notes text."""
    table = table.copy()
    for col in INTEGER_COLUMNS:
        table[col] = pd.to_numeric(table[col]).astype("Int64")
    for col in FLOAT_COLUMNS:
        table[col] = pd.to_numeric(table[col]).astype(float)
    for col in TEXT_COLUMNS:
        table[col] = table[col].astype(object).where(table[col].notna(), None)
    return table


def read_levels_table(path: str | os.PathLike) -> pd.DataFrame:
    """A ``*_levels.csv`` written by ``rootlets levels`` (any version), in today's layout."""
    return upgrade(pd.read_csv(check_size(path, "levels table")))


def upgrade_shift(table: pd.DataFrame) -> pd.DataFrame:
    """A shift table of any version in the paper's pairing names: each row named by the pair it holds (spinal value -
    vertebral value 0: unshifted, 1: shifted), rows that are neither or repeat a pair dropped."""
    table = table.copy()
    if table.empty or not {"vertebral_level", "spinal_level"} <= set(table.columns):
        return table
    step: dict[int | None, str] = {v: k for k, v in PAIRINGS.items()}
    table["pairing"] = [step.get(_difference(v, s)) for v, s in zip(table["vertebral_level"], table["spinal_level"],
                                                                     strict=True)]
    table = table[table["pairing"].notna()].drop_duplicates(["pairing", "vertebral_level", "spinal_level"])
    order = {k: i for i, k in enumerate(PAIRINGS)}
    table = table.sort_values("pairing", key=lambda c: c.map(order), kind="stable")
    return table[[c for c in SHIFT_COLUMNS if c in table] + [c for c in table.columns if c not in SHIFT_COLUMNS]]


def _difference(vertebral_name, spinal_name) -> int | None:
    v, s = level_value(str(vertebral_name), "vertebral"), level_value(str(spinal_name), "spinal")
    return None if v is None or s is None else s - v


def read_shift_table(path: str | os.PathLike) -> pd.DataFrame:
    """A ``*_shift.csv`` written by ``rootlets levels`` (any version), in the paper's pairing names."""
    return upgrade_shift(pd.read_csv(check_size(path, "shift table")))
