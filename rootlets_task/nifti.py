"""Careful NIfTI handling: validated loading, SCT orientation codes, atomic saving on the input's grid.

Every loader raises :class:`RootletsError` with one line that names the file and what to do, so the command
line can report it and exit non-zero without a traceback.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np

from rootlets_task.errors import RootletsError


def _file_mode() -> int:
    """0o666 less the process umask: the mode an ordinary ``open(path, "w")`` would give."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _file_mode()
_OPPOSITE = {"L": "R", "R": "L", "A": "P", "P": "A", "S": "I", "I": "S"}


def stem(path: str | os.PathLike) -> str:
    """File name without its NIfTI extension (``sub-01_T2w.nii.gz`` -> ``sub-01_T2w``)."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def sct_to_axcodes(code: str) -> tuple[str, str, str]:
    """SCT orientation code (letters say where each axis *starts*) -> nibabel axcodes (where it *ends*).

    SCT ``LPI`` is nibabel ``RAS``; SCT ``AIL`` is nibabel ``PSR``.
    """
    code = code.upper()
    axes = {frozenset((c, _OPPOSITE[c])) for c in code if c in _OPPOSITE}
    if len(code) != 3 or len(axes) != 3:
        raise RootletsError(f"orientation {code!r} is not a valid SCT code: use one letter per axis, e.g. LPI, RPI, AIL, PSR")
    return tuple(_OPPOSITE[c] for c in code)  # type: ignore[return-value]


def axcodes_to_sct(axcodes: tuple[str, ...]) -> str:
    """nibabel axcodes -> SCT orientation code."""
    return "".join(_OPPOSITE[c] for c in axcodes)


def orientation(img: nib.Nifti1Image) -> str:
    """The image's orientation as an SCT code (e.g. ``LPI``)."""
    return axcodes_to_sct(nib.aff2axcodes(img.affine))


def si_axis(affine: np.ndarray) -> int:
    """Index of the array axis that runs closest to superior-inferior, read from the affine."""
    return int(np.argmax(np.abs(affine[2, :3]) / np.linalg.norm(affine[:3, :3], axis=0)))


def load(path: str | os.PathLike, kind: str = "image") -> nib.Nifti1Image:
    """Load a 3D NIfTI file, or raise a one-line error naming the file and the fix.

    Trailing singleton dimensions (x, y, z, 1) are dropped; real 4D data, 2D data, empty axes and
    non-finite voxels are refused.
    """
    path = Path(path)
    if not path.is_file():
        raise RootletsError(f"{kind} {path}: file not found; check the path")
    if not path.name.endswith((".nii", ".nii.gz")):
        raise RootletsError(f"{kind} {path}: not a NIfTI file (.nii or .nii.gz); convert it first (e.g. dcm2niix)")
    try:
        img = nib.load(path)
        data = np.asanyarray(img.dataobj)
    except (OSError, EOFError, ValueError, zlib.error, gzip.BadGzipFile, nib.filebasedimages.ImageFileError) as exc:
        raise RootletsError(f"{kind} {path}: unreadable or corrupt NIfTI ({exc}); re-export or re-copy the file") from None
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise RootletsError(f"{kind} {path}: not a NIfTI-1/2 image; convert it to NIfTI")
    if 0 in img.shape or 0 in data.shape:  # checked first: nibabel reads a (0, y, z) image as shape (0,)
        raise RootletsError(f"{kind} {path}: an axis has zero voxels (shape {img.shape}); the file is empty")
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise RootletsError(f"{kind} {path}: expected a 3D image, got shape {data.shape}; extract one 3D volume first")
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        raise RootletsError(f"{kind} {path}: contains NaN or infinite voxels; replace them (e.g. fslmaths -nan) first")
    header = img.header.copy() if isinstance(img, nib.Nifti1Image) else nib.Nifti1Header.from_header(img.header)
    header.set_data_shape(data.shape)
    return nib.Nifti1Image(np.asarray(data), img.affine, header)


