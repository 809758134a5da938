"""One colour per level, shared by every picture and viewer file the package makes (QC, statistics, lookup tables).

Ordered in hue from rostral (warm) to caudal (cool/magenta), so neighbouring levels never look alike.
"""

from __future__ import annotations

import re

LEVEL_COLOURS = {
    "C1": "#a6611a", "C2": "#e31a1c", "C3": "#ff7f00", "C4": "#ffd92f", "C5": "#33a02c", "C6": "#17becf",
    "C7": "#1f78b4", "C8": "#6a3d9a", "T1": "#e7298a", "T2": "#b15928", "T3": "#8dd3c7", "T4": "#fb9a99",
    "T5": "#cab2d6", "T6": "#66a61e", "T7": "#e6ab02", "T8": "#7570b3", "T9": "#d95f02", "T10": "#1b9e77",
    "T11": "#a6cee3", "T12": "#b2df8a", "L1": "#fdbf6f", "L2": "#bc80bd", "L3": "#80b1d3", "L4": "#fccde5",
    "L5": "#bebada", "S1": "#8c510a", "S2": "#01665e", "S3": "#c51b7d", "S4": "#4d9221", "S5": "#2166ac",
    "Co": "#762a83",
}  # every spinal and vertebral name of rootlets_task.core.names, C1 to Co
# matplotlib's qualitative "tab20" map, written out: importing matplotlib to read it creates ~/.config/matplotlib
TAB20 = ("#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#d62728", "#ff9896", "#9467bd", "#c5b0d5",
         "#8c564b", "#c49c94", "#e377c2", "#f7b6d2", "#7f7f7f", "#c7c7c7", "#bcbd22", "#dbdb8d", "#17becf", "#9edae5")
CORD_COLOUR = "#ffffff"
VERTEBRA_COLOURS = ("#d9d9d9", "#bdbdbd")


def level_colour(name: str) -> str:
    """Display colour of a level name (C2, T1, L1, Co ...); a name beyond the spine (a bare number) reuses a qualitative
    map (tab20)."""
    if name in LEVEL_COLOURS:
        return LEVEL_COLOURS[name]
    return TAB20[int(re.sub(r"\D", "", name) or 0) % len(TAB20)]
