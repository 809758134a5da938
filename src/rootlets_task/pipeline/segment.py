"""Segment rootlets like ``sct_deepseg rootlets``: images in, images out; files as a convenience.

* :func:`segment`: one image (a ``Nifti1Image`` or a path) -> the rootlets as a ``Nifti1Image`` on the input's
  grid, affine and header (uint8, value = spinal level, 2 = C2 ... 9 = T1);
* :func:`segment_files`: the job of ``rootlets -i IMG...``: every input and output checked before the model loads,
  the release installed on first use, one model load for all inputs, SCT's post-processing flags, each output
  written together with its JSON sidecar (all or nothing), QC entries in SCT's report and ours;
* :func:`load_segmenter`: the installed model of a release, loaded once, for callers that segment many images.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from rootlets_task.core.errors import RootletsError
from rootlets_task.core.files import OutputSet, keep_inputs, remove_stale_temporaries, writable_folder
from rootlets_task.core.options import ModelOptions
from rootlets_task.core.places import portable, shared_paths
from rootlets_task.inference import postprocess
from rootlets_task.inference.postprocess import PostOptions
from rootlets_task.inference.segmenter import Segmenter, resolve_device
from rootlets_task.io import nifti, provenance, viewers
from rootlets_task.io.phantom import release_warnings
from rootlets_task.qc.sct_report import QcNames

log = logging.getLogger(__name__)

SUFFIX = "_rootlets"


def load_segmenter(model: ModelOptions = ModelOptions(), verbose: int = 1, calibration: Sequence | None = None,
                   int8_options=None) -> Segmenter:
    """The model of ``model.release`` (installed on first use), with its CPU threads (``model.threads``, default every
    physical core).

    ``calibration`` / ``int8_options``: with ``model.precision`` int8, the images (paths or NIfTI images) and the
    :class:`rootlets_task.inference.int8.Int8Options` of the quantisation (default: phantoms, default options).
    """
    from rootlets_task.models import install

    model.check()
    folder, record = install.ready_model_folder(model.release, progress=verbose > 0)
    return Segmenter(folder, model, verbose=verbose, record=record,
                     calibration=calibration if model.precision == "int8" else None, int8_options=int8_options)


def segment(image: nib.Nifti1Image | str | os.PathLike, model: ModelOptions = ModelOptions(),
            segmenter: Segmenter | None = None) -> nib.Nifti1Image:
    """Rootlets of one image, in memory: a uint8 label image on the input's grid with its header (qform/sform kept).

    ``segmenter``: an already loaded model (:func:`load_segmenter`) to reuse; otherwise ``model`` is loaded.
    """
    img = image if isinstance(image, nib.spatialimages.SpatialImage) else nifti.load(image)
    segmenter = segmenter or load_segmenter(model, verbose=0)
    return nifti.label_image(segmenter.segment_image(img), img)


def write_segmentation(labels: nib.Nifti1Image, out: str | os.PathLike, sidecar: dict) -> Path:
    """The label file and its JSON sidecar (SCT's layout: ``json.dump(..., indent=4)``), together or not at all."""
    import json

    out = Path(out)
    with OutputSet() as outputs:
        nib.save(labels, outputs.path(out))
        outputs.path(provenance.sidecar_path(out)).write_text(json.dumps(sidecar, indent=4))
    return out


def plan_outputs(inputs: Sequence[str | os.PathLike], output: str | os.PathLike | None = None) -> list[Path]:
    """Output path of every input, refusing anything that would overwrite an input or another output.

    No ``output``: ``<input stem>_rootlets.nii.gz`` beside each input (SCT's default). ``output`` ending in
    ``.nii``/``.nii.gz``: that exact file (one input only). Any other ``output``: a folder that receives
    ``<input stem>_rootlets.nii.gz`` for every input.
    """
    sources = [Path(p) for p in inputs]
    if output is not None and str(output).endswith((".nii", ".nii.gz")):
        if len(sources) > 1:
            raise RootletsError(f"output {output}: one file cannot hold {len(sources)} inputs; give a folder as -o")
        if Path(output).is_dir():
            raise RootletsError(f"output {output}: is an existing folder; give a file name that is not a folder, or the "
                                "folder without a .nii.gz ending")
        targets = [Path(output)]
    else:
        folder = None if output is None else Path(output)
        if folder is not None and folder.exists() and not folder.is_dir():
            raise RootletsError(f"output {folder}: exists and is not a folder; give a folder or a .nii.gz file name")
        targets = [(folder or p.parent) / f"{nifti.stem(p)}{SUFFIX}.nii.gz" for p in sources]
    targets = [Path(os.path.abspath(t)) for t in targets]  # absolute and normalised ("a/../out" -> "out"), as printed
    seen: dict[Path, Path] = {}
    for source, target in zip(sources, targets, strict=True):
        key = target.absolute().resolve()
        if key in seen:
            raise RootletsError(f"output {target}: would be written for both {seen[key]} and {source}; "
                                "give each input a distinct name or segment them separately with -o")
        seen[key] = source
    kept = {f"the input file {p}": p for p in sources} | {
        f"the sidecar of input {p}": provenance.sidecar_path(p) for p in sources}
    for target in targets:
        sidecar = provenance.sidecar_path(target)
        keep_inputs([target, sidecar], kept, "-o")
        if sidecar.is_dir():
            raise RootletsError(f"output {target}: its JSON sidecar {sidecar} is a folder; choose another -o")
        if sidecar.exists() and not provenance.is_sidecar(sidecar):
            raise RootletsError(f"output {target}: its JSON sidecar would replace {sidecar}, which is not a sidecar of "
                                "rootlets_task or SCT; move that file or choose another -o")
        writable_folder(target.parent)
    return targets


def _model_values(folder: Path) -> set[int]:
    """Label values a model can output, from its ``dataset.json`` (readable before the weights load)."""
    from rootlets_task.core.files import read_json

    labels = (read_json(folder / "dataset.json", limit=16 << 20) or {}).get("labels", {})
    values: set[int] = set()
    for value in labels.values() if isinstance(labels, dict) else ():
        values.update(v for v in (value if isinstance(value, list) else [value]) if isinstance(v, int))
    return values


def _check_fill_holes(post: PostOptions, model: ModelOptions) -> None:
    """``-fill-holes 1`` on a map that cannot be binary: SCT stops after inference (AssertionError); we refuse before
    the model loads, with SCT's message, when the model's labels say so."""
    if not post.fill_holes or post.binarizes:
        return
    from rootlets_task.models import install

    folder, _ = install.model_folder(model.release)
    if max(_model_values(folder), default=1) > 1:
        raise RootletsError(f"-fill-holes 1: {postprocess.FILL_HOLES_REFUSAL} (the rootlets map holds one value per "
                            "spinal level, and SCT refuses it too; add e.g. -thr 0.5 for a binary map)")


def _default_argv(sources: list[Path], output, model: ModelOptions, tag: str | None, qc) -> list[str]:
    """The arguments of the ``rootlets`` command equivalent to an API call (recorded when none are given)."""
    return ["-i", *map(str, sources), *(["-o", str(output)] if output is not None else []),
            *(["-qc", str(qc)] if qc is not None else []), *(["-release", tag] if tag else []),
            *(["-test-time-aug"] if model.test_time_aug else [])]


def segment_files(inputs: str | os.PathLike | Sequence[str | os.PathLike], output: str | os.PathLike | None = None,
                  model: ModelOptions = ModelOptions(), qc: str | os.PathLike | None = None,
                  argv: Sequence[str] | None = None, verbose: int = 1, post: PostOptions = PostOptions(),
                  qc_names: QcNames = QcNames()) -> list[Path]:
    """Segment rootlets in one or more NIfTI files, like ``sct_deepseg rootlets -i ...``; returns the outputs.

    Every input is loaded and checked, and every output planned, before the model is loaded: a bad call writes
    nothing. A missing or outdated release is installed first (SCT's first use). The model is loaded once for all
    inputs. ``post``: SCT's post-processing flags (:mod:`rootlets_task.inference.postprocess`), applied on the label map in the
    input's grid. Each output is uint8 on its input's grid, with SCT's ``.json`` sidecar beside it. ``qc``: a QC
    folder receiving one entry of SCT's report per image (:mod:`rootlets_task.qc.sct_report`, named by ``qc_names``) and
    our own page (``qc/rootlets_task/``, :func:`rootlets_task.qc.report.qc_subject`). ``argv``: the arguments after
    ``rootlets`` as typed, recorded in the sidecars (basenames, as SCT) and QC entries (default: equivalent ones).
    """
    sources = [Path(inputs)] if isinstance(inputs, str | os.PathLike) else [Path(p) for p in inputs]
    if not sources:
        raise RootletsError("no input image given; pass at least one -i IMG")
    model.check()
    post.check()
    qc_names.check()
    images = [nifti.load(source) for source in sources]  # all inputs checked (and decoded once) before any output
    resolve_device(model.device)  # an unknown or unavailable device is refused before anything is written
    targets = plan_outputs(sources, output)
    if qc is not None:
        writable_folder(qc, "QC folder", "-qc")
    if model.release != "sct":
        from rootlets_task.models import install

        install.ensure_release(model.release, progress=verbose > 0)
    _check_fill_holes(post, model)
    segmenter = load_segmenter(model, verbose, calibration=images[:2])  # int8: calibrated on the first inputs
    argv = list(argv) if argv is not None else _default_argv(sources, output, model, segmenter.record.get("tag"), qc)
    start = time.perf_counter()
    for source, img, target in zip(sources, images, targets, strict=True):
        _segment_one(segmenter, source, img, target, post, argv, qc, qc_names)
    total = time.perf_counter() - start
    log.info("total inference time %d minute(s) %.0f seconds for %d image(s) on %s%s; model loaded in %.1f s",
             total // 60, total % 60, len(sources), segmenter.device.type,
             f" ({segmenter.threads} threads)" if segmenter.threads else "", segmenter.load_seconds)
    return targets


def _segment_one(segmenter: Segmenter, source: Path, img: nib.Nifti1Image, target: Path, post: PostOptions,
                 argv: list[str], qc, qc_names: QcNames) -> None:
    """One input: segment, post-process, write label + sidecar, then the QC entries."""
    t0 = time.perf_counter()
    remove_stale_temporaries(target.parent)
    prediction = segmenter.predict(img)  # the labels and the network's confidence per level (same labels)
    data = postprocess.apply(prediction.labels, post, tuple(img.header.get_zooms()[:3]))
    confidence = prediction.confidence if np.array_equal(data, prediction.labels) else None
    if confidence is None:
        log.info("post-processing changed the labels: the network's confidence is not recorded for them")
    labels = nifti.label_image(data.astype(np.uint8, copy=False), img)
    with shared_paths(target.parent, keep=True):  # the sidecar names its input relative to itself
        sidecar = provenance.rootlets_sidecar(segmenter, source, provenance.sidecar_command(argv), confidence=confidence)
    for text in release_warnings(segmenter.record.get("tag"), img, source):  # e.g. the phantom release on a scan
        log.warning("%s", text)
        sidecar.setdefault("Warnings", []).append(text)
    write_segmentation(labels, target, sidecar)
    viewers.describe({"rootlets": target}, {"rootlets": data})
    log.info("view: %s", viewers.fsleyes_command(source, [("rootlets", target)]))
    if qc is not None:
        from rootlets_task.qc import sct_report as sct_qc
        from rootlets_task.qc.report import QcOptions, qc_subject

        entry = sct_qc.add_entry(qc, source, img, labels, sct_qc.command_line("rootlets", argv), qc_names)
        with shared_paths(qc, keep=True):  # the QC folder is shared too: files relative to it
            files = {"image file": portable(source), "rootlets file": portable(target), "SCT QC entry": portable(entry)}
        page = qc_subject(qc, img, labels, options=QcOptions(
            subject=qc_names.subject or nifti.stem(source), identity=str(source.absolute()), confidence=confidence,
            provenance={"release": segmenter.record.get("tag"), "command": sct_qc.command_line("rootlets", argv),
                        **files}))
        log.info("QC %s and %s", entry, page)
    log.info("%s -> %s (%.1f s)", source, target, time.perf_counter() - t0)
