"""External tools that provide the cord, disc and PMJ labels of the chain, run as subprocesses and checked.

Each tool runs with its real command line in a private temporary folder, so nothing of a failed run reaches the
output folder. Its output is checked before use: it exists, it lies in the image's space (resampled with nearest
neighbour, with a note, when the grid differs) and it holds the expected values (a binary non-empty cord,
single-voxel disc labels in SCT numbering, one PMJ voxel). Every failure is a :class:`RootletsError` naming the
tool, the command that was run, the last lines of its stderr and the flag that gives the file instead.

Tools and their outputs (SCT's command lines differ by version; the version is read from SCT as the bridge reads it,
:func:`rootlets_task.models.sct.find_sct`):

* cord: ``sct_deepseg spinalcord -i IMG -o OUT`` (SCT 7.x), ``sct_deepseg -i IMG -task seg_sc_contrast_agnostic -o
  OUT`` (6.4-6.5): the cord, written exactly at ``OUT``.
* discs: ``sct_deepseg spine -i IMG -o OUT`` (7.2+): ``<OUT stem>_totalspineseg_discs.nii.gz``; ``sct_deepseg
  totalspineseg -i IMG -o OUT -step1-only 1`` (7.0-7.1) and ``sct_deepseg -i IMG -task totalspineseg -o OUT`` (6.5):
  ``<OUT stem>_step1_levels.nii.gz``; discs in SCT numbering. SCT 6.4 has no disc task.
* discs: ``sct_label_vertebrae -i IMG -s CORD -c t2 -ofolder DIR`` (SCT's classic labelling, every version):
  ``DIR/<cord stem>_labeled_discs.nii.gz``, discs in SCT numbering on the cord's centreline.
* ``totalspineseg IMG OUTDIR --step1``: ``OUTDIR/step1_levels/<stem>.nii.gz``, discs in SCT numbering.
* ``spineps sample -i IMG -model_semantic t2w -model_instance instance ...``: ``*_seg-vert_msk.nii.gz``, a vertebra
  instance mask that :func:`spineps_to_sct_discs` turns into single-voxel SCT disc labels.
* ``sct_detect_pmj -i IMG -c t2 -ofolder DIR -o NAME``: one voxel of value 50, or no file when no PMJ is found.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from rootlets_task._version import __version__
from rootlets_task.core.errors import RootletsError
from rootlets_task.core.files import sha256_file
from rootlets_task.core.places import portable, portable_text
from rootlets_task.io import labels
from rootlets_task.io.nifti import stem
from rootlets_task.levels.spineps import spineps_to_sct_discs

log = logging.getLogger(__name__)

SCT_INSTALL = "install the Spinal Cord Toolbox (https://spinalcordtoolbox.com/stable/user_section/installation.html)"
DISC_TASK_VERSION = (6, 5)  # first SCT with a disc task in sct_deepseg (totalspineseg; `spine` from 7.2)
NEWEST_SCT = (7, 4)
STDERR_LINES = 3


@dataclass(frozen=True)
class Tool:
    """One way of getting a label file from an external program."""

    name: str  # as shown to the user, e.g. "sct_deepseg spinalcord"
    executable: str
    install: str
    provide: str  # the command-line flag that gives the file instead


TOOLS = {
    ("cord", "sct"): Tool("sct_deepseg spinalcord", "sct_deepseg", SCT_INSTALL, "-s CORD"),
    ("discs", "sct"): Tool("sct_deepseg spine", "sct_deepseg", SCT_INSTALL, "-discs DISCS"),
    ("discs", "label_vertebrae"): Tool("sct_label_vertebrae", "sct_label_vertebrae", SCT_INSTALL, "-discs DISCS"),
    ("discs", "totalspineseg"): Tool("totalspineseg", "totalspineseg", "pip install 'rootlets_task[totalspineseg]'; "
                                     "its weights come with `totalspineseg_init`", "-discs DISCS"),
    ("discs", "spineps"): Tool("spineps", "spineps", "pip install 'rootlets_task[spineps]'", "-discs DISCS"),
    ("pmj", "sct"): Tool("sct_detect_pmj", "sct_detect_pmj", SCT_INSTALL, "-pmj PMJ"),
}


@dataclass
class ToolOutput:
    """A checked label array on the image grid and how it was made."""

    data: np.ndarray
    tool: str
    command: list[str]
    notes: list[str] = field(default_factory=list)


def available(kind: str, source: str) -> bool:
    """Whether the program behind ``(kind, source)`` is on PATH (for SCT's disc task: in a version that has one)."""
    if shutil.which(TOOLS[kind, source].executable) is None:
        return False
    return not (kind, source) == ("discs", "sct") or sct_version() >= DISC_TASK_VERSION


def sct_version() -> tuple[int, int]:
    """(major, minor) of the SCT found as the bridge finds it; the newest known when it cannot be told."""
    from rootlets_task.models import sct

    try:
        found = sct.find_sct()
    except RootletsError:
        return NEWEST_SCT
    return found.version_tuple if found.version_tuple != (0, 0) else NEWEST_SCT


def _cord_command(image: Path, out: Path) -> list[str]:
    if sct_version() >= (7, 0):
        return ["sct_deepseg", "spinalcord", "-i", str(image), "-o", str(out)]
    return ["sct_deepseg", "-i", str(image), "-task", "seg_sc_contrast_agnostic", "-o", str(out)]


def _discs_command(image: Path, out: Path) -> tuple[list[str], str]:
    """SCT's disc command of this version and the file pattern of its disc labels."""
    version = sct_version()
    if version >= (7, 2):
        return ["sct_deepseg", "spine", "-i", str(image), "-o", str(out)], "*_totalspineseg_discs.nii.gz"
    if version >= (7, 0):
        return (["sct_deepseg", "totalspineseg", "-i", str(image), "-o", str(out), "-step1-only", "1"],
                "*_step1_levels.nii.gz")
    if version >= DISC_TASK_VERSION:
        return ["sct_deepseg", "-i", str(image), "-task", "totalspineseg", "-o", str(out)], "*_step1_levels.nii.gz"
    raise RootletsError(f"SCT {'.'.join(map(str, version))} has no disc task (sct_deepseg spine needs SCT >= 6.5); use "
                        "-discs-from label_vertebrae, or give the file yourself with -discs DISCS")


# ---------------------------------------------------------------------------------------------------------------
# Running the tools


def _tail(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-STDERR_LINES:]) or "(empty)"


