"""From one image to spinal and vertebral levels in one call: rootlets, cord, discs and PMJ chained with the levels.

:func:`run_chain` takes the cord from the user's file or from SCT, segments the rootlets (or takes a rootlets file),
takes the discs and the PMJ from files or from the external tools (:mod:`rootlets_task.levels.tools`), and derives the
levels (:func:`rootlets_task.levels.compute.compute_levels`) on the arrays it holds: the image and every label file are
decoded once. Sources, in the order ``auto`` tries them:

* cord: a file (``-s``), else ``sct_deepseg spinalcord``;
* discs: a file (``-discs``), else ``sct_deepseg spine`` (SCT's disc task of its version), ``sct_label_vertebrae``
  (SCT's classic labelling, on the cord), ``totalspineseg``, ``spineps``, else none (spinal levels only);
* PMJ: a file (``-pmj``), else ``sct_detect_pmj``, else none (distances from the C2/C3 disc or the cord's top).

Every output is named from the image stem in the output folder. ``<stem>_chain.json`` (:class:`rootlets_task.io.records.Record`)
records, per step, the sha256 of its inputs and its settings and the sha256 of what it wrote: a step whose record
matches is skipped on the next run. An output file the chain did not write (or that was changed since) is never
replaced without ``overwrite``. Each step writes its files together, after its checks, so a failed step leaves
nothing behind.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from rootlets_task._version import __version__
from rootlets_task.core.errors import RootletsError
from rootlets_task.core.files import (
    OutputSet,
    keep_inputs,
    read_json,
    relative_to,
    remove_stale_temporaries,
    same_file,
    sha256_file,
    writable_folder,
)
from rootlets_task.core.names import level_value
from rootlets_task.core.options import SOURCES, ChainOptions, MeasureOptions, ModelOptions
from rootlets_task.core.places import portable, portable_text, shared_paths
from rootlets_task.inference import confidence as conf
from rootlets_task.inference import cropping
from rootlets_task.io import labels, nifti, provenance, viewers
from rootlets_task.io.phantom import release_warnings
from rootlets_task.io.records import Record
from rootlets_task.io.tables import read_shift_table
from rootlets_task.levels import compute as lv
from rootlets_task.levels import tools
from rootlets_task.levels.compute import (
    LevelsOptions,
    LevelsResult,
    add_confidence,
    compute_levels,
    output_paths,
    read_levels_table,
    write_levels,
)

log = logging.getLogger(__name__)

FLAGS = {"cord": ("-s", "-cord-from"), "discs": ("-discs", "-discs-from"), "pmj": ("-pmj", "-pmj-from"),
         "rootlets": ("-rootlets", None)}
RECORD_SUFFIX = "_chain.json"


@dataclass(frozen=True)
class ChainInputs:
    """Label files given by the user instead of being computed (any may be None)."""

    cord: str | os.PathLike | None = None
    discs: str | os.PathLike | None = None
    pmj: str | os.PathLike | None = None
    rootlets: str | os.PathLike | None = None

    def file(self, kind: str) -> Path | None:
        value = getattr(self, kind)
        return None if value is None else Path(value)


@dataclass
class ChainResult:
    """What one :func:`run_chain` call used, computed and wrote."""

    outputs: dict[str, Path]  # rootlets, cord, discs, pmj, spinal, vertebral, csv, json, shift, record (those written)
    sources: dict[str, str]  # cord / discs / pmj -> file | sct | totalspineseg | spineps | none
    steps: dict[str, str]  # step -> "computed" | "up to date" | "none"
    levels: pd.DataFrame
    shift: pd.DataFrame | None
    reference: str
    image: nib.Nifti1Image  # the decoded input image
    numbering: dict | None = None  # the numbering check (rootlets_task.levels.numbering.NumberingCheck as a dict)
    confidence: dict | None = None  # the network's confidence per level (the rootlets sidecar's Confidence)
    origin: dict | None = None  # where distances start: reference, origin_offset_mm (PMJ below it), note
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # rootlets, cord, discs, pmj on the image grid
    notes: list[str] = field(default_factory=list)
    segmenter: object | None = None  # the model loaded by this call (pass it to the next call to reuse it)
    qc_page: Path | None = None  # the subject's QC page, when a QC folder was given
    view: str | None = None  # the fsleyes command that opens the image with the rootlets and levels coloured

    def table(self) -> str:
        """Short text table: level, spinal and vertebral extent (mm from the reference) and their shift."""
        return levels_table(self.levels, self.shift, lv.origin_text(self.reference, (self.origin or {}).get("note")))


def levels_table(levels: pd.DataFrame, shift: pd.DataFrame | None, origin: str) -> str:
    """Text table of one subject's levels: one row per vertebral level (then spinal levels without one), its extent,
    the extent of the spinal level of the same name, and the shift (vertebral minus spinal midpoint) under the
    paper's two pairings, each naming its spinal level; ``origin``: the first line, where distances are measured from."""
    def extent(kind: str, name: str) -> str:
        row = levels[(levels["kind"] == kind) & (levels["level"] == name)]
        if row.empty:
            return ""
        r = row.iloc[0]
        return "missing" if r["status"] != "ok" else f"{r['rostral_mm']:6.1f} - {r['caudal_mm']:6.1f}"

    def shift_of(pairing: str, name: str) -> str:
        if shift is None:
            return ""
        row = shift[(shift["pairing"] == pairing) & (shift["vertebral_level"] == name)]
        if row.empty:
            return ""
        return f"{row.iloc[0]['shift_mm']:+6.1f} (SL {row.iloc[0]['spinal_level']})"

    def order(name: str) -> tuple[int, int]:
        return (level_value(name, "spinal") or 99, 0)

    names = sorted(set(levels["level"]), key=order)
    head = ("level", "spinal (mm)", "vertebral (mm)", "shift, unshifted", "shift, shifted (paper)")
    rows = [(n, extent("spinal", n), extent("vertebral", n), shift_of("unshifted", n), shift_of("shifted", n)) for n in names]
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(str(c).rjust(w) for c, w in zip(r, widths, strict=True)) for r in [head, *rows]]
    return "\n".join([f"{origin}, positive caudally; each extent is rostral end - caudal end; shift = vertebral "
                      "minus spinal midpoint, unshifted = VL n with SL n (VL T1-SL C8), shifted = the paper's VL n with "
                      "SL n+1 (VL C7-SL C8, VL T1-SL T1)", *lines])


