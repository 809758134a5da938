"""The QC figures (matplotlib, no display needed): rootlets over the image, levels along the cord, a thumbnail.

Every text drawn is plain text: a ``$`` in a subject name is shown as it is, never read as mathtext.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import patheffects
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from rootlets_task.core.colours import CORD_COLOUR, VERTEBRA_COLOURS, level_colour
from rootlets_task.core.files import atomic_path
from rootlets_task.core.names import level_name
from rootlets_task.qc.views import View


def plain(text: str) -> str:
    """``text`` safe for matplotlib: ``$`` escaped so that it is never parsed as mathtext."""
    return str(text).replace("$", r"\$")


def _spinal(value: int) -> str:
    return level_name(value, "spinal")


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
    fig.suptitle(plain(title), color="white", fontsize=11, y=1 - 8 / fig_h, va="top")
    if caption:
        fig.text(0.5, 4 / fig_h, plain(caption), color="#9a9a9a", fontsize=7, ha="center", va="bottom")
    axes: list[Axes] = []
    x: float = left
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
    handles: list[Artist] = [Patch(facecolor=level_colour(_spinal(v)), label=_spinal(v)) for v in levels_seen]
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
    span = pd.concat([ok["rostral_mm"], ok["caudal_mm"]]).dropna()
    lo, hi = (float(span.min()), float(span.max())) if len(span) else (0.0, 1.0)
    pad = 0.04 * (hi - lo) + 2
    fig = Figure(figsize=(6.3, 6.4), dpi=100)
    ax, ax_shift = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [1.6, 1], "wspace": 0.08})
    fig.suptitle(plain(title), fontsize=11)
    for i, row in enumerate(vert.sort_values("rostral_mm").itertuples()):
        ax.add_patch(Rectangle((-0.32, row.rostral_mm), 0.64, row.caudal_mm - row.rostral_mm, facecolor=VERTEBRA_COLOURS[i % 2],
                               edgecolor="#555555", lw=0.8))
        ax.text(0, row.mid_mm, row.level, ha="center", va="center", fontsize=9)
    for row in spin.itertuples():
        ax.add_patch(Rectangle((0.68, row.rostral_mm), 0.64, row.caudal_mm - row.rostral_mm, facecolor=level_colour(row.level),
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


def strip(views: dict[str, View], path: Path, height: int = 28) -> None:
    """The coronal view (background + rootlets) lying down, rostral end on the left: one line of the dataset index
    shows each subject's levels in order, left to right."""
    from PIL import Image

    view = views["coronal"]
    lo, hi = view.window
    grey = np.clip((view.image - lo) / (hi - lo), 0, 1)[..., None] * np.ones(3)
    overlay = rootlets_overlay(view)
    picture = np.rot90(grey * (1 - overlay[..., 3:]) + overlay[..., :3] * overlay[..., 3:])  # row 0 (rostral) -> left
    image = Image.fromarray((picture * 255).astype(np.uint8))
    width = max(1, round(image.width * height / image.height))
    with atomic_path(path) as tmp:
        image.resize((width, height), Image.Resampling.LANCZOS).save(tmp, format="PNG")


# ---------------------------------------------------------------------------------------------------------------
# The two images of an entry in SCT's QC report (same size: SCT's page shows the overlay over the background)

SCT_WIDTH_PX = 1060   # SCT's QC images are this wide (their height follows the mosaic)
SCT_DPI = 300
_THIN_STROKE = [patheffects.withStroke(linewidth=0.8, foreground="black")]  # text outline at 300 dpi


def _equalized(image: np.ndarray) -> np.ndarray:
    """Rank histogram equalization to [0, 1] over the finite pixels (NaN -> 0): the contrast SCT's QC uses."""
    finite = np.isfinite(image)
    values = np.sort(image[finite])
    out = np.zeros(image.shape, dtype=np.float32)
    if values.size:
        out[finite] = np.searchsorted(values, image[finite], side="right") / values.size
    return out


def _upsampled(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a 2D array to ``shape`` (labels keep their values)."""
    rows = np.minimum((np.arange(shape[0]) + 0.5) * a.shape[0] / shape[0], a.shape[0] - 1).astype(int)
    cols = np.minimum((np.arange(shape[1]) + 0.5) * a.shape[1] / shape[1], a.shape[1] - 1).astype(int)
    return a[np.ix_(rows, cols)]


def _outline(labels: np.ndarray) -> np.ndarray:
    """Pixels of a label map that touch a pixel of another value (4-neighbours), i.e. the blobs' outlines."""
    padded = np.pad(labels, 1, mode="edge")
    centre = padded[1:-1, 1:-1]
    edge = np.zeros(labels.shape, dtype=bool)
    for dr, dc in ((0, 1), (2, 1), (1, 0), (1, 2)):
        edge |= padded[dr:dr + labels.shape[0], dc:dc + labels.shape[1]] != centre
    return edge & (labels > 0)


def _canvas(shape: tuple[int, int]) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(shape[1] / SCT_DPI, shape[0] / SCT_DPI), dpi=SCT_DPI)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    ax.set_xlim(-0.5, shape[1] - 0.5)
    ax.set_ylim(shape[0] - 0.5, -0.5)
    return fig, ax


def _save(fig: Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=SCT_DPI, format="png", transparent=True)


