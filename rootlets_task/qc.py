"""Quality control a researcher can trust at a glance: per-subject figures, an HTML page, a dataset index.

Per subject, :func:`qc_subject` draws

* the rootlets over the image in a sagittal and a coronal view through the cord (a thin-slab maximum-intensity
  projection of the rootlets over the image slice that follows the cord), one colour per level, the cord outline
  and the disc labels as numbered points;
* the spinal and vertebral levels side by side along the cord, with the shift between paired levels (the style of
  the RootletSeg paper's correspondence figure);

and writes ``<qc>/<subject>/index.html`` with both figures, the levels tables, the provenance and the warnings.

Display geometry never assumes an array axis: every volume is reoriented to SCT ``SAL`` (rows run superior ->
inferior, then anterior -> posterior, then left -> right; the neurological convention of SCT's QC) and each view
is resampled to square pixels in mm. Labels are only ever *upsampled* with nearest neighbour (the display pixel is
the finest voxel spacing), so thin rootlets are never lost or relabelled (SCT issues #4461, #4716).

Per dataset, ``<qc>/index.html`` lists every subject. Parallel jobs may share one QC folder: each writes its own
record ``<qc>/_records/<subject>.json`` atomically, then rebuilds the index from all records under a file lock,
so the last writer's index always holds every subject and a reader never sees a half-written file.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import nibabel as nib
import numpy as np
import pandas as pd
from filelock import FileLock, Timeout
from matplotlib import patheffects
from matplotlib.colors import to_hex, to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from scipy.ndimage import gaussian_filter1d, map_coordinates

from rootlets_task import __version__
from rootlets_task.errors import RootletsError
from rootlets_task.levels import level_name, shift_table
from rootlets_task.nifti import atomic_path, load, load_labels, orientation, reorient, stem, writable_folder

# SCT "SAL" as nibabel axcodes (where each axis ends): rows S->I, then A->P, then L->R.
DISPLAY_AXCODES = ("I", "P", "R")
RECORDS = "_records"
LOCK = ".qc.lock"
LOCK_TIMEOUT_S = 600

# One colour per level name, ordered in hue from rostral (warm) to caudal (cool/magenta); shared by both figures.
LEVEL_COLOURS = {
    "C1": "#a6611a", "C2": "#e31a1c", "C3": "#ff7f00", "C4": "#ffd92f", "C5": "#33a02c", "C6": "#17becf",
    "C7": "#1f78b4", "C8": "#6a3d9a", "T1": "#e7298a", "T2": "#b15928", "T3": "#8dd3c7", "T4": "#fb9a99",
}
CORD_COLOUR = "#ffffff"
# Half-thickness (mm) of the rootlets projection: sagittal view across the canal (left-right), coronal view around
# the cord (front-back), so each view shows every level's rostro-caudal extent.
SLAB_MM = (12.0, 6.0)
VERTEBRA_COLOURS = ("#d9d9d9", "#bdbdbd")


def _spinal(value: int) -> str:
    return level_name(value, "spinal")


def level_colour(name: str) -> str:
    """Display colour of a level name (C2, T1 ...); levels beyond the table reuse a qualitative map."""
    if name in LEVEL_COLOURS:
        return LEVEL_COLOURS[name]
    digits = int(re.sub(r"\D", "", name) or 0)
    return to_hex(matplotlib.colormaps["tab20"](digits % 20))


# ----------------------------------------------------------------------------------------------------------------
# Display geometry (pure arrays)


@dataclass
class View:
    """One 2D view with square pixels of ``pixel_mm``; row 0 is the rostral (superior) end."""

    name: str  # "sagittal" or "coronal"
    image: np.ndarray  # float background (the slice through the cord centre, following the cord)
    rootlets: np.ndarray  # int labels: maximum-intensity projection of the rootlets over the slab
    cord: np.ndarray | None  # bool cord mask on the same slice, or None
    pixel_mm: float
    sides: tuple[str, str]  # anatomical direction of the first and last column, e.g. ("A", "P")
    discs: list[tuple[int, float, float]] = field(default_factory=list)  # (value, row_mm, col_mm)
    window: tuple[float, float] = (0.0, 1.0)  # grey window of the background
    slab_mm: float = 0.0  # half-thickness of the rootlets projection

    @property
    def extent_mm(self) -> tuple[float, float]:
        """(width, height) in mm."""
        return self.image.shape[1] * self.pixel_mm, self.image.shape[0] * self.pixel_mm


def _centre_curve(mask: np.ndarray | None, axis: int, n_rows: int, fallback: float, sigma: float) -> np.ndarray:
    """Per-row centre (float index along ``axis`` of a (rows, a1, a2) mask), smoothed, and interpolated (or held
    constant beyond the ends) where a row has no voxel; ``fallback`` everywhere without a mask."""
    if mask is None:
        return np.full(n_rows, fallback)
    profile = mask.sum(axis=2 if axis == 1 else 1)  # (rows, n_axis)
    counts = profile.sum(axis=1)
    rows = np.flatnonzero(counts)
    centres = (profile[rows] * np.arange(profile.shape[1])).sum(axis=1) / counts[rows]
    return gaussian_filter1d(np.interp(np.arange(n_rows), rows, centres), sigma, mode="nearest")


def _square(a: np.ndarray, spacing: tuple[float, float], pixel: float, order: int) -> np.ndarray:
    """Resample a 2D array to square pixels of ``pixel`` mm (order 0 for labels, 1 for images)."""
    shape = [max(1, int(round(n * s / pixel))) for n, s in zip(a.shape, spacing, strict=True)]
    coords = np.meshgrid(*[(np.arange(m) + 0.5) * pixel / s - 0.5 for m, s in zip(shape, spacing, strict=True)], indexing="ij")
    return map_coordinates(a, coords, order=order, mode="nearest")


def display_views(image: nib.Nifti1Image, rootlets: nib.Nifti1Image, cord: nib.Nifti1Image | None = None,
                  discs: nib.Nifti1Image | None = None, slab_mm: tuple[float, float] = SLAB_MM, half_width_mm: float = 25.0,
                  margin_mm: float = 12.0) -> dict[str, View]:
    """Sagittal and coronal views of images that share one grid, in any orientation and spacing.

    Each row (an axial level) is sampled at the cord's centre in that row, so the views follow a curved cord;
    the rootlets are projected (maximum) over ``±slab_mm`` around that centre: (left-right half-thickness of the
    sagittal view, anterior-posterior half-thickness of the coronal view). Without a cord the views are
    centred on the rootlets.
    """
    img, spacing, _ = reorient(image, DISPLAY_AXCODES)
    roots = reorient(rootlets, DISPLAY_AXCODES)[0]
    roots = roots.astype(np.uint8 if roots.max() < 256 else np.int32)  # small: projected over whole volumes
    cord_d = reorient(cord, DISPLAY_AXCODES)[0] > 0 if cord is not None else None
    disc_d = reorient(discs, DISPLAY_AXCODES)[0].astype(np.int32) if discs is not None else None
    sz, sy, sx = spacing
    nz, ny, nx = img.shape
    centre_mask = cord_d if cord_d is not None and cord_d.any() else (roots > 0 if roots.any() else None)
    cy = _centre_curve(centre_mask, 1, nz, (ny - 1) / 2, max(1.0, 3.0 / sz))
    cx = _centre_curve(centre_mask, 2, nz, (nx - 1) / 2, max(1.0, 3.0 / sz))
    if centre_mask is not None and centre_mask is not cord_d:  # rootlets lie on both sides: centre on their middle
        cx = np.full(nz, np.median(np.argwhere(centre_mask)[:, 2]))

    rows = np.arange(nz)
    iy = np.clip(np.round(cy).astype(int), 0, ny - 1)
    ix = np.clip(np.round(cx).astype(int), 0, nx - 1)
    in_x = np.abs(np.arange(nx)[None, :] - cx[:, None]) <= slab_mm[0] / sx  # (nz, nx): sagittal slab
    in_y = np.abs(np.arange(ny)[None, :] - cy[:, None]) <= slab_mm[1] / sy  # (nz, ny): coronal slab

    # Rows worth showing: the rootlets (else the cord, else everything) plus a margin; a long cord or a whole-spine
    # field of view would otherwise shrink the rootlets to nothing.
    present = next((np.flatnonzero(a.any(axis=(1, 2))) for a in (roots > 0, cord_d) if a is not None and a.any()), rows)
    margin = max(margin_mm, 0.15 * np.ptp(present) * sz) / sz
    r0 = max(0, int(present.min() - margin))
    r1 = min(nz, int(present.max() + margin) + 1)

    def crop_cols(centre: np.ndarray, step: float, n: int) -> slice:
        span = np.ptp(centre[r0:r1]) / 2
        mid = (centre[r0:r1].max() + centre[r0:r1].min()) / 2
        half = half_width_mm / step + span
        return slice(max(0, int(mid - half)), min(n, int(np.ceil(mid + half)) + 1))

    pixel = max(min(spacing), 0.2)
    views = {}
    for name, bg, mip, cord2d, step, cols, sides, disc_col, slab in (
        ("sagittal", img[rows, :, ix], (roots * in_x[:, None, :]).max(axis=2),
         cord_d[rows, :, ix] if cord_d is not None else None, sy, crop_cols(cy, sy, ny), ("A", "P"), 1, slab_mm[0]),
        ("coronal", img[rows, iy, :], (roots * in_y[:, :, None]).max(axis=1),
         cord_d[rows, iy, :] if cord_d is not None else None, sx, crop_cols(cx, sx, nx), ("L", "R"), 2, slab_mm[1]),
    ):
        crop = (slice(r0, r1), cols)
        spacing2 = (sz, step)
        bg_sq = _square(bg[crop].astype(np.float32), spacing2, pixel, order=1)
        core = bg_sq[bg_sq > np.percentile(bg_sq, 5)] if bg_sq.size else bg_sq
        lo, hi = (np.percentile(core, [0.5, 99.5]) if core.size else (0.0, 1.0))
        view = View(name=name, image=bg_sq, rootlets=_square(mip[crop], spacing2, pixel, order=0),
                    cord=_square(cord2d[crop].astype(np.uint8), spacing2, pixel, order=0) > 0 if cord2d is not None else None,
                    pixel_mm=pixel, sides=sides, window=(float(lo), float(hi if hi > lo else lo + 1)), slab_mm=slab)
        if disc_d is not None:
            for z, y, x in np.argwhere(disc_d[r0:r1] > 0) + (r0, 0, 0):
                col = (y, x)[disc_col - 1]
                if cols.start <= col < cols.stop:
                    view.discs.append((int(disc_d[z, y, x]), (z - r0 + 0.5) * sz, (col - cols.start + 0.5) * step))
        views[name] = view
    return views


# ----------------------------------------------------------------------------------------------------------------
# Figures


def _outlined(**kw) -> dict:
    return {"path_effects": [patheffects.withStroke(linewidth=2.2, foreground="black")], **kw}


def rootlets_overlay(view: View) -> np.ndarray:
    """RGBA overlay of the rootlets: opaque level colours, transparent elsewhere."""
    rgba = np.zeros((*view.rootlets.shape, 4))
    for value in np.unique(view.rootlets[view.rootlets > 0]):
        rgba[view.rootlets == value] = (*to_rgb(level_colour(_spinal(int(value)))), 1.0)
    return rgba


def _draw_view(ax, view: View) -> None:
    """One panel: image, rootlets, cord outline, discs, orientation letters, a 10 mm bar; axes in mm."""
    w_mm, h_mm = view.extent_mm
    extent = (0, w_mm, h_mm, 0)
    ax.imshow(view.image, cmap="gray", vmin=view.window[0], vmax=view.window[1], extent=extent, interpolation="nearest")
    ax.imshow(rootlets_overlay(view), extent=extent, interpolation="nearest")
    if view.cord is not None and view.cord.any():
        cols, rows = ((np.arange(n) + 0.5) * view.pixel_mm for n in (view.cord.shape[1], view.cord.shape[0]))
        ax.contour(cols, rows, view.cord.astype(float), levels=[0.5], colors=CORD_COLOUR, linewidths=0.8,
                   linestyles="dashed").set(path_effects=[patheffects.withStroke(linewidth=2.2, foreground="black")])
    for value, row_mm, col_mm in view.discs:
        ax.plot(col_mm, row_mm, "o", ms=6, mfc="white", mec="black", mew=1.0, zorder=5)
        ax.text(col_mm - 2.5, row_mm, str(value), color="white", fontsize=8, ha="right", va="center", zorder=6,
                **_outlined())
    for text, pos, ha, va in ((view.sides[0], (0.02, 0.5), "left", "center"), (view.sides[1], (0.98, 0.5), "right", "center"),
                              ("S", (0.5, 0.99), "center", "top"), ("I", (0.5, 0.01), "center", "bottom")):
        ax.text(*pos, text, transform=ax.transAxes, color="white", fontsize=9, ha=ha, va=va, **_outlined())
    bar_x, bar_y = 0.04 * w_mm, 0.97 * h_mm
    ax.plot([bar_x, bar_x + 10], [bar_y, bar_y], color="white", lw=2.5, solid_capstyle="butt")
    ax.text(bar_x + 5, bar_y - 1, "10 mm", color="white", fontsize=7, ha="center", va="bottom", **_outlined())
    ax.set_xlim(0, w_mm)
    ax.set_ylim(h_mm, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_color("#555555")
    across = "left-right" if view.name == "sagittal" else "front-back"
    ax.set_title(f"{view.name}\nrootlets within ±{view.slab_mm:g} mm {across}", color="#dddddd", fontsize=8.5)


def rootlets_figure(views: dict[str, View], path: Path, title: str, caption: str = "") -> dict:
    """Draw both views side by side at one scale; returns each panel's pixel box in the PNG and its size in mm."""
    order = [views["sagittal"], views["coronal"]]
    height_mm = order[0].extent_mm[1]
    scale = float(np.clip(720.0 / height_mm, 2.5, 9.0))  # screen px per mm
    dpi = 100
    left, gap, right, top, bottom = 20, 60, 60, 64, 96
    widths = [v.extent_mm[0] * scale for v in order]
    fig_w = left + sum(widths) + gap + right
    fig_h = top + height_mm * scale + bottom
    fig = Figure(figsize=(fig_w / dpi, fig_h / dpi), dpi=dpi, facecolor="#1e1e1e")
    fig.suptitle(title, color="white", fontsize=11, y=1 - 8 / fig_h, va="top")
    if caption:
        fig.text(0.5, 4 / fig_h, caption, color="#9a9a9a", fontsize=7, ha="center", va="bottom")
    axes, x = [], left
    for view, width in zip(order, widths, strict=True):
        axes.append(fig.add_axes((x / fig_w, bottom / fig_h, width / fig_w, view.extent_mm[1] * scale / fig_h)))
        _draw_view(axes[-1], view)
        x += width + gap
    # Level names beside the coronal view, at each level's rostro-caudal centre.
    coronal = views["coronal"]
    for value in sorted({int(v) for v in np.unique(coronal.rootlets) if v > 0}):
        row = np.argwhere(coronal.rootlets == value)[:, 0].mean()
        name = _spinal(value)
        axes[1].text(1.03, 1 - (row + 0.5) / coronal.rootlets.shape[0], name, transform=axes[1].transAxes,
                     color=level_colour(name), fontsize=9, fontweight="bold", ha="left", va="center", clip_on=False)
    levels_seen = sorted({int(v) for view in order for v in np.unique(view.rootlets) if v > 0})
    handles = [Patch(facecolor=level_colour(_spinal(v)), label=_spinal(v)) for v in levels_seen]
    if any(view.cord is not None and view.cord.any() for view in order):
        handles.append(Line2D([], [], color=CORD_COLOUR, lw=0.8, ls="--", label="cord outline", **_outlined()))
    if any(view.discs for view in order):
        handles.append(Line2D([], [], marker="o", ls="", mfc="white", mec="black", label="disc no."))
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=int(np.ceil(len(handles) / 2)), frameon=False, fontsize=8,
                   handlelength=1.4, columnspacing=1.0, labelcolor="white", bbox_to_anchor=(0.5, 16 / fig_h))
    fig.canvas.draw()
    panels = {}
    for view, ax in zip(order, axes, strict=True):
        box = ax.get_window_extent()
        panels[view.name] = {"box_px": [int(round(box.x0)), int(round(fig_h - box.y1)), int(round(box.x1)),
                                        int(round(fig_h - box.y0))],
                             "extent_mm": [round(v, 3) for v in view.extent_mm]}
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, facecolor=fig.get_facecolor(), format="png")
    return panels