# ----------------------------------------------------------------------------------------------------- sources


def resolve_source(kind: str, choice: str, file: str | os.PathLike | None) -> tuple[str, str]:
    """(source, why) for ``kind`` from the user's choice; checks that it can run before anything is computed."""
    flag, from_flag = FLAGS[kind]
    allowed = ("auto", *SOURCES[kind])
    if choice not in allowed:
        raise RootletsError(f"{from_flag} {choice}: unknown source; use one of {', '.join(allowed)}")
    if file is not None:
        if choice not in ("auto", "file"):
            raise RootletsError(f"{flag} {file} and {from_flag} {choice} contradict each other; drop one of them")
        return "file", f"{flag} {file}"
    if choice == "file":
        raise RootletsError(f"{from_flag} file needs a file: give it with {flag} FILE")
    if choice == "none":
        return "none", f"{from_flag} none"
    if choice != "auto":
        tools.require(kind, choice)
        return choice, f"{from_flag} {choice}"
    for source in SOURCES[kind][1:]:
        if source == "none":
            return "none", f"auto: no {flag} file and none of {', '.join(_tool_names(kind))} found on PATH"
        if tools.available(kind, source):
            return source, f"auto: first available of {', '.join(SOURCES[kind])}"
    raise RootletsError(f"no spinal cord segmentation: give one with {flag} CORD, or {tools.SCT_INSTALL} so "
                        "`sct_deepseg spinalcord` can make it")


def _tool_names(kind: str) -> list[str]:
    return [tools.describe(kind, s) for s in SOURCES[kind] if s not in ("file", "none")]


def _digest(image: nib.Nifti1Image, path: Path | None) -> str:
    """sha256 of the image file, or of the in-memory image's voxels, grid and affine."""
    return sha256_file(path) if path is not None else nifti.image_digest(image)


# ------------------------------------------------------------------------------------------------ the chain


