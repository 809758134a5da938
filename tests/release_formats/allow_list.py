"""Which globals ``torch.load(weights_only=True)`` must be allowed to load given nnU-Net checkpoints.

For every checkpoint (a ``.pth``, or every ``.pth`` inside a release zip): the globals its pickle names (read with
``pickletools``, see ``pickle_globals.py``), what torch itself calls unsafe in it, whether a plain weights_only
load works, and the smallest allow-list that loads it, found by loading with weights_only=True and adding what
torch refuses (an ``Unsupported global`` or a type it ``Can only build`` when allow-listed) until it loads.
Only numpy names are ever added, from numpy itself: nothing named by the file is imported.

Usage: ``python tests/release_formats/allow_list.py FILE.zip|FILE.pth ... [--json]``
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pickle_globals import checkpoint_globals  # noqa: E402

_REFUSED = (re.compile(r"Unsupported global: GLOBAL ([\w.]+)"), re.compile(r"Can only build .* but got <class '([\w.]+)'>"))


def numpy_global(name: str):
    """The numpy object for a numpy name in a checkpoint (either module path), or None when it is not numpy's."""
    multiarray = np._core.multiarray if int(np.__version__.split(".")[0]) >= 2 else np.core.multiarray
    fixed = {"numpy.dtype": np.dtype, "numpy.ndarray": np.ndarray}
    for prefix in ("numpy.core.multiarray.", "numpy._core.multiarray."):
        if name.startswith(prefix) and name[len(prefix):] in ("scalar", "_reconstruct"):
            return getattr(multiarray, name[len(prefix):])
    if name.startswith("numpy.dtypes.") and hasattr(np.dtypes, name.split(".")[-1]):
        return getattr(np.dtypes, name.split(".")[-1])
    return fixed.get(name)


def _refused(exc: Exception) -> str | None:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    for pattern in _REFUSED:
        match = pattern.search(text)
        if match:
            return match.group(1)
    return None


def _load(path: Path, names: list[str]) -> dict:
    allow = [(numpy_global(n), n) for n in names]
    with warnings.catch_warnings(), torch.serialization.safe_globals(allow):
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.load(path, map_location="cpu", weights_only=True)


def minimal_allow_list(path: Path) -> tuple[list[str], str | None]:
    """(names allowed, None) once the checkpoint loads; (names so far, reason) when a refusal is not numpy's."""
    names: list[str] = []
    for _ in range(50):
        try:
            _load(path, names)
            return names, None
        except Exception as exc:  # noqa: BLE001 - torch raises UnpicklingError or RuntimeError
            name = _refused(exc)
            if name is None or numpy_global(name) is None or name in names:
                return names, f"{type(exc).__name__}: {name or str(exc).splitlines()[0]}"
            names.append(name)
    return names, "gave up after 50 refusals"


def report(path: Path) -> dict:
    """Everything about loading one checkpoint with weights_only=True."""
    try:
        _load(path, [])
        plain = "ok"
    except Exception as exc:  # noqa: BLE001
        plain = f"refused: {_refused(exc) or str(exc).splitlines()[0]}"
    names, problem = minimal_allow_list(path)
    return {"pickle_globals": checkpoint_globals(path),
            "torch_unsafe_globals": sorted(torch.serialization.get_unsafe_globals_in_checkpoint(str(path))),
            "plain_weights_only": plain, "minimal_allow_list": names, "loads_with_it": problem is None,
            "problem": problem}


def checkpoints(source: Path, tmp: Path) -> list[tuple[str, Path]]:
    """(label, path) of a .pth, or of every .pth inside a zip (extracted into ``tmp``)."""
    if source.suffix != ".zip":
        return [(str(source), source)]
    found = []
    with zipfile.ZipFile(source) as zf:
        for i, member in enumerate(n for n in zf.namelist() if n.endswith(".pth")):
            out = tmp / f"{i}.pth"
            out.write_bytes(zf.read(member))
            found.append((f"{source.name}:{member}", out))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    args = parser.parse_args(argv)
    results, union = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for i, source in enumerate(args.files):
            folder = Path(tmp) / str(i)
            folder.mkdir()
            for label, path in checkpoints(source, folder):
                results[label] = report(path)
                union += [n for n in results[label]["minimal_allow_list"] if n not in union]
    if args.json:
        print(json.dumps({"torch": torch.__version__, "numpy": np.__version__, "checkpoints": results,
                          "union": union}, indent=2))
    else:
        for label, r in results.items():
            print(f"{label}\n  globals: {', '.join(r['pickle_globals'])}\n  plain weights_only: {r['plain_weights_only']}"
                  f"\n  minimal allow-list: {r['minimal_allow_list']} -> {'loads' if r['loads_with_it'] else r['problem']}")
        print(f"union: {union}  (torch {torch.__version__}, numpy {np.__version__})")
    return 0 if all(r["loads_with_it"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