def _pairs(shift: pd.DataFrame | None) -> pd.DataFrame:
    """The pairs to link: the paper's shifted pairing when present, else the unshifted one."""
    if shift is None or shift.empty:
        return pd.DataFrame(columns=["vertebral_level", "spinal_level", "vertebral_mid_mm", "spinal_mid_mm", "shift_mm"])
    shift = shift.dropna(subset=["shift_mm"])
    kinds = set(shift["pairing"])
    return shift[shift["pairing"] == ("shifted" if "shifted" in kinds else "unshifted")]


def levels_figure(levels: pd.DataFrame, shift: pd.DataFrame | None, path: Path, title: str) -> None:
    """Vertebral and spinal levels as bars along the cord, paired midpoints linked, and the shift per pair."""
    ok = levels[levels["status"] == "ok"] if "status" in levels else levels
    vert, spin = ok[ok["kind"] == "vertebral"], ok[ok["kind"] == "spinal"]
    pairs = _pairs(shift)
    references = levels["reference"].dropna() if "reference" in levels else pd.Series(dtype=object)
    reference = str(references.iloc[0]) if len(references) else "the reference"
    span = pd.concat([ok["start_mm"], ok["end_mm"]]).dropna()
    lo, hi = (float(span.min()), float(span.max())) if len(span) else (0.0, 1.0)
    pad = 0.04 * (hi - lo) + 2
    fig = Figure(figsize=(6.3, 6.4), dpi=100)
    ax, ax_shift = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [1.6, 1], "wspace": 0.08})
    fig.suptitle(title, fontsize=11)
    for i, row in enumerate(vert.sort_values("start_mm").itertuples()):
        ax.add_patch(Rectangle((-0.32, row.start_mm), 0.64, row.end_mm - row.start_mm, facecolor=VERTEBRA_COLOURS[i % 2],
                               edgecolor="#555555", lw=0.8))
        ax.text(0, row.mid_mm, row.level, ha="center", va="center", fontsize=9)
    for row in spin.itertuples():
        ax.add_patch(Rectangle((0.68, row.start_mm), 0.64, row.end_mm - row.start_mm, facecolor=level_colour(row.level),
                               edgecolor="#333333", lw=0.8, alpha=0.9))
        ax.text(1.0, row.mid_mm, row.level, ha="center", va="center", fontsize=9, fontweight="bold", color="white",
                **_outlined())
    for row in pairs.itertuples():
        ax.plot([0.32, 0.68], [row.vertebral_mid_mm, row.spinal_mid_mm], color="#333333", lw=1, ls="--")
        ax.plot([0.32, 0.68], [row.vertebral_mid_mm, row.spinal_mid_mm], "o", color="#333333", ms=3)
        ax_shift.plot(row.shift_mm, row.spinal_mid_mm, "o", color=level_colour(row.spinal_level), mec="#333333", ms=8)
        ax_shift.annotate(f"{row.shift_mm:+.1f}  VL {row.vertebral_level} / SL {row.spinal_level}",
                          (row.shift_mm, row.spinal_mid_mm), xytext=(8, 0), textcoords="offset points", va="center",
                          fontsize=8)
    if len(pairs):
        ax_shift.plot(pairs["shift_mm"], pairs["spinal_mid_mm"], color="#999999", lw=1, zorder=0)
        limit = max(10.0, float(np.abs(pairs["shift_mm"]).max()) * 1.3)
        ax_shift.set_xlim(-limit, limit * 2.2)
    else:
        why = "no vertebral levels\n(no disc labels)" if vert.empty else "no level present\nin both kinds"
        ax_shift.text(0.5, 0.5, why, transform=ax_shift.transAxes, ha="center", va="center", color="#777777")
        ax_shift.set_xlim(-10, 22)
    if vert.empty:
        ax.text(0, 0.5, "no disc labels:\nvertebral levels\nnot computed", transform=ax.get_xaxis_transform(),
                ha="center", va="center", color="#777777", fontsize=8)
    ax_shift.axvline(0, color="#777777", lw=0.8)
    pairing = pairs["pairing"].iloc[0] if len(pairs) and "pairing" in pairs else ""
    ax_shift.set_title(f"shift per level ({pairing} pairing)" if pairing else "shift per level", fontsize=9)
    ax_shift.set_xlabel("vertebral − spinal midpoint (mm)")
    ax_shift.grid(axis="x", color="#eeeeee")
    ax.set_xlim(-0.6, 1.6)
    ax.set_ylim(hi + pad, lo - pad)  # rostral at the top
    ax.set_xticks([0, 1], ["vertebral\n(discs)", "spinal\n(rootlets)"])
    ax.set_ylabel(f"distance from {reference} along the cord (mm)")
    ax.set_title("levels along the cord", fontsize=9)
    for a in (ax, ax_shift):
        a.spines[["top", "right"]].set_visible(False)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png", bbox_inches="tight")


