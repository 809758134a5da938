"""The choices a run is made of, as data shared by the Python API, the chain, the batch and the command line.

:class:`ModelOptions` says which model runs and how; :class:`ChainOptions` says where the cord, discs and PMJ come
from and how levels are computed. The command line's choices are these tuples, so they cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from rootlets_task.core.errors import RootletsError

DEVICES = ("auto", "cpu", "cuda", "mps")
BACKENDS = ("auto", "torch", "openvino")  # auto = OpenVINO on CPU when installed and numerically checked, else torch
METHODS = ("gapfree", "reference")
PRECISIONS = ("float32", "int8", "bf16")  # bf16: OpenVINO on CPUs with avx512_bf16 or AMX
RENUMBER = ("none", "suggested")  # suggested: apply the numbering check's suggestion (recorded), never silently
CONTRASTS = ("t1", "t2")  # what sct_detect_pmj knows
MEASURE_METHODS = ("bin", "wa")  # sct_extract_metric -method: binarized mask, or weighted average
# Where each label comes from, in the order ``auto`` tries them (after a given file).
SOURCES = {
    "cord": ("file", "sct"),
    "discs": ("file", "sct", "label_vertebrae", "totalspineseg", "spineps", "none"),
    "pmj": ("file", "sct", "none"),
}


def _one_of(what: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise RootletsError(f"{what} {value!r}: unknown; use one of {', '.join(allowed)}")


@dataclass(frozen=True)
class ModelOptions:
    """Which model release runs, where and how (``release`` None = the default release)."""

    release: str | None = None
    device: str = "auto"
    test_time_aug: bool = False
    backend: str = "auto"
    threads: int | None = None  # CPU threads; None = every physical core this process may use
    allow_code: bool = False  # let a release's own Python code (SCT's trainer_class.py) run: it has the user's rights
    precision: str = "float32"  # int8 (NNCF) or bf16 (bf16 CPUs): opt-in OpenVINO levers, labels change a little

    def __post_init__(self) -> None:  # an options object that exists is a valid one: the CLI and the API share it
        self.check()

    def check(self) -> ModelOptions:
        _one_of("device", self.device, DEVICES)
        _one_of("backend", self.backend, BACKENDS)
        _one_of("precision", self.precision, PRECISIONS)
        if self.threads is not None and not (isinstance(self.threads, int) and 1 <= self.threads <= 1024):
            raise RootletsError(f"threads {self.threads}: give a number of CPU threads from 1 to 1024")
        return self


@dataclass(frozen=True)
class ChainOptions:
    """Sources of the chain's labels and how levels are derived (see :func:`rootlets_task.pipeline.chain.run_chain`)."""

    cord_from: str = "auto"
    discs_from: str = "auto"
    pmj_from: str = "auto"
    method: str = "gapfree"
    contrast: str = "t2"
    crop_to_cord: bool = False
    overwrite: bool = False
    renumber: str = "none"
    command: str | None = None  # what the sidecars say ran, after `rootlets` (default: -i IMG -levels; a batch: batch ...)
    measure: tuple[str, ...] | None = None  # maps to measure per level (None: no measure step; (): morphometry only)
    measure_mask: str | None = None  # mask for the maps (default: the cord)
    measure_method: str = "bin"
    template: bool = False  # the PAM50 step (SCT >= 7.0): registration with the rootlets, levels to and from PAM50

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> ChainOptions:
        for kind, value in (("cord", self.cord_from), ("discs", self.discs_from), ("pmj", self.pmj_from)):
            if value not in ("auto", *SOURCES[kind]):
                raise RootletsError(f"-{kind}-from {value}: unknown source; use one of {', '.join(('auto', *SOURCES[kind]))}")
        if self.method not in METHODS:
            raise RootletsError(f"method {self.method!r} is unknown; use one of {', '.join(METHODS)}")
        _one_of("renumber", self.renumber, RENUMBER)
        if self.contrast not in CONTRASTS:
            raise RootletsError(f"contrast {self.contrast!r}: sct_detect_pmj knows {' and '.join(CONTRASTS)} only")
        if self.measure_method not in MEASURE_METHODS:
            raise RootletsError(f"-measure-method {self.measure_method}: unknown; use one of {', '.join(MEASURE_METHODS)}")
        return self


@dataclass(frozen=True)
class MeasureOptions:
    """How maps are aggregated per level (``bin`` or ``wa``, as ``sct_extract_metric -method``) and whether the CSA is
    angle-corrected (``sct_process_segmentation -angle-corr``); see :mod:`rootlets_task.measures.perlevel`."""

    method: str = "bin"
    angle_correction: bool = True

    def check(self) -> MeasureOptions:
        _one_of("-measure-method", self.method, MEASURE_METHODS)
        return self
