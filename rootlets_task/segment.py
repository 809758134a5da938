"""Segment rootlets like ``sct_deepseg rootlets``: images in, images out; files as a convenience.

* :func:`segment`: one image (a ``Nifti1Image`` or a path) -> the rootlets as a ``Nifti1Image`` on the input's
  grid, affine and header (uint8, value = spinal level, 2 = C2 ... 9 = T1);
* :func:`segment_files`: the job of ``rootlets -i IMG...``: every input and output checked before the model loads,
  one model load for all inputs, each output written together with its JSON sidecar (all or nothing);
* :func:`load_segmenter`: the installed model of a release, loaded once, for callers that segment many images.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib

from rootlets_task import cropping, nifti, provenance
from rootlets_task.errors import RootletsError
from rootlets_task.files import OutputSet, remove_stale_temporaries, writable_folder
from rootlets_task.inference import Segmenter, configure_threads, resolve_device
from rootlets_task.options import ModelOptions

log = logging.getLogger(__name__)

SUFFIX = "_rootlets"


def load_segmenter(model: ModelOptions = ModelOptions(), verbose: int = 1, calibration: Sequence | None = None,
                   int8_options=None) -> Segmenter:
    """The installed model of ``model.release``, loaded with this process's threads set (:func:`configure_threads`).

    ``calibration`` / ``int8_options``: with ``model.precision`` int8, the images (paths or NIfTI images) and the
    :class:`rootlets_task.int8.Int8Options` of the quantisation (default: phantoms, default options).
    """
    from rootlets_task import install

    model.check()
    folder, record = install.model_folder(model.release)
    device = resolve_device(model.device)
    threads = configure_threads(model.threads) if device.type == "cpu" else None
    return Segmenter(folder, device=device.type, test_time_aug=model.test_time_aug, verbose=verbose, record=record,
                     backend=model.backend, threads=threads, allow_code=model.allow_code, precision=model.precision,
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
    """The label file and its JSON sidecar, together or not at all."""
    out = Path(out)
    with OutputSet() as outputs:
        nib.save(labels, outputs.path(out))
        outputs.path(provenance.sidecar_path(out)).write_text(_json(sidecar))
    return out


def _json(content: dict) -> str:
    import json

    return json.dumps(content, indent=2) + "\n"


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
    seen: dict[Path, Path] = {}
    for source, target in zip(sources, targets, strict=True):
        key = target.absolute().resolve()
        if key in seen:
            raise RootletsError(f"output {target}: would be written for both {seen[key]} and {source}; "
                                "give each input a distinct name or segment them separately with -o")
        seen[key] = source
    inputs = {p.absolute().resolve() for p in sources}
    input_sidecars = {provenance.sidecar_path(p) for p in inputs}
    for target in targets:
        sidecar = provenance.sidecar_path(target)
        if target.absolute().resolve() in inputs:
            raise RootletsError(f"output {target} is the input file; choose another -o so the input is kept")
        if sidecar.absolute().resolve() in input_sidecars | inputs:
            raise RootletsError(f"output {target}: its JSON sidecar would overwrite an input's sidecar; choose another -o")
        if sidecar.is_dir():
            raise RootletsError(f"output {target}: its JSON sidecar {sidecar} is a folder; choose another -o")
        if sidecar.exists() and not provenance.is_sidecar(sidecar):
            raise RootletsError(f"output {target}: its JSON sidecar would replace {sidecar}, which is not a sidecar of "
                                "rootlets_task or SCT; move that file or choose another -o")
        writable_folder(target.parent)
    return [t.absolute() for t in targets]


def segment_files(inputs: str | os.PathLike | Sequence[str | os.PathLike], output: str | os.PathLike | None = None,
                  model: ModelOptions = ModelOptions(), qc: str | os.PathLike | None = None,
                  command: str | None = None, verbose: int = 1, crop_to_cord: bool = False,
                  cord: str | os.PathLike | None = None) -> list[Path]:
    """Segment rootlets in one or more NIfTI files, like ``sct_deepseg rootlets -i ...``; returns the outputs.

    Every input is loaded and checked, and every output planned, before the model is loaded: a bad call writes
    nothing. The model is loaded once for all inputs. Each output is uint8 on its input's grid, with a ``.json``
    sidecar beside it. ``qc``: a folder that receives a QC page per image (:func:`rootlets_task.qc.qc_subject`).
    ``command``: the command line recorded in each sidecar (default: an equivalent ``rootlets`` command).
    Levers (labels change a little; ``rootlets speedcheck`` measures how much): ``model.precision`` int8 calibrates
    on the first one or two inputs; ``crop_to_cord`` segments a box around the cord: ``cord`` (one input), else
    the cord sc-crop detects (:func:`rootlets_task.cropping.lever_box`), recorded in the sidecar.
    """
    sources = [Path(inputs)] if isinstance(inputs, str | os.PathLike) else [Path(p) for p in inputs]
    if not sources:
        raise RootletsError("no input image given; pass at least one -i IMG")
    model.check()
    images = [nifti.load(source) for source in sources]  # all inputs checked (and decoded once) before any output
    resolve_device(model.device)  # an unknown or unavailable device is refused before anything is written
    targets = plan_outputs(sources, output)
    if qc is not None:
        writable_folder(qc, "QC folder", "-qc")
    if cord is not None and (not crop_to_cord or len(images) > 1):
        raise RootletsError(f"cord {cord}: a cord mask belongs to one image and is used by -crop-to-cord; give one -i")
    # the crop boxes (cord file read, or sc-crop run) before the model loads: a failure costs nothing
    boxes = [cropping.lever_box(img, cord) if crop_to_cord else (None, None) for img in images]
    segmenter = load_segmenter(model, verbose, calibration=images[:2])
    tag = segmenter.record.get("tag", model.release)
    command = command or " ".join(["-i", *(s.name for s in sources), *(["-o", str(output)] if output is not None else []),
                                   *(["-release", tag] if tag else []), *(["-test-time-aug"] if model.test_time_aug else []),
                                   *(["-precision", "int8"] if segmenter.precision == "int8" else []),
                                   *(["-crop-to-cord"] if crop_to_cord else [])])
    start = time.perf_counter()
    for source, img, target, (box, crop) in zip(sources, images, targets, boxes, strict=True):
        t0 = time.perf_counter()
        remove_stale_temporaries(target.parent)
        found = segmenter.segment_image(img, box)
        for text in cropping.cut_note(found, box, cropping.CROP_MARGIN_MM) if box is not None else []:
            log.warning("%s: %s", source, text)
        labels = nifti.label_image(found, img)
        write_segmentation(labels, target, provenance.rootlets_sidecar(segmenter, source, command, crop))
        if qc is not None:
            from rootlets_task.qc import qc_subject

            page = qc_subject(qc, img, labels, subject=nifti.stem(source), identity=str(source.absolute()),
                              provenance={"release": tag, "command": f"rootlets {command}", "image file": str(source),
                                          "rootlets file": str(target)})
            log.info("QC %s", page)
        log.info("%s -> %s (%.1f s)", source, target, time.perf_counter() - t0)
    total = time.perf_counter() - start
    log.info("total inference time %d minute(s) %.0f seconds for %d image(s) on %s%s; model loaded in %.1f s",
             total // 60, total % 60, len(sources), segmenter.device.type,
             f" ({segmenter.threads} threads)" if segmenter.threads else "", segmenter.load_seconds)
    return targets
