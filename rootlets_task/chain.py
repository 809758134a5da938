"""From one image to spinal and vertebral levels in one call: rootlets, cord, discs and PMJ chained with the levels.

:func:`run_chain` takes the cord from the user's file or from SCT, segments the rootlets in a box around it (or
takes a rootlets file), takes the discs and the PMJ from files or from the external tools (:mod:`rootlets_task.tools`),
and derives the levels (:func:`rootlets_task.levels.levels_from_files`).
Sources, in the order ``auto`` tries them:

* cord: a file (``-s``), else ``sct_deepseg spinalcord``;
* discs: a file (``-discs``), else ``sct_deepseg spine``, ``totalspineseg``, ``spineps``, else none (spinal
  levels only);
* PMJ: a file (``-pmj``), else ``sct_detect_pmj``, else none (distances from the C2/C3 disc or the cord's top).

Every output is named from the image stem in the output folder. ``<stem>_chain.json`` records, per step, the
sha256 of its inputs and its settings and the sha256 of what it wrote: a step whose record matches is skipped on
the next run. An output file the chain did not write (or that was changed since) is never replaced without
``overwrite``. Each step writes its files atomically, after its checks, so a failed step leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from rootlets_task import nifti, tools
from rootlets_task._version import __version__
from rootlets_task.errors import RootletsError
from rootlets_task.install import sha256_file as sha256

SOURCES = {
    "cord": ("file", "sct"),
    "discs": ("file", "sct", "totalspineseg", "spineps", "none"),
    "pmj": ("file", "sct", "none"),
}
FLAGS = {"cord": ("-s", "-cord-from"), "discs": ("-discs", "-discs-from"), "pmj": ("-pmj", "-pmj-from"),
         "rootlets": ("-r", None)}
LABEL_SUFFIX = {"cord": "_label-SC_seg", "discs": "_label-discs_dlabel", "pmj": "_label-PMJ_dlabel"}
RECORD_SUFFIX = "_chain.json"


@dataclass
class ChainResult:
    """What one :func:`run_chain` call used and wrote."""

    outputs: dict[str, Path]  # rootlets, cord, discs, pmj, spinal, vertebral, csv, json, shift, record (those written)
    sources: dict[str, str]  # cord / discs / pmj -> file | sct | totalspineseg | spineps | none
    steps: dict[str, str]  # step -> "computed" | "up to date"
    levels: pd.DataFrame
    shift: pd.DataFrame | None
    reference: str
    notes: list[str] = field(default_factory=list)
    segmenter: object | None = None  # the model loaded by this call (pass it to the next call to reuse it)
    qc_page: Path | None = None  # the subject's QC page, when a QC folder was given

    def table(self) -> str:
        """Short text table: level, spinal and vertebral extent (mm from the reference) and their shift."""
        return levels_table(self.levels, self.shift, self.reference)


def levels_table(levels: pd.DataFrame, shift: pd.DataFrame | None, reference: str) -> str:
    """Text table of one subject's levels; shift = vertebral minus spinal midpoint (same name / paper pairing)."""
    def extent(kind: str, name: str) -> str:
        row = levels[(levels["kind"] == kind) & (levels["level"] == name)]
        if row.empty:
            return ""
        r = row.iloc[0]
        return "missing" if r["status"] != "ok" else f"{r['start_mm']:6.1f} - {r['end_mm']:6.1f}"

    def shift_of(pairing: str, name: str) -> str:
        if shift is None:
            return ""
        row = shift[(shift["pairing"] == pairing) & (shift["vertebral_level"] == name)]
        return "" if row.empty else f"{row.iloc[0]['shift_mm']:+6.1f}"

    def order(name: str) -> tuple[int, int]:
        return ("CTLS".index(name[0]), int(name[1:]))

    names = sorted(set(levels["level"]), key=order)
    head = ("level", "spinal (mm)", "vertebral (mm)", "shift VLn-SLn", "shift VLn-SL(n+1)")
    rows = [(n, extent("spinal", n), extent("vertebral", n), shift_of("unshifted", n), shift_of("shifted", n)) for n in names]
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(str(c).rjust(w) for c, w in zip(r, widths, strict=True)) for r in [head, *rows]]
    return "\n".join([f"distances in mm along the cord centerline from the {reference} (start = rostral end)", *lines])


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
    raise RootletsError(f"no spinal cord segmentation: give one with {flag} CORD, or install the Spinal Cord Toolbox so "
                        f"`sct_deepseg spinalcord` can make it ({tools.SCT_INSTALL})")