class _Chain:
    """One run of the chain: the decoded image, the record, what each step used and made."""

    def __init__(self, img: nib.Nifti1Image, source: Path | None, out_dir: Path, prefix: str, inputs: ChainInputs,
                 options: ChainOptions, device: str):
        self.img, self.source, self.out_dir, self.prefix = img, source, out_dir, prefix
        self.inputs, self.options, self.device = inputs, options, device
        self._scratch: tempfile.TemporaryDirectory | None = None
        self.paths = {"rootlets": out_dir / f"{prefix}_rootlets.nii.gz", "record": out_dir / f"{prefix}{RECORD_SUFFIX}",
                      **{kind: out_dir / f"{prefix}{labels.SUFFIX[kind]}.nii.gz" for kind in ("cord", "discs", "pmj")},
                      **output_paths(out_dir, prefix)}
        self.record = Record(self.paths["record"], options.overwrite)
        self.steps: dict[str, str] = {}
        self.notes: list[str] = []
        self.arrays: dict[str, np.ndarray] = {}
        self.used: dict[str, Path | None] = {}
        self.sources: dict[str, str] = {}
        self.confidence: dict | None = None  # of the rootlets in hand (None when unknown, e.g. edited by hand)
        self.measured: dict[str, Path] = {}  # measure_csv, measure_tsv, measure_json, measure_png (the -measure step)
        self.templated: dict[str, Path] = {}  # the PAM50 step's files (-template), when it succeeded
        self.image_sha = _digest(img, source)
        self.base = {"version": __version__, "image": self.image_sha}

    def file_of(self, kind: str) -> Path:
        """The label file a finished step used for ``kind``, where the caller knows there is one (e.g. the cord)."""
        path = self.used.get(kind)
        assert path is not None, f"no {kind} file"
        return path

    def note(self, text: str) -> None:
        self.notes.append(text)
        log.warning("%s", text)

    def skipped(self, step: str, detail: str = "") -> None:
        self.steps[step] = "up to date"
        log.info("%s: up to date, skipped%s", step, detail)

    def labels_step(self, kind: str, source: str, why: str) -> None:
        """One of cord / discs / PMJ / a given rootlets file: the array on the image grid and the file it is in."""
        if source == "none":
            self.record.done(kind, {"source": "none"}, [])
            self.steps[kind], self.used[kind], self.sources[kind] = "none", None, "none"
            return
        file, target = self.inputs.file(kind), self.paths[kind]
        sidecar = provenance.sidecar_path(target)
        in_place = file is not None and same_file(file, target)
        key: dict[str, Any]
        if source == "file":
            assert file is not None  # the source is the user's file
            key = {"version": __version__, "source": "file", "file": sha256_file(file)}
        else:
            on_cord = kind == "pmj" or source == "label_vertebrae"  # these tools are given the cord and the contrast
            key = {**self.base, "source": source, "contrast": self.options.contrast if on_cord else None,
                   "cord": sha256_file(self.file_of("cord")) if on_cord and self.used.get("cord") else None}
        outputs = [] if in_place else [target, sidecar]
        if self.record.up_to_date(kind, key):
            found = self.record.step(kind).get("found", True)
            self.skipped(kind, "" if found else f" ({tools.describe(kind, source)} found none)")
            self.used[kind] = (file if in_place else target) if found else None
            self.sources[kind] = source if found else "none"
            if found:
                self.arrays[kind] = labels.read(self.file_of(kind), kind)[1]
                self._sidecar_confidence(kind)
            return
        self.record.check_writable(kind, outputs)
        data, step_notes, made = self._labels_from(kind, source, file, in_place)
        if data is None:  # sct_detect_pmj ran well and found no PMJ
            self.notes.append("sct_detect_pmj found no PMJ")
            log.warning("pmj: sct_detect_pmj found no PMJ; distances are measured from the C2/C3 disc or the cord's "
                        "rostral end")
            self.record.done(kind, key, [], {"found": False})
            self.steps[kind], self.used[kind], self.sources[kind] = "computed", None, "none"
            return
        for text in step_notes:
            self.note(f"{kind}: {text}")
        if outputs:
            content = tools.label_sidecar(kind, source, why, self.source, made, file, step_notes, self.options.command)
            with OutputSet() as out:  # label file and sidecar together
                nib.save(nifti.label_image(np.asarray(data), self.img), out.path(target))
                out.path(sidecar).write_text(json.dumps(content, indent=2) + "\n")
        # a file given in place (under the chain's own name) is the user's input from now on: never removed as stale
        self.record.done(kind, key, outputs, {"found": True}, keep=(target, sidecar) if in_place else ())
        self.steps[kind], self.used[kind], self.sources[kind] = "computed", (file if in_place else target), source
        self.arrays[kind] = np.asarray(data)
        self._sidecar_confidence(kind)

    def _sidecar_confidence(self, kind: str) -> None:
        """The confidence of a given rootlets file, from its sidecar, if computed on exactly these labels."""
        file = self.inputs.file("rootlets")
        if kind == "rootlets" and file is not None:
            content = read_json(provenance.sidecar_path(file))
            found = content.get("Confidence") if isinstance(content, dict) else None
            self.confidence = conf.matching(found, self.arrays["rootlets"])

    def _labels_from(self, kind: str, source: str, file: Path | None, in_place: bool):
        """(array on the image grid, notes, tool output) from the user's file or the tool; (None, [], None) = no PMJ."""
        if source == "file":
            assert file is not None  # the source is the user's file
            try:
                data, step_notes = labels.load(file, kind, self.img)
            except ValueError as exc:
                raise RootletsError(f"{kind} {file}: {exc}; give a valid file with {FLAGS[kind][0]}") from None
            if in_place and step_notes:
                raise RootletsError(f"{kind} {file}: on another grid than the image and inside -ofolder under the "
                                    "chain's own name; move it elsewhere so the chain can write the resampled copy")
            return data, step_notes, None
        made = self._run_tool(kind, source)
        return (None, [], None) if made is None else (made.data, made.notes, made)

    def _run_tool(self, kind: str, source: str) -> tools.ToolOutput | None:
        image = self._image_file()
        if kind == "cord":
            return tools.cord_from_sct(image, self.img)
        if kind == "pmj":
            return tools.pmj_from_sct(image, self.img, self.options.contrast, self.used.get("cord"))
        if source == "sct":
            return tools.discs_from_sct(image, self.img)
        if source == "label_vertebrae":
            return tools.discs_from_label_vertebrae(image, self.img, self.file_of("cord"), self.options.contrast)
        if source == "totalspineseg":
            return tools.discs_from_totalspineseg(image, self.img)
        device = self.device
        if device == "auto":  # only then is torch needed to know
            from rootlets_task.inference.segmenter import resolve_device

            device = resolve_device(device).type
        return tools.discs_from_spineps(image, self.img, cpu=device == "cpu")

    def _image_file(self) -> Path:
        """The image as a file for the external tools (an in-memory image is written to a private folder once)."""
        if self.source is not None:
            return self.source
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="rootlets_chain_")
        path = Path(self._scratch.name) / f"{self.prefix}.nii.gz"
        if not path.is_file():
            nib.save(self.img, path)
        return path

    def close(self) -> None:
        if self._scratch is not None:
            self._scratch.cleanup()


