"""Validate the speed levers on your own images (``rootlets speedcheck``) and let a batch use only what passed.

The exact path (the same tiles as SCT) is the reference. Three opt-in levers change labels a little: ``crop`` (the
sliding window on a box around the cord, see :mod:`rootlets_task.inference.cropping`), ``int8`` (the network quantised with
NNCF, :mod:`rootlets_task.inference.int8`) and ``bf16`` (the network run in bfloat16, on CPUs with ``avx512_bf16`` or
AMX only: :mod:`rootlets_task.inference.backends`); ``crop+int8`` and ``crop+bf16`` are both. :func:`check_levers`
runs the exact path and each lever on the same images with the installed release, in one process and interleaved (so
that every speed-up sees the same machine load), and compares the labels: voxel agreement, per-level Dice, and each
spinal level's midpoint and boundaries in mm, on the cord (:func:`rootlets_task.levels.compute.compute_levels`) when
a cord mask is given, else along the image's superior-inferior world axis. A lever passes when it meets
:class:`Thresholds` on every image.

:func:`write_report` saves the verdict as a small JSON tied to the release (tag and model sha256);
``rootlets batch -levers auto`` reads it (:func:`read_report`) or makes one on the dataset's own first images and
then uses the fastest combination that passed (:mod:`rootlets_task.batch.levers`).
"""

from __future__ import annotations

import logging
import math
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

import nibabel as nib
import numpy as np

from rootlets_task._version import __version__
from rootlets_task.core.errors import RootletsError
from rootlets_task.core.files import keep_inputs, now, printable, read_json, sha256_file, write_json
from rootlets_task.core.names import level_name
from rootlets_task.core.options import ModelOptions
from rootlets_task.inference import cpu, cropping
from rootlets_task.io import labels, nifti
from rootlets_task.io.metrics import agreement
from rootlets_task.levels.compute import compute_levels

if TYPE_CHECKING:
    from rootlets_task.inference.int8 import Int8Options

log = logging.getLogger(__name__)

LEVERS = ("crop", "int8", "crop+int8", "bf16", "crop+bf16")
LOW_PRECISIONS = ("int8", "bf16")  # the levers that change the network's precision (one at a time)
FORMAT, FORMAT_VERSION = "rootlets_task speedcheck", 1
REPORT = "speedcheck.json"  # the name a batch gives it in its logs folder
CALIBRATION_IMAGES = 2  # int8 is calibrated on the first (up to) two images checked
DECIMALS = 2  # moves are compared with the thresholds to 0.01 mm (what the report shows)


@dataclass(frozen=True)
class Thresholds:
    """What a lever must keep on every image, compared with the exact path: every spinal level present in both, each
    level's midpoint within ``max_mid_voxels`` voxels of the image's superior-inferior spacing, and each of its two
    boundaries (rostral and caudal ends) within ``max_boundary_mm``."""

    max_mid_voxels: float = 1.0
    max_boundary_mm: float = 1.0

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> Thresholds:
        for name, value in asdict(self).items():
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise RootletsError(f"threshold {name} {value}: give a number of 0 or more")
        return self

    def text(self) -> str:
        return (f"on every image, every spinal level of the exact path is present with the lever (and no other), every "
                f"level midpoint within {self.max_mid_voxels:g} voxel(s) (superior-inferior spacing) and every level "
                f"boundary within {self.max_boundary_mm:g} mm of the exact path's (compared to 0.01 mm)")


@dataclass(frozen=True)
class CheckOptions:
    """How a check runs: ``reps`` timed repetitions of every path on every image, the levels ``method`` compared, int8
    calibrated on the first ``calibration`` images with ``int8_options`` (default: ``Int8Options()``); ``strict``: a
    lever that cannot run (sc-crop or NNCF missing) is a one-line error, otherwise it is reported as not passed, with
    the reason."""

    reps: int = 1
    method: str = "gapfree"
    calibration: int = CALIBRATION_IMAGES
    int8_options: Int8Options | None = None
    strict: bool = True


