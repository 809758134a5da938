"""Careful NIfTI handling: validated loading, SCT orientation codes, atomic saving on the input's grid.

Every loader raises :class:`RootletsError` with one line that names the file and what to do, so the command
line can report it and exit non-zero without a traceback.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from rootlets_task.core.errors import RootletsError
from rootlets_task.core.files import atomic_path

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


MIN_ZOOM_MM, MAX_ZOOM_MM = 0.01, 50.0  # plausible voxel sizes of any MRI
MIN_FOV_MM = 5.0  # a smaller field of view along any axis holds no vertebra
MAX_VOXELS = 2_000_000_000  # a 3D image beyond this is not an MRI volume (4000^3 headers in tiny files exist)
_READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, gzip.BadGzipFile, nib.filebasedimages.ImageFileError,
                nib.spatialimages.HeaderDataError, MemoryError)


def one_line(exc: BaseException) -> str:
    """An exception's text on one line (library messages often span several)."""
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    return text or type(exc).__name__


def _declared_shape(img, path: Path, kind: str) -> tuple[int, ...]:
    """The header's shape with trailing singleton axes dropped; refused unless 3 axes of 2 or more voxels."""
    shape = tuple(int(n) for n in img.shape)
    if 0 in shape:  # checked first: nibabel reads a (0, y, z) image as shape (0,)
        raise RootletsError(f"{kind} {path}: an axis has zero voxels (shape {shape}); the file is empty")
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        raise RootletsError(f"{kind} {path}: expected a 3D image, got shape {shape}; extract one 3D volume first")
    if min(shape) < 2:
        raise RootletsError(f"{kind} {path}: shape {shape} has an axis of one voxel (a 2D image); a 3D volume is needed")
    return shape


def _check_header(img, path: Path, kind: str) -> tuple[int, ...]:
    """Everything that can be judged from the header and the file size, before a voxel is read."""
    dtype = np.dtype(img.get_data_dtype())
    if dtype.fields is not None or dtype.kind not in "uif":
        what = "RGB/colour" if dtype.fields is not None else {"c": "complex", "b": "boolean"}.get(dtype.kind, str(dtype))
        raise RootletsError(f"{kind} {path}: {what} voxels ({dtype}); a scalar real-valued image is needed "
                            "(e.g. take the magnitude or convert to grey first)")
    shape = _declared_shape(img, path, kind)
    n = int(np.prod(shape, dtype=np.int64))
    affine = np.asarray(img.affine, dtype=float)
    zooms = np.asarray(img.header.get_zooms()[:3], dtype=float)
    if not np.isfinite(affine).all() or not np.isfinite(zooms).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12 \
            or (zooms <= 0).any():
        raise RootletsError(f"{kind} {path}: its voxel-to-world affine is singular, zero or not finite (voxel sizes "
                            f"{zooms.tolist()}); fix the header (qform/sform, pixdim), e.g. re-export with dcm2niix")
    if not ((MIN_ZOOM_MM <= zooms) & (zooms <= MAX_ZOOM_MM)).all() or (np.array(shape) * zooms < MIN_FOV_MM).any():
        raise RootletsError(f"{kind} {path}: voxel sizes {np.round(zooms, 4).tolist()} mm and field of view "
                            f"{np.round(np.array(shape) * zooms, 1).tolist()} mm are not those of an MRI of the spine; "
                            "check the header's voxel sizes (pixdim, qform/sform)")
    needed = n * max(dtype.itemsize, 4) * 3  # the voxels, a float32 copy and a label map at least
    if n > MAX_VOXELS or needed > _available_memory():
        raise RootletsError(f"{kind} {path}: declares {'x'.join(map(str, shape))} voxels ({needed / 2**30:.1f} GiB to "
                            "process), more than this machine's free memory; check the header or crop the image")
    stored = n * dtype.itemsize + int(getattr(img.dataobj, "offset", 0))
    size = path.stat().st_size
    if path.name.endswith(".nii") and size < stored:
        raise RootletsError(f"{kind} {path}: truncated or corrupt ({size} bytes, the header declares {stored}); re-copy "
                            "the file")
    if path.name.endswith(".nii.gz") and _gzip_size(path) not in (None, stored % 2**32):
        raise RootletsError(f"{kind} {path}: truncated or corrupt (the header declares {stored} bytes, the compressed "
                            "stream holds a different amount); re-copy or re-export the file")
    return shape