def thumbnail(views: dict[str, View], path: Path, height: int = 160) -> None:
    """A small picture of both views (background + rootlets) for the dataset index."""
    from PIL import Image

    parts = []
    for view in (views["sagittal"], views["coronal"]):
        lo, hi = view.window
        grey = np.clip((view.image - lo) / (hi - lo), 0, 1)[..., None] * np.ones(3)
        overlay = rootlets_overlay(view)
        parts += [grey * (1 - overlay[..., 3:]) + overlay[..., :3] * overlay[..., 3:], np.zeros((grey.shape[0], 2, 3))]
    picture = Image.fromarray((np.concatenate(parts[:-1], axis=1) * 255).astype(np.uint8))
    width = max(1, round(picture.width * height / picture.height))
    with atomic_path(path) as tmp:
        picture.resize((width, height), Image.Resampling.LANCZOS).save(tmp, format="PNG")


# ----------------------------------------------------------------------------------------------------------------
# Inputs

ImageLike = str | os.PathLike | nib.Nifti1Image
TableLike = str | os.PathLike | pd.DataFrame

LEVEL_COLUMNS = ("kind", "level", "value", "start_mm", "end_mm", "mid_mm", "status")
SHIFT_COLUMNS = ("pairing", "vertebral_level", "spinal_level", "vertebral_mid_mm", "spinal_mid_mm", "shift_mm")