def parse_levers(text: str, allowed: Sequence[str] = LEVERS) -> tuple[str, ...]:
    """``crop,int8`` -> ("crop", "int8") in ``allowed`` order; an unknown name is a one-line error."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise RootletsError(f"-levers {text}: {'unknown ' + ', '.join(unknown) if unknown else 'empty'}; use a comma "
                            f"list of {', '.join(allowed)}")
    return tuple(n for n in allowed if n in names)


def parts(lever: str) -> tuple[bool, str]:
    """(crops, precision) of a lever name: ``crop+int8`` -> (True, "int8"), ``crop`` -> (True, "float32")."""
    names = lever.split("+")
    return "crop" in names, next((n for n in names if n in LOW_PRECISIONS), "float32")


def levers_not_here() -> dict[str, str]:
    """The levers this machine cannot run, with why: the bf16 ones on a CPU without native bfloat16."""
    if cpu.has_bf16():
        return {}
    why = f"this CPU has no native bfloat16 (avx512_bf16 or AMX): {cpu.describe()}"
    return {lever: why for lever in LEVERS if parts(lever)[1] == "bf16"}


def default_levers() -> tuple[str, ...]:
    """Every lever this machine can run (:func:`levers_not_here` left out)."""
    skip = levers_not_here()
    return tuple(lever for lever in LEVERS if lever not in skip)


@dataclass
class _Case:
    """One image of the check: the image, its cord (optional), its S-I spacing and the crop lever's box."""

    path: Path
    img: nib.Nifti1Image
    cord: np.ndarray | None
    cord_file: str | None
    si_mm: float
    box: tuple | None = None
    box_info: dict | None = None
    box_seconds: float = 0.0


def _cases(images: Sequence, cords: Sequence | None) -> list[_Case]:
    """Every image and cord loaded and checked (before any model loads)."""
    cords = list(cords) if cords is not None else [None] * len(images)
    if not images:
        raise RootletsError("speedcheck: no image given; pass the images to check")
    if len(cords) != len(images):
        raise RootletsError(f"-s: {len(cords)} cord mask(s) for {len(images)} image(s); give one per image, in order")
    cases = []
    for path, cord in zip(images, cords, strict=True):
        img = nifti.load(path, "image")
        mask = None
        if cord is not None:
            try:
                mask, _ = labels.load(cord, "cord", img)
            except ValueError as exc:
                raise RootletsError(f"cord {cord}: {exc}; give the cord mask of {path} with -s") from None
        si = nifti.si_axis(img.affine)
        cases.append(_Case(Path(path), img, mask, None if cord is None else str(Path(cord).absolute()),
                           float(img.header.get_zooms()[si])))
    return cases


def _boxes(cases: list[_Case], strict: bool) -> str | None:
    """The crop lever's box of every image (cord mask, else sc-crop); the reason when it cannot be had (not strict)."""
    for case in cases:
        t0 = time.perf_counter()
        try:
            case.box, case.box_info = cropping.lever_box(case.img, case.cord)
        except RootletsError as exc:
            if strict:
                raise RootletsError(f"{exc} (or give the cord masks with -s, or leave crop out of -levers)") from None
            return f"no crop box: {exc}"
        case.box_info.pop("Box")
        case.box_seconds = time.perf_counter() - t0
    return None


def _segmenters(model: ModelOptions, cases: list[_Case], precisions: set[str], int8_options, calibration: int,
                strict: bool) -> tuple[dict, dict[str, str]]:
    """The exact model and one per lower precision asked for (``int8``, ``bf16``), with the seconds each took to make
    (``int8_setup``, ``bf16_setup``); the reason a precision cannot be checked (not strict)."""
    from rootlets_task.pipeline.segment import load_segmenter

    loaded: dict[str, Any] = {"float32": load_segmenter(replace(model, precision="float32"), verbose=0)}
    reasons: dict[str, str] = {}
    for precision in (p for p in LOW_PRECISIONS if p in precisions):
        t0 = time.perf_counter()
        extra = {"int8_options": int8_options, "calibration": [c.img for c in cases[:calibration]]} \
            if precision == "int8" else {}
        try:
            seg = load_segmenter(replace(model, precision=precision), verbose=0, **extra)
        except RootletsError as exc:
            if strict:
                raise RootletsError(f"{exc} (or leave {precision} out of -levers)") from None
            reasons[precision] = f"{precision} cannot run here: {exc}"
            continue
        loaded[precision], loaded[f"{precision}_setup"] = seg, time.perf_counter() - t0
        if seg.precision != precision:
            reasons[precision] = (f"the {precision} network could not be used (see the log: its own check failed or "
                                  "OpenVINO does not run it here), so float32 was kept")
    return loaded, reasons