def _available_memory() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def _gzip_size(path: Path) -> int | None:
    """Uncompressed size (mod 2**32) from a single-member gzip file's trailer, or None when it cannot be read."""
    try:
        with open(path, "rb") as fh:
            if fh.read(2) != b"\x1f\x8b":
                return None
            fh.seek(-4, os.SEEK_END)
            return int.from_bytes(fh.read(4), "little")
    except OSError:
        return None


def load(path: str | os.PathLike, kind: str = "image") -> nib.Nifti1Image:
    """Load a 3D NIfTI file, or raise a one-line error naming the file and the fix.

    Checked before any voxel is read: real numeric voxels, a finite invertible affine, three axes of at least two
    voxels (trailing singleton dimensions such as (x, y, z, 1) are dropped), a declared size that the file holds and
    that fits in memory. Then: non-finite voxels are refused.
    """
    path = Path(path)
    if path.is_dir():
        raise RootletsError(f"{kind} {path}: is a folder, not a NIfTI file; give the image file")
    if not path.is_file():
        raise RootletsError(f"{kind} {path}: file not found; check the path")
    if not path.name.endswith((".nii", ".nii.gz")):
        raise RootletsError(f"{kind} {path}: not a NIfTI file (.nii or .nii.gz); convert it first (e.g. dcm2niix)")
    try:
        img = nib.load(path)
        if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
            raise RootletsError(f"{kind} {path}: not a NIfTI-1/2 image; convert it to NIfTI")
        shape = _check_header(img, path, kind)
        data = np.asanyarray(img.dataobj).reshape(shape)
    except RootletsError:
        raise
    except _READ_ERRORS as exc:
        raise RootletsError(f"{kind} {path}: unreadable or corrupt NIfTI ({one_line(exc)}); re-export or re-copy the "
                            "file") from None
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        raise RootletsError(f"{kind} {path}: contains NaN or infinite voxels; replace them (e.g. fslmaths -nan) first")
    if kind == "image" and not data.any():
        raise RootletsError(f"{kind} {path}: every voxel is 0 (no signal); check that this is the right file")
    header = img.header.copy() if isinstance(img, nib.Nifti1Image) else nib.Nifti1Header.from_header(img.header)
    header.set_data_shape(data.shape)
    loaded = nib.Nifti1Image(np.asarray(data), img.affine, header)
    loaded.set_filename(str(path))
    return loaded


def label_image(data: np.ndarray, reference: nib.Nifti1Image, dtype=np.uint8) -> nib.Nifti1Image:
    """``data`` as an image on the reference's grid, affine and header (qform/sform and their codes kept), as ``dtype``."""
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
    return img


def save_like(data: np.ndarray, reference: nib.Nifti1Image, path: str | os.PathLike, dtype=np.uint8) -> Path:
    """Save ``data`` atomically as :func:`label_image` makes it."""
    path = Path(path)
    with atomic_path(path) as tmp:
        nib.save(label_image(data, reference, dtype), tmp)
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


def image_digest(image: nib.Nifti1Image) -> str:
    """sha256 of an image's voxels, data type, grid and affine: the same image read twice has the same digest."""
    data = np.ascontiguousarray(np.asanyarray(image.dataobj))
    return hashlib.sha256(data.tobytes() + str((data.dtype, data.shape, image.affine.tolist())).encode()).hexdigest()
