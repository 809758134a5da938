"""External tools that provide the cord, disc and PMJ labels of the chain, run as subprocesses and checked.

Each tool runs with its real command line in a private temporary folder, so nothing of a failed run reaches the
output folder. Its output is checked before use: it exists, it lies in the image's space (resampled with nearest
neighbour, with a note, when the grid differs) and it holds the expected values (a binary non-empty cord,
single-voxel disc labels in SCT numbering, one PMJ voxel). Every failure is a :class:`RootletsError` naming the
tool, the command that was run, the last lines of its stderr and the flag that gives the file instead.

Tools and their outputs:

* ``sct_deepseg spinalcord -i IMG -o OUT``: the cord, written exactly at ``OUT``.
* ``sct_deepseg spine -i IMG -o OUT``: ``<OUT stem>_totalspineseg_discs.nii.gz``, discs in SCT numbering.
* ``totalspineseg IMG OUTDIR --step1``: ``OUTDIR/step1_levels/<stem>.nii.gz``, discs in SCT numbering.
* ``spineps sample -i IMG -model_semantic t2w -model_instance instance ...``: ``*_seg-vert_msk.nii.gz``, a vertebra
  instance mask that :func:`spineps_to_sct_discs` turns into single-voxel SCT disc labels.
* ``sct_detect_pmj -i IMG -c t2 -ofolder DIR -o NAME``: one voxel of value 50, or no file when no PMJ is found.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from rootlets_task.errors import RootletsError
from rootlets_task.nifti import load_labels, stem

SCT_INSTALL = "install the Spinal Cord Toolbox (https://spinalcordtoolbox.com/stable/user_section/installation.html)"
DISC_VALUES = range(1, 26)  # SCT disc numbering: 1 = top of C1, 3 = C2/C3 ... 25 = L5/S1
PMJ_VALUE = 50
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
    """Whether the program behind ``(kind, source)`` is on PATH."""
    return shutil.which(TOOLS[kind, source].executable) is not None


# ---------------------------------------------------------------------------------------------------------------
# Checks shared by tool outputs and user files: each returns a problem sentence, or None when the data is fine.


def cord_problem(data: np.ndarray) -> str | None:
    values = set(np.unique(data).tolist())
    if not values <= {0, 1}:
        return f"values {sorted(values)[:6]} are not a binary mask (expected 0 and 1)"
    if 1 not in values:
        return "the cord mask is empty"
    return None


def discs_problem(data: np.ndarray) -> str | None:
    values, counts = np.unique(data[data > 0], return_counts=True)
    if values.size == 0:
        return "holds no disc label"
    bad = [int(v) for v in values if int(v) not in DISC_VALUES]
    if bad:
        return f"values {bad} are not SCT disc labels (1 = top of C1, 3 = C2/C3 ... 25 = L5/S1)"
    multi = [int(v) for v, c in zip(values, counts, strict=True) if c > 1]
    if multi:
        return f"disc labels {multi} span several voxels; each disc must be a single voxel"
    return None


def pmj_problem(data: np.ndarray) -> str | None:
    n = int(np.count_nonzero(data))
    return None if n == 1 else f"holds {n} labelled voxels; the PMJ must be a single voxel"


def rootlets_problem(data: np.ndarray) -> str | None:
    if not data.any():
        return "holds no rootlets (all voxels are 0)"
    if data.max() > 255:
        return f"value {int(data.max())} is not a spinal level (2 = C2 ... 9 = T1)"
    return None


PROBLEMS: dict[str, Callable[[np.ndarray], str | None]] = {"cord": cord_problem, "discs": discs_problem, "pmj": pmj_problem,
                                                          "rootlets": rootlets_problem}


def on_image_grid(img: nib.Nifti1Image, data: np.ndarray, reference: nib.Nifti1Image,
                  points: bool) -> tuple[np.ndarray, str | None]:
    """Bring a label array onto the reference grid; returns it and a note when resampling was needed.

    Same shape and affine (to 1e-3 mm): unchanged. Same space on another grid: nearest neighbour, where point
    labels (discs, PMJ) move voxel by voxel so that none is lost or duplicated. Raises ``ValueError`` when the
    fields of view do not overlap (another space) or a point label falls outside the image.
    """
    shape = reference.shape[:3]
    if data.shape == shape and np.allclose(img.affine, reference.affine, atol=1e-3):
        return data, None
    if not _overlap(img, reference):
        raise ValueError("its field of view does not overlap the image (another space, not the image's)")
    to_ref = np.linalg.inv(reference.affine) @ img.affine
    if points:
        out = np.zeros(shape, data.dtype)
        for ijk in np.argwhere(data > 0):
            target = np.round(to_ref[:3, :3] @ ijk + to_ref[:3, 3]).astype(int)
            if np.any(target < 0) or np.any(target >= shape):
                raise ValueError(f"label {data[tuple(ijk)]} lies outside the image")
            if out[tuple(target)]:
                raise ValueError(f"labels {out[tuple(target)]} and {data[tuple(ijk)]} fall on the same image voxel")
            out[tuple(target)] = data[tuple(ijk)]
    else:
        from_ref = np.linalg.inv(to_ref)
        out = ndimage.affine_transform(data, from_ref[:3, :3], from_ref[:3, 3], output_shape=shape, order=0,
                                       mode="constant", cval=0)
    return out, "on another grid than the image: resampled onto the image grid (nearest neighbour)"


def _overlap(img: nib.Nifti1Image, reference: nib.Nifti1Image) -> bool:
    def box(i: nib.Nifti1Image) -> tuple[np.ndarray, np.ndarray]:
        corners = np.array(np.meshgrid(*[[-0.5, n - 0.5] for n in i.shape[:3]], indexing="ij")).reshape(3, -1).T
        world = corners @ i.affine[:3, :3].T + i.affine[:3, 3]
        return world.min(0), world.max(0)

    (lo1, hi1), (lo2, hi2) = box(img), box(reference)
    return bool(np.all(np.minimum(hi1, hi2) > np.maximum(lo1, lo2)))


def checked_labels(path: Path, kind: str, reference: nib.Nifti1Image) -> tuple[np.ndarray, list[str]]:
    """Load a label file of ``kind`` (cord|discs|pmj|rootlets), put it on the image grid and check its values.

    Raises ``ValueError`` with the problem (the caller adds who made the file and what to do).
    """
    try:
        img, data = load_labels(path, kind)
    except RootletsError as exc:
        raise ValueError(str(exc)) from None
    data, note = on_image_grid(img, data, reference, points=kind in ("discs", "pmj"))
    problem = PROBLEMS[kind](data)
    if problem:
        raise ValueError(problem)
    return data, [note] if note else []


# ---------------------------------------------------------------------------------------------------------------
# Running the tools


def _tail(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-STDERR_LINES:]) or "(empty)"


def _quote(command: list[str]) -> str:
    return " ".join(command)


def require(kind: str, source: str) -> None:
    """Raise the "not installed" error of ``(kind, source)`` unless its program is on PATH."""
    _require(TOOLS[kind, source])


def _require(tool: Tool) -> None:
    if shutil.which(tool.executable) is None:
        raise RootletsError(f"{tool.name}: `{tool.executable}` was not found on PATH; {tool.install}, "
                            f"or give the file yourself with {tool.provide}")


def _run(tool: Tool, command: list[str], workdir: Path, verbose: int) -> subprocess.CompletedProcess:
    """Run one tool in ``workdir``; raise a RootletsError when it is missing or exits non-zero."""
    _require(tool)
    if verbose:
        print(f"rootlets: running {_quote(command)}", file=sys.stderr, flush=True)
    try:
        done = subprocess.run(command, cwd=workdir, capture_output=True, text=True, errors="replace",
                              stdin=subprocess.DEVNULL)
    except OSError as exc:
        raise RootletsError(f"{tool.name}: `{_quote(command)}` could not be started ({exc.strerror}); "
                            f"check the installation ({tool.install}) or give the file with {tool.provide}") from None
    if done.returncode != 0:
        raise RootletsError(f"{tool.name} failed (exit {done.returncode}): command `{_quote(command)}`; "
                            f"last lines of its stderr: {_tail(done.stderr or done.stdout)}; "
                            f"give the file yourself with {tool.provide}")
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
        data, notes = checked_labels(path, kind, reference)
    except ValueError as exc:
        raise _fail(tool, command, done, f"unexpected output {path.name}: {exc}") from None
    return ToolOutput(data.astype(np.uint8), tool.name, command, notes)


def cord_from_sct(image: Path, reference: nib.Nifti1Image, verbose: int = 1) -> ToolOutput:
    """Cord segmentation by ``sct_deepseg spinalcord`` (contrast-agnostic model)."""
    tool = TOOLS["cord", "sct"]
    with tempfile.TemporaryDirectory(prefix="rootlets_sct_") as tmp:
        out = Path(tmp) / f"{stem(image)}_seg.nii.gz"
        command = [tool.executable, "spinalcord", "-i", str(Path(image).absolute()), "-o", str(out)]
        done = _run(tool, command, Path(tmp), verbose)
        return _labels_from(tool, command, done, out, out.name, "cord", reference)


def discs_from_sct(image: Path, reference: nib.Nifti1Image, verbose: int = 1) -> ToolOutput:
    """Disc labels by ``sct_deepseg spine`` (TotalSpineSeg step 1 inside SCT), SCT numbering."""
    tool = TOOLS["discs", "sct"]
    with tempfile.TemporaryDirectory(prefix="rootlets_sct_") as tmp:
        out = Path(tmp) / f"{stem(image)}.nii.gz"
        command = [tool.executable, "spine", "-i", str(Path(image).absolute()), "-o", str(out)]
        done = _run(tool, command, Path(tmp), verbose)
        pattern = "*_totalspineseg_discs.nii.gz"
        return _labels_from(tool, command, done, _find_one(Path(tmp), pattern), pattern, "discs", reference)


def discs_from_totalspineseg(image: Path, reference: nib.Nifti1Image, verbose: int = 1) -> ToolOutput:
    """Disc labels from ``totalspineseg --step1`` (its ``step1_levels`` output, SCT numbering)."""
    tool = TOOLS["discs", "totalspineseg"]
    with tempfile.TemporaryDirectory(prefix="rootlets_tss_") as tmp:
        out_dir = Path(tmp) / "totalspineseg"
        command = [tool.executable, str(Path(image).absolute()), str(out_dir), "--step1"]
        done = _run(tool, command, Path(tmp), verbose)
        levels = out_dir / "step1_levels"
        path = levels / f"{stem(image)}.nii.gz"
        if not path.is_file() and levels.is_dir():
            path = _find_one(levels, "*.nii.gz")
        return _labels_from(tool, command, done, path, "step1_levels/*.nii.gz", "discs", reference)


def discs_from_spineps(image: Path, reference: nib.Nifti1Image, cpu: bool = True, verbose: int = 1) -> ToolOutput:
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
        done = _run(tool, command, Path(tmp), verbose)
        pattern = "*_seg-vert_msk.nii.gz"
        path = _find_one(Path(tmp), pattern)
        if path is None:
            raise _fail(tool, command, done, f"exited 0 but wrote no {pattern} file")
        try:
            img, vert = load_labels(path, "SPINEPS vertebra mask")
            vert, note = on_image_grid(img, vert, reference, points=False)
            discs = spineps_to_sct_discs(vert, reference.affine)
        except (RootletsError, ValueError) as exc:
            raise _fail(tool, command, done, f"unexpected output {path.name}: {exc}") from None
        return ToolOutput(discs, tool.name, command, [note] if note else [])


def pmj_from_sct(image: Path, reference: nib.Nifti1Image, contrast: str = "t2", cord: Path | None = None,
                 verbose: int = 1) -> ToolOutput | None:
    """PMJ label by ``sct_detect_pmj``; None when it ran well but found no PMJ (it then writes nothing)."""
    tool = TOOLS["pmj", "sct"]
    with tempfile.TemporaryDirectory(prefix="rootlets_pmj_") as tmp:
        name = f"{stem(image)}_pmj.nii.gz"
        command = [tool.executable, "-i", str(Path(image).absolute()), "-c", contrast]
        command += ["-s", str(Path(cord).absolute())] if cord else []
        command += ["-ofolder", tmp, "-o", name]
        done = _run(tool, command, Path(tmp), verbose)
        if not (Path(tmp) / name).is_file():
            return None
        return _labels_from(tool, command, done, Path(tmp) / name, name, "pmj", reference)


# ---------------------------------------------------------------------------------------------------------------
# SPINEPS vertebra instances -> SCT disc labels

SPINEPS_DISC = 100  # instance 100+X is the disc below vertebra X
SPINEPS_C2 = 2


def spineps_to_sct_discs(instances: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Single-voxel SCT disc labels from a SPINEPS ``seg-vert`` instance mask (anatomical VERIDAH values).

    The disc below vertebra X (instance 100+X, X = 2..24) gets SCT label X+1 (102 -> 3 = C2/C3 ... 119 -> 20 =
    T12/L1); the top of vertebra C2 gives label 1, and label 2 is put halfway between labels 1 and 3 along the
    spine, at label 3's position otherwise (the same convention as SPINEPS' ``generate_disc_labels``). Each label
    sits on the posterior tip of its disc: the disc voxel closest to a point beyond the disc's posterior edge on
    the mid line, with "posterior" taken perpendicular to the local spine axis, in world mm. The anomaly values
    (T13 = 28, L6 = 25 and their discs) have no SCT label and are left out. Raises ``ValueError`` when no disc is
    found.
    """
    instances = np.asarray(instances)
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    world = {}
    for value in np.unique(instances):
        v = int(value)
        if v == SPINEPS_C2 or SPINEPS_DISC + 2 <= v <= SPINEPS_DISC + 24:
            idx = np.argwhere(instances == v)
            world[v] = (idx, idx @ affine[:3, :3].T + affine[:3, 3])
    discs = sorted(v for v in world if v > SPINEPS_DISC)
    if not discs:
        raise ValueError("no intervertebral disc (values 102-124) in the SPINEPS vertebra mask")
    centroid = {v: pts.mean(0) for v, (_, pts) in world.items()}
    up = _spine_axes([centroid[v] for v in discs])

    out = np.zeros(instances.shape, np.uint8)
    positions = {}
    for v, axis in zip(discs, up, strict=True):
        idx, pts = world[v]
        positions[v - SPINEPS_DISC + 1] = _posterior_tip(idx, pts, axis)
    if SPINEPS_C2 in world:
        idx, pts = world[SPINEPS_C2]
        axis = up[0]
        height = pts @ axis
        top = height >= height.max() - zooms.min() / 2
        positions[1] = _posterior_tip(idx[top], pts[top], axis)
        if 3 in positions:
            p1, p3 = (ijk @ affine[:3, :3].T + affine[:3, 3] for ijk in (positions[1], positions[3]))
            mid = p3 + 0.5 * ((p1 - p3) @ axis) * axis
            inverse = np.linalg.inv(affine)
            positions[2] = np.round(inverse[:3, :3] @ mid + inverse[:3, 3]).astype(int)
    for label, ijk in positions.items():
        if np.all(ijk >= 0) and np.all(ijk < instances.shape) and not out[tuple(ijk)]:
            out[tuple(ijk)] = label
    return out