def _tool_names(kind: str) -> list[str]:
    return [tools.describe(kind, s) for s in SOURCES[kind] if s not in ("file", "none")]


# ------------------------------------------------------------------------------------------------ the record


class _Record:
    """``<stem>_chain.json``: per step, the key (inputs + settings) and the sha256 of every file it wrote."""

    def __init__(self, path: Path, overwrite: bool):
        self.path = path
        self.overwrite = overwrite
        self.data = {"steps": {}}
        if path.is_file():
            try:
                self.data = json.loads(path.read_text())
                self.data.setdefault("steps", {})
            except (OSError, ValueError):
                self.data = {"steps": {}}

    def up_to_date(self, step: str, key: dict) -> bool:
        done = self.data["steps"].get(step)
        if self.overwrite or not done or done.get("key") != key:
            return False
        return all((self.path.parent / name).is_file() and sha256(self.path.parent / name) == digest
                   for name, digest in done.get("outputs", {}).items())

    def owned(self, step: str, path: Path) -> bool:
        """Whether ``path`` is, byte for byte, what this chain's ``step`` wrote last time."""
        digest = self.data["steps"].get(step, {}).get("outputs", {}).get(path.name)
        return digest is not None and path.is_file() and sha256(path) == digest

    def check_writable(self, step: str, outputs: list[Path]) -> None:
        for out in outputs:
            if out.exists() and not self.overwrite and not self.owned(step, out):
                raise RootletsError(f"output {out} exists and was not written by this chain (or was changed since); "
                                    "use -overwrite to replace it, or choose another -ofolder")

    def done(self, step: str, key: dict, outputs: list[Path], extra: dict | None = None, keep: tuple[Path, ...] = ()) -> None:
        """Record a finished step; its stale files from an earlier run (e.g. discs now none) are removed, except ``keep``."""
        previous = self.data["steps"].get(step, {}).get("outputs", {})
        written = {p.name for p in outputs} | {p.name for p in keep}
        for name in set(previous) - written:
            old = self.path.parent / name
            if old.is_file() and sha256(old) == previous[name]:
                old.unlink()
        self.data["steps"][step] = {"key": key, "outputs": {p.name: sha256(p) for p in outputs},
                                    "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                                    **(extra or {})}
        self.save()

    def save(self) -> None:
        self.data["version"] = __version__
        with nifti.atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps(self.data, indent=2) + "\n")


# ------------------------------------------------------------------------------------------------ the chain


