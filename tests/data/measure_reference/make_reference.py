"""Run SCT's own commands on the inputs of make_inputs.py and keep their numbers in reference.json (outside CI).

Needs an SCT install (its Python is enough: no registration binary, no model). With the side install of README.md:

    . /work/side/env.sh && python tests/data/measure_reference/make_reference.py

Per case and per level file (the package's ``spinal_levels`` and ``vertebral_levels``):

    sct_process_segmentation -i cord.nii.gz -vertfile LEVELS -vert 1:20 -perlevel 1 -o OUT.csv
    sct_extract_metric -i MAP -f MASK -method {bin,wa,median} -vert 1:20 -vertfile LEVELS -perlevel 1 -o OUT.csv

with MASK the cord and the case's mask, MAP ``map.nii.gz`` where there is one, else the image. Every number of SCT's
CSV is kept as SCT wrote it (full precision), with the command line, SCT's version and the versions of the libraries.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
CASES = ("phantom_iso", "phantom_aniso", "oblique", "sct_t2")
KINDS = ("spinal", "vertebral")
METHODS = ("bin", "wa", "median")


def run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "SCT_PROGRESS_BAR": "off"})
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {done.stderr[-2000:]}")


def rows(path: Path) -> dict[str, dict]:
    """SCT's CSV as {level value: {column: number or text}}."""
    with path.open() as f:
        out = {}
        for row in csv.DictReader(f):
            level = row.pop("VertLevel")
            out[level] = {k: _number(v) for k, v in row.items() if k not in ("Timestamp", "Filename")}
        return out


def _number(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def main() -> None:
    reference = {"sct_version": subprocess.run(["sct_version"], capture_output=True, text=True).stdout.strip(),
                 "sct_commit": os.environ.get("SCT_COMMIT", "3b3c5b22d5b3aa63eb6291799c621a6544dc3ad8"),
                 "python": platform.python_version(),
                 "libraries": {p: metadata.version(p) for p in ("numpy", "scipy", "scikit-image", "nibabel", "wquantiles")},
                 "commands": [], "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.csv"
        for case in CASES:
            folder = HERE / case
            data = folder / "map.nii.gz" if (folder / "map.nii.gz").is_file() else folder / "image.nii.gz"
            reference["cases"][case] = {"map": data.name}
            for kind in KINDS:
                levels = folder / f"{kind}_levels.nii.gz"
                entry = reference["cases"][case][kind] = {}
                command = ["sct_process_segmentation", "-i", str(folder / "cord.nii.gz"), "-vertfile", str(levels),
                           "-vert", "1:20", "-perlevel", "1", "-o", str(out)]
                run(command)
                reference["commands"].append(" ".join(c.replace(str(HERE) + "/", "") for c in command))
                entry["process_segmentation"] = rows(out)
                for mask in ("cord", "mask"):
                    for method in METHODS:
                        out.unlink(missing_ok=True)
                        command = ["sct_extract_metric", "-i", str(data), "-f", str(folder / f"{mask}.nii.gz"),
                                   "-method", method, "-vert", "1:20", "-vertfile", str(levels), "-perlevel", "1",
                                   "-o", str(out)]
                        run(command)
                        reference["commands"].append(" ".join(c.replace(str(HERE) + "/", "") for c in command))
                        entry[f"extract_metric_{mask}_{method}"] = rows(out)
                print(case, kind, "done", file=sys.stderr)
    (HERE / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")


if __name__ == "__main__":
    main()