def _quote(command: list[str]) -> str:
    return " ".join(command)


def require(kind: str, source: str) -> None:
    """Raise the "not installed" error of ``(kind, source)`` unless its program is on PATH (and, for SCT's disc task,
    this SCT version has one)."""
    _require(TOOLS[kind, source])
    if (kind, source) == ("discs", "sct"):
        _discs_command(Path("IMG"), Path("OUT"))  # raises for an SCT without a disc task


def _require(tool: Tool) -> None:
    if shutil.which(tool.executable) is None:
        raise RootletsError(f"{tool.name}: `{tool.executable}` was not found on PATH; {tool.install}, "
                            f"or give the file yourself with {tool.provide}")


def run_tool(tool: Tool, command: list[str], workdir: Path, fix: str | None = None) -> subprocess.CompletedProcess:
    """Run one tool in ``workdir`` as the chain's tools run (a RootletsError when it is missing or exits non-zero);
    ``fix``: what the error message proposes (default: give the file with the tool's flag)."""
    return _run(tool, command, workdir, fix)


def _run(tool: Tool, command: list[str], workdir: Path, fix: str | None = None) -> subprocess.CompletedProcess:
    """Run one tool in ``workdir``; raise a RootletsError when it is missing or exits non-zero."""
    _require(tool)
    log.info("running %s", _quote(command))
    try:
        done = subprocess.run(command, cwd=workdir, capture_output=True, text=True, errors="replace",
                              stdin=subprocess.DEVNULL)
    except OSError as exc:
        raise RootletsError(f"{tool.name}: `{_quote(command)}` could not be started ({exc.strerror}); "
                            f"to repair it, {tool.install}, or give the file yourself with {tool.provide}") from None
    if done.returncode != 0:
        raise RootletsError(f"{tool.name} failed (exit {done.returncode}): command `{_quote(command)}`; "
                            f"last lines of its stderr: {_tail(done.stderr or done.stdout)}; "
                            f"{fix or f'give the file yourself with {tool.provide}'}")
    return done


