"""One colour per level, shared by every picture and viewer file the package makes (QC, statistics, lookup tables).

Ordered in hue from rostral (warm) to caudal (cool/magenta), so neighbouring levels never look alike.
"""

from __future__ import annotations

import re

LEVEL_COLOURS = {
    "C1": "#a6611a", "C2": "#e31a1c", "C3": "#ff7f00", "C4": "#ffd92f", "C5": "#33a02c", "C6": "#17becf",
    "C7": "#1f78b4", "C8": "#6a3d9a", "T1": "#e7298a", "T2": "#b15928", "T3": "#8dd3c7", "T4": "#fb9a99",
}
CORD_COLOUR = "#ffffff"
VERTEBRA_COLOURS = ("#d9d9d9", "#bdbdbd")


def level_colour(name: str) -> str:
    """Display colour of a level name (C2, T1 ...); levels beyond the table reuse a qualitative map."""
    if name in LEVEL_COLOURS:
        return LEVEL_COLOURS[name]
    import matplotlib
    from matplotlib.colors import to_hex

    digits = int(re.sub(r"\D", "", name) or 0)
    return to_hex(matplotlib.colormaps["tab20"](digits % 20))
