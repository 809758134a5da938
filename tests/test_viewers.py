"""Viewer files: the BIDS lookup table beside every label output, the FSLeyes and ITK-SNAP colour tables in the QC
colours, and the fsleyes command printed after a run. Each file is parsed back with the rules its viewer documents:

* BIDS (derivatives, "Common image-derived labels"): a ``<segmentation name>.tsv`` beside the segmentation, tab
  separated, columns ``index``, ``name`` (required), ``abbreviation``, ``color`` (``#rrggbb``);
* FSLeyes ("Customising FSLeyes", lookup tables): a ``.lut`` file, one label per line, space separated: the label
  value, three RGB values from 0 to 1, then the label name (all remaining columns);
* ITK-SNAP (the header of its label description files): ``IDX -R- -G- -B- -A-- VIS MSH LABEL``, colours 0..255,
  transparency 0..1, visibility and mesh visibility 0 or 1, the label in double quotes; ``#`` lines are comments.
"""

from __future__ import annotations

import csv
import logging
import re
import shlex
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from rootlets_task.core.colours import level_colour
from rootlets_task.core.options import ChainOptions, ModelOptions
from rootlets_task.io import viewers
from rootlets_task.pipeline.chain import ChainInputs, run_chain


def read_dseg(path: Path) -> dict[int, dict]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert rows and set(rows[0]) == {"index", "name", "abbreviation", "color"}, path
    for row in rows:
        assert re.fullmatch(r"#[0-9a-f]{6}", row["color"]), row
    return {int(r["index"]): r for r in rows}


def read_fsleyes_lut(path: Path) -> dict[int, tuple[tuple[float, float, float], str]]:
    table = {}
    for line in path.read_text().splitlines():
        tokens = line.split()
        value, colour, name = int(tokens[0]), tuple(float(t) for t in tokens[1:4]), " ".join(tokens[4:])
        assert all(0.0 <= c <= 1.0 for c in colour) and name and value not in table, line
        table[value] = (colour, name)
    return table


ITKSNAP_ROW = re.compile(r'\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+([\d.]+)\s+([01])\s+([01])\s+"([^"]*)"\s*')


def read_itksnap(path: Path) -> dict[int, tuple[tuple[int, int, int], float, str]]:
    table = {}
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        match = ITKSNAP_ROW.fullmatch(line)
        assert match, line
        idx, r, g, b = (int(match[i]) for i in range(1, 5))
        alpha = float(match[5])
        assert all(0 <= c <= 255 for c in (r, g, b)) and 0.0 <= alpha <= 1.0 and idx not in table, line
        table[idx] = ((r, g, b), alpha, match[8])
    return table


def hex_rgb(code: str) -> tuple[int, int, int]:
    return tuple(int(code[i:i + 2], 16) for i in (1, 3, 5))


def test_lookup_tables_parse_as_their_viewers_document(tmp_path):
    files = viewers.write_lookup_tables(tmp_path)
    assert set(files) == {"lut_spinal", "lut_vertebral", "itksnap_spinal", "itksnap_vertebral"}
    for numbering in ("spinal", "vertebral"):
        lut = read_fsleyes_lut(files[f"lut_{numbering}"])
        snap = read_itksnap(files[f"itksnap_{numbering}"])
        assert snap[0][1] == 0.0 and snap[0][2] == "Clear Label"  # ITK-SNAP's background
        assert set(lut) == set(snap) - {0} == set(viewers.VALUES[numbering])
        for value, (colour, name) in lut.items():
            level = name.split()[-1]
            assert snap[value][0] == hex_rgb(level_colour(level))  # the QC colours, in both files
            assert colour == pytest.approx(tuple(c / 255 for c in snap[value][0]), abs=1e-5)
            assert snap[value][2] == name and snap[value][1] == 1.0
        assert lut[2][1] == f"{numbering} C2"
    assert read_fsleyes_lut(files["lut_spinal"])[8][1] == "spinal C8"  # value 8: C8 in the spinal numbering ...
    assert read_fsleyes_lut(files["lut_vertebral"])[8][1] == "vertebral T1"  # ... and T1 in the vertebral one
    stamp = files["lut_spinal"].stat().st_mtime_ns
    viewers.write_lookup_tables(tmp_path)  # once per folder: an unchanged table is not rewritten
    assert files["lut_spinal"].stat().st_mtime_ns == stamp