def run_chain(image: str | os.PathLike | nib.Nifti1Image, out_dir: str | os.PathLike | None = None,
              inputs: ChainInputs = ChainInputs(), options: ChainOptions = ChainOptions(),
              model: ModelOptions = ModelOptions(), segmenter=None, qc_dir: str | os.PathLike | None = None,
              prefix: str | None = None) -> ChainResult:
    """Image -> cord -> rootlets -> discs, PMJ -> spinal and vertebral levels, sources chosen as documented above.

    ``image``: a path or an in-memory ``Nifti1Image`` (then give ``out_dir`` and, unless the image has a file name,
    ``prefix``). ``inputs``: label files to use instead of computing them (``rootlets`` e.g. from ``sct_deepseg
    rootlets`` or corrected by hand). ``segmenter``: an already loaded model to reuse (then ``model`` is its own);
    otherwise a model is loaded only if the rootlets must be segmented. Writes into ``out_dir`` (default: beside the
    image), skips the steps whose record is up to date unless ``options.overwrite``, and returns a
    :class:`ChainResult`. ``qc_dir``: a QC folder that receives the subject's page (:func:`rootlets_task.qc.report.qc_subject`).
    """
    options.check()
    model.check()
    if options.measure is not None:  # the maps and the mask exist, before anything is computed
        from rootlets_task.pipeline.measuring import parse_maps

        for name, path in [*(("map " + n, p) for n, p in parse_maps(options.measure).items()),
                           *((("mask", Path(options.measure_mask)),) if options.measure_mask else ())]:
            if not path.is_file():
                raise RootletsError(f"-measure: {name} {path}: file not found; check the path")
    if options.template:
        from rootlets_task.measures import template as pam50

        pam50.require()
    img, source, out_dir, prefix = _open(image, out_dir, inputs, prefix)
    with shared_paths(out_dir, keep=True):  # sidecars and records name files relative to the outputs (a batch: BIDS URIs)
        return _run_chain(img, source, out_dir, prefix, inputs, options, model, segmenter, qc_dir)


def _run_chain(img: nib.Nifti1Image, source: Path | None, out_dir: Path, prefix: str, inputs: ChainInputs,
               options: ChainOptions, model: ModelOptions, segmenter, qc_dir) -> ChainResult:
    resolved = {kind: resolve_source(kind, choice, inputs.file(kind))
                for kind, choice in (("cord", options.cord_from), ("discs", options.discs_from), ("pmj", options.pmj_from))}
    for kind, (src, why) in resolved.items():
        log.info("%s: %s (%s)", kind, tools.describe(kind, src), why)
    run = _Chain(img, source, out_dir, prefix, inputs, options, model.device if segmenter is None else segmenter.device.type)
    _check_paths(source, inputs, run.paths, out_dir)
    if qc_dir is not None:
        writable_folder(qc_dir, "QC folder", "-qc")
    remove_stale_temporaries(out_dir)
    # the model is looked up first, so that a missing release fails before any work; it is loaded only if needed
    model_key = _model_key(inputs, model, segmenter)
    try:
        run.labels_step("cord", *resolved["cord"])  # first: with crop_to_cord the segmentation is cropped around it
        if inputs.rootlets is not None:
            log.info("using the rootlets of -r %s (no segmentation)", inputs.rootlets)
            run.labels_step("rootlets", "file", f"-r {inputs.rootlets}")
        else:
            assert model_key is not None  # the rootlets are not given
            segmenter = _rootlets_step(run, model, model_key, segmenter)
        for kind in ("discs", "pmj"):
            run.labels_step(kind, *resolved[kind])
    finally:
        run.close()
    levels = _levels_step(run)
    if options.template:
        _template_step(run, levels["levels"])
    if options.measure is not None:
        _measure_step(run)
    result = _result(run, resolved, levels, segmenter)
    result.view = _viewer_files(result.outputs, run.source, run.arrays)
    if qc_dir is not None:
        result.qc_page = _qc(run, result, qc_dir, (model_key or {}).get("tag"))
        log.info("QC: %s", result.qc_page)
    return result


