"""What a PyTorch checkpoint's pickle refers to, read without unpickling it (standard library only).

``torch.save`` writes a zip whose ``<name>/data.pkl`` holds the object tree; every class or function the tree
needs appears as a GLOBAL (protocol <= 3) or STACK_GLOBAL (protocol >= 4) opcode. Listing them with
``pickletools.genops`` is safe for untrusted files and tells which globals ``torch.load(weights_only=True)`` must
be allowed to import. Used by ``build.py`` (in the side venvs) and ``tests/test_release_formats.py``.
"""

from __future__ import annotations

import io
import pickletools
import zipfile
from pathlib import Path

_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"}


def data_pkl(checkpoint: bytes | str | Path) -> bytes:
    """The ``data.pkl`` record of a zip-format torch checkpoint (a path or the file's bytes)."""
    source = io.BytesIO(checkpoint) if isinstance(checkpoint, bytes) else checkpoint
    with zipfile.ZipFile(source) as zf:
        names = [n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(names) != 1:
            raise ValueError(f"not a zip-format torch checkpoint: {len(names)} data.pkl records")
        return zf.read(names[0])


def pickle_globals(pickled: bytes) -> list[str]:
    """Sorted ``module.name`` of every global a pickle imports (GLOBAL, INST and STACK_GLOBAL)."""
    found: set[str] = set()
    memo: dict[int, object] = {}
    stack: list[object] = []  # only strings are tracked exactly; anything else is a placeholder
    for opcode, arg, _ in pickletools.genops(pickled):
        name = opcode.name
        if name in ("GLOBAL", "INST"):
            module, attr = arg.split(" ", 1)
            found.add(f"{module}.{attr}")
            stack.append(None)
        elif name == "STACK_GLOBAL":
            attr, module = stack.pop(), stack.pop()
            if not (isinstance(module, str) and isinstance(attr, str)):
                raise ValueError("STACK_GLOBAL whose operands are not literal strings")
            found.add(f"{module}.{attr}")
            stack.append(None)
        elif name in _STRING_OPS:
            stack.append(arg.decode("latin-1") if isinstance(arg, bytes) else arg)
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1] if stack else None
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = stack[-1] if stack else None
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(memo.get(arg))
        else:
            stack.append(None)  # the exact stack effect does not matter: STACK_GLOBAL follows its two strings
    return sorted(found)


def checkpoint_globals(checkpoint: bytes | str | Path) -> list[str]:
    """Globals referenced by a torch checkpoint file (path or bytes), without loading it."""
    return pickle_globals(data_pkl(checkpoint))


def pickle_protocol(pickled: bytes) -> int | None:
    """The protocol named by the pickle's PROTO opcode (None for protocol 0/1 pickles, which have none)."""
    for opcode, arg, _ in pickletools.genops(pickled):
        return arg if opcode.name == "PROTO" else None
    return None