def test_dseg_table_has_each_files_own_numbering(tmp_path):
    data = np.zeros((4, 4, 4), np.uint8)
    data[0, 0, :3] = (2, 8, 9)
    img = nib.Nifti1Image(data, np.eye(4))
    for kind in ("rootlets", "spinal", "vertebral"):
        nib.save(img, tmp_path / f"x_{kind}.nii.gz")
        viewers.write_dseg(tmp_path / f"x_{kind}.nii.gz", kind)
    spinal, vertebral = read_dseg(tmp_path / "x_spinal.tsv"), read_dseg(tmp_path / "x_vertebral.tsv")
    assert set(spinal) == {2, 8, 9}  # the values in the file, background left out
    assert (spinal[8]["abbreviation"], spinal[9]["abbreviation"]) == ("C8", "T1")
    assert (vertebral[8]["abbreviation"], vertebral[9]["abbreviation"]) == ("T1", "T2")
    assert read_dseg(tmp_path / "x_rootlets.tsv")[8]["name"] == "rootlets of spinal level C8"
    assert vertebral[8]["color"] == level_colour("T1") and spinal[8]["color"] == level_colour("C8")


def _check_view(command: str, image: Path, labels: dict[str, Path]) -> None:
    words = shlex.split(command)
    assert words[:2] == ["fsleyes", str(image)]
    rest = words[2:]
    assert len(rest) == 5 * len(labels)
    for i, (kind, path) in enumerate(labels.items()):
        seg, ot, label, flag, lut = rest[5 * i: 5 * i + 5]
        assert (seg, ot, label, flag) == (str(path), "-ot", "label", "-l") and Path(lut).is_file()
        numbering = viewers.NUMBERING[kind]
        assert Path(lut).name == f"rootlets_task_{numbering}.lut"


def test_chain_writes_viewer_files_and_the_fsleyes_command(files, tmp_path):
    out = tmp_path / "out"
    result = run_chain(files["image"], out_dir=out,
                       inputs=ChainInputs(cord=files["cord"], discs=files["discs"], pmj=files["pmj"],
                                          rootlets=files["rootlets"]),
                       options=ChainOptions(cord_from="file", discs_from="file", pmj_from="file"))
    labels = {kind: result.outputs[kind] for kind in ("rootlets", "spinal", "vertebral")}
    for kind, path in labels.items():
        table = read_dseg(viewers.dseg_path(path))
        values = {int(v) for v in np.unique(np.asanyarray(nib.load(path).dataobj)) if v}
        assert set(table) == values, kind
    assert read_dseg(viewers.dseg_path(labels["vertebral"]))[8]["abbreviation"] == "T1"
    assert read_dseg(viewers.dseg_path(labels["spinal"]))[8]["abbreviation"] == "C8"
    _check_view(result.view, files["image"], labels)


def test_segment_files_logs_the_fsleyes_command(files, tmp_path, phantom_home, caplog):
    from rootlets_task.pipeline.segment import segment_files

    caplog.set_level(logging.INFO, logger="rootlets_task")
    (out,) = segment_files([files["image"]], tmp_path / "seg", ModelOptions(release="phantom"), verbose=0)
    assert read_dseg(viewers.dseg_path(out))
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("view: ")]
    _check_view(line[len("view: "):], files["image"], {"rootlets": out})


def test_paths_in_the_command_are_normalised_and_quoted(tmp_path):
    command = viewers.fsleyes_command(tmp_path / "a b" / ".." / "t2.nii.gz", [("vertebral", tmp_path / "o" / "x.nii.gz")])
    words = shlex.split(command)
    assert words[1] == str(tmp_path / "t2.nii.gz") and words[-1] == str(tmp_path / "o" / "rootlets_task_vertebral.lut")