def _image(source: ImageLike, kind: str) -> nib.Nifti1Image:
    return source if isinstance(source, nib.spatialimages.SpatialImage) else load(source, kind)


def _labels(source: ImageLike | None, kind: str, reference: nib.Nifti1Image, notes: list[str]) -> nib.Nifti1Image | None:
    """A label image on the reference grid (nearest-neighbour resampling when it comes on another grid)."""
    if source is None:
        return None
    img = source if isinstance(source, nib.spatialimages.SpatialImage) else load_labels(source, kind)[0]
    if img.shape[:3] == reference.shape[:3] and np.allclose(img.affine, reference.affine, atol=1e-3):
        return img
    from nibabel.processing import resample_from_to

    data = np.asanyarray(img.dataobj)
    resampled = resample_from_to(nib.Nifti1Image(data.astype(np.int32), img.affine), reference, order=0)
    if data.any() and not np.asanyarray(resampled.dataobj).any():
        raise RootletsError(f"{kind} {_name(source)}: does not overlap the image in space; give the {kind} of this image")
    notes.append(f"{kind} came on another grid and was resampled to the image grid (nearest neighbour) for display")
    return resampled


def _sidecar_provenance(kind: str, source) -> dict:
    """What a label file's JSON sidecar (SCT style, as our segmentation and chain write them) says made it."""
    if not isinstance(source, str | os.PathLike):
        return {}
    path = Path(source).with_name(stem(source) + ".json")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
        made = content.get("GeneratedBy", [{}])[0]
    except (OSError, ValueError, AttributeError, IndexError, TypeError):
        return {}
    found = {f"{kind} made by": made.get("Command") or made.get("Name"), f"{kind} source": content.get("Source")}
    if kind == "rootlets":
        found |= {"release": made.get("Release"), "model URL": made.get("ModelURL")}
    return {k: v for k, v in found.items() if v}


