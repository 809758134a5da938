"""Level names along the whole spine: the value of a spinal or vertebral level label -> its name (C2, T1, L1, Co ...).

Vertebral levels follow SCT's table (``spinalcordtoolbox/types.py``, ``Centerline.regions_labels``): 1-7 = C1-C7,
8-19 = T1-T12, 20-24 = L1-L5, 25-29 = S1-S5, 30 = Co. Spinal levels (and rootlets) have eight cervical segments:
1-8 = C1-C8, 9-20 = T1-T12, 21-25 = L1-L5, 26-30 = S1-S5, 31 = Co. A value beyond the table is named by its number.
"""

from __future__ import annotations

REGIONS = (("C", 7), ("T", 12), ("L", 5), ("S", 5), ("Co", 1))  # vertebral segments per region
KINDS = ("spinal", "vertebral")


def _table(kind: str) -> tuple[str, ...]:
    names = []
    for region, count in REGIONS:
        count += 1 if kind == "spinal" and region == "C" else 0  # eight cervical spinal segments, seven vertebrae
        names += [region] if region == "Co" else [f"{region}{i}" for i in range(1, count + 1)]
    return tuple(names)


NAMES = {kind: _table(kind) for kind in KINDS}  # index 0 = value 1
VALUES = {kind: {name: i + 1 for i, name in enumerate(NAMES[kind])} for kind in KINDS}


def level_name(value: int, kind: str) -> str:
    """Level value -> name (``kind``: spinal or vertebral): spinal 8 = C8, 9 = T1; vertebral 8 = T1, 20 = L1, 30 = Co."""
    names = NAMES[kind]
    value = int(value)
    return names[value - 1] if 1 <= value <= len(names) else str(value)


def level_value(name: str, kind: str) -> int | None:
    """Level name -> value (the inverse of :func:`level_name`); None for a name that is not a level of ``kind``."""
    name = str(name).strip()
    if name.isdigit():
        return int(name)
    return VALUES[kind].get(name[:1].upper() + name[1:].lower() if name.lower() == "co" else name.upper())
