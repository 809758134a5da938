"""Level names along the whole spine: the value of a spinal or vertebral level label -> its name (C2, T1, L1, Co ...).

Vertebral levels follow SCT's table (``spinalcordtoolbox/types.py``, ``Centerline.regions_labels``): 1-7 = C1-C7,
8-19 = T1-T12, 20-24 = L1-L5, 25-29 = S1-S5, 30 = Co. Spinal levels (and rootlets) have eight cervical segments:
1-8 = C1-C8, 9-20 = T1-T12, 21-25 = L1-L5, 26-30 = S1-S5, 31 = Co. A value beyond the table is named by its number.
"""

from __future__ import annotations

import re

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


_SPINAL_NAME = re.compile(r"(?:^|[^a-z0-9])(c[1-8]|t1[0-2]|t[1-9]|l[1-5]|s[1-5]|co)$", re.IGNORECASE)
_LEVEL_NUMBER = re.compile(r"^(?:lvl|level)?_?(\d+)$", re.IGNORECASE)


def dataset_levels(labels: dict) -> dict[int, int] | None:
    """{network class value: spinal level value} from the ``labels`` of an nnU-Net ``dataset.json``.

    SCT's rootlets releases name their classes ``lvl<n>`` with n the level value itself (``lvl2`` = 2 = C2): no
    mapping (None). A model of other levels (a thoracic or lumbar one, trained on consecutive classes 1, 2, 3 ...) may
    name each class by its level, alone or at the end of the name (``L1``, ``rootlets_T11``, ``level-S1``): each class
    is then mapped to that spinal level (SCT's spinal numbering: L1 = 21, S1 = 26). Names of neither kind, or a mix:
    None (values kept as the network gives them).
    """
    mapping: dict[int, int] = {}
    numbered = True
    for name, value in labels.items():
        if not isinstance(value, int) or isinstance(value, bool) or value == 0 or str(name).lower() == "background":
            continue
        named = _SPINAL_NAME.search(str(name).strip())
        number = _LEVEL_NUMBER.match(str(name).strip())
        numbered = numbered and number is not None and int(number.group(1)) == value
        if named is None:
            mapping = {}
            break
        mapping[value] = level_value(named.group(1), "spinal")  # type: ignore[assignment]
    if numbered or not mapping or mapping == {v: v for v in mapping}:
        return None
    return mapping
