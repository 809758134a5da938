"""The per-level measurement files of one subject: CSV, a BIDS tabular derivative (TSV + JSON sidecar), read back.

``<prefix>_measure.csv`` (comma-separated, for spreadsheets and pandas), ``<prefix>_measure.tsv`` with
``<prefix>_measure.json`` (BIDS tabular file and its sidecar: every column described, with units, and
``GeneratedBy``/``Sources``), written together or not at all. The QC figure (``<prefix>_measure.png``) is drawn by
:func:`rootlets_task.qc.figures.measure_figure`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from rootlets_task._version import __version__
from rootlets_task.core.files import OutputSet, relative_to, writable_folder
from rootlets_task.measures.perlevel import MORPHOMETRY, MeasureResult

SUFFIXES = {"csv": "_measure.csv", "tsv": "_measure.tsv", "sidecar": "_measure.json", "figure": "_measure.png"}
LEVEL_DESCRIPTIONS = {
    "kind": "which levels: spinal (from the rootlets), vertebral (from the discs), spinal_pam50 (PAM50's, warped)",
    "level": "level name (C2 ... T1)", "value": "level value in the level image",
    "slices": "number of slices given to the level (SCT: rounded mean of the slice's non-zero level voxels)",
    "rostral_slice": "most rostral slice of the level (index along the image's superior-inferior axis)",
    "caudal_slice": "most caudal slice of the level", "cord_voxels": "cord voxels in the level's slices",
}
STATISTIC_DESCRIPTIONS = {"mean": "mean within the mask ({method}), as sct_extract_metric -method {method}",
                          "median": "weighted median within the mask", "sd": "weighted SD within the mask (SCT STD)",
                          "voxels": "voxels of the mask in the level (sum of its weights; SCT Size [vox])"}


def output_paths(out_dir: str | os.PathLike, prefix: str) -> dict[str, Path]:
    return {kind: Path(out_dir) / f"{prefix}{suffix}" for kind, suffix in SUFFIXES.items()}


def sidecar(result: MeasureResult, inputs: dict[str, str]) -> dict:
    """The BIDS sidecar of the TSV: column descriptions and units, the method, the inputs, what made it."""
    columns = {name: {"Description": text} for name, text in LEVEL_DESCRIPTIONS.items()}
    columns.update({name: {"Description": text, **({"Units": unit} if unit else {})}
                    for name, (_, unit, text) in MORPHOMETRY.items()})
    for name in result.maps:
        for statistic, text in STATISTIC_DESCRIPTIONS.items():
            columns[f"{name}_{statistic}"] = {"Description": f"{name}: {text.format(method=result.method)}"}
    return {**columns, "Method": result.method, "Mask": result.mask, "Maps": result.maps, "Notes": result.notes,
            "Sources": sorted(set(inputs.values())), "Inputs": inputs,
            "GeneratedBy": [{"Name": "rootlets_task: rootlets measure", "Version": __version__}]}


def write_measure(result: MeasureResult, out_dir: str | os.PathLike, prefix: str, inputs: dict[str, str | os.PathLike],
                  figure: Callable[[Path], None] | None = None) -> dict[str, Path]:
    """Write the CSV, the TSV and its sidecar (and with ``figure``, a function that draws into the path it is given,
    the QC figure) together; returns {"csv", "tsv", "sidecar"[, "figure"]: path}."""
    out_dir = writable_folder(out_dir)
    paths = {k: v for k, v in output_paths(out_dir, prefix).items() if k != "figure" or figure is not None}
    recorded = {k: relative_to(v, out_dir) for k, v in inputs.items()}
    with OutputSet() as out:
        result.table.to_csv(out.path(paths["csv"]), index=False)
        result.table.to_csv(out.path(paths["tsv"]), index=False, sep="\t", na_rep="n/a")
        out.path(paths["sidecar"]).write_text(json.dumps(sidecar(result, recorded), indent=2) + "\n")
        if figure is not None:
            figure(out.path(paths["figure"]))
    return paths