def _name(source) -> str:
    return str(source) if isinstance(source, str | os.PathLike) else "(in-memory image)"


def _table(source: TableLike | None, kind: str, columns: tuple[str, ...]) -> pd.DataFrame | None:
    """A levels or shift table from a DataFrame, a CSV or a JSON file (records, or {"levels": [...]})."""
    if source is None:
        return None
    if isinstance(source, pd.DataFrame):
        table = source
    else:
        path = Path(source)
        try:
            if path.suffix == ".json":
                data = json.loads(path.read_text())
                table = pd.DataFrame(data.get(kind, data) if isinstance(data, dict) else data)
            else:
                table = pd.read_csv(path)
        except (OSError, ValueError) as exc:
            raise RootletsError(f"{kind} table {path}: unreadable ({exc}); "
                                "give the CSV or JSON written by `rootlets levels`") from None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise RootletsError(f"{kind} table {_name(source)}: missing columns {', '.join(missing)}; "
                            "give the table written by `rootlets levels`")
    return table


def subject_key(name: str) -> str:
    """A folder-safe key for a subject name (letters, digits, '.', '_', '-')."""
    key = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "subject"
    return key


def _span_text(names: list[str]) -> str:
    return f"{names[0]}–{names[-1]} ({len(names)})" if len(names) > 2 else ", ".join(names) or "none"


