"""BIDS-strict names for the derivative dataset of ``rootlets batch -bids-strict``.

By default the derivative uses the names the Spinal Cord Toolbox and NeuroPoly pipelines read (``<stem>_rootlets``,
``<stem>_label-SC_seg``, ``<stem>_label-discs_dlabel`` ...), which keep the source suffix (``T2w``) in the middle of
the name and use suffixes BIDS does not define, so the BIDS validator rejects them. With ``-bids-strict`` every image
is named from the source entities (the image name without its suffix) plus ``desc-``/``label-`` and a BIDS suffix
(``dseg``, ``mask``), each segmentation gets its ``dseg.tsv`` look-up table (index, name), and the tables and
records BIDS has no names for (levels/shift CSVs, ``_batch.json``, ``_chain.json``, ``logs/``, ``group/``) are listed
in ``.bidsignore``. The table of names is :data:`STRICT`. BIDS 1.11 has no ``label-`` entity for ``dseg`` (only for
``mask``/``probseg``), hence ``label-SC_mask`` but ``desc-discs_dseg``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

import nibabel as nib
import numpy as np

from rootlets_task.batch.bids import Unit
from rootlets_task.core.errors import RootletsError
from rootlets_task.core.files import read_json, write_json, write_text
from rootlets_task.core.names import level_name
from rootlets_task.io import labels
from rootlets_task.levels.compute import OUTPUTS
from rootlets_task.pipeline.segment import SUFFIX as ROOTLETS

# default tail after the image stem -> (BIDS-strict entities and suffix, look-up kind of its values, Description)
STRICT = {
    ROOTLETS: ("desc-rootlets_dseg", "spinal", "Spinal nerve rootlets (RootletSeg nnU-Net); value = spinal level"),
    labels.SUFFIX["cord"]: ("label-SC_mask", None, "Spinal cord mask the levels were derived in"),
    labels.SUFFIX["discs"]: ("desc-discs_dseg", "disc", "Intervertebral discs, one voxel each (SCT disc labels)"),
    labels.SUFFIX["pmj"]: ("desc-PMJ_dseg", "pmj", "Pontomedullary junction, one voxel (SCT label 50)"),
    OUTPUTS["spinal"].removesuffix(".nii.gz"): ("desc-spinal_dseg", "spinal",
                                                "Spinal levels: cord voxels labelled by spinal level"),
    OUTPUTS["vertebral"].removesuffix(".nii.gz"): ("desc-vertebral_dseg", "vertebral",
                                                   "Vertebral levels: cord voxels labelled by vertebral level"),
}
IMAGE_EXTENSIONS = (".nii.gz", ".json")  # an image and its sidecar are renamed together
BIDSIGNORE = ["logs", "group", "levels.csv", "shift.csv", "*_levels.csv", "*_levels.json", "*_shift.csv",
              "*_batch.json", "*_chain.json",  # directory patterns bare: the validator ignores "group/"
              "rootlets_task_*.lut", "rootlets_task_*_itksnap.txt"]  # viewers' lookup tables (rootlets_task.io.viewers)
PMJ_LABEL = 50  # SCT's value of the pontomedullary junction


def source_entities(name: str, suffix: str) -> str:
    """``sub-01_ses-02_T2w`` -> ``sub-01_ses-02``: the image name without its BIDS suffix."""
    return name.removesuffix(f"_{suffix}")


def strict_names(name: str, suffix: str, files: list[str]) -> dict[str, str]:
    """{file name: BIDS-strict name} for the outputs of image ``name``; files without a strict name keep theirs."""
    source = source_entities(name, suffix)
    strict = {f"{name}{tail}{ext}": f"{source}_{new}{ext}" for tail, (new, _, _) in STRICT.items()
              for ext in IMAGE_EXTENSIONS}
    return {file: strict.get(file, file) for file in files}


def check_unique(units: list[Unit]) -> None:
    """Two images of one subject/session that differ only by their suffix would get the same strict names."""
    seen: dict[str, str] = {}
    for unit in units:
        source = source_entities(unit.name, unit.suffix)
        if source in seen:
            raise RootletsError(f"-bids-strict: {seen[source]} and {unit.rel} would get the same names ({source}_...); "
                                "run each contrast into its own derivative folder (-contrast, -o)")
        seen[source] = unit.rel


def _level_label(value: int, kind: str) -> str:
    if kind == "pmj":
        return "PMJ" if value == PMJ_LABEL else f"label {value}"
    if kind == "disc":  # SCT disc labels: 1 = top of C1, n = between vertebrae n-1 and n
        if value >= 49:
            return {49: "pontomedullary groove", 50: "PMJ", 60: "conus medullaris"}.get(value, f"label {value}")
        return "top of C1" if value == 1 else f"{level_name(value - 1, 'vertebral')}/{level_name(value, 'vertebral')}"
    return level_name(value, kind)


def lookup_table(image: Path, kind: str) -> str:
    """The ``dseg.tsv`` of a segmentation: one row (index, name) per value present in ``image``."""
    values = np.unique(np.asanyarray(cast(nib.Nifti1Image, nib.load(image)).dataobj)).astype(int)
    return "\n".join(["index\tname"] + [f"{v}\t{_level_label(v, kind)}" for v in values if v > 0]) + "\n"


def rename_references(value, renamed: dict[str, str]):
    """``value`` (parsed JSON) with every string (key or value) that *is* one of the renamed files replaced by its new
    name. The records and sidecars name their folder's files by bare name (relative to the folder); input paths,
    absolute or elsewhere, are left alone even when they end in the same name (e.g. a manual ``_label-SC_seg``)."""
    if isinstance(value, str):
        return renamed.get(value, value)
    if isinstance(value, list):
        return [rename_references(v, renamed) for v in value]
    if isinstance(value, dict):
        return {rename_references(k, renamed): rename_references(v, renamed) for k, v in value.items()}
    return value


def write_dataset_files(out: Path) -> None:
    """``.bidsignore`` at the derivative root (the files BIDS has no names for)."""
    path, text = out / ".bidsignore", "\n".join(BIDSIGNORE) + "\n"
    if not path.is_file() or path.read_text() != text:
        write_text(path, text)


def _strict_kind(new: str) -> tuple[str, str | None, str] | None:
    """The STRICT entry of a renamed image file, if it is one."""
    return next((entry for entry in STRICT.values() if new.endswith(f"_{entry[0]}.nii.gz")), None)


def apply(tmp: Path, unit: Unit, made: dict[str, Path]) -> dict[str, Path]:
    """Give ``unit``'s outputs in its temporary folder their strict names: files renamed, references to them in its
    JSON files rewritten, a described sidecar (``Sources``: the raw image as a BIDS URI) and a ``dseg.tsv`` for each
    segmentation. Returns ``made`` ({kind: file}) renamed."""
    renamed = strict_names(unit.name, unit.suffix, sorted(p.name for p in tmp.iterdir()
                                                          if p.is_file() and p.suffix != ".log"))
    for old, new in renamed.items():
        if old.endswith(".json"):
            write_json(tmp / old, rename_references(read_json(tmp / old), renamed))
        if new != old:
            os.replace(tmp / old, tmp / new)
    for old, new in renamed.items():
        entry = _strict_kind(new)
        if entry is None:
            continue
        strict, kind, description = entry
        base = new.removesuffix(".nii.gz")
        if kind:
            (tmp / f"{old.removesuffix('.nii.gz')}.tsv").unlink(missing_ok=True)  # the viewers' table, under the old name
            write_text(tmp / f"{base}.tsv", lookup_table(tmp / new, kind))
        sidecar = tmp / f"{base}.json"
        content = read_json(sidecar) if sidecar.is_file() else {}
        write_json(sidecar, {"Description": description, "Sources": [f"bids:raw:{unit.rel}"], **(content or {})})
    return {kind: tmp / renamed.get(Path(p).name, Path(p).name) if Path(p).parent == tmp else Path(p)
            for kind, p in made.items()}
