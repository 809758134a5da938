"""Write the input files of the SCT comparison (run with the package's venv; outside CI): see README.md.

    python tests/data/measure_reference/make_inputs.py

Cases (each a folder with image, cord, spinal and vertebral levels, a mask for the map, and the map: ``map.nii.gz``
where there is one, else the image itself):

* phantom_iso: the package's phantom (seed 0), LPI 1 mm, cropped around the cord;
* phantom_aniso: the phantom on an AIL grid of 0.7 x 1.2 x 0.5 mm, cropped;
* oblique: a straight elliptic cord tilted 25 degrees (AP) and 12 degrees (RL) from the slice normal, on a grid
  itself rotated 15 degrees about the LR axis, 0.8 x 0.8 x 2.5 mm; the cord is soft (partial volume, 0-1); the map
  is int16 with a scale factor; the map's mask is empty over one level (a level with no mask voxel);
* sct_t2: SCT's t2 test files (sct_testing_data, MIT: t2, manual cord, its vertebral labelling) and spinal levels
  computed by the package (gapfree) from SCT's manual rootlets of t2.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2] / "src"))

from rootlets_task.io.phantom import make_phantom  # noqa: E402
from rootlets_task.levels.compute import compute_levels  # noqa: E402

SCT_T2 = Path("/work/shared/data/sct_testing_data/t2")
MARGIN = 6  # voxels kept around the cord when cropping


def save(data: np.ndarray, affine: np.ndarray, path: Path, dtype) -> None:
    img = nib.Nifti1Image(np.asarray(data).astype(dtype), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, path)


def cropped(arrays: dict[str, np.ndarray], cord: np.ndarray, affine: np.ndarray) -> tuple[dict, np.ndarray]:
    """Every array cut to the cord's bounding box plus MARGIN voxels (kept whole along any axis it spans)."""
    idx = np.argwhere(cord > 0)
    lo = np.maximum(idx.min(0) - MARGIN, 0)
    hi = np.minimum(idx.max(0) + MARGIN + 1, cord.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    shifted = affine.copy()
    shifted[:3, 3] = affine[:3, :3] @ lo + affine[:3, 3]
    return {k: v[box] for k, v in arrays.items()}, shifted


def write_case(folder: Path, arrays: dict[str, np.ndarray], affine: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    types = {"image": np.int16, "cord": np.float32 if arrays["cord"].dtype.kind == "f" else np.uint8,
             "spinal_levels": np.uint8, "vertebral_levels": np.uint8, "map": np.float32, "mask": np.float32}
    for name, data in arrays.items():
        save(data, affine, folder / f"{name}.nii.gz", types[name])
    if "map" in arrays:  # int16 with a scale factor: small to keep, read as floats by nibabel and SCT alike
        img = nib.load(folder / "map.nii.gz")
        scaled = nib.Nifti1Image(np.round(np.nan_to_num(arrays["map"], nan=0, posinf=0) * 1000).astype(np.int16), affine,
                                 img.header)
        scaled.header.set_data_dtype(np.int16)
        scaled.header.set_slope_inter(0.001, 0)
        nib.save(scaled, folder / "map.nii.gz")


def phantom_case(folder: Path, **grid) -> None:
    ph = make_phantom(seed=0, **grid)
    mask = ph.cord.astype(np.float32)  # a "white matter" mask: the cord less its central third
    centre = np.zeros_like(mask, dtype=bool)
    axis = int(np.argmax(np.abs(ph.affine[2, :3])))
    for z in range(ph.cord.shape[axis]):
        sl = [slice(None)] * 3
        sl[axis] = z
        plane = ph.cord[tuple(sl)] > 0
        if plane.any():
            pts = np.argwhere(plane)
            c = pts.mean(0)
            far = np.linalg.norm(pts - c, axis=1)
            inner = pts[far <= far.max() / 3]
            sub = np.zeros(plane.shape, bool)
            sub[tuple(inner.T)] = True
            centre[tuple(sl)] = sub
    mask[centre] = 0
    arrays = {"image": ph.image, "cord": ph.cord, "spinal_levels": ph.spinal_levels,
              "vertebral_levels": ph.vertebral_levels, "mask": mask}
    arrays, affine = cropped(arrays, ph.cord, ph.affine)
    write_case(folder, arrays, affine)


def _rotation(axis: int, degrees: float) -> np.ndarray:
    a = np.radians(degrees)
    c, s = np.cos(a), np.sin(a)
    i, j = [k for k in range(3) if k != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def oblique_case(folder: Path) -> None:
    spacing = np.array([0.8, 0.8, 2.5])
    shape = (44, 76, 40)
    affine = np.eye(4)
    affine[:3, :3] = _rotation(0, 15) @ np.diag(spacing)  # the grid tilted about LR (an oblique acquisition)
    affine[:3, 3] = -affine[:3, :3] @ (np.array(shape) - 1) / 2
    # the cord, in voxel-aligned mm: straight, tilted 25 deg towards y and 12 deg towards x, elliptic section 4.5 x 3.5
    direction = _rotation(0, -25) @ _rotation(1, 12) @ np.array([0.0, 0.0, 1.0])
    u = np.cross(direction, [0.0, 1.0, 0.0])
    u /= np.linalg.norm(u)
    v = np.cross(direction, u)
    sub = 3  # partial volume: 3 x 3 x 3 samples per voxel
    offsets = (np.arange(sub) + 0.5) / sub - 0.5
    ijk = np.indices(shape).reshape(3, -1).T.astype(float)
    centre = (np.array(shape) - 1) / 2
    inside = np.zeros(len(ijk))
    for dx in offsets:
        for dy in offsets:
            for dz in offsets:
                p = (ijk + [dx, dy, dz] - centre) * spacing
                inside += ((p @ u) / 4.5) ** 2 + ((p @ v) / 3.5) ** 2 <= 1.0
    cord = (inside / sub**3).reshape(shape)
    binary = cord >= 0.5
    levels = np.zeros(shape, np.uint8)
    bounds = {2: (2, 9), 3: (9, 17), 4: (17, 24), 5: (24, 31), 6: (31, 38)}
    for value, (z0, z1) in bounds.items():
        levels[:, :, z0:z1][binary[:, :, z0:z1]] = value
    vertebral = np.zeros(shape, np.uint8)
    for value, (z0, z1) in {2: (0, 12), 3: (12, 26), 4: (26, 40)}.items():
        vertebral[:, :, z0:z1][binary[:, :, z0:z1]] = value
    rng = np.random.default_rng(7)
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    value_map = (1.0 + 0.01 * world[:, 2] + 0.2 * np.sin(world[:, 0] / 3.0) + rng.normal(0, 0.05, len(world))).reshape(shape)
    mask = cord.copy()
    mask[:, :, 24:31] = 0  # level 5 has no mask voxel: NaN, never 0
    image = (1000 * (1 - 0.6 * cord)).astype(np.int16)
    write_case(folder, {"image": image, "cord": cord.astype(np.float32), "spinal_levels": levels,
                        "vertebral_levels": vertebral, "map": value_map, "mask": mask}, affine)


def sct_t2_case(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    img = nib.load(SCT_T2 / "t2.nii.gz")
    cord = np.asanyarray(nib.load(SCT_T2 / "t2_seg-manual.nii.gz").dataobj)
    rootlets = np.asanyarray(nib.load(SCT_T2 / "t2_seg-deepseg_rootlets-manual.nii.gz").dataobj)
    result = compute_levels(rootlets, cord, img.affine)
    shutil.copy(SCT_T2 / "t2.nii.gz", folder / "image.nii.gz")
    shutil.copy(SCT_T2 / "t2_seg-manual.nii.gz", folder / "cord.nii.gz")
    vertebral = np.asanyarray(nib.load(SCT_T2 / "t2_seg-manual_labeled.nii.gz").dataobj)
    save(vertebral, img.affine, folder / "vertebral_levels.nii.gz", np.uint8)
    save(result.spinal, img.affine, folder / "spinal_levels.nii.gz", np.uint8)
    save(cord, img.affine, folder / "mask.nii.gz", np.float32)


if __name__ == "__main__":
    phantom_case(HERE / "phantom_iso")
    phantom_case(HERE / "phantom_aniso", orient="AIL", spacing=(0.7, 1.2, 0.5))
    oblique_case(HERE / "oblique")
    sct_t2_case(HERE / "sct_t2")
    print("inputs written under", HERE)