def _spine_axes(centroids: list[np.ndarray]) -> list[np.ndarray]:
    """Unit vector pointing superior along the spine at each disc centroid (world superior with one disc)."""
    pts = np.array(centroids)
    if len(pts) < 2:
        return [np.array([0.0, 0.0, 1.0])]
    axes = []
    for i in range(len(pts)):
        d = pts[max(i - 1, 0)] - pts[min(i + 1, len(pts) - 1)]
        d = d if d[2] >= 0 else -d
        axes.append(d / np.linalg.norm(d))
    return axes


def _posterior_tip(idx: np.ndarray, pts: np.ndarray, up: np.ndarray) -> np.ndarray:
    """Voxel of a structure closest to a point 5 mm beyond its posterior edge, on its mid line."""
    posterior = np.array([0.0, -1.0, 0.0])
    posterior = posterior - (posterior @ up) * up
    posterior /= np.linalg.norm(posterior)
    centre = pts.mean(0)
    reach = float(((pts - centre) @ posterior).max()) + 5.0
    return idx[int(np.argmin(np.linalg.norm(pts - (centre + reach * posterior), axis=1)))]


def describe(kind: str, source: str) -> str:
    """Human name of a source, e.g. ``sct_deepseg spine`` for ("discs", "sct")."""
    return TOOLS[kind, source].name if (kind, source) in TOOLS else source