def _jsonable(value):
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if isinstance(value, os.PathLike):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


# ----------------------------------------------------------------------------------------------------------------
# HTML


def _templates():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "data"),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters["colour"] = level_colour
    env.globals["zip"] = zip
    return env


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _read_records(qc_dir: Path) -> list[dict]:
    records = []
    for path in sorted((qc_dir / RECORDS).glob("*.json")):
        try:
            records.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):  # records are written atomically; anything else is not ours
            continue
    return sorted(records, key=lambda r: r["subject"].lower())


def rebuild_index(qc_dir: str | os.PathLike) -> Path:
    """Regenerate ``<qc_dir>/index.html`` from every subject record, under the folder's lock."""
    qc_dir = writable_folder(qc_dir, "QC folder", "-qc")
    (qc_dir / RECORDS).mkdir(exist_ok=True)
    try:
        with FileLock(qc_dir / LOCK, timeout=LOCK_TIMEOUT_S):
            records = _read_records(qc_dir)
            html = _templates().get_template("qc_index.html").render(
                records=records, version=__version__, created=_now(),
                n_warn=sum(bool(r["warnings"]) for r in records))
            index = qc_dir / "index.html"
            _write_text(index, html)
    except Timeout:
        raise RootletsError(f"QC folder {qc_dir}: another process held {LOCK} for {LOCK_TIMEOUT_S} s; this subject's "
                            "record is saved, run `rootlets_task.rebuild_index` on the folder later") from None
    return index


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------------------------------------------
# The per-subject entry point