def sct_entry_images(mosaic, background: Path, overlay: Path, width: int = SCT_WIDTH_PX) -> tuple[int, int]:
    """Draw an SCT-style axial QC entry: ``background`` (equalized grey mosaic with the A/P/L/R letters on the first
    tile) and ``overlay`` (transparent: rootlets in their level colours, black outlines, level names), both
    ``width`` pixels wide and of the same height. Returns (width, height)."""
    scale = width / mosaic.image.shape[1]
    shape = (max(1, int(round(mosaic.image.shape[0] * scale))), width)
    fig, ax = _canvas(shape)
    ax.imshow(_upsampled(_equalized(mosaic.image), shape), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    th, tw = (n * scale for n in mosaic.tile)
    for text, x, y, ha, va in (("A", tw / 2, 2, "center", "top"), ("P", tw / 2, th - 2, "center", "bottom"),
                               ("L", 2, th / 2, "left", "center"), ("R", tw - 2, th / 2, "right", "center")):
        ax.text(x, y, text, color="yellow", fontsize=4, ha=ha, va=va, path_effects=_THIN_STROKE)
    _save(fig, background)

    labels = _upsampled(mosaic.rootlets, shape)
    rgba = np.zeros((*shape, 4), dtype=np.float32)
    for value in np.unique(labels[labels > 0]):
        rgba[labels == value] = (*to_rgb(level_colour(_spinal(int(value)))), 1.0)
    rgba[_outline(labels)] = (0.0, 0.0, 0.0, 1.0)
    fig, ax = _canvas(shape)
    ax.imshow(rgba, interpolation="nearest")
    for r0, c0, _ in mosaic.tiles:
        rows, cols = slice(int(round(r0 * scale)), int(round(r0 * scale + th))), slice(int(round(c0 * scale)),
                                                                                         int(round(c0 * scale + tw)))
        tile = labels[rows, cols]
        for value in np.unique(tile[tile > 0]):
            y, x = np.argwhere(tile == value).mean(axis=0)
            name = _spinal(int(value))
            ax.text(cols.start + x, rows.start + min(y + th * 0.18, th - 4), name, color=level_colour(name), fontsize=3.5,
                    ha="center", va="center", fontweight="bold", path_effects=_THIN_STROKE)
    _save(fig, overlay)
    return shape[1], shape[0]


def measure_figure(slices: pd.DataFrame, kinds: list[str], metrics: dict[str, str], path: Path, title: str) -> None:
    """Each metric along the cord (one panel per metric, rostral at the left), its slices coloured by level, above a
    strip per kind of levels (spinal, vertebral ...) showing where each level lies.

    ``slices``: :attr:`rootlets_task.measures.perlevel.MeasureResult.slices`; ``metrics``: {column: axis label}.
    """
    fig = Figure(figsize=(7.5, 1.0 + 2.0 * len(metrics) + 0.35 * len(kinds)), dpi=100)
    ratios = [0.35] * len(kinds) + [2.0] * len(metrics)
    axes = fig.subplots(len(ratios), 1, sharex=True, gridspec_kw={"height_ratios": ratios, "hspace": 0.15})
    axes = np.atleast_1d(axes)
    fig.suptitle(plain(title), fontsize=11)
    x = slices["position_mm"].to_numpy(dtype=float)
    step = float(np.median(np.diff(x))) if len(x) > 1 else 1.0
    for ax, kind in zip(axes, kinds, strict=False):
        ax.set_yticks([])
        ax.set_ylabel(plain(kind), rotation=0, ha="right", va="center", fontsize=8)
        for value in sorted(set(slices[kind][slices[kind] > 0].tolist())):
            name = level_name(int(value), "vertebral" if kind.startswith("vertebral") else "spinal")
            at = x[slices[kind].to_numpy() == value]
            colour = VERTEBRA_COLOURS[int(value) % 2] if kind.startswith("vertebral") else level_colour(name)
            ax.add_patch(Rectangle((at.min() - step / 2, 0), at.max() - at.min() + step, 1, facecolor=colour,
                                   edgecolor="#333333", lw=0.5))
            ax.text((at.min() + at.max()) / 2, 0.5, name, ha="center", va="center", fontsize=7)
        ax.set_ylim(0, 1)
    colour_kind = kinds[0] if kinds else None
    for ax, (column, label) in zip(axes[len(kinds):], metrics.items(), strict=True):
        values = slices[column].to_numpy(dtype=float)
        ax.plot(x, values, color="#999999", lw=1, zorder=0)
        if colour_kind is not None:
            naming = "vertebral" if colour_kind.startswith("vertebral") else "spinal"
            colours = [level_colour(level_name(int(v), naming)) if v > 0 else "#ffffff" for v in slices[colour_kind]]
            ax.scatter(x, values, c=colours, edgecolors="#333333", linewidths=0.4, s=18, zorder=1)
        ax.set_ylabel(plain(label), fontsize=9)
        ax.grid(axis="y", color="#eeeeee")
        ax.spines[["top", "right"]].set_visible(False)
    axes[-1].set_xlabel("distance along the cord from its rostral end (mm)")
    if len(x):
        axes[-1].set_xlim(x.min() - step, x.max() + step)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png", bbox_inches="tight")