def _timed_runs(cases: list[_Case], paths: dict[str, tuple], reps: int) -> tuple[dict, dict]:
    """Predictions (first repetition: labels and confidence) and seconds (every repetition, crop box included) of
    every path on every image.

    Interleaved: each image runs every path in turn, starting with another path on each image and repetition, so
    that warm-up and changing machine load are shared out.
    """
    names = list(paths)
    found = {n: [None] * len(cases) for n in names}
    seconds: dict[str, list[list[float]]] = {n: [[] for _ in cases] for n in names}
    for i, case in enumerate(cases):
        for rep in range(reps):
            shift = (i + rep) % len(names)
            for name in names[shift:] + names[:shift]:
                seg, crop = paths[name]
                t0 = time.perf_counter()
                out = seg.predict(case.img, case.box if crop else None)
                seconds[name][i].append(time.perf_counter() - t0 + (case.box_seconds if crop else 0.0))
                if found[name][i] is None:
                    found[name][i] = out
            log.info("%s: %s", case.path.name, {n: round(seconds[n][i][-1], 2) for n in names})
    return found, seconds


def level_extents(rootlets: np.ndarray, img: nib.Nifti1Image, cord: np.ndarray | None,
                  method: str = "gapfree") -> dict[int, tuple[float, float]]:
    """(rostral, caudal) end in mm of every spinal level, positive caudally.

    With a cord: the levels of :func:`rootlets_task.levels.compute.compute_levels` (mm along the cord centerline); without:
    the level's rootlet voxels projected on the world superior-inferior axis.
    """
    if not rootlets.any():
        return {}
    if cord is not None:
        table = compute_levels(rootlets, cord, img.affine, method=method).levels
        table = table[(table["kind"] == "spinal") & (table["status"] == "ok")]
        return {int(r.value): (float(r.rostral_mm), float(r.caudal_mm)) for r in table.itertuples()}
    points = np.argwhere(rootlets > 0)
    depth = -nib.affines.apply_affine(img.affine, points)[:, 2]
    values = rootlets[tuple(points.T)]
    return {int(v): (float(depth[values == v].min()), float(depth[values == v].max())) for v in np.unique(values)}


def compare_levels(exact: dict, lever: dict, si_mm: float, thresholds: Thresholds) -> tuple[dict, list[str]]:
    """Per level: both extents and how far the midpoint and the boundaries moved; and every threshold missed."""
    rows, reasons = {}, []
    for value in sorted(set(exact) | set(lever)):
        name = level_name(value, "spinal")
        if value not in exact or value not in lever:
            rows[name] = {"exact_mm": exact.get(value), "lever_mm": lever.get(value)}
            reasons.append(f"level {name} {'missing' if value in exact else 'found only with the lever'}")
            continue
        (a0, a1), (b0, b1) = exact[value], lever[value]
        mid, bound = abs((a0 + a1 - b0 - b1) / 2), max(abs(a0 - b0), abs(a1 - b1))
        rows[name] = {"exact_mm": [a0, a1], "lever_mm": [b0, b1], "mid_diff_mm": mid, "boundary_diff_mm": bound}
        reasons += _moves(name, mid, bound, si_mm, thresholds)
    return rows, reasons


def _moves(name: str, mid: float, bound: float, si_mm: float, thresholds: Thresholds) -> list[str]:
    """The thresholds a level's midpoint move ``mid`` and boundary move ``bound`` (mm) miss."""
    reasons, mid_limit = [], thresholds.max_mid_voxels * si_mm
    if not round(mid, DECIMALS) <= mid_limit:  # NaN fails
        reasons.append(f"level {name} midpoint moved {mid:.2f} mm (limit {thresholds.max_mid_voxels:g} voxel = "
                       f"{mid_limit:.2f} mm)")
    if not round(bound, DECIMALS) <= thresholds.max_boundary_mm:
        reasons.append(f"level {name} boundary moved {bound:.2f} mm (limit {thresholds.max_boundary_mm:g} mm)")
    return reasons


