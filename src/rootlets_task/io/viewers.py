"""Files that make label outputs open well in a viewer, in the QC colours (:mod:`rootlets_task.core.colours`).

* beside every label image ``<name>.nii.gz`` a BIDS lookup table ``<name>.tsv`` (columns ``index``, ``name``,
  ``abbreviation``, ``color``; BIDS "Common image-derived labels": the table of a segmentation is the ``.tsv`` of
  the same name). Each file gets its own table because the same value means different levels in different files:
  8 is C8 in rootlets and spinal levels but T1 in vertebral levels;
* once per output folder, an FSLeyes lookup table (``.lut``: one line per label, ``value r g b name`` with r, g, b
  from 0 to 1) and an ITK-SNAP label description (``IDX R G B A VIS MSH "LABEL"``, colours 0-255) per numbering
  (spinal, vertebral);
* :func:`fsleyes_command`: the line that opens an image with its labels coloured (``fsleyes IMG SEG -ot label -l
  LUT``; ``-ot``/``--overlayType`` and ``-l``/``--lut``, which accepts a lookup-table file, are FSLeyes options).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import cast

import nibabel as nib
import numpy as np

from rootlets_task.core.colours import level_colour
from rootlets_task.core.files import write_text
from rootlets_task.core.names import NAMES, level_name
from rootlets_task.io.nifti import stem

# kind of label file -> numbering of its values (rootlets and spinal levels share the spinal numbering)
NUMBERING = {"rootlets": "spinal", "spinal": "spinal", "vertebral": "vertebral"}
VALUES = {kind: range(1, len(NAMES[kind]) + 1) for kind in ("spinal", "vertebral")}  # C1 ... Co, the whole spine
WHAT = {"rootlets": "rootlets of spinal level", "spinal": "spinal level", "vertebral": "vertebral level"}
LUT = "rootlets_task_{numbering}.lut"
ITKSNAP = "rootlets_task_{numbering}_itksnap.txt"
FOLDER_FILES = tuple(name.format(numbering=n) for n in VALUES for name in (LUT, ITKSNAP))  # once per output folder
TSV_COLUMNS = ("index", "name", "abbreviation", "color")


def rgb(name: str) -> tuple[int, int, int]:
    """0-255 colour of a level, as the QC pictures draw it."""
    code = level_colour(name).lstrip("#")
    return tuple(int(code[i:i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]


def dseg_path(label_file: str | os.PathLike) -> Path:
    """The BIDS lookup table of a label image: the same name with ``.tsv``."""
    label_file = Path(label_file)
    return label_file.with_name(stem(label_file) + ".tsv")


def dseg_table(kind: str, values: Iterable[int]) -> str:
    """BIDS ``dseg.tsv`` text for the label ``values`` of a file of ``kind`` (rootlets, spinal, vertebral)."""
    numbering, what = NUMBERING[kind], WHAT[kind]
    lines = ["\t".join(TSV_COLUMNS)]
    for value in sorted({int(v) for v in values if int(v) > 0}):
        name = level_name(value, numbering)
        lines.append("\t".join((str(value), f"{what} {name}", name, level_colour(name))))
    return "\n".join(lines) + "\n"


def write_dseg(label_file: str | os.PathLike, kind: str, data: np.ndarray | None = None) -> Path:
    """Write ``<label file>.tsv`` for the values in the file (read from it unless ``data`` is given)."""
    if data is None:
        data = np.asanyarray(cast(nib.Nifti1Image, nib.load(label_file)).dataobj)
    return _write(dseg_path(label_file), dseg_table(kind, np.unique(data)))


def fsleyes_lut(numbering: str) -> str:
    """FSLeyes ``.lut`` text: ``value r g b name`` per line, r g b in 0..1 (FSLeyes "Customising": lookup tables)."""
    return "".join(f"{v} {' '.join(f'{c / 255:.5f}' for c in rgb(level_name(v, numbering)))} "
                   f"{numbering} {level_name(v, numbering)}\n" for v in VALUES[numbering])


def itksnap_labels(numbering: str) -> str:
    """ITK-SNAP label description text: header, the clear label 0, then ``IDX R G B A VIS MSH "LABEL"``."""
    header = ["################################################", "# ITK-SnAP Label Description File",
              "# File format:", "# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL", "# Fields:",
              "#    IDX:   Zero-based index", "#    -R-:   Red color component (0..255)",
              "#    -G-:   Green color component (0..255)", "#    -B-:   Blue color component (0..255)",
              "#    -A-:   Label transparency (0.00 .. 1.00)", "#    VIS:   Label visibility (0 or 1)",
              "#    IDX:   Label mesh visibility (0 or 1)", "#  LABEL:   Label description",
              "################################################"]
    rows = [f'{0:5d} {0:5d} {0:4d} {0:4d} {0:8d} {0:2d} {0:2d}    "Clear Label"']
    for v in VALUES[numbering]:
        name = level_name(v, numbering)
        r, g, b = rgb(name)
        rows.append(f'{v:5d} {r:5d} {g:4d} {b:4d} {1:8d} {1:2d} {1:2d}    "{numbering} {name}"')
    return "\n".join(header + rows) + "\n"


def write_lookup_tables(folder: str | os.PathLike) -> dict[str, Path]:
    """The FSLeyes and ITK-SNAP files of both numberings in ``folder`` (rewritten only when they differ)."""
    folder = Path(folder)
    written = {}
    for numbering in VALUES:
        for key, name, text in ((f"lut_{numbering}", LUT, fsleyes_lut(numbering)),
                                (f"itksnap_{numbering}", ITKSNAP, itksnap_labels(numbering))):
            written[key] = _write(folder / name.format(numbering=numbering), text)
    return written


def _write(path: Path, text: str) -> Path:
    """Write ``text`` atomically unless the file already holds it (a rerun leaves it untouched)."""
    if not path.is_file() or path.read_text() != text:
        write_text(path, text)
    return path


def describe(labels: dict[str, str | os.PathLike], data: dict[str, np.ndarray] | None = None) -> dict[str, Path]:
    """For {kind: label file}: the ``.tsv`` beside each file and the lookup tables in each file's folder."""
    written = {f"tsv_{kind}": write_dseg(path, kind, (data or {}).get(kind)) for kind, path in labels.items()}
    for folder in dict.fromkeys(Path(path).parent for path in labels.values()):  # once per folder, in order
        written.update(write_lookup_tables(folder))
    return written


def fsleyes_command(image: str | os.PathLike | None, labels: Sequence[tuple[str, str | os.PathLike]]) -> str:
    """``fsleyes IMAGE LABELS -ot label -l LUT ...`` for (kind, file) pairs, paths normalised and quoted
    (``IMAGE`` stands for an image that has no file)."""
    parts = ["fsleyes", "IMAGE" if image is None else _shown(image)]
    for kind, path in labels:
        lut = Path(path).parent / LUT.format(numbering=NUMBERING[kind])
        parts += [_shown(path), "-ot", "label", "-l", _shown(lut)]
    return " ".join(parts)


def _shown(path: str | os.PathLike) -> str:
    return shlex.quote(os.path.normpath(str(path)))