def _open(image, out_dir, inputs: ChainInputs, prefix: str | None) -> tuple[nib.Nifti1Image, Path | None, Path, str]:
    """(decoded image, its file or None, output folder, output prefix), the user's label files checked to exist."""
    source = None if isinstance(image, nib.spatialimages.SpatialImage) else Path(image)
    if source is None and (out_dir is None or not (prefix or image.get_filename())):
        raise RootletsError("an in-memory image needs out_dir and prefix (the outputs are named from it)")
    for kind in ("cord", "discs", "pmj", "rootlets"):  # the user's files exist, before anything is decoded
        file = inputs.file(kind)
        if file is not None and not file.is_file():
            raise RootletsError(f"{kind} {file}: file not found; check the path given with {FLAGS[kind][0]}")
    img = nifti.load(source, "image") if source is not None else image
    if out_dir is None:
        assert source is not None  # an in-memory image needs out_dir (refused above)
        out_dir = source.parent
    out_dir = Path(out_dir)
    return img, source, out_dir, prefix or nifti.stem(source if source is not None else image.get_filename())


def _result(run: _Chain, resolved: dict, levels: dict, segmenter) -> ChainResult:
    """The record's sources saved, and the result of the run (``levels``: what :func:`_levels_step` returns)."""
    run.record.data["sources"] = {kind: {"source": run.sources[kind], "tool": tools.describe(kind, run.sources[kind]),
                                         "reason": portable_text(resolved[kind][1]),
                                         "file": relative_to(run.file_of(kind), run.out_dir) if run.used[kind] else None}
                                  for kind in SOURCES}
    run.record.data["image"] = relative_to(run.source, run.out_dir) if run.source is not None else None
    run.record.save()
    written = ("spinal", "csv", "json") + (("vertebral", "shift") if run.used.get("discs") is not None else ())
    outputs = {"rootlets": run.used.get("rootlets") or run.paths["rootlets"],
               **{k: v for k, v in run.used.items() if v is not None and k != "rootlets"},
               **{k: run.paths[k] for k in written}, "record": run.paths["record"]}
    if run.options.method == "reference":
        outputs["lab"] = run.paths["lab"]
    outputs.update(run.templated)
    outputs.update(run.measured)
    return ChainResult(outputs=outputs, sources={kind: run.sources[kind] for kind in SOURCES}, steps=run.steps,
                       image=run.img, arrays=run.arrays, notes=run.notes, segmenter=segmenter,
                       confidence=run.confidence, **levels)


def _viewer_files(outputs: dict[str, Path], image: Path | None, arrays: dict[str, np.ndarray]) -> str:
    """Lookup tables beside the label outputs and in their folder; returns the fsleyes command that opens them."""
    shown = [(kind, outputs[kind]) for kind in ("rootlets", "spinal", "vertebral") if kind in outputs]
    viewers.describe(dict(shown), {kind: arrays[kind] for kind, _ in shown if kind in arrays})
    return viewers.fsleyes_command(image, shown)


def _model_key(inputs: ChainInputs, model: ModelOptions, segmenter) -> dict | None:
    """What identifies the model in the rootlets step's key (None when the rootlets are given)."""
    if inputs.rootlets is not None:
        return None
    if segmenter is None:
        from rootlets_task.models import install

        folder, record = install.ready_model_folder(model.release)  # first use installs it, as `rootlets -i` does
        return {"tag": record.get("tag"), "sha256": record.get("sha256") or str(folder), "test_time_aug": model.test_time_aug,
                "precision": model.precision}
    return {"tag": segmenter.record.get("tag"), "sha256": segmenter.record.get("sha256") or str(segmenter.model_folder),
            "test_time_aug": segmenter.test_time_aug, "precision": segmenter.precision}


