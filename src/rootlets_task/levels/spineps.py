"""SPINEPS vertebra instances -> SCT disc labels (pure geometry on arrays, in world millimetres)."""

from __future__ import annotations

import numpy as np

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