def _exact_levels(cases: list[_Case], exact: list[np.ndarray], method: str, strict: bool) -> tuple[list, list[str]]:
    """The exact path's level extents per image (None where they cannot be had, with the reason when not strict)."""
    extents: list[dict[int, tuple[float, float]] | None] = []
    problems: list[str] = []
    for case, found in zip(cases, exact, strict=True):
        try:
            if not found.any():
                raise RootletsError("the exact path found no rootlets; check the levers on images with rootlets")
            extents.append(level_extents(found, case.img, case.cord, method))
        except RootletsError as exc:
            if strict:
                raise RootletsError(f"{case.path}: {exc}") from None
            extents.append(None)
            problems.append(f"{case.path.name}: not checked ({exc})")
    return extents, problems


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def _lever_report(cases: list[_Case], exact: list, found: list, seconds: list, exact_seconds: list,
                  extents: list, thresholds: Thresholds, method: str, problems: list[str]) -> dict:
    """One lever's verdict and figures over every image."""
    why, images = list(problems), []
    for case, a, b, secs, ref, ext in zip(cases, exact, found, seconds, exact_seconds, extents, strict=True):
        close = agreement(a, b)
        row = {"file": case.path.name, "seconds": _median(secs), "exact_seconds": _median(ref),
               "voxel_agreement": close["voxel_agreement"], "foreground_agreement": close["foreground_agreement"],
               "dice": {level_name(k, "spinal"): v for k, v in close["dice"].items()}}
        if ext is not None:
            try:
                mine = level_extents(b, case.img, case.cord, method)
            except RootletsError as exc:
                mine, row["levels_error"] = {}, str(exc)
            row["levels"], reasons = compare_levels(ext, mine, case.si_mm, thresholds)
            why += [f"{case.path.name}: {r}" for r in reasons]
        images.append(row)
    diffs = [d for r in images for d in r.get("levels", {}).values() if "mid_diff_mm" in d]
    total, total_exact = sum(r["seconds"] for r in images), sum(r["exact_seconds"] for r in images)
    return {"passed": not why, "why": why, "seconds_per_image": total / len(images),
            "speedup": total_exact / total if total else None,
            "agreement": {"min_voxel_agreement": min(r["voxel_agreement"] for r in images),
                          "min_foreground_agreement": min(r["foreground_agreement"] for r in images),
                          "min_level_dice": min((v for r in images for v in r["dice"].values()), default=None),
                          "max_mid_diff_mm": max((d["mid_diff_mm"] for d in diffs), default=None),
                          "max_boundary_diff_mm": max((d["boundary_diff_mm"] for d in diffs), default=None),
                          "levels_not_in_both": sum(len(r.get("levels", {})) for r in images) - len(diffs)},
            "images": images}


@dataclass
class SpeedCheck:
    """What :func:`check_levers` found: the JSON report, the exact path's predictions per image (input order) and the
    models it loaded (``float32``, ``int8``, ``bf16``), for callers that go on segmenting with them."""

    report: dict
    exact: list  # inference.Prediction of every image
    segmenters: dict = field(default_factory=dict)
    identities: list[str] = field(default_factory=list)  # nifti.image_digest of every image checked