def _rootlets_step(run: _Chain, model: ModelOptions, model_key: dict, segmenter):
    """Segment the rootlets (cropped around the cord when asked); returns the model used (loaded here if needed)."""
    crop = run.options.crop_to_cord
    path, sidecar = run.paths["rootlets"], provenance.sidecar_path(run.paths["rootlets"])
    key = {**run.base, "model": model_key, "crop_to_cord": sha256_file(run.file_of("cord")) if crop else None}
    run.used["rootlets"] = path
    warnings = release_warnings(model_key.get("tag"), run.img, run.source)  # e.g. the phantom release on a scan
    if run.record.up_to_date("rootlets", key):
        run.skipped("rootlets", f" ({path.name}, {sidecar.name})")
        run.arrays["rootlets"] = labels.read(path, "rootlets")[1]
        content = read_json(sidecar)
        run.confidence = conf.matching(content.get("Confidence") if isinstance(content, dict) else None,
                                       run.arrays["rootlets"])
        for text in warnings:
            run.note(text)
        return segmenter
    run.record.check_writable("rootlets", [path, sidecar])
    if segmenter is None:
        from rootlets_task.pipeline.segment import load_segmenter

        segmenter = load_segmenter(model, calibration=[run.img])  # int8: calibrated on the first image of the call
    box = cropping.crop_box(run.img, run.arrays["cord"]) if crop else None
    prediction = segmenter.predict(run.img, box)
    found, run.confidence = prediction.labels, prediction.confidence
    if box is not None:
        for text in cropping.cut_note(found, box, cropping.CROP_MARGIN_MM):
            run.note(text)
    from rootlets_task.pipeline.segment import write_segmentation

    command = run.options.command or f"-i {run.source.name if run.source else run.prefix} -levels"
    command += " -crop-to-cord" if crop and "-crop-to-cord" not in command else ""
    crop_info = {"CordFile": portable(run.file_of("cord")), "MarginMM": cropping.CROP_MARGIN_MM} if crop else None
    content = provenance.rootlets_sidecar(segmenter, run.source, command, crop_info, run.confidence)
    for text in warnings:
        run.note(text)
        content.setdefault("Warnings", []).append(text)
    write_segmentation(nifti.label_image(found, run.img), path, content)
    run.record.done("rootlets", key, [path, sidecar])
    run.steps["rootlets"] = "computed"
    run.arrays["rootlets"] = found
    return segmenter


def _levels_step(run: _Chain) -> dict:
    """Levels from the arrays in hand, written as one set; read back only when up to date. Returns the
    :class:`ChainResult` fields of the levels (levels, shift, reference, numbering, origin)."""
    used = {k: run.used.get(k) for k in ("rootlets", "cord", "discs", "pmj")}
    options = run.options
    key = {"version": __version__, "method": options.method, "renumber": options.renumber, "image": run.image_sha,
           **{k: sha256_file(p) if p is not None else None for k, p in used.items()}}
    with_discs = used["discs"] is not None
    expected = list(output_paths(run.out_dir, run.prefix, with_discs, options.method).values())
    if run.record.up_to_date("levels", key):
        run.skipped("levels", f" ({', '.join(p.name for p in expected)})")
        document = read_json(run.paths["json"]) or {}
        run.notes += [n for n in document.get("warnings", []) if n not in run.notes]
        shift = read_shift_table(run.paths["shift"]) if with_discs else None
        return {"levels": read_levels_table(run.paths["csv"]), "shift": shift, "reference": document.get("reference", ""),
                "numbering": document.get("numbering"), "origin": document.get("origin")}
    run.record.check_writable("levels", expected)
    names = {k: f"{k} {p}" for k, p in used.items() if p is not None}
    settings = LevelsOptions(method=options.method, renumber=options.renumber)
    result: LevelsResult = compute_levels(run.arrays["rootlets"], run.arrays["cord"], run.img.affine,
                                          run.arrays.get("discs"), run.arrays.get("pmj"), options=settings, names=names)
    add_confidence(result, run.confidence)
    for text in result.warnings:
        run.note(text)
    write_levels(result, run.img, run.out_dir, run.prefix, {k: p for k, p in used.items() if p is not None})
    run.arrays["spinal"] = result.spinal  # for the viewer files: their values without reading the images back
    if result.vertebral is not None:
        run.arrays["vertebral"] = result.vertebral
    assert result.numbering is not None and result.origin is not None  # compute_levels sets both
    numbering = result.numbering.to_dict()
    run.record.done("levels", key, expected, {"numbering": {k: numbering[k] for k in ("status", "offset", "applied", "text")}})
    run.steps["levels"] = "computed"
    return {"levels": result.levels, "shift": result.shift if with_discs else None, "reference": result.reference,
            "numbering": numbering, "origin": result.origin.to_dict()}


