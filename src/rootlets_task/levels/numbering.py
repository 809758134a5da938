"""Level names, and the check that spinal levels sit where their names say relative to the vertebral levels.

The worst error a levels table can hold is a level with the wrong name: a network that numbers every rootlet one
level too low gives plausible-looking levels C3-C6 where the anatomy is C4-C7. :func:`check` catches this whenever
vertebral levels are known, with the correspondence the RootletSeg paper measured (Krejci et al. 2025, "shifted"
pairing): vertebral level Cn lies beside spinal level C(n+1) (VL C7 beside SL C8, VL T1 beside SL T1), the median
difference of their midpoints (vertebral minus spinal) growing from 0 mm at VL C2-SL C3 to 8.15 mm at VL T1-SL T1,
limits of agreement of all pairs about -6.5 to 13.2 mm.

The statistic, for each numbering offset k in -3..3 (k = the correct value minus the rootlet label):

1. pairs: every spinal level labelled L whose partner under k, vertebral level L + k - 1, is present and no more
   caudal than VL T1, nor the level as named (L - 1) (the paper measured C2-T1; caudally the spinal segments rise
   away from their vertebrae, by several levels in the lumbar cord, so no fixed shift holds there and those levels
   are left out of the check, with a note);
2. per pair, the residual = (vertebral midpoint - spinal midpoint) - the paper's median shift of that pair
   (:func:`expected_shift`: 0 mm at VL C2, +8.15/6 mm per level caudally, the ends held beyond C2 and T1);
3. the score of k = the median of the pairs' absolute residuals (robust to one odd level when there are 3 or more
   pairs).

A residual of half a level spacing is where the neighbouring numbering becomes the closer one, so the tolerance
is half the vertebral spacing measured in this image (median vertebral midpoint step; 16 mm when fewer than two
vertebral levels are known). Decision:

* ``ok``: the names as given fit (score of k = 0 within the tolerance);
* ``shifted``: the names as given do not fit (or no level has its partner), a k != 0 with at least two pairs
  (and at least half as many as k = 0) fits within the tolerance, and it beats k = 0 by a quarter level spacing at
  least (the decision margin). The warning names the levels, the shift of every pair under both numberings, and
  the likely correct names. Nothing is renamed unless asked (``renumber="suggested"``);
* ``unclear``: neither (levels and vertebrae do not line up under any numbering): a warning without a suggestion;
* ``not checked``: no vertebral levels, or no pair under any numbering.

It cannot say which of the two numberings is off: a shift means the rootlet labels or the disc labels are
wrong, and the warning says so.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from rootlets_task.core.names import level_name
from rootlets_task.levels.centerline import Centerline

OFFSETS = tuple(range(-3, 4))
PAPER_BIAS_MM = (0.0, 8.15)  # median VL - SL midpoint difference of VL C2-SL C3 and of VL T1-SL T1 (RootletSeg paper)
PAPER_LOA_MM = (-6.5, 13.2)  # limits of agreement over all shifted pairs (for the documentation; not a threshold)
FIRST_PAIR, LAST_PAIR = 2, 8  # vertebral values of VL C2 and VL T1
MIN_PAIRS = 2
DEFAULT_SPACING_MM = 16.0
SPACING_LIMITS_MM = (8.0, 30.0)  # a measured spacing outside these is not a vertebral column; the default is used
STATUSES = ("ok", "shifted", "unclear", "not checked")




def expected_shift(vertebral: int) -> float:
    """The paper's median (vertebral - spinal) midpoint difference of the pair VL ``vertebral`` - SL ``vertebral`` + 1.

    Linear between the published ends (0 mm at VL C2-SL C3, 8.15 mm at VL T1-SL T1), held constant beyond them.
    """
    lo, hi = PAPER_BIAS_MM
    t = (min(max(vertebral, FIRST_PAIR), LAST_PAIR) - FIRST_PAIR) / (LAST_PAIR - FIRST_PAIR)
    return lo + t * (hi - lo)


@dataclass
class Pairing:
    """Spinal and vertebral levels paired under one numbering offset."""

    offset: int
    pairs: list[dict]
    n: int
    median_residual_mm: float | None
    score_mm: float | None  # median absolute residual


@dataclass
class NumberingCheck:
    """What :func:`check` found; ``offset``: the suggested correction (correct value = label + offset), 0 unless shifted."""

    status: str
    offset: int
    spacing_mm: float
    tolerance_mm: float
    margin_mm: float
    pairings: list[Pairing] = field(default_factory=list)
    text: str = ""
    applied: bool = False  # the rootlet labels were renumbered by ``offset`` (``renumber="suggested"``)

    @property
    def warns(self) -> bool:
        return self.status in ("shifted", "unclear")

    def pairing(self, offset: int) -> Pairing | None:
        return next((p for p in self.pairings if p.offset == offset), None)

    def renames(self, values) -> dict[str, str]:
        """{current spinal name: suggested name} for the given spinal values (empty unless shifted)."""
        if self.status != "shifted":
            return {}
        return {level_name(v, "spinal"): level_name(v + self.offset, "spinal") for v in sorted(values)}

    def to_dict(self) -> dict:
        return asdict(self)


def _spacing(vertebral: dict[int, float]) -> float:
    """Median midpoint step per vertebral level (mm), from consecutive known levels."""
    values = sorted(vertebral)
    steps = [abs(vertebral[b] - vertebral[a]) / (b - a) for a, b in zip(values, values[1:], strict=False)]
    spacing = float(np.median(steps)) if steps else DEFAULT_SPACING_MM
    return spacing if SPACING_LIMITS_MM[0] <= spacing <= SPACING_LIMITS_MM[1] else DEFAULT_SPACING_MM


def pair(spinal: dict[int, float], vertebral: dict[int, float], offset: int) -> Pairing:
    """The pairs under ``offset``: spinal level L (midpoint mm) with vertebral level L + offset - 1, and residuals."""
    pairs = []
    for value, mid in sorted(spinal.items()):
        v = value + offset - 1
        if v in vertebral and max(v, value - 1) <= LAST_PAIR:  # both the pair and the level as named within C2-T1
            shift = vertebral[v] - mid
            pairs.append({"spinal_level": level_name(value, "spinal"), "renamed": level_name(value + offset, "spinal"),
                          "vertebral_level": level_name(v, "vertebral"),
                          "spinal_mid_mm": mid, "vertebral_mid_mm": vertebral[v], "shift_mm": shift,
                          "expected_mm": expected_shift(v), "residual_mm": shift - expected_shift(v)})
    residuals = np.array([p["residual_mm"] for p in pairs])
    return Pairing(offset, pairs, len(pairs), float(np.median(residuals)) if len(pairs) else None,
                   float(np.median(np.abs(residuals))) if len(pairs) else None)


def check(spinal: dict[int, float], vertebral: dict[int, float]) -> NumberingCheck:
    """Whether spinal levels {value: midpoint mm} are named right relative to vertebral levels {value: midpoint mm}.

    Midpoints are distances along the cord from any one origin (only differences count). See the module doc.
    """
    spacing = _spacing(vertebral)
    tolerance, margin = spacing / 2, spacing / 4
    pairings = [pair(spinal, vertebral, k) for k in OFFSETS]
    result = NumberingCheck("not checked", 0, spacing, tolerance, margin, pairings)
    current = result.pairing(0)
    assert current is not None  # OFFSETS holds 0
    if not spinal or not vertebral:
        result.text = "numbering not checked: " + ("no vertebral levels" if not vertebral else "no spinal levels")
        return result
    needed = max(MIN_PAIRS, math.ceil(current.n / 2))
    others = [p for p in pairings if p.offset != 0 and p.n >= needed]
    best = min(others, key=lambda p: (p.score_mm, abs(p.offset)), default=None)
    score = current.score_mm  # None when no pair
    if score is not None and score <= tolerance:
        result.status = "ok"
    elif best is not None and best.score_mm is not None and best.score_mm <= tolerance and (
            score is None or score - best.score_mm >= margin):
        result.status, result.offset = "shifted", best.offset
    elif score is not None:
        result.status = "unclear"
    result.text = _text(result, spinal)
    beyond = [level_name(v, "spinal") for v in sorted(spinal) if v - 1 > LAST_PAIR]
    if beyond and result.status != "not checked":
        result.text += (f"; spinal levels {_span(beyond)} not checked (below VL T1-SL T1 no published correspondence "
                        "between spinal and vertebral levels)")
    return result


def _pairs_text(p: Pairing) -> str:
    """Each pair's shift (vertebral - spinal midpoint), the spinal level under the pairing's own numbering."""
    return ", ".join(f"VL {q['vertebral_level']}/SL {q['renamed']} {q['shift_mm']:+.1f}" for q in p.pairs)


def _span(names: list[str]) -> str:
    return f"{names[0]}-{names[-1]}" if len(names) > 2 else ", ".join(names)


def _text(result: NumberingCheck, spinal: dict[int, float]) -> str:
    """One line for the terminal, the JSON, the QC page and the batch summary."""
    current = result.pairing(0)
    assert current is not None  # OFFSETS holds 0
    names = [level_name(v, "spinal") for v in sorted(spinal)]
    if result.status == "not checked":
        return "numbering not checked: no spinal level lies beside a vertebral level under any numbering"
    scored = f"median |residual| {current.score_mm:.1f} mm over {current.n} pair(s)" if current.n else "no pair"
    if result.status == "ok":
        return (f"numbering check: spinal levels {_span(names)} sit where their names say relative to the vertebral "
                f"levels ({scored}, tolerance {result.tolerance_mm:.1f} mm)")
    if result.status == "unclear":
        return (f"numbering check: spinal levels {_span(names)} do not line up with the vertebral levels under any "
                f"numbering ({scored} as named, tolerance {result.tolerance_mm:.1f} mm; shifts vertebral - spinal "
                f"midpoint: {_pairs_text(current)}; expected 0 to 8 mm); check the rootlets and the disc labels")
    best = result.pairing(result.offset)
    assert best is not None  # the offset is one of OFFSETS
    renamed = [level_name(v + result.offset, "spinal") for v in sorted(spinal)]
    sign = f"{result.offset:+d}"
    return (f"numbering check: spinal levels {_span(names)} sit where {_span(renamed)} are expected relative to the "
            f"vertebral levels: likely correct numbering {', '.join(f'{a}->{b}' for a, b in zip(names, renamed, strict=True))} "
            f"(rootlet labels {sign}; or, if the rootlets are right, disc labels {-result.offset:+d}). Evidence: as named "
            f"{scored}" + (f" ({_pairs_text(current)})" if current.n else "")
            + f"; renumbered {sign}: median |residual| {best.score_mm:.1f} mm over {best.n} pairs ({_pairs_text(best)}); "
            f"expected shift 0 to 8 mm, tolerance {result.tolerance_mm:.1f} mm. Not renumbered "
            "(use -renumber suggested to apply)")


# ----------------------------------------------------------------------------------------------- other vertebral labels


def vertebral_from_bodies(bodies: np.ndarray, line: Centerline, affine: np.ndarray) -> dict[int, float]:
    """Vertebral midpoints {value: mm along ``line``} from vertebral-body labels (one voxel per body, value = vertebral
    level, e.g. SCT's ``labels.nii.gz`` for ``sct_register_to_template -l``): each body centre projected onto the
    centerline. A level's midpoint (halfway between its discs) is its body's centre up to the body's asymmetry."""
    from rootlets_task.levels.centerline import voxel_to_world

    points = np.argwhere(bodies > 0)
    values = bodies[tuple(points.T)].astype(int)
    return {int(v): float(mm) for v, mm in zip(values, line.project(voxel_to_world(affine, points)), strict=True)}


def vertebral_from_labelled_cord(labelled: np.ndarray, line: Centerline) -> dict[int, float]:
    """Vertebral midpoints {value: mm along ``line``} from a cord labelled by vertebral level (``sct_label_vertebrae``).

    The disc between levels v and v+1 is taken halfway between the most caudal slice of v and the most rostral slice
    of v+1 (slice distances along the centerline); a level bounded by two such discs gets their midpoint. The first
    and last labelled levels are cut by the field of view or the cord's end and are left out.
    """
    values = sorted(int(v) for v in np.unique(labelled[labelled > 0]))
    mm: dict[int, np.ndarray] = {}
    for v in values:
        slices = np.unique(np.argwhere(labelled == v)[:, line.axis])
        mm[v] = line.slice_mm(slices)
    discs = {v + 1: (mm[v].max() + mm[v + 1].min()) / 2 for v in values if v + 1 in mm}
    return {v: float((discs[v] + discs[v + 1]) / 2) for v in values if v in discs and v + 1 in discs}