def check_levers(images: Sequence[str | os.PathLike], cords: Sequence[str | os.PathLike | None] | None = None,
                 levers: Sequence[str] = LEVERS, model: ModelOptions = ModelOptions(),
                 thresholds: Thresholds = Thresholds(), options: CheckOptions = CheckOptions(), **fields: Any) -> SpeedCheck:
    """Run the exact path and every lever on ``images`` and judge each lever against ``thresholds``.

    ``cords``: one cord mask per image (or None): the crop box and the levels come from it; without one the box is
    sc-crop's and the levels are measured along the image's S-I axis. ``options`` (:class:`CheckOptions`; any of its
    fields given by keyword replaces the options' one, e.g. ``reps=3``) says how the check runs: with ``strict``, a
    lever that cannot run (sc-crop or NNCF missing, bf16 on a CPU without it) is a one-line error; otherwise it is
    reported as not passed, with the reason.
    """
    options = replace(options, **fields)  # a field that CheckOptions lacks: TypeError, as any call
    int8_options, calibration, reps, method, strict = (options.int8_options, options.calibration, options.reps,
                                                       options.method, options.strict)
    levers = parse_levers(",".join(levers))
    thresholds.check()
    blocked = {lever: why for lever, why in levers_not_here().items() if lever in levers}
    if strict and blocked:
        raise RootletsError(f"-levers {','.join(blocked)}: {next(iter(blocked.values()))}; leave them out (by default "
                            "only the levers this CPU can run are checked)")
    precisions = {parts(lever)[1] for lever in levers}
    if "int8" in precisions and int8_options is None:
        from rootlets_task.inference.int8 import Int8Options

        int8_options = Int8Options()
    if not 1 <= reps <= 100:
        raise RootletsError(f"-reps {reps}: give 1 to 100 repetitions")
    model = model.check()
    cases = _cases(images, cords)
    unavailable = {}
    if any(parts(lever)[0] for lever in levers):
        reason = _boxes(cases, strict)
        unavailable.update({lever: reason for lever in levers if reason and parts(lever)[0]})
    loaded, reasons = _segmenters(model, cases, precisions, int8_options, calibration, strict)
    for lever in levers:
        if parts(lever)[1] in reasons:
            unavailable.setdefault(lever, reasons[parts(lever)[1]])
    paths = {"exact": (loaded["float32"], False)}
    paths.update({lever: (loaded[parts(lever)[1]], parts(lever)[0]) for lever in levers if lever not in unavailable})
    predictions, seconds = _timed_runs(cases, paths, reps)
    found = {name: [p.labels for p in found] for name, found in predictions.items()}
    extents, problems = _exact_levels(cases, found["exact"], method, strict)
    results = {lever: _lever_report(cases, found["exact"], found[lever], seconds[lever], seconds["exact"],
                                    extents, thresholds, method, problems) for lever in levers if lever in found}
    results.update({lever: {"passed": False, "why": [why]} for lever, why in unavailable.items()})
    report = _report(cases, loaded, {lever: results[lever] for lever in levers}, seconds["exact"], thresholds,
                     method, reps)
    if "int8" in loaded:
        assert int8_options is not None  # set above: an int8 lever is checked
        report["Int8"] = {"Precision": loaded["int8"].precision, "Options": asdict(int8_options),
                          "SetupSeconds": loaded["int8_setup"], "Calibration": report["Images"][:calibration]}
    if "bf16" in loaded:
        report["Bf16"] = {"Precision": loaded["bf16"].precision, "SetupSeconds": loaded["bf16_setup"]}
    return SpeedCheck(report, predictions["exact"], loaded, [nifti.image_digest(c.img) for c in cases])


def _report(cases: list[_Case], loaded: dict, results: dict, exact_seconds: list, thresholds: Thresholds, method: str,
            reps: int) -> dict:
    from rootlets_task.core.places import active, portable
    from rootlets_task.io.provenance import model_fields, model_folder_name

    def shown(path) -> str | None:  # inside a derivative (batch -levers auto): no local folders
        return None if path is None else portable(path) if active() else str(Path(path).absolute())

    exact = loaded["float32"]
    report = {"Name": FORMAT, "FormatVersion": FORMAT_VERSION, "Version": __version__, "Date": now(),
              "Release": model_fields(exact.record) | {"ModelFolder": model_folder_name(exact.model_folder)},
              "Thresholds": asdict(thresholds) | {"Text": thresholds.text()}, "LevelsMethod": method,
              "CropMarginMM": cropping.CROP_MARGIN_MM, "Repetitions": reps,
              "CPU": cpu.cpu_info(),
              "Exact": {"Backend": exact.backend, "Precision": exact.precision, "Device": exact.device.type,
                        "Threads": exact.threads,
                        "SecondsPerImage": sum(_median(s) for s in exact_seconds) / len(cases)},
              "Images": [{"File": shown(c.path), "SHA256": sha256_file(c.path), "Cord": shown(c.cord_file),
                          "SISpacingMM": c.si_mm, "CropBox": c.box_info,
                          "LevelsFrom": f"cord ({method} levels)" if c.cord is not None else "image S-I axis"}
                         for c in cases]}
    report["Levers"] = results
    report["Passed"] = [lever for lever, r in results.items() if r["passed"]]
    report["Use"] = list(best_levers(report))
    return report


def best_levers(report: dict) -> tuple[str, ...]:
    """The fastest lever that passed (by its measured speed-up) as its parts: ``("crop", "int8")``, ``("bf16",)``,
    ... or ``()`` when none passed."""
    passed = [(r.get("speedup") or 0.0, lever) for lever, r in report.get("Levers", {}).items() if r.get("passed")]
    if not passed:
        return ()
    crop, precision = parts(max(passed)[1])
    return ("crop",) * crop + ((precision,) if precision != "float32" else ())


