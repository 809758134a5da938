"""A seeded, T2w-like synthetic cervical spine with known rootlets, cord, discs and levels.

The anatomy is defined analytically in millimetres (a curved cord in a CSF-filled canal, vertebral bodies,
discs, and dorsal + ventral rootlets of spinal levels C2-T1) and sampled onto any grid: shape, spacing,
orientation (SCT codes) and an optional oblique tilt. Its ground truth is exact, which makes it the test and
demo data of the package.

Two simplifications make it learnable by a tiny network in minutes and are not anatomy: rootlets are thicker
than real ones, and each level's rootlets have their own shade of grey (C2 darkest, T1 lightest).

Conventions: world coordinates are nibabel RAS+ mm. The anatomy frame has its origin at the
pontomedullary junction (PMJ) on the cord centerline, z superior; ``depth`` is the distance caudal to the PMJ
along z. Spinal level k (2=C2 ... 9=T1) and vertebral level v (1=C1 ... 8=T1, between SCT discs v and v+1)
are given in truth as arc length along the centerline from the PMJ.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from rootlets_task.core.errors import RootletsError
from rootlets_task.io.labels import SUFFIX
from rootlets_task.io.nifti import save_like, sct_to_axcodes

SPINAL_LEVELS = tuple(range(2, 10))  # C2..T1
PMJ_VALUE = 50  # SCT's label value for the pontomedullary junction
# Written into the NIfTI header (``descrip``) of every phantom file, so that a model trained on phantoms can tell
# a phantom from a real image (:func:`is_phantom`).
MARK = "rootlets_task synthetic phantom"

# Depth (mm caudal to the PMJ) of each SCT disc label: 1 = top of C1, 2 = C1/C2, 3 = C2/C3 ... 9 = T1/T2.
DISC_DEPTH = {1: 28.0, 2: 40.0, 3: 61.0, 4: 78.0, 5: 95.0, 6: 112.0, 7: 129.0, 8: 146.0, 9: 163.0}
# Spinal level midpoints: level C(n+1) sits rostral to vertebral level Cn by a shift growing 0 -> 8 mm.
SPINAL_MID_DEPTH = {2: 36.0, 3: 50.5, 4: 68.5, 5: 84.5, 6: 100.0, 7: 115.5, 8: 131.0, 9: 146.5}
SPINAL_HEIGHT = 11.0

CORD_RADII = (4.5, 3.5)  # LR, AP semi-axes (mm)
CANAL_RADII = (11.0, 7.0)
LORDOSIS_MM, LORDOSIS_LENGTH = 4.0, 170.0
FOV_MM = ((-20.0, 20.0), (-16.0, 34.0), (-172.0, 10.0))  # world box, RAS

MIN_SPACING_MM, MAX_SPACING_MM, MAX_TILT_DEG = 0.2, 8.0, 45.0  # beyond these the phantom is no longer a cervical spine
ROOTLET_RADIUS = 1.0
STRANDS_PER_ROOT = 3
INTENSITY = {"tissue": 0.30, "bone": 0.22, "disc": 0.75, "csf": 1.0, "cord": 0.58}


def rootlet_intensity(level: int) -> float:
    """Grey value of a level's rootlets: the phantom's level cue (C2 darkest)."""
    return 0.06 + 0.045 * (level - 2)


@dataclass
class Phantom:
    """One phantom on one grid: images as arrays on ``affine``, plus its truth (JSON-ready)."""

    image: np.ndarray
    rootlets: np.ndarray
    cord: np.ndarray
    discs: np.ndarray
    pmj: np.ndarray
    spinal_levels: np.ndarray
    vertebral_levels: np.ndarray
    affine: np.ndarray
    truth: dict = field(default_factory=dict)

    def nifti(self, name: str) -> nib.Nifti1Image:
        """One of the arrays as a NIfTI image on the phantom's grid."""
        data = getattr(self, name)
        img = nib.Nifti1Image(data, self.affine)
        img.set_qform(self.affine, code=1)
        img.set_sform(self.affine, code=1)
        img.header.set_xyzt_units("mm", "sec")
        img.header["descrip"] = MARK
        return img


