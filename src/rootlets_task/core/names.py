"""Level names: the value of a spinal or vertebral level label -> its name (C2, T1, L1 ...)."""


def level_name(value: int, kind: str) -> str:
    """Level value -> name. Spinal 1..8 = C1..C8, 9.. = T1..; vertebral 1..7 = C1..C7, 8.. = T1.."""
    cervical = 8 if kind == "spinal" else 7
    return f"C{value}" if value <= cervical else f"T{value - cervical}"