def write_report(check: SpeedCheck | dict, path: str | os.PathLike) -> Path:
    """The report as JSON at ``path`` (written whole or not at all; never over an image or cord mask it checked)."""
    report = check.report if isinstance(check, SpeedCheck) else check
    checked = [f for image in report.get("Images") or () if isinstance(image, dict)
               for f in (image.get("File"), image.get("Cord")) if isinstance(f, str)]
    keep_inputs([path], checked, "-o")
    return write_json(path, report)


def release_problem(report: dict, record: dict) -> str | None:
    """Why ``report`` was not made with the installed release of ``record`` (tag and model sha256), or None."""
    release = report.get("Release")
    made = release if isinstance(release, dict) else {}
    if made.get("Release") == record.get("tag") and made.get("ModelSHA256") == record.get("sha256"):
        return None
    return (f"made with release {made.get('Release')} (model sha256 {str(made.get('ModelSHA256'))[:12]}), not with the "
            f"installed {record.get('tag')} ({str(record.get('sha256'))[:12]})")


def is_report(content) -> TypeGuard[dict]:
    """True when ``content`` (parsed JSON) is a report of this format."""
    return (isinstance(content, dict) and content.get("Name") == FORMAT and content.get("FormatVersion") == FORMAT_VERSION
            and isinstance(content.get("Levers"), dict))


def read_report(path: str | os.PathLike) -> dict:
    """A report of :func:`write_report`, refused in one line when it is not one (its release: :func:`release_problem`)."""
    content = read_json(path, limit=16 << 20)  # bounded in size and depth; None when it is not JSON
    if not is_report(content):
        raise RootletsError(f"-speedcheck {path}: not a report of `rootlets speedcheck` (format {FORMAT_VERSION}); "
                            f"make one with `rootlets speedcheck IMG... -o {path}`")
    return content


class _Malformed(Exception):
    """A field of a report that does not have the type or range this package writes."""


def _field(value, kind, where: str):
    ok = isinstance(value, kind) and not isinstance(value, bool) if kind in (int, float, (int, float)) else \
        isinstance(value, kind)
    if not ok or (isinstance(value, float) and not math.isfinite(value)):
        raise _Malformed(f"{where} is {type(value).__name__} {str(value)[:40]!r}")
    return value


def _extent(value, where: str) -> tuple[float, float] | None:
    if value is None:
        return None
    _field(value, list, where)
    if len(value) != 2:
        raise _Malformed(f"{where} has {len(value)} values, not 2")
    return _field(value[0], (int, float), where), _field(value[1], (int, float), where)


def _judge(result: dict, spacings: list[float], thresholds: Thresholds, where: str) -> list[str]:
    """Every threshold a lever's own figures miss, recomputed from the level extents of each image."""
    images = result.get("images")
    if images is None:  # a lever that could not run: its reasons say why
        return [printable(w) for w in _field(result.get("why"), list, f"{where}.why")] or ["no figures to check"]
    _field(images, list, f"{where}.images")
    if len(images) != len(spacings) or not images:
        return [f"figures for {len(images)} image(s), the report checked {len(spacings)}"]
    why = []
    for i, (row, si_mm) in enumerate(zip(images, spacings, strict=True)):
        at = f"{where}.images[{i}]"
        _field(row, dict, at)
        name = printable(row.get("file", i), 80)  # foreign text, printed in warnings
        if "levels_error" in row or "levels" not in row:
            why.append(f"{name}: no level figures ({row.get('levels_error', 'not measured')})")
            continue
        if not _field(row["levels"], dict, f"{at}.levels"):
            why.append(f"{name}: no level measured")
        for level, d in _field(row["levels"], dict, f"{at}.levels").items():
            level = printable(level, 20)
            _field(d, dict, f"{at}.levels.{level}")
            a = _extent(d.get("exact_mm"), f"{at}.levels.{level}.exact_mm")
            b = _extent(d.get("lever_mm"), f"{at}.levels.{level}.lever_mm")
            if a is None or b is None:
                why.append(f"{name}: level {level} {'missing' if b is None else 'found only with the lever'}")
                continue
            mid, bound = abs((a[0] + a[1] - b[0] - b[1]) / 2), max(abs(a[0] - b[0]), abs(a[1] - b[1]))
            why += [f"{name}: {r}" for r in _moves(level, mid, bound, si_mm, thresholds)]
    return why