def _levels_summary(levels: pd.DataFrame | None, shift: pd.DataFrame | None) -> dict:
    """What the index shows of a subject's levels: names found per kind and the shift per linked pair."""
    ok = levels[levels["status"] == "ok"] if levels is not None else pd.DataFrame(columns=LEVEL_COLUMNS)
    spinal = ok[ok["kind"] == "spinal"].sort_values("value")["level"].tolist()
    vertebral = ok[ok["kind"] == "vertebral"].sort_values("value")["level"].tolist()
    return {"spinal_levels": spinal, "vertebral_levels": vertebral,
            "spinal_text": _span_text(spinal), "vertebral_text": _span_text(vertebral),
            "shifts": [{"pairing": p.pairing, "vertebral_level": p.vertebral_level, "spinal_level": p.spinal_level,
                        "shift_mm": round(float(p.shift_mm), 2)} for p in _pairs(shift).itertuples()]}


def _page_tables(levels: pd.DataFrame | None, shift: pd.DataFrame | None) -> dict[str, tuple[list, list]]:
    """Levels and shift tables as (columns, rows) for the subject page, rounded, blanks for missing values."""
    tables = {}
    if levels is not None:
        tables["levels"] = levels[[c for c in ("kind", "level", "value", "start_mm", "end_mm", "mid_mm", "height_mm",
                                               "n_voxels", "volume_mm3", "reference", "status") if c in levels]]
    if shift is not None:
        tables["shift"] = shift[list(SHIFT_COLUMNS)]
    return {name: (list(t.columns), t.round(2).astype(object).where(t.notna(), "").values.tolist())
            for name, t in tables.items()}


