"""Model checkpoints read as data, never as code.

A release zip can come from anywhere (``-custom-url``, a mirror, a tampered download). nnU-Net and SCT load
checkpoints with full pickle (``torch.load(..., weights_only=False)``), which calls whatever the file names. Here a
checkpoint is

1. inspected without unpickling (:func:`check`): every global its pickle names must be on :data:`ALLOWED`, the few
   types real nnU-Net checkpoints hold (nnunetv2 2.1 to 2.8: tensors, an ``OrderedDict`` of weights, ``torch.device``,
   numpy scalars in the training log). This runs at install, before the model is moved into place, and at load;
2. loaded with ``torch.load(weights_only=True)`` and exactly the numpy globals below added (:func:`load`), so even a
   file that slipped past step 1 cannot run code.
"""

from __future__ import annotations

import io
import pickletools
import re
import zipfile
from pathlib import Path

from rootlets_task.core.errors import RootletsError

# Globals a checkpoint may name (module.name). Storage classes (torch.FloatStorage ...) match STORAGE.
ALLOWED = frozenset({
    "collections.OrderedDict",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_parameter",
    "torch.device",
    "_codecs.encode",  # how protocol-2 pickles store bytes
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar",  # numpy 1 / numpy 2 spelling
    "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
    "numpy.dtype", "numpy.ndarray",
    *(f"numpy.dtypes.{t}DType" for t in ("Float64", "Float32", "Float16", "Int64", "Int32", "Int16", "Int8",
                                         "UInt64", "UInt32", "UInt16", "UInt8", "Bool")),
})
STORAGE = re.compile(r"torch\.(\w+Storage|storage\.UntypedStorage)")
_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"}
_MEMO_PUT = {"BINPUT", "LONG_BINPUT", "PUT"}
_MEMO_GET = {"BINGET", "LONG_BINGET", "GET"}
UNKNOWN = "<a global the file computes at load time>"


def pickle_globals(data: bytes) -> set[str]:
    """Every ``module.name`` a pickle stream references, found by reading its opcodes (nothing is executed).

    ``STACK_GLOBAL`` names come from the strings pushed just before it; one that cannot be traced this way is
    reported as :data:`UNKNOWN` (and therefore refused). Extension-registry codes are reported the same way.
    """
    found: set[str] = set()
    stack: list[str | None] = []  # the strings on top of the pickle stack, None for anything else
    memo: dict = {}
    for op, arg, _ in pickletools.genops(io.BytesIO(data)):
        name = op.name
        if name in ("GLOBAL", "INST"):
            module, _, attr = str(arg).partition(" ")
            found.add(f"{module}.{attr}")
            stack.append(None)
        elif name == "STACK_GLOBAL":
            top = (stack[-2], stack[-1]) if len(stack) >= 2 else (None, None)
            found.add(f"{top[0]}.{top[1]}" if top[0] is not None and top[1] is not None else UNKNOWN)
            del stack[-2:]
            stack.append(None)
        elif name in ("EXT1", "EXT2", "EXT4"):
            found.add(UNKNOWN)
        elif name in _STRING_OPS:
            stack.append(str(arg))
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1] if stack else None
        elif name in _MEMO_PUT:
            memo[arg] = stack[-1] if stack else None
        elif name in _MEMO_GET:
            stack.append(memo.get(arg))
        else:
            stack.append(None)
        del stack[:-2]  # only the top two matter for STACK_GLOBAL
    return found


def _data_pickle(path: Path) -> bytes:
    """The pickle of a torch zip-format checkpoint (``<archive>/data.pkl``); anything else is refused."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            if len(names) != 1:
                raise RootletsError(f"checkpoint {path}: not a PyTorch checkpoint (no single data.pkl inside); "
                                    "reinstall the release or ask its authors for an intact file")
            return zf.read(names[0])
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise RootletsError(f"checkpoint {path}: not a PyTorch zip-format checkpoint ({exc}); torch's legacy format and "
                            "damaged files are refused; reinstall the release") from None


def check(path: str | Path) -> None:
    """Refuse a checkpoint whose pickle names anything outside :data:`ALLOWED` (one line, the globals listed)."""
    path = Path(path)
    try:
        names = pickle_globals(_data_pickle(path))
    except (ValueError, EOFError, IndexError) as exc:  # pickletools on a corrupt stream
        raise RootletsError(f"checkpoint {path}: corrupt pickle ({exc}); reinstall the release") from None
    refused = sorted(n for n in names if n not in ALLOWED and not STORAGE.fullmatch(n))
    if refused:
        raise RootletsError(f"checkpoint {path}: refused, it would run code when loaded ({', '.join(refused[:5])}); "
                            "an nnU-Net checkpoint holds only tensors and plain values: do not use this release")


def numpy_allow_list() -> list:
    """The numpy globals torch's weights-only unpickler must additionally accept for nnU-Net checkpoints.

    numpy's scalar reconstructor under both module paths (numpy 1 writes ``numpy.core.multiarray``, numpy 2
    ``numpy._core``; a (callable, name) pair allows that name whichever numpy is loaded), ``numpy.dtype``, and the dtype
    classes that BUILD instantiates for float64/float32 scalars (``_best_ema``, the ``logging`` lists). Found with
    tests/release_formats/allow_list.py on checkpoints of nnunetv2 2.1 to 2.8.1.
    """
    import importlib

    import numpy as np

    multiarray = importlib.import_module("numpy._core.multiarray" if int(np.__version__.split(".")[0]) >= 2
                                         else "numpy.core.multiarray")
    return [(multiarray.scalar, "numpy.core.multiarray.scalar"), (multiarray.scalar, "numpy._core.multiarray.scalar"),
            np.dtype, np.dtypes.Float64DType, np.dtypes.Float32DType]


def load(path: str | Path) -> dict:
    """A checked checkpoint loaded with torch's weights-only unpickler (CPU tensors)."""
    import torch

    check(path)
    try:
        with torch.serialization.safe_globals(numpy_allow_list()):
            content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle.UnpicklingError, RuntimeError from a damaged archive ...
        raise RootletsError(f"checkpoint {path}: cannot be loaded as data ({_reason(exc)}); reinstall the release") from None
    if not isinstance(content, dict) or "network_weights" not in content:
        raise RootletsError(f"checkpoint {path}: not an nnU-Net checkpoint (no network_weights); reinstall the release")
    return content


def _reason(exc: Exception) -> str:
    """The informative line of torch's many-line weights-only error (which global or opcode it refused)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if "nsupported" in line or "GLOBAL" in line]
    return (useful or [line for line in lines if not line.startswith("Weights only load failed")] or
            [type(exc).__name__])[0]