def _say(verbose: int, text: str) -> None:
    if verbose:
        print(f"rootlets: {text}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _notes_from_warnings(notes: list[str], verbose: int):
    """Warnings raised inside become notes of the run (terminal, record, QC page) instead of Python warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        notes.append(str(w.message))
        _say(verbose, f"warning: {w.message}")


def _write_json(path: Path, content: dict) -> None:
    with nifti.atomic_path(path) as tmp:
        tmp.write_text(json.dumps(content, indent=2) + "\n")


def _label_sidecar(kind: str, source: str, why: str, image: Path, made: tools.ToolOutput | None,
                   file: Path | None, notes: list[str]) -> dict:
    entry = {"Name": f"rootlets_task: rootlets -levels ({kind} from {tools.describe(kind, source)})",
             "Version": __version__}
    content = {"Source": source, "SourceReason": why, "InputFile": str(image.absolute()), "Notes": notes,
               "GeneratedBy": [entry]}
    if made is not None:
        content["Tool"] = made.tool
        content["Command"] = " ".join(made.command)
        content["GeneratedBy"].insert(0, {"Name": made.tool, "Command": " ".join(made.command)})
    if file is not None:
        content["SourceFile"] = str(file.absolute())
        content["SourceSHA256"] = sha256(file)
    return content


def run_chain(image: str | os.PathLike, out_dir: str | os.PathLike | None = None, cord: str | os.PathLike | None = None,
              discs: str | os.PathLike | None = None, pmj: str | os.PathLike | None = None, cord_from: str = "auto",
              discs_from: str = "auto", pmj_from: str = "auto", release: str | None = None, method: str = "gapfree",
              overwrite: bool = False, segmenter=None, device: str = "auto", test_time_aug: bool = False,
              contrast: str = "t2", rootlets: str | os.PathLike | None = None, crop_to_cord: bool = False,
              qc_dir: str | os.PathLike | None = None, verbose: int = 1) -> ChainResult:
    """Image -> cord -> rootlets -> discs, PMJ -> spinal and vertebral levels, sources chosen as documented above.

    ``segmenter``: an already loaded :class:`rootlets_task.inference.Segmenter` to reuse (then ``release``,
    ``device`` and ``test_time_aug`` are its own); otherwise a model is loaded only if the rootlets must be segmented.
    ``rootlets``: an existing rootlets file (e.g. from ``sct_deepseg rootlets`` or corrected by hand) used instead
    of segmenting. ``crop_to_cord``: segment only a sub-image around the cord (about 3x faster on CPU; labels can
    differ from the uncropped ones, see :meth:`~rootlets_task.inference.Segmenter.segment_image`).
    Writes into ``out_dir`` (default: beside the image), skips the steps whose record in ``<stem>_chain.json`` is up
    to date unless ``overwrite``, and returns a :class:`ChainResult`. ``qc_dir``: a QC folder that receives the
    subject's page (:func:`rootlets_task.qc.qc_subject`).
    """
    from rootlets_task import levels as levels_mod

    image = Path(image)
    reference = nifti.load(image, "image")
    out_dir = Path(out_dir) if out_dir is not None else image.parent
    prefix = nifti.stem(image)
    files = {k: Path(v) if v is not None else None
             for k, v in (("cord", cord), ("discs", discs), ("pmj", pmj), ("rootlets", rootlets))}
    if method not in levels_mod.METHODS:
        raise RootletsError(f"method {method!r} is unknown; use one of {', '.join(levels_mod.METHODS)}")
    if contrast not in ("t1", "t2"):
        raise RootletsError(f"contrast {contrast!r}: sct_detect_pmj knows t1 and t2 only")
    resolved = {kind: resolve_source(kind, choice, files[kind])
                for kind, choice in (("cord", cord_from), ("discs", discs_from), ("pmj", pmj_from))}
    for kind, (source, why) in resolved.items():
        _say(verbose, f"{kind}: {tools.describe(kind, source)} ({why})")

    paths = {"rootlets": out_dir / f"{prefix}_rootlets.nii.gz", "record": out_dir / f"{prefix}{RECORD_SUFFIX}"}
    paths.update({kind: out_dir / f"{prefix}{suffix}.nii.gz" for kind, suffix in LABEL_SUFFIX.items()})
    paths.update({k: out_dir / f"{prefix}{suffix}" for k, suffix in levels_mod.OUTPUTS.items()})
    _check_paths(image, files, paths, out_dir)
    if qc_dir is not None:
        nifti.writable_folder(qc_dir, "QC folder", "-qc")
    record = _Record(paths["record"], overwrite)
    steps: dict[str, str] = {}
    notes: list[str] = []
    image_hash = sha256(image)
    base = {"version": __version__, "image": image_hash}

    # the model is looked up first, so that a missing release fails before any work; it is loaded only if needed
    folder = folder_record = model = None
    if files["rootlets"] is None and segmenter is None:
        from rootlets_task import install

        folder, folder_record = install.model_folder(release)
        model = {"tag": folder_record.get("tag"), "sha256": folder_record.get("sha256") or str(folder),
                 "test_time_aug": test_time_aug}
    elif files["rootlets"] is None:
        model = {"tag": segmenter.record.get("tag"), "sha256": segmenter.record.get("sha256") or str(segmenter.model_folder),
                 "test_time_aug": segmenter.test_time_aug}

    # 1. cord (first: with crop_to_cord the segmentation is cropped around it)
    used: dict[str, Path | None] = {}
    sources: dict[str, str] = {}
    used["cord"], sources["cord"] = _label_step("cord", *resolved["cord"], image, reference, files["cord"], paths["cord"],
                                                record, steps, base, None, contrast, device, verbose, notes)

    # 2. rootlets
    if files["rootlets"] is not None:
        _say(verbose, f"rootlets: -r {files['rootlets']} (no segmentation)")
        rootlets_file, _ = _label_step("rootlets", "file", f"-r {files['rootlets']}", image, reference, files["rootlets"],
                                       paths["rootlets"], record, steps, base, None, contrast, device, verbose, [])
    else:
        rootlets_file = paths["rootlets"]

        def segment() -> None:
            nonlocal segmenter
            if segmenter is None:
                from rootlets_task.inference import Segmenter

                segmenter = Segmenter(folder, device=device, test_time_aug=test_time_aug, verbose=verbose,
                                      record=folder_record)
            with _notes_from_warnings(notes, verbose):
                segmenter.segment_file(image, paths["rootlets"], command=f"-i {image.name} -levels -ofolder {out_dir}"
                                       + (" -crop-to-cord" if crop_to_cord else ""),
                                       cord=used["cord"] if crop_to_cord else None)

        key = {**base, "model": model, "crop_to_cord": sha256(used["cord"]) if crop_to_cord else None}
        _step(record, steps, "rootlets", key, [paths["rootlets"], paths["rootlets"].with_name(f"{prefix}_rootlets.json")],
              segment, verbose)

    # 3-4. discs, PMJ
    for kind in ("discs", "pmj"):
        used[kind], sources[kind] = _label_step(kind, *resolved[kind], image, reference, files[kind], paths[kind], record,
                                                steps, base, used["cord"], contrast, device, verbose, notes)

    # 5. levels
    level_keys = ("spinal", "vertebral", "csv", "json", "shift")
    key = {"version": __version__, "method": method, "image": image_hash,
           **{k: sha256(p) if p is not None else None for k, p in {"rootlets": rootlets_file, **used}.items()}}
    expected = [paths[k] for k in level_keys if used["discs"] is not None or k not in ("vertebral", "shift")]

    def levels_step() -> None:
        with _notes_from_warnings(notes, verbose):
            levels_mod.levels_from_files(rootlets_file, used["cord"], used["discs"], used["pmj"], image=image,
                                         out_dir=out_dir, method=method, prefix=prefix)

    _step(record, steps, "levels", key, expected, levels_step, verbose)
    document = json.loads(paths["json"].read_text())
    levels_df = pd.read_csv(paths["csv"])
    shift_df = pd.read_csv(paths["shift"]) if used["discs"] is not None else None
    record.data["sources"] = {kind: {"source": sources[kind], "tool": tools.describe(kind, sources[kind]),
                                     "reason": resolved[kind][1], "file": str(used[kind]) if used[kind] else None}
                              for kind in ("cord", "discs", "pmj")}
    record.data["image"] = str(image.absolute())
    record.save()
    outputs = {"rootlets": rootlets_file, **{k: v for k, v in used.items() if v is not None},
               **{k: paths[k] for k in level_keys if paths[k] in expected}, "record": paths["record"]}
    notes += [n for n in document.get("warnings", []) if n not in notes]
    page = None
    if qc_dir is not None:
        from rootlets_task import qc

        page = qc.qc_subject(qc_dir, image, rootlets_file, cord=used["cord"], discs=used["discs"], levels=levels_df,
                             shift=shift_df, subject=prefix, warnings=notes,
                             provenance={"release": (model or {}).get("tag"), "method": method,
                                         **{f"{kind} source": tools.describe(kind, sources[kind]) for kind in sources}})
        _say(verbose, f"QC: {page}")
    return ChainResult(outputs=outputs, sources=sources, steps=steps, levels=levels_df, shift=shift_df,
                       reference=document.get("reference", ""), notes=notes, segmenter=segmenter, qc_page=page)


def _check_paths(image: Path, files: dict[str, Path | None], paths: dict[str, Path], out_dir: Path) -> None:
    """Refuse outputs that would overwrite an input; create the output folder."""
    inputs = {image.absolute().resolve(): "the image"}
    for kind, file in files.items():
        if file is not None:
            if not file.is_file():
                raise RootletsError(f"{kind} {file}: file not found; check the path given with {FLAGS[kind][0]}")
            inputs[file.absolute().resolve()] = f"the {kind} file"
    for name, out in paths.items():
        owner = inputs.get(out.absolute().resolve())
        if owner is not None and not (name in files and files[name] is not None
                                      and files[name].absolute().resolve() == out.absolute().resolve()):
            raise RootletsError(f"output {out} would overwrite {owner}; choose another -ofolder so the input is kept")
    nifti.writable_folder(out_dir, flag="-ofolder")


def _step(record: _Record, steps: dict[str, str], name: str, key: dict, outputs: list[Path], produce: Callable[[], None],
          verbose: int, extra: dict | None = None) -> bool:
    """Run ``produce`` unless the record says its outputs are up to date; returns whether it ran."""
    if record.up_to_date(name, key):
        steps[name] = "up to date"
        _say(verbose, f"{name}: up to date, skipped ({', '.join(p.name for p in outputs) or 'nothing to write'})")
        return False
    record.check_writable(name, outputs)
    produce()
    record.done(name, key, outputs, extra)
    steps[name] = "computed"
    return True


def _label_step(kind: str, source: str, why: str, image: Path, reference: nib.Nifti1Image, file: Path | None, target: Path,
                record: _Record, steps: dict[str, str], base: dict, cord: Path | None, contrast: str, device: str,
                verbose: int, notes: list[str]) -> tuple[Path | None, str]:
    """One of cord / discs / PMJ: (the file the levels use, the source actually used)."""
    if source == "none":
        record.done(kind, {"source": "none"}, [])
        steps[kind] = "none"
        return None, "none"
    sidecar = target.with_name(f"{nifti.stem(target)}.json")
    in_place = False
    if source == "file":
        key = {"version": __version__, "source": "file", "file": sha256(file)}
        in_place = file.absolute().resolve() == target.absolute().resolve()
        outputs = [] if in_place else [target, sidecar]
    else:
        key = {**base, "source": source, "contrast": contrast if kind == "pmj" else None,
               "cord": sha256(cord) if kind == "pmj" and cord is not None else None}
        outputs = [target, sidecar]
    previous = record.data["steps"].get(kind, {})
    if record.up_to_date(kind, key):
        steps[kind] = "up to date"
        found = previous.get("found", True)
        _say(verbose, f"{kind}: up to date, skipped" + ("" if found else f" ({tools.describe(kind, source)} found none)"))
        return ((file if outputs == [] else target) if found else None), (source if found else "none")

    record.check_writable(kind, outputs)
    made = None
    if source == "file":
        try:
            data, step_notes = tools.checked_labels(file, kind, reference)
        except ValueError as exc:
            raise RootletsError(f"{kind} {file}: {exc}; give a valid file with {FLAGS[kind][0]}") from None
        if in_place and step_notes:
            raise RootletsError(f"{kind} {file}: on another grid than the image and inside -ofolder under the chain's "
                                f"own name; move it elsewhere so the chain can write the resampled copy")
    else:
        made = _run_tool(kind, source, image, reference, cord, contrast, device, verbose)
        if made is None:  # sct_detect_pmj ran well and found no PMJ
            _say(verbose, f"pmj: {tools.describe(kind, source)} found no PMJ; distances are measured from the C2/C3 disc "
                          "or the cord's rostral end")
            notes.append("sct_detect_pmj found no PMJ")
            record.done(kind, key, [], {"found": False})
            steps[kind] = "computed"
            return None, "none"
        data, step_notes = made.data, made.notes
    for note in step_notes:
        _say(verbose, f"{kind}: {note}")
        notes.append(f"{kind}: {note}")
    if outputs:
        content = _label_sidecar(kind, source, why, image, made, file, step_notes)
        with nifti.atomic_path(sidecar) as tmp_json:  # the sidecar is moved in only once the label file is saved
            tmp_json.write_text(json.dumps(content, indent=2) + "\n")
            nifti.save_like(np.asarray(data), reference, target)
    # a file given in place (under the chain's own name) is the user's input from now on: never removed as stale
    record.done(kind, key, outputs, {"found": True}, keep=(target, sidecar) if source == "file" and in_place else ())
    steps[kind] = "computed"
    return (target if outputs else file), source


def _run_tool(kind: str, source: str, image: Path, reference: nib.Nifti1Image, cord: Path | None, contrast: str,
              device: str, verbose: int) -> tools.ToolOutput | None:
    if kind == "cord":
        return tools.cord_from_sct(image, reference, verbose)
    if kind == "pmj":
        return tools.pmj_from_sct(image, reference, contrast, cord, verbose)
    if source == "sct":
        return tools.discs_from_sct(image, reference, verbose)
    if source == "totalspineseg":
        return tools.discs_from_totalspineseg(image, reference, verbose)
    if device == "auto":  # only then is torch needed to know
        from rootlets_task.inference import resolve_device

        device = resolve_device(device).type
    return tools.discs_from_spineps(image, reference, cpu=device == "cpu", verbose=verbose)