def qc_subject(qc_dir: str | os.PathLike, image: ImageLike, rootlets: ImageLike, cord: ImageLike | None = None,
               discs: ImageLike | None = None, levels: TableLike | None = None, shift: TableLike | None = None, *,
               subject: str | None = None, provenance: Mapping | None = None, warnings: Iterable[str] = (),
               slab_mm: tuple[float, float] = SLAB_MM) -> Path:
    """Write one subject's QC (figures, page, record) into ``qc_dir`` and refresh the dataset index.

    Images are NIfTI paths or nibabel images (labels on another grid are resampled with nearest neighbour);
    ``levels``/``shift`` are the tables of :mod:`rootlets_task.levels` (DataFrame, CSV or JSON). ``provenance``
    (release, sources of cord and discs, settings ...) is shown as given; ``warnings`` are shown on the page and
    in the index. Running again for the same subject replaces its entry. Returns the subject page.
    """
    qc_dir = Path(qc_dir)
    notes: list[str] = []
    img = _image(image, "image")
    roots = _labels(rootlets, "rootlets", img, notes)
    cord_img = _labels(cord, "cord", img, notes)
    disc_img = _labels(discs, "discs", img, notes)
    levels_df = _table(levels, "levels", LEVEL_COLUMNS)
    shift_df = _table(shift, "shift", SHIFT_COLUMNS)
    if shift_df is None and levels_df is not None:
        shift_df = shift_table(levels_df)
    subject = subject or (stem(image) if isinstance(image, str | os.PathLike) else "subject")
    key = subject_key(subject)

    warnings = list(warnings)
    if not np.asanyarray(roots.dataobj).any():
        warnings.append("no rootlets in the segmentation")
    if cord_img is None:
        notes.append("no cord segmentation given: views are centred on the rootlets")
    if levels_df is not None and "status" in levels_df:
        for row in levels_df[levels_df["status"] != "ok"].itertuples():
            warnings.append(f"{row.kind} level {row.level}: {row.status}")

    out = writable_folder(qc_dir, "QC folder", "-qc") / key
    out.mkdir(exist_ok=True)
    views = display_views(img, roots, cord_img, disc_img, slab_mm=slab_mm)
    zooms = "×".join(f"{z:g}" for z in img.header.get_zooms()[:3])
    caption = (f"image {orientation(img)} {zooms} mm, shown at {views['coronal'].pixel_mm:g} mm pixels; "
               f"rootlets_task {__version__}")
    panels = rootlets_figure(views, out / "rootlets.png", f"{subject}: rootlets by spinal level", caption)
    thumbnail(views, out / "thumbnail.png")
    figures = {"rootlets": {"file": "rootlets.png", "panels": panels}}
    if levels_df is not None:
        levels_figure(levels_df, shift_df, out / "levels.png", f"{subject}: spinal vs vertebral levels")
        figures["levels"] = {"file": "levels.png"}
    else:
        (out / "levels.png").unlink(missing_ok=True)  # from an earlier run of this subject

    files = {"image file": _name(image), "rootlets file": _name(rootlets),
             "cord file": _name(cord) if cord is not None else "none",
             "discs file": _name(discs) if discs is not None else "none"}
    sidecars = {}  # release and sources, read from the label files' JSON sidecars; the caller's provenance wins
    for kind, source in (("rootlets", rootlets), ("cord", cord), ("discs", discs)):
        sidecars.update(_sidecar_provenance(kind, source))
    record = {"subject": subject, "key": key, "created": _now(), "page": f"{key}/index.html",
              "thumbnail": f"{key}/thumbnail.png", "figures": figures, **_levels_summary(levels_df, shift_df),
              "warnings": warnings, "notes": notes,
              "provenance": _jsonable({"rootlets_task": __version__, "python": platform.python_version(), **files,
                                       **sidecars, **(provenance or {})})}
    page = out / "index.html"
    _write_text(page, _templates().get_template("qc_subject.html").render(r=record, tables=_page_tables(levels_df, shift_df)))
    (qc_dir / RECORDS).mkdir(parents=True, exist_ok=True)
    _write_text(qc_dir / RECORDS / f"{key}.json", json.dumps(record, indent=1))
    rebuild_index(qc_dir)
    return page