def _fail(tool: Tool, command: list[str], done: subprocess.CompletedProcess, what: str) -> RootletsError:
    return RootletsError(f"{tool.name}: {what}; command `{_quote(command)}`; last lines of its stderr: "
                         f"{_tail(done.stderr or done.stdout)}; give the file yourself with {tool.provide}")


def _find_one(folder: Path, pattern: str) -> Path | None:
    found = sorted(folder.rglob(pattern))
    return found[0] if len(found) == 1 else None


def _labels_from(tool: Tool, command: list[str], done: subprocess.CompletedProcess, path: Path | None, pattern: str,
                 kind: str, reference: nib.Nifti1Image) -> ToolOutput:
    if path is None or not path.is_file():
        raise _fail(tool, command, done, f"exited 0 but wrote no {pattern} file")
    try:
        data, notes = labels.load(path, kind, reference, outside="raise")
    except ValueError as exc:
        raise _fail(tool, command, done, f"unexpected output {path.name}: {exc}") from None
    return ToolOutput(data.astype(np.uint8), tool.name, command, notes)


def cord_from_sct(image: Path, reference: nib.Nifti1Image) -> ToolOutput:
    """Cord segmentation by SCT's contrast-agnostic model (``sct_deepseg spinalcord``, or the 6.x task)."""
    tool = TOOLS["cord", "sct"]
    with tempfile.TemporaryDirectory(prefix="rootlets_sct_") as tmp:
        out = Path(tmp) / f"{stem(image)}_seg.nii.gz"
        command = _cord_command(Path(image).absolute(), out)
        done = _run(tool, command, Path(tmp))
        return _labels_from(tool, command, done, out, out.name, "cord", reference)


def discs_from_sct(image: Path, reference: nib.Nifti1Image) -> ToolOutput:
    """Disc labels by SCT's TotalSpineSeg task (``sct_deepseg spine``, or its older names), SCT numbering."""
    tool = TOOLS["discs", "sct"]
    with tempfile.TemporaryDirectory(prefix="rootlets_sct_") as tmp:
        out = Path(tmp) / f"{stem(image)}.nii.gz"
        command, pattern = _discs_command(Path(image).absolute(), out)
        done = _run(tool, command, Path(tmp))
        return _labels_from(tool, command, done, _find_one(Path(tmp), pattern), pattern, "discs", reference)


def discs_from_label_vertebrae(image: Path, reference: nib.Nifti1Image, cord: Path, contrast: str = "t2") -> ToolOutput:
    """Disc labels by SCT's classic ``sct_label_vertebrae`` (needs the cord), ``*_labeled_discs``, SCT numbering."""
    tool = TOOLS["discs", "label_vertebrae"]
    with tempfile.TemporaryDirectory(prefix="rootlets_sct_") as tmp:
        command = [tool.executable, "-i", str(Path(image).absolute()), "-s", str(Path(cord).absolute()), "-c", contrast,
                   "-ofolder", tmp]
        done = _run(tool, command, Path(tmp))
        name = f"{stem(cord)}_labeled_discs.nii.gz"
        return _labels_from(tool, command, done, Path(tmp) / name, name, "discs", reference)


def discs_from_totalspineseg(image: Path, reference: nib.Nifti1Image) -> ToolOutput:
    """Disc labels from ``totalspineseg --step1`` (its ``step1_levels`` output, SCT numbering)."""
    tool = TOOLS["discs", "totalspineseg"]
    with tempfile.TemporaryDirectory(prefix="rootlets_tss_") as tmp:
        out_dir = Path(tmp) / "totalspineseg"
        command = [tool.executable, str(Path(image).absolute()), str(out_dir), "--step1"]
        done = _run(tool, command, Path(tmp))
        levels = out_dir / "step1_levels"
        named = levels / f"{stem(image)}.nii.gz"
        path = _find_one(levels, "*.nii.gz") if not named.is_file() and levels.is_dir() else named
        return _labels_from(tool, command, done, path, "step1_levels/*.nii.gz", "discs", reference)