def is_phantom(img: nib.Nifti1Image) -> bool:
    """Whether ``img`` is a phantom of this module (its header carries :data:`MARK`)."""
    return isinstance(img.header, nib.Nifti1Header) and img.header["descrip"].item() == MARK.encode()


def release_warnings(tag: str | None, img: nib.Nifti1Image, name: str | os.PathLike | None = None) -> list[str]:
    """What the user must know about running release ``tag`` on ``img``: the phantom release on an image that is
    not a phantom of ``rootlets phantom`` gives believable-looking but meaningless rootlets."""
    if tag != "phantom" or is_phantom(img):
        return []
    return [f"{name or 'the image'} is not a phantom of `rootlets phantom`, but the phantom release (a tiny demo model "
            "trained on phantoms) segmented it: its rootlets and levels mean nothing; install a real release "
            "(`rootlets -install`) and run without -release phantom"]


def grid(orient: str = "LPI", spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
         tilt_deg: float = 0.0) -> tuple[tuple[int, ...], np.ndarray]:
    """Shape and affine covering the phantom's field of view in an SCT orientation at a per-axis spacing.

    ``spacing`` is given per array axis (as in the NIfTI header); ``tilt_deg`` rotates the grid about the
    left-right axis, giving an oblique acquisition.
    """
    axcodes = sct_to_axcodes(orient)
    if len(spacing) != 3 or not all(MIN_SPACING_MM <= float(s) <= MAX_SPACING_MM for s in spacing):
        raise RootletsError(f"phantom spacing {tuple(spacing)}: give three voxel sizes from {MIN_SPACING_MM} to "
                            f"{MAX_SPACING_MM} mm")
    if not abs(float(tilt_deg)) <= MAX_TILT_DEG:
        raise RootletsError(f"phantom tilt {tilt_deg}: give an angle from -{MAX_TILT_DEG} to {MAX_TILT_DEG} degrees")
    ornt = nib.orientations.axcodes2ornt(axcodes)
    lo = np.array([b[0] for b in FOV_MM])
    hi = np.array([b[1] for b in FOV_MM])
    rotation = _tilt(tilt_deg)
    affine = np.eye(4)
    shape = []
    for axis, (world_axis, sign) in enumerate(ornt.astype(int)):
        step = float(spacing[axis])
        n = int(np.ceil((hi[world_axis] - lo[world_axis]) / step))
        shape.append(n)
        affine[:3, axis] = rotation[:, world_axis] * sign * step
    centre = (lo + hi) / 2
    half_extent = affine[:3, :3] @ ((np.array(shape) - 1) / 2)
    affine[:3, 3] = rotation @ centre - half_extent
    return tuple(shape), affine


def _tilt(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    return np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])


def centerline_offset(depth: np.ndarray) -> np.ndarray:
    """Anterior offset (mm) of the cord centerline at a depth: a gentle cervical lordosis."""
    return LORDOSIS_MM * np.sin(np.pi * np.clip(depth, 0, LORDOSIS_LENGTH) / LORDOSIS_LENGTH)


def arc_length(depth: np.ndarray | float) -> np.ndarray:
    """Distance (mm) along the centerline from the PMJ down to ``depth`` (negative above the PMJ)."""
    d = np.linspace(-20, 200, 22001)
    slope = np.gradient(centerline_offset(d), d)
    s = np.concatenate([[0], np.cumsum(np.sqrt(1 + slope[1:] ** 2) * np.diff(d))])
    s -= np.interp(0.0, d, s)
    return np.interp(depth, d, s)


def _levels_layout(rng: np.random.Generator) -> tuple[dict, dict]:
    """Seeded spinal spans and disc depths: a common shift and small per-level jitter."""
    shift = rng.uniform(-2.0, 2.0)
    discs = {v: d + shift + rng.uniform(-0.5, 0.5) for v, d in DISC_DEPTH.items()}
    spans = {}
    for k, mid in SPINAL_MID_DEPTH.items():
        m = mid + shift + rng.uniform(-0.7, 0.7)
        h = SPINAL_HEIGHT + rng.uniform(-1.0, 1.0)
        spans[k] = (m - h / 2, m + h / 2)
    return spans, discs