def verify(report: dict, source: str, thresholds: Thresholds = Thresholds()) -> dict:
    """``report`` with every lever's verdict recomputed from its own figures (level extents per image) against
    ``thresholds`` (the package's, or the report's where those are stricter; never looser ones written in the
    file): a ``passed`` flag, a ``Passed`` list or a ``Use`` edited into a report counts for nothing.

    The result records what was done in ``Verified`` (thresholds used, verdicts the file had that its figures do not
    support). A field of the wrong type or range is a one-line :class:`RootletsError` naming ``source``.
    """
    try:
        written = _field(report.get("Thresholds") or {}, dict, "Thresholds")
        strict = {}
        for name, default in asdict(thresholds).items():
            value = written.get(name)
            ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
            strict[name] = min(default, value) if ok else default
        used = Thresholds(**strict)
        spacings = []
        for i, image in enumerate(_field(report.get("Images"), list, "Images")):
            si = _field(_field(image, dict, f"Images[{i}]").get("SISpacingMM"), (int, float), f"Images[{i}].SISpacingMM")
            if si <= 0:
                raise _Malformed(f"Images[{i}].SISpacingMM is {si}")
            spacings.append(float(si))
        levers, overruled = {}, {}
        for lever, result in _field(report.get("Levers"), dict, "Levers").items():
            if lever not in LEVERS:
                raise _Malformed(f"Levers has an unknown lever {str(lever)[:20]!r}")
            _field(result, dict, f"Levers.{lever}")
            speedup = result.get("speedup")
            if speedup is not None and (_field(speedup, (int, float), f"Levers.{lever}.speedup") <= 0):
                raise _Malformed(f"Levers.{lever}.speedup is {speedup}")
            why = _judge(result, spacings, used, f"Levers.{lever}")
            if bool(result.get("passed")) != (not why):
                overruled[lever] = f"marked {'passed' if result.get('passed') else 'failed'} in the file, its figures " \
                                   f"{'fail: ' + why[0] if why else 'pass'}"
            levers[lever] = {**result, "passed": not why, "why": why}
    except _Malformed as exc:
        raise RootletsError(f"speedcheck report {source}: {exc}, not what `rootlets speedcheck` writes; make the "
                            "report again") from None
    verified = {**report, "Levers": levers, "Passed": [k for k, r in levers.items() if r["passed"]],
                "Verified": {"Thresholds": asdict(used), "Overruled": overruled,
                             "Text": "every verdict recomputed from the report's figures"}}
    verified["Use"] = list(best_levers(verified))
    for lever, text in overruled.items():
        log.warning("speedcheck report %s: %s %s; the figures decide", source, lever, text)
    return verified


def format_report(report: dict) -> str:
    """The verdict as a short text table (one row per lever, reasons below)."""
    exact = report["Exact"]
    processor = (report.get("CPU") or {}).get("Model", "?")
    lines = [f"exact path: {exact['SecondsPerImage']:.1f} s per image ({exact['Backend']} {exact.get('Precision', 'float32')}, "
             f"{exact['Threads']} threads on {processor}); thresholds: {report['Thresholds']['Text']}",
             f"{'lever':10s} {'s/image':>8s} {'speedup':>8s} {'voxels':>8s} {'min Dice':>8s} {'mid mm':>7s} "
             f"{'bound mm':>8s}  verdict"]
    for lever, r in report["Levers"].items():
        a = r.get("agreement") or {}

        def cell(value, width, spec):
            return f"{value:{width}{spec}}" if isinstance(value, int | float) else f"{'-':>{width}s}"

        lines.append(f"{lever:10s} {cell(r.get('seconds_per_image'), 8, '.1f')} {cell(r.get('speedup'), 7, '.2f')}x "
                     f"{cell(a.get('min_voxel_agreement'), 8, '.4f')} {cell(a.get('min_level_dice'), 8, '.3f')} "
                     f"{cell(a.get('max_mid_diff_mm'), 7, '.2f')} {cell(a.get('max_boundary_diff_mm'), 8, '.2f')}  "
                     f"{'passed' if r['passed'] else 'FAILED'}")
        lines += [f"    {lever}: {why}" for why in r["why"][:5]] + (
            [f"    {lever}: ... {len(r['why']) - 5} more in the JSON"] if len(r["why"]) > 5 else [])
    use = report.get("Use") or []
    lines.append(f"rootlets batch -levers auto would use: {'+'.join(use) if use else 'no lever (the exact path)'}")
    return "\n".join(lines)