def discs_from_spineps(image: Path, reference: nib.Nifti1Image, cpu: bool = True) -> ToolOutput:
    """Disc labels from SPINEPS' vertebra instance mask, converted to SCT numbering by :func:`spineps_to_sct_discs`.

    SPINEPS writes into a ``derivatives_seg`` folder beside its input and wants BIDS-like names, so the image is
    copied into the private folder as ``sub-rootlets_T2w.nii.gz`` first.
    """
    tool = TOOLS["discs", "spineps"]
    with tempfile.TemporaryDirectory(prefix="rootlets_spineps_") as tmp:
        _require(tool)
        copy = Path(tmp) / "sub-rootlets_T2w.nii.gz"
        nib.save(reference, copy)
        command = [tool.executable, "sample", "-i", str(copy), "-model_semantic", "t2w", "-model_instance", "instance",
                   "-ignore_inference_compatibility"] + (["-cpu"] if cpu else [])
        done = _run(tool, command, Path(tmp))
        pattern = "*_seg-vert_msk.nii.gz"
        path = _find_one(Path(tmp), pattern)
        if path is None:
            raise _fail(tool, command, done, f"exited 0 but wrote no {pattern} file")
        try:
            img, vert = labels.read(path, "SPINEPS vertebra mask")
            vert, notes = labels.on_grid(img, vert, reference, points=False)
            discs = spineps_to_sct_discs(vert, reference.affine)
        except (RootletsError, ValueError) as exc:
            raise _fail(tool, command, done, f"unexpected output {path.name}: {exc}") from None
        return ToolOutput(discs, tool.name, command, notes)


def pmj_from_sct(image: Path, reference: nib.Nifti1Image, contrast: str = "t2",
                 cord: Path | None = None) -> ToolOutput | None:
    """PMJ label by ``sct_detect_pmj``; None when it ran well but found no PMJ (it then writes nothing)."""
    tool = TOOLS["pmj", "sct"]
    with tempfile.TemporaryDirectory(prefix="rootlets_pmj_") as tmp:
        name = f"{stem(image)}_pmj.nii.gz"
        command = [tool.executable, "-i", str(Path(image).absolute()), "-c", contrast]
        command += ["-s", str(Path(cord).absolute())] if cord else []
        command += ["-ofolder", tmp, "-o", name]
        done = _run(tool, command, Path(tmp))
        if not (Path(tmp) / name).is_file():
            return None
        return _labels_from(tool, command, done, Path(tmp) / name, name, "pmj", reference)


def describe(kind: str, source: str) -> str:
    """Human name of a source, e.g. ``sct_deepseg spine`` for ("discs", "sct")."""
    return TOOLS[kind, source].name if (kind, source) in TOOLS else source


def label_sidecar(kind: str, source: str, why: str, image: str | os.PathLike | None, tool, file: Path | None,
                  notes: list[str], command: str | None = None) -> dict:
    """Sidecar of a cord / discs / PMJ label file the chain wrote: who made it (``tool``, a
    :class:`rootlets_task.levels.tools.ToolOutput`, with its command line) or which user file it is (``file``).
    ``command``: what ran, after ``rootlets`` (default ``-levels``; a batch says ``batch ...``). Paths as
    :func:`rootlets_task.core.places.portable` writes them."""
    content: dict[str, Any] = {"Source": source, "SourceReason": portable_text(why),
                               "InputFile": portable(image) if image else None,
               "Notes": notes,
               "GeneratedBy": [{"Name": f"rootlets_task: rootlets {portable_text(command or '-levels')} "
                                        f"({kind} from {describe(kind, source)})", "Version": __version__}]}
    if tool is not None:
        content["Tool"] = tool.tool
        content["Command"] = portable_text(" ".join(tool.command))
        content["GeneratedBy"].insert(0, {"Name": tool.tool, "Command": content["Command"]})
    if file is not None:
        content["SourceFile"] = portable(file)
        content["SourceSHA256"] = sha256_file(file)
    return content