TEMPLATE_SUFFIXES = {"spinal_pam50": "_spinal_levels_pam50.nii.gz", "levels_pam50": "_levels_pam50.csv",
                     "levels_pam50_json": "_levels_pam50.json", "positions_pam50": "_levels_space-PAM50.csv",
                     "rootlets_pam50": "_rootlets_space-PAM50.nii.gz", "spinal_in_pam50": "_spinal_levels_space-PAM50.nii.gz",
                     "vertebral_in_pam50": "_vertebral_levels_space-PAM50.nii.gz",
                     "warp_template2anat": "_warp_template2anat.nii.gz", "warp_anat2template": "_warp_anat2template.nii.gz"}


def _template_step(run: _Chain, levels: pd.DataFrame) -> None:
    """The PAM50 step (``-template``): :func:`rootlets_task.measures.template.run_template`, then PAM50's spinal
    levels as a third kind of spinal levels (table, numbering check, comparison with the rootlets' levels) and the
    subject's labels in PAM50 space. A failure is a note naming the step; the other outputs stay complete."""
    from rootlets_task.measures import template as pam50

    level_files: dict[str, Path] = {k: run.paths[k] for k in ("spinal", "vertebral") if k in run.paths and
                                    run.paths[k].is_file() and (k == "spinal" or run.used.get("discs") is not None)}
    cord, rootlets = _used(run, "cord"), _used(run, "rootlets")
    paths = {k: run.out_dir / f"{run.prefix}{suffix}" for k, suffix in TEMPLATE_SUFFIXES.items()}
    if "vertebral" not in level_files:
        del paths["vertebral_in_pam50"]
    key = {"version": __version__, "image": run.image_sha, "cord": sha256_file(cord),
           "rootlets": sha256_file(rootlets), "levels": {k: sha256_file(p) for k, p in level_files.items()},
           "contrast": run.options.contrast, "method": run.options.method, "sct": ".".join(map(str, tools.sct_version()))}
    if run.record.up_to_date("template", key):
        run.skipped("template", f" ({', '.join(p.name for p in paths.values())})")
        run.templated = paths
        return
    run.record.check_writable("template", list(paths.values()))
    with tempfile.TemporaryDirectory(prefix="rootlets_pam50_") as tmp:
        try:
            made = pam50.run_template(run._image_file(), run.img, cord, run.arrays["rootlets"], level_files,
                                      Path(tmp), run.options.contrast)
        except RootletsError as exc:
            run.note(f"template: {exc}")
            run.steps["template"] = "failed"
            return
        finally:
            run.close()
        for text in made.notes:
            run.note(f"template: {text}")
        table, check = _pam50_table(run, made.spinal_pam50, levels)
        if check.warns:  # shown on the QC page and in the batch summary with the other warnings
            run.note(f"template: PAM50's spinal levels against the vertebral levels: {check.text}")
        document = {"version": __version__, "commands": made.commands, "numbering": check.to_dict(),
                    "levels": json.loads(table.to_json(orient="records")), "notes": made.notes}
        with OutputSet() as out:
            nib.save(nifti.label_image(made.spinal_pam50, run.img), out.path(paths["spinal_pam50"]))
            table.to_csv(out.path(paths["levels_pam50"]), index=False)
            out.path(paths["levels_pam50_json"]).write_text(json.dumps(document, indent=2) + "\n")
            pam50.template_positions(made.in_template, made.template).to_csv(out.path(paths["positions_pam50"]), index=False)
            for kind in pam50.IN_TEMPLATE:
                name = "rootlets_pam50" if kind == "rootlets" else f"{kind}_in_pam50"
                if name in paths:
                    nib.save(nifti.label_image(made.in_template[kind], made.template), out.path(paths[name]))
            for name, warp in made.warps.items():
                out.path(paths[f"warp_{name}"]).write_bytes(warp.read_bytes())
    run.record.done("template", key, list(paths.values()), {"numbering": check.status})
    run.steps["template"] = "computed"
    run.templated = paths


def _used(run: _Chain, kind: str) -> Path:
    """The file the chain used for ``kind`` (the cord and the rootlets always have one by the levels step)."""
    path = run.used.get(kind)
    if path is None:
        raise RootletsError(f"{kind}: no file in hand; compute the levels first")
    return path