def load_labels(path: str | os.PathLike, kind: str) -> tuple[nib.Nifti1Image, np.ndarray]:
    """Load a label file: whole, non-negative values. Returns the image and an int32 array."""
    img = load(path, kind)
    data = np.asanyarray(img.dataobj)
    if np.issubdtype(data.dtype, np.floating) and not np.array_equal(data, np.round(data)):
        raise RootletsError(f"{kind} {path}: has non-integer values; a label file must hold whole numbers")
    if data.min() < 0:
        raise RootletsError(f"{kind} {path}: has negative values; a label file must hold values >= 0")
    return img, np.asarray(data).astype(np.int32)


def check_output_path(output: str | os.PathLike, inputs: list[Path] | tuple[Path, ...] = ()) -> Path:
    """Refuse an output that would overwrite an input or that cannot be written; create its folder."""
    output = Path(output).absolute()
    for source in inputs:
        if Path(source).absolute().resolve() == output.resolve():
            raise RootletsError(f"output {output} is the input file; choose another -o so the input is kept")
    if not output.name.endswith((".nii", ".nii.gz")):
        raise RootletsError(f"output {output}: must end in .nii.gz or .nii")
    writable_folder(output.parent)
    return output


def writable_folder(folder: str | os.PathLike, label: str = "output folder", flag: str = "-o") -> Path:
    """Create ``folder`` if needed; refuse one that cannot be written, before any work (``flag`` names the fix)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RootletsError(f"{label} {folder}: cannot be created ({exc.strerror}); choose another {flag}") from None
    if not os.access(folder, os.W_OK):
        raise RootletsError(f"{label} {folder}: not writable; choose another {flag} or fix its permissions")
    return folder


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds.

    A crash or error never leaves a half-written file under the final name.
    """
    path = Path(path)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, _FILE_MODE)  # mkstemp makes 0600 files; give the final file the usual permissions
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def save_like(data: np.ndarray, reference: nib.Nifti1Image, path: str | os.PathLike, dtype=np.uint8) -> Path:
    """Save ``data`` atomically on the reference's grid, affine and header (qform/sform kept), as ``dtype``."""
    if data.shape != reference.shape[:3]:
        raise ValueError(f"data shape {data.shape} does not match reference grid {reference.shape[:3]}")
    header = reference.header.copy()
    header.set_data_dtype(dtype)
    header.set_data_shape(data.shape)
    img = nib.Nifti1Image(np.asarray(data).astype(dtype), reference.affine, header)
    img.header.set_slope_inter(1, 0)
    for get, put in ((reference.get_qform, img.set_qform), (reference.get_sform, img.set_sform)):
        affine, code = get(coded=True)
        if affine is not None:
            put(affine, code=int(code))
    path = Path(path)
    with atomic_path(path) as tmp:
        nib.save(img, tmp)
    return path


def reorient(img: nib.Nifti1Image, axcodes: tuple[str, str, str]) -> tuple[np.ndarray, tuple[float, ...], np.ndarray]:
    """Array of ``img`` in ``axcodes`` orientation, its voxel spacing, and the orientation transform to undo it."""
    current = nib.orientations.io_orientation(img.affine)
    target = nib.orientations.axcodes2ornt(axcodes)
    transform = nib.orientations.ornt_transform(current, target)
    data = nib.orientations.apply_orientation(np.asanyarray(img.dataobj), transform)
    zooms = np.array(img.header.get_zooms()[:3])
    spacing = tuple(float(zooms[int(i)]) for i in np.argsort(transform[:, 0]))
    return data, spacing, nib.orientations.ornt_transform(target, current)


def undo_reorient(data: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """Bring an array produced in the reoriented frame back to the original voxel order."""
    return np.ascontiguousarray(nib.orientations.apply_orientation(data, inverse))
