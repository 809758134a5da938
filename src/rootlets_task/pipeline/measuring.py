"""Measurements per level from files: the tables and the QC figure of one subject (``rootlets measure``, the chain's
``-measure`` step). The computation is :func:`rootlets_task.measures.perlevel.measure_levels`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import nibabel as nib

from rootlets_task.core.errors import RootletsError
from rootlets_task.core.options import MeasureOptions
from rootlets_task.io import nifti
from rootlets_task.measures import files as measure_files_io
from rootlets_task.measures.perlevel import MeasureResult, measure_levels


def parse_maps(entries: list[str] | tuple[str, ...]) -> dict[str, Path]:
    """``NAME=PATH`` or ``PATH`` (named by its file stem) -> {name: path}; names must differ."""
    maps: dict[str, Path] = {}
    for entry in entries:
        name, sep, path = str(entry).partition("=")
        name, path = (name, path) if sep and name and "/" not in name else (nifti.stem(entry), str(entry))
        if name in maps:
            raise RootletsError(f"map {entry}: the name {name!r} is given twice; name them with NAME=PATH")
        maps[name] = Path(path)
    return maps


def figure_metrics(result: MeasureResult) -> dict[str, str]:
    """The columns of :attr:`MeasureResult.slices` the QC figure plots, with their axis labels."""
    return {"area": "CSA (mm²)", **{name: f"{name} (mean per slice)" for name in result.maps}}


def draw(result: MeasureResult, title: str):
    """A function that draws the result's QC figure into the path it is given."""
    from rootlets_task.qc.figures import measure_figure

    return lambda path: measure_figure(result.slices, result.kinds, figure_metrics(result), path, title)


def measure_files(image: str | os.PathLike | nib.Nifti1Image, levels: Mapping[str, str | os.PathLike],
                  maps: Mapping[str, str | os.PathLike] | None = None, *, cord: str | os.PathLike | None = None,
                  mask: str | os.PathLike | None = None, out_dir: str | os.PathLike | None = None,
                  prefix: str | None = None, options: MeasureOptions = MeasureOptions(),
                  command: str | None = None) -> tuple[dict[str, Path], MeasureResult]:
    """Measure per level and write ``<prefix>_measure.csv/.tsv/.json/.png`` into ``out_dir`` (default: beside the
    first level file; prefix: the image's stem), all or nothing; returns (paths, result)."""
    given: dict[str, str | os.PathLike] = {f"{kind} levels": p for kind, p in levels.items()}
    given.update({f"map {n}": p for n, p in (maps or {}).items()})
    given.update({k: p for k, p in (("cord", cord), ("mask", mask)) if p is not None})
    for name, path in given.items():
        if not Path(path).is_file():
            raise RootletsError(f"{name} {path}: file not found; check the path")
    img = image if isinstance(image, nib.spatialimages.SpatialImage) else nifti.load(image, "image")
    result = measure_levels(img, dict(levels), dict(maps or {}), cord=cord, mask=mask, options=options)
    filename = img.get_filename()
    first_levels = Path(next(iter(levels.values())))
    prefix = prefix or nifti.stem(filename or first_levels)
    out_dir = Path(out_dir) if out_dir is not None else first_levels.parent
    inputs: dict[str, str | os.PathLike] = {**({"image": filename} if filename else {}), **given}
    protected = {Path(p).absolute().resolve() for p in inputs.values()}
    for path in measure_files_io.output_paths(out_dir, prefix).values():
        if path.absolute().resolve() in protected:
            raise RootletsError(f"output {path} is an input file; choose another output folder or prefix")
    paths = measure_files_io.write_measure(result, out_dir, prefix, inputs, command, draw(result, prefix))
    return paths, result