def _pam50_table(run: _Chain, spinal_pam50: np.ndarray, levels: pd.DataFrame):
    """PAM50's spinal levels in the subject as levels-table rows (kind ``spinal_pam50``, distances in the frame of the
    subject's levels), each with the rootlets' midpoint of the same level and the difference; and the numbering
    check of PAM50's levels against the vertebral levels."""
    from rootlets_task.levels import numbering
    from rootlets_task.measures import template as pam50

    slice_mm, axis, reference = lv.slice_distances(run.arrays["cord"], run.img.affine, run.arrays.get("pmj"),
                                                   run.arrays.get("discs"), run.options.method)
    ours = levels[(levels["kind"] == "spinal") & (levels["status"] == "ok")].set_index("value")["mid_mm"]
    vertebral = levels[(levels["kind"] == "vertebral") & (levels["status"] == "ok")]
    rows = []
    for value, (rostral, caudal, first, last) in pam50.pam50_levels(spinal_pam50, slice_mm, axis).items():
        mid = (rostral + caudal) / 2
        rows.append({"kind": "spinal_pam50", "level": lv.level_name(value, "spinal"), "value": value,
                     "rostral_slice": first, "caudal_slice": last, "rostral_mm": rostral, "caudal_mm": caudal,
                     "mid_mm": mid, "height_mm": caudal - rostral, "reference": reference, "status": "ok",
                     "rootlets_mid_mm": ours.get(value), "pam50_minus_rootlets_mm": mid - ours[value] if value in ours else None})
    table = pd.DataFrame.from_records(rows, columns=["kind", "level", "value", "rostral_slice", "caudal_slice", "rostral_mm",
                                                     "caudal_mm", "mid_mm", "height_mm", "reference", "status",
                                                     "rootlets_mid_mm", "pam50_minus_rootlets_mm"])
    check = numbering.check({int(r["value"]): float(r["mid_mm"]) for _, r in table.iterrows()},
                            {int(r["value"]): float(r["mid_mm"]) for _, r in vertebral.iterrows()})
    table["numbering"] = check.status
    return table, check


def _measure_step(run: _Chain) -> None:
    """Per-level morphometry and map statistics (``-measure``) on the written level files, the cord and the maps."""
    from rootlets_task.measures import files as measure_io
    from rootlets_task.pipeline.measuring import measure_files, parse_maps

    options = run.options
    maps = parse_maps(options.measure or ())
    levels: dict[str, Path] = {kind: run.paths[kind] for kind in ("spinal", "vertebral") if kind in run.paths and
                               (kind == "spinal" or run.used.get("discs") is not None)}
    cord = _used(run, "cord")
    if "spinal_pam50" in run.templated:
        levels["spinal_pam50"] = run.templated["spinal_pam50"]
    mask = Path(options.measure_mask) if options.measure_mask else None
    key = {"version": __version__, "image": run.image_sha, "cord": sha256_file(cord),
           "levels": {k: sha256_file(p) for k, p in levels.items()}, "maps": {n: sha256_file(p) for n, p in maps.items()},
           "mask": sha256_file(mask) if mask else None, "method": options.measure_method}
    paths = measure_io.output_paths(run.out_dir, run.prefix)
    run.measured = {f"measure_{k}": p for k, p in paths.items()}
    if run.record.up_to_date("measure", key):
        run.skipped("measure", f" ({', '.join(p.name for p in paths.values())})")
        return
    run.record.check_writable("measure", list(paths.values()))
    _, measured = measure_files(run.img, levels, maps, cord=cord, mask=mask, out_dir=run.out_dir,
                                prefix=run.prefix, options=MeasureOptions(options.measure_method))
    for text in measured.notes:
        run.note(f"measure: {text}")
    run.record.done("measure", key, list(paths.values()))
    run.steps["measure"] = "computed"


def _qc(run: _Chain, result: ChainResult, qc_dir: str | os.PathLike, tag: str | None) -> Path:
    from rootlets_task.qc import report as qc

    def image(kind: str):
        return nifti.label_image(run.arrays[kind], run.img) if kind in run.arrays else None

    files = {f"{kind} file": portable(run.used[kind]) for kind in ("rootlets", "cord", "discs") if run.used.get(kind)}
    provenance = {"image file": portable(run.source) if run.source else "(in-memory image)", **files,
                  "release": tag, "method": run.options.method, "renumber": run.options.renumber,
                  **{f"{kind} source": tools.describe(kind, result.sources[kind]) for kind in SOURCES}}
    options = qc.QcOptions(subject=run.prefix, warnings=run.notes, confidence=result.confidence, provenance=provenance,
                           measure=run.measured.get("measure_figure"))  # written by the measure step, or up to date
    return qc.qc_subject(qc_dir, run.img, image("rootlets"), cord=image("cord"), discs=image("discs"),
                         levels=result.levels, shift=result.shift, options=options)


def _check_paths(image: Path | None, inputs: ChainInputs, paths: dict[str, Path], out_dir: Path) -> None:
    """Refuse outputs that would overwrite an input; create the output folder."""
    protected = {"the image": image, **{f"the {kind} file": inputs.file(kind) for kind in ("cord", "discs", "pmj",
                                                                                         "rootlets")}}
    for name, out in paths.items():
        given = inputs.file(name) if name in FLAGS else None
        if given is not None and same_file(given, out):  # a given label file that already is the output: kept in place
            continue
        keep_inputs([out], protected, "-ofolder")
    writable_folder(out_dir, flag="-ofolder")