def _capsule_distance(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    t = np.clip(((points - a) @ ab) / (ab @ ab), 0, 1)
    return np.linalg.norm(points - (a + t[:, None] * ab), axis=1)


def _rootlet_segments(spans: dict) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(level, start, end) of every rootlet segment in the anatomy frame.

    Each strand leaves the cord almost horizontally (so the entry zone equals the level's span), then descends
    to the canal wall, more steeply for caudal levels.
    """
    segments = []
    for k, (top, bottom) in spans.items():
        depths = np.linspace(top + ROOTLET_RADIUS, bottom - ROOTLET_RADIUS, STRANDS_PER_ROOT)
        for side in (-1.0, 1.0):
            for dorsoventral in (-1.5, 1.5):  # posterior (dorsal) and anterior (ventral) roots
                for depth in depths:
                    y0 = float(centerline_offset(depth)) + dorsoventral
                    start = np.array([side * (CORD_RADII[0] - 1.0), y0, -depth])
                    bend = np.array([side * 8.5, y0 + dorsoventral, -depth - 0.45])
                    drop = 1.0 + 0.35 * (k - 2)
                    end = np.array([side * (CANAL_RADII[0] - 0.6), y0 + dorsoventral, -depth - 0.45 - drop])
                    segments += [(k, start, bend), (k, bend, end)]
    return segments


def make_phantom(orient: str = "LPI", spacing: tuple[float, float, float] = (1.0, 1.0, 1.0), seed: int = 0,
                 tilt_deg: float = 0.0, noise: float = 0.03) -> Phantom:
    """Sample the phantom of ``seed`` on a grid (SCT ``orient``, per-axis ``spacing`` in mm, oblique ``tilt_deg``)."""
    rng = np.random.default_rng(seed)
    spans, discs = _levels_layout(rng)
    shape, affine = grid(orient, spacing, tilt_deg)
    ijk = np.indices(shape).reshape(3, -1).T
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    anat = world @ _tilt(tilt_deg)  # rotate back into the anatomy frame (R^T applied on row vectors)
    x, y, z = anat.T
    depth = -z
    dx, dy = x, y - centerline_offset(depth)

    def ellipse(rx: float, ry: float) -> np.ndarray:
        return (dx / rx) ** 2 + (dy / ry) ** 2 <= 1.0

    cord = ellipse(*CORD_RADII)
    canal = ellipse(*CANAL_RADII)
    image = np.full(x.shape, INTENSITY["tissue"])
    body_front = dy - CANAL_RADII[1] - 1.0
    bone = (np.abs(dx) <= 12.0) & (body_front >= 0) & (body_front <= 17.0)
    image[bone] = INTENSITY["bone"]
    for v in range(3, 10):
        dz = depth - discs[v]
        disc = (dx / 13.0) ** 2 + ((body_front - 8.5) / 8.5) ** 2 + (dz / 2.5) ** 2 <= 1.0
        image[disc] = INTENSITY["disc"]
    image[canal] = INTENSITY["csf"]
    image[cord] = INTENSITY["cord"]

    rootlets = np.zeros(x.shape, np.uint8)
    for k, a, b in _rootlet_segments(spans):
        near = np.flatnonzero((z <= max(a[2], b[2]) + 2) & (z >= min(a[2], b[2]) - 2) & canal)
        inside = near[_capsule_distance(anat[near], a, b) <= ROOTLET_RADIUS]
        rootlets[inside] = k
    in_csf = (rootlets > 0) & ~cord
    rootlets[~in_csf] = 0
    image[in_csf] = [rootlet_intensity(k) for k in rootlets[in_csf]]
    image = image + rng.normal(0, noise, image.shape)

    s = arc_length(depth)
    spinal = np.zeros(x.shape, np.uint8)
    for k, (top, bottom) in spans.items():
        spinal[cord & (s >= arc_length(top)) & (s <= arc_length(bottom))] = k
    vertebral = np.zeros(x.shape, np.uint8)
    for v in range(1, 9):
        vertebral[cord & (s >= arc_length(discs[v])) & (s < arc_length(discs[v + 1]))] = v

    inverse = np.linalg.inv(affine)

    def voxel(point_anat: np.ndarray) -> tuple[int, ...]:
        w = _tilt(tilt_deg) @ point_anat
        return tuple(int(i) for i in np.round(inverse[:3, :3] @ w + inverse[:3, 3]))

    disc_img = np.zeros(shape, np.uint8)
    disc_voxels = {}
    for v, d in discs.items():
        tip = np.array([0.0, float(centerline_offset(d)) + CANAL_RADII[1] + 1.0, -d])
        disc_voxels[v] = voxel(tip)
        disc_img[disc_voxels[v]] = v
    pmj_img = np.zeros(shape, np.uint8)
    pmj_voxel = voxel(np.zeros(3))
    pmj_img[pmj_voxel] = PMJ_VALUE
    # The PMJ label is the voxel nearest the anatomical PMJ: distances measured from it are shifted by its offset.
    pmj_label_depth = -(_tilt(tilt_deg).T @ (affine[:3, :3] @ np.array(pmj_voxel) + affine[:3, 3]))[2]

    truth = {
        "seed": seed, "orientation": orient, "spacing": [float(v) for v in spacing], "shape": list(shape),
        "tilt_deg": tilt_deg, "reference": "PMJ", "distances": "mm along the cord centerline, caudal from the PMJ",
        "pmj_label_offset_mm": float(arc_length(pmj_label_depth)),
        "spinal_levels": {str(k): _span(arc_length(t), arc_length(b)) for k, (t, b) in spans.items()},
        "vertebral_levels": {str(v): _span(arc_length(discs[v]), arc_length(discs[v + 1])) for v in range(1, 9)},
        "discs": {str(v): {"distance_mm": float(arc_length(d)), "voxel": list(disc_voxels[v])} for v, d in discs.items()},
    }

    def vol(a: np.ndarray, dtype=np.uint8) -> np.ndarray:
        return a.reshape(shape).astype(dtype)

    return Phantom(image=vol(np.clip(image, 0, None) * 1000, np.int16), rootlets=vol(rootlets), cord=vol(cord),
                   discs=disc_img, pmj=pmj_img, spinal_levels=vol(spinal), vertebral_levels=vol(vertebral),
                   affine=affine, truth=truth)


def _span(start: float | np.ndarray, end: float | np.ndarray) -> dict:
    return {"start_mm": float(start), "end_mm": float(end), "mid_mm": float((start + end) / 2),
            "height_mm": float(end - start)}


# File names written by write_phantom, relative to the output folder (documented in docs/phantom.md).
FILES = {
    "image": "phantom_T2w.nii.gz",
    **{kind: f"phantom_T2w{SUFFIX[kind]}.nii.gz" for kind in ("rootlets", "cord", "discs", "pmj")},
    "spinal_levels": "phantom_T2w_label-spinal_dseg.nii.gz",
    "vertebral_levels": "phantom_T2w_label-vertebral_dseg.nii.gz",
    "truth": "phantom_truth.json",
}


def write_phantom(out_dir: str | os.PathLike, orient: str = "LPI", spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
                  seed: int = 0, tilt_deg: float = 0.0, prefix: str = "phantom_T2w") -> dict[str, Path]:
    """Write a phantom and its truth files into ``out_dir``; returns {kind: path}.

    ``prefix`` replaces ``phantom_T2w`` in the names (e.g. ``sub-01_T2w``: the names a BIDS subject's labels have); the
    truth is then ``<prefix>_truth.json``, so that several phantoms can share a folder.
    """
    out_dir = Path(out_dir)
    ph = make_phantom(orient, spacing, seed, tilt_deg)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {kind: out_dir / name.replace("phantom_T2w", prefix) for kind, name in FILES.items()}
    if prefix != "phantom_T2w":
        paths["truth"] = out_dir / f"{prefix}_truth.json"
    reference = ph.nifti("image")
    save_like(ph.image, reference, paths["image"], dtype=np.int16)
    for kind in ("rootlets", "cord", "discs", "pmj", "spinal_levels", "vertebral_levels"):
        save_like(getattr(ph, kind), reference, paths[kind])
    paths["truth"].write_text(json.dumps(ph.truth, indent=2))
    return paths
