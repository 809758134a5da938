"""Validate the speed levers on your own images (``rootlets speedcheck``) and let a batch use only what passed.

The exact path (the same tiles as SCT) is the reference. Two opt-in levers change labels a little: ``crop`` (the
sliding window on a box around the cord, see :mod:`rootlets_task.cropping`) and ``int8`` (the network quantised with
NNCF, :mod:`rootlets_task.int8`); ``crop+int8`` is both. :func:`check_levers` runs the exact path and each lever on
the same images with the installed release, in one process and interleaved (so that every speed-up sees the same
machine load), and compares the labels: voxel agreement, per-level Dice, and each spinal level's midpoint and
boundaries in mm, on the cord (:func:`rootlets_task.levels.compute_levels`) when a cord mask is given, else along the
image's superior-inferior world axis. A lever passes when it meets :class:`Thresholds` on every image.

:func:`write_report` saves the verdict as a small JSON tied to the release (tag and model sha256);
``rootlets batch -levers auto`` reads it (:func:`read_report`) or makes one on the dataset's own first images and
then uses the fastest combination that passed (:func:`plan_batch_levers`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import nibabel as nib
import numpy as np

from rootlets_task import cropping, labels, nifti
from rootlets_task._version import __version__
from rootlets_task.errors import RootletsError
from rootlets_task.files import now, read_json, sha256_file, write_json
from rootlets_task.levels import compute_levels, level_name
from rootlets_task.metrics import agreement
from rootlets_task.options import ModelOptions

log = logging.getLogger(__name__)

LEVERS = ("crop", "int8", "crop+int8")
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

    def check(self) -> Thresholds:
        for name, value in asdict(self).items():
            if not (math.isfinite(value) and value >= 0):
                raise RootletsError(f"threshold {name} {value}: give a number of 0 or more")
        return self

    def text(self) -> str:
        return (f"on every image, every spinal level of the exact path is present with the lever (and no other), every "
                f"level midpoint within {self.max_mid_voxels:g} voxel(s) (superior-inferior spacing) and every level "
                f"boundary within {self.max_boundary_mm:g} mm of the exact path's (compared to 0.01 mm)")


def parse_levers(text: str, allowed: Sequence[str] = LEVERS) -> tuple[str, ...]:
    """``crop,int8`` -> ("crop", "int8") in ``allowed`` order; an unknown name is a one-line error."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise RootletsError(f"-levers {text}: {'unknown ' + ', '.join(unknown) if unknown else 'empty'}; use a comma "
                            f"list of {', '.join(allowed)}")
    return tuple(n for n in allowed if n in names)


def parts(lever: str) -> tuple[bool, bool]:
    """(crops, quantises) of a lever name such as ``crop+int8``."""
    return "crop" in lever.split("+"), "int8" in lever.split("+")


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


def _segmenters(model: ModelOptions, cases: list[_Case], int8: bool, int8_options, calibration: int,
                strict: bool) -> tuple[dict, str | None]:
    """The exact model and (``int8``) the quantised one, with the seconds it took to make (``int8_setup``); the
    reason int8 cannot be checked (not strict)."""
    from rootlets_task.segment import load_segmenter

    loaded = {"float32": load_segmenter(replace(model, precision="float32"), verbose=0)}
    if not int8:
        return loaded, None
    t0 = time.perf_counter()
    try:
        seg = load_segmenter(replace(model, precision="int8"), verbose=0, int8_options=int8_options,
                             calibration=[c.img for c in cases[:calibration]])
    except RootletsError as exc:
        if strict:
            raise RootletsError(f"{exc} (or leave int8 out of -levers)") from None
        return loaded, f"int8 cannot run here: {exc}"
    loaded["int8"], loaded["int8_setup"] = seg, time.perf_counter() - t0
    if seg.precision != "int8":
        return loaded, "the int8 network failed its own check against float32 (see the log), so float32 was kept"
    return loaded, None


def _timed_runs(cases: list[_Case], paths: dict[str, tuple], reps: int) -> tuple[dict, dict]:
    """Labels (first repetition) and seconds (every repetition, crop box included) of every path on every image.

    Interleaved: each image runs every path in turn, starting with another path on each image and repetition, so
    that warm-up and changing machine load are shared out.
    """
    names = list(paths)
    found = {n: [None] * len(cases) for n in names}
    seconds = {n: [[] for _ in cases] for n in names}
    for i, case in enumerate(cases):
        for rep in range(reps):
            shift = (i + rep) % len(names)
            for name in names[shift:] + names[:shift]:
                seg, crop = paths[name]
                t0 = time.perf_counter()
                out = seg.segment_image(case.img, case.box if crop else None)
                seconds[name][i].append(time.perf_counter() - t0 + (case.box_seconds if crop else 0.0))
                if found[name][i] is None:
                    found[name][i] = out
            log.info("%s: %s", case.path.name, {n: round(seconds[n][i][-1], 2) for n in names})
    return found, seconds


def level_extents(rootlets: np.ndarray, img: nib.Nifti1Image, cord: np.ndarray | None,
                  method: str = "gapfree") -> dict[int, tuple[float, float]]:
    """(rostral, caudal) end in mm of every spinal level, positive caudally.

    With a cord: the levels of :func:`rootlets_task.levels.compute_levels` (mm along the cord centerline); without:
    the level's rootlet voxels projected on the world superior-inferior axis.
    """
    if not rootlets.any():
        return {}
    if cord is not None:
        table = compute_levels(rootlets, cord, img.affine, method=method).levels
        table = table[(table["kind"] == "spinal") & (table["status"] == "ok")]
        return {int(r.value): (float(r.start_mm), float(r.end_mm)) for r in table.itertuples()}
    points = np.argwhere(rootlets > 0)
    depth = -nib.affines.apply_affine(img.affine, points)[:, 2]
    values = rootlets[tuple(points.T)]
    return {int(v): (float(depth[values == v].min()), float(depth[values == v].max())) for v in np.unique(values)}


def compare_levels(exact: dict, lever: dict, si_mm: float, thresholds: Thresholds) -> tuple[dict, list[str]]:
    """Per level: both extents and how far the midpoint and the boundaries moved; and every threshold missed."""
    rows, reasons = {}, []
    mid_limit = thresholds.max_mid_voxels * si_mm
    for value in sorted(set(exact) | set(lever)):
        name = level_name(value, "spinal")
        if value not in exact or value not in lever:
            rows[name] = {"exact_mm": exact.get(value), "lever_mm": lever.get(value)}
            reasons.append(f"level {name} {'missing' if value in exact else 'found only with the lever'}")
            continue
        (a0, a1), (b0, b1) = exact[value], lever[value]
        mid, bound = abs((a0 + a1 - b0 - b1) / 2), max(abs(a0 - b0), abs(a1 - b1))
        rows[name] = {"exact_mm": [a0, a1], "lever_mm": [b0, b1], "mid_diff_mm": mid, "boundary_diff_mm": bound}
        if round(mid, DECIMALS) > mid_limit:
            reasons.append(f"level {name} midpoint moved {mid:.2f} mm (limit {thresholds.max_mid_voxels:g} voxel = "
                           f"{mid_limit:.2f} mm)")
        if round(bound, DECIMALS) > thresholds.max_boundary_mm:
            reasons.append(f"level {name} boundary moved {bound:.2f} mm (limit {thresholds.max_boundary_mm:g} mm)")
    return rows, reasons


def _exact_levels(cases: list[_Case], exact: list[np.ndarray], method: str, strict: bool) -> tuple[list, list[str]]:
    """The exact path's level extents per image (None where they cannot be had, with the reason when not strict)."""
    extents, problems = [], []
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


def _lever_report(name: str, cases: list[_Case], exact: list, found: list, seconds: list, exact_seconds: list,
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
    """What :func:`check_levers` found: the JSON report, the exact path's labels per image (input order) and the
    models it loaded (``float32``, ``int8``), for callers that go on segmenting with them."""

    report: dict
    exact: list[np.ndarray]
    segmenters: dict = field(default_factory=dict)
    identities: list[str] = field(default_factory=list)  # image_identity of every image checked


def check_levers(images: Sequence[str | os.PathLike], cords: Sequence[str | os.PathLike | None] | None = None,
                 levers: Sequence[str] = LEVERS, model: ModelOptions = ModelOptions(),
                 thresholds: Thresholds = Thresholds(), int8_options=None, calibration: int = CALIBRATION_IMAGES,
                 reps: int = 1, method: str = "gapfree", strict: bool = True) -> SpeedCheck:
    """Run the exact path and every lever on ``images`` and judge each lever against ``thresholds``.

    ``cords``: one cord mask per image (or None): the crop box and the levels come from it; without one the box is
    sc-crop's and the levels are measured along the image's S-I axis. int8 is calibrated on the first
    ``calibration`` images. ``strict``: a lever that cannot run (sc-crop or NNCF missing) is a one-line error;
    otherwise it is reported as not passed, with the reason.
    """
    levers = parse_levers(",".join(levers))
    thresholds.check()
    if any(parts(lever)[1] for lever in levers) and int8_options is None:
        from rootlets_task.int8 import Int8Options

        int8_options = Int8Options()
    if not 1 <= reps <= 100:
        raise RootletsError(f"-reps {reps}: give 1 to 100 repetitions")
    model = model.check()
    cases = _cases(images, cords)
    unavailable = {}
    if any(parts(lever)[0] for lever in levers):
        reason = _boxes(cases, strict)
        unavailable.update({lever: reason for lever in levers if reason and parts(lever)[0]})
    loaded, reason = _segmenters(model, cases, any(parts(lever)[1] for lever in levers), int8_options, calibration,
                                 strict)
    for lever in levers:
        if reason and parts(lever)[1]:
            unavailable.setdefault(lever, reason)
    paths = {"exact": (loaded["float32"], False)}
    paths.update({lever: (loaded["int8" if parts(lever)[1] else "float32"], parts(lever)[0])
                  for lever in levers if lever not in unavailable})
    found, seconds = _timed_runs(cases, paths, reps)
    extents, problems = _exact_levels(cases, found["exact"], method, strict)
    results = {lever: _lever_report(lever, cases, found["exact"], found[lever], seconds[lever], seconds["exact"],
                                    extents, thresholds, method, problems) for lever in levers if lever in found}
    results.update({lever: {"passed": False, "why": [why]} for lever, why in unavailable.items()})
    report = _report(cases, loaded, {lever: results[lever] for lever in levers}, seconds["exact"], thresholds,
                     method, reps)
    if "int8" in loaded:
        report["Int8"] = {"Precision": loaded["int8"].precision, "Options": asdict(int8_options),
                          "SetupSeconds": loaded["int8_setup"], "Calibration": report["Images"][:calibration]}
    return SpeedCheck(report, found["exact"], loaded, [image_identity(c.img) for c in cases])


def _report(cases: list[_Case], loaded: dict, results: dict, exact_seconds: list, thresholds: Thresholds, method: str,
            reps: int) -> dict:
    from rootlets_task.provenance import model_fields

    exact = loaded["float32"]
    report = {"Name": FORMAT, "FormatVersion": FORMAT_VERSION, "Version": __version__, "Date": now(),
              "Release": model_fields(exact.record) | {"ModelFolder": str(exact.model_folder)},
              "Thresholds": asdict(thresholds) | {"Text": thresholds.text()}, "LevelsMethod": method,
              "CropMarginMM": cropping.CROP_MARGIN_MM, "Repetitions": reps,
              "Exact": {"Backend": exact.backend, "Device": exact.device.type, "Threads": exact.threads,
                        "SecondsPerImage": sum(_median(s) for s in exact_seconds) / len(cases)},
              "Images": [{"File": str(c.path.absolute()), "SHA256": sha256_file(c.path), "Cord": c.cord_file,
                          "SISpacingMM": c.si_mm, "CropBox": c.box_info,
                          "LevelsFrom": f"cord ({method} levels)" if c.cord is not None else "image S-I axis"}
                         for c in cases]}
    report["Levers"] = results
    report["Passed"] = [lever for lever, r in results.items() if r["passed"]]
    report["Use"] = list(best_levers(report))
    return report


def best_levers(report: dict) -> tuple[str, ...]:
    """The fastest lever that passed (by its measured speed-up) as its parts: ``("crop", "int8")``, ``("int8",)``,
    ... or ``()`` when none passed."""
    passed = [(r.get("speedup") or 0.0, lever) for lever, r in report.get("Levers", {}).items() if r.get("passed")]
    if not passed:
        return ()
    crop, int8 = parts(max(passed)[1])
    return ("crop",) * crop + ("int8",) * int8


def write_report(check: SpeedCheck | dict, path: str | os.PathLike) -> Path:
    """The report as JSON at ``path`` (written whole or not at all)."""
    return write_json(path, check.report if isinstance(check, SpeedCheck) else check)


def release_problem(report: dict, record: dict) -> str | None:
    """Why ``report`` was not made with the installed release of ``record`` (tag and model sha256), or None."""
    made = report.get("Release") or {}
    if made.get("Release") == record.get("tag") and made.get("ModelSHA256") == record.get("sha256"):
        return None
    return (f"made with release {made.get('Release')} (model sha256 {str(made.get('ModelSHA256'))[:12]}), not with the "
            f"installed {record.get('tag')} ({str(record.get('sha256'))[:12]})")


def _is_report(content) -> bool:
    return (isinstance(content, dict) and content.get("Name") == FORMAT and content.get("FormatVersion") == FORMAT_VERSION
            and isinstance(content.get("Levers"), dict))


def read_report(path: str | os.PathLike) -> dict:
    """A report of :func:`write_report`, refused in one line when it is not one (its release: :func:`release_problem`)."""
    content = read_json(path, limit=16 << 20)
    if not _is_report(content):
        raise RootletsError(f"-speedcheck {path}: not a report of `rootlets speedcheck` (format {FORMAT_VERSION}); "
                            f"make one with `rootlets speedcheck IMG... -o {path}`")
    return content


def format_report(report: dict) -> str:
    """The verdict as a short text table (one row per lever, reasons below)."""
    exact = report["Exact"]
    lines = [f"exact path: {exact['SecondsPerImage']:.1f} s per image ({exact['Backend']}, {exact['Threads']} threads); "
             f"thresholds: {report['Thresholds']['Text']}",
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


def image_identity(img: nib.Nifti1Image) -> str:
    """A digest of an image's voxels and affine (the same image read twice has the same one)."""
    data = np.ascontiguousarray(np.asanyarray(img.dataobj))
    digest = hashlib.blake2b(data.view(np.uint8), digest_size=16)
    digest.update(str((data.shape, data.dtype)).encode())
    digest.update(np.asarray(img.affine, np.float64).tobytes())
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------------ in a batch
BATCH_LEVERS = ("crop", "int8")


@dataclass(frozen=True)
class BatchLevers:
    """The levers of a batch run (part of every unit's key: a lever changes labels).

    ``levers`` apply to every image but the ``checked`` ones (BIDS-relative paths), which the lever check ran on and
    which are written from its exact path. int8 is calibrated on ``calibration`` (files, with their sha256) with
    ``int8_options`` (:class:`rootlets_task.int8.Int8Options` fields), so every worker quantises the same network.
    """

    levers: tuple[str, ...] = ()
    checked: tuple[str, ...] = ()
    calibration: tuple[str, ...] = ()
    calibration_sha256: tuple[str, ...] = ()
    int8_options: dict | None = None
    why: str = ""  # how they were chosen (the verdict of the check), kept in every image's record

    def used(self, rel: str | None) -> tuple[str, ...]:
        return () if rel in self.checked else self.levers

    def key(self, rel: str | None) -> dict:
        """What the levers add to the key of the unit ``rel`` (nothing without a lever)."""
        used = self.used(rel)
        if not used:
            return {}
        int8 = {"int8": {"calibration": list(self.calibration_sha256), "options": self.int8_options}}
        return {"levers": list(used), **(int8 if "int8" in used else {})}

    def record(self, rel: str | None) -> dict:
        """What the record of the unit ``rel`` says about the levers (nothing when none was asked for)."""
        if not (self.levers or self.why):
            return {}
        checked = " (this image was checked: written from the check's exact path)" if rel in self.checked else ""
        return {"levers": {"used": list(self.used(rel)), "why": self.why + checked}}

    def segmenter_kwargs(self, rel: str | None) -> dict:
        """The precision arguments of :func:`rootlets_task.engines.worker_segmenter` for the unit ``rel``."""
        if "int8" not in self.used(rel):
            return {}
        return {"precision": "int8", "calibration": self.calibration, "int8_options": self.int8_options}


def check_batch_options(options, model: ModelOptions, chain) -> None:
    """Lever choices of a batch that contradict each other, refused in one line before anything is written."""
    mode = options.levers
    if mode not in ("none", "auto"):
        parse_levers(mode, BATCH_LEVERS)
    if options.speedcheck is not None and mode != "auto":
        raise RootletsError(f"-speedcheck {options.speedcheck}: only -levers auto reads it; add -levers auto")
    if options.speedcheck is not None and not Path(options.speedcheck).is_file():
        raise RootletsError(f"-speedcheck {options.speedcheck}: file not found; make it with `rootlets speedcheck`")
    if mode == "auto" and (model.precision == "int8" or (chain is not None and chain.crop_to_cord)):
        raise RootletsError("-levers auto chooses crop and int8 itself; drop -precision int8 and -crop-to-cord")
    if not 1 <= options.levers_check <= 100:
        raise RootletsError(f"-levers-check {options.levers_check}: give a number of images from 1 to 100")


def plan_batch_levers(options, settings, units: list, out: Path) -> tuple[BatchLevers, dict | None, SpeedCheck | None]:
    """The levers a batch uses, what its ``dataset_description.json`` records about them, and the check run here.

    ``-levers crop,int8`` (or ``-precision int8``): those, unchecked. ``-levers auto``: the fastest combination that
    passed in the ``-speedcheck`` report of this release, or, without one, in a check of the dataset's first
    ``levers_check`` images (kept in ``logs/speedcheck.json`` and reused by later runs); those images are then
    written from the check's exact path.
    """
    segmented = [u for u in units if "rootlets" not in u.labels]  # the others have manual rootlets: no model runs
    if options.levers != "auto":
        chosen = set(parse_levers(options.levers, BATCH_LEVERS)) if options.levers != "none" else set()
        chosen |= {"int8"} if settings.options.precision == "int8" else set()
        levers = tuple(n for n in BATCH_LEVERS if n in chosen)
        if not levers:
            return BatchLevers(), None, None
        why = f"{'+'.join(levers)} asked for (-levers or -precision), not checked"
        return _with_int8(BatchLevers(levers, why=why), None, segmented), {"Mode": "explicit (not checked)",
                                                                            "Levers": list(levers)}, None
    report, check, where, ignored = _auto_report(options, settings, segmented, Path(out) / "logs" / REPORT)
    not_passed = {k: r["why"][:3] for k, r in report["Levers"].items() if not r["passed"]}
    used = best_levers(report)
    why = "; ".join([f"-levers auto ({where}): using {'+'.join(used) or 'no lever'} (passed: "
                     f"{', '.join(report['Passed']) or 'none'})",
                     *(f"{k} not used: {w[0]}" for k, w in not_passed.items()), *([ignored] if ignored else [])])
    levers = BatchLevers(used, tuple(report.get("Checked", ())), why=why)
    note = {"Mode": "auto", "Levers": list(used), "SpeedCheck": where, "Passed": report["Passed"],
            "NotPassed": not_passed, "Checked": list(levers.checked), **({"Ignored": ignored} if ignored else {})}
    for lever, reasons in not_passed.items():
        log.warning("-levers auto: %s not used: %s", lever, "; ".join(reasons))
    log.warning("-levers auto: %s", f"using {'+'.join(used)}" if used else "no lever passed; every image runs the "
                "exact path")
    return _with_int8(levers, report, segmented), note, check


def _auto_report(options, settings, segmented: list, saved: Path) -> tuple[dict, SpeedCheck | None, str, str | None]:
    """The report ``-levers auto`` follows: ``-speedcheck``'s when the installed release made it, else (the other
    ignored, with a message) a check of the dataset's first images; with where it is and why another was ignored."""
    ignored = None
    if options.speedcheck is not None:
        report = read_report(options.speedcheck)
        ignored = release_problem(report, settings.model)
        if ignored is None:
            return report, None, str(Path(options.speedcheck).absolute()), None
        ignored = f"-speedcheck {options.speedcheck} ignored: {ignored}"
        log.warning("%s; checking the levers on the first images here instead", ignored)
    report, check = _dataset_check(options, settings, segmented, saved)
    return report, check, f"logs/{REPORT}", ignored


def _dataset_check(options, settings, segmented: list, saved: Path) -> tuple[dict, SpeedCheck | None]:
    """The verdict of an earlier run of this release (``saved``), else a check on the first images, saved there."""
    earlier = None if options.overwrite else read_json(saved, limit=16 << 20)
    if _is_report(earlier) and "Checked" in earlier and release_problem(earlier, settings.model) is None:
        log.info("-levers auto: using the check of an earlier run (%s)", saved)
        return earlier, None
    first = segmented[:options.levers_check]
    if not first:
        return {"Levers": {}, "Passed": [], "Checked": []}, None
    log.warning("-levers auto: checking %s on %s (exact path and every lever, in this process)", ", ".join(LEVERS),
                ", ".join(u.rel for u in first))
    check = check_levers([u.image for u in first], [u.labels.get("cord") for u in first], LEVERS, settings.options,
                         strict=False)
    check.report["Checked"] = [u.rel for u in first]
    saved.parent.mkdir(parents=True, exist_ok=True)
    write_report(check, saved)
    return check.report, check


def _with_int8(levers: BatchLevers, report: dict | None, segmented: list) -> BatchLevers:
    """``levers`` with the int8 calibration: the report's images when they are here unchanged (the very network it
    checked, from the cache), else the dataset's first images."""
    if "int8" not in levers.levers:
        return levers
    from rootlets_task.int8 import Int8Options

    int8 = (report or {}).get("Int8") or {}
    named = int8.get("Calibration") or []
    if named and all(Path(c["File"]).is_file() and sha256_file(c["File"]) == c["SHA256"] for c in named):
        files = tuple(c["File"] for c in named)
    else:
        if named:
            log.warning("-levers auto: the check's int8 calibration images are missing or changed; calibrating on the "
                        "dataset's first images (the int8 network differs a little from the one checked)")
        files = tuple(u.image for u in segmented[:CALIBRATION_IMAGES])
    return replace(levers, calibration=files, calibration_sha256=tuple(sha256_file(f) for f in files),
                   int8_options=int8.get("Options") or asdict(Int8Options()))


class Replay:
    """A loaded model whose ``segment_image`` returns, for the images given, the labels already made (the lever
    check's exact path), once each; every other call and attribute is the model's."""

    def __init__(self, segmenter, found: dict[str, np.ndarray]):
        self.segmenter, self.found = segmenter, found

    def segment_image(self, img: nib.Nifti1Image, box=None) -> np.ndarray:
        if box is None:
            labels = self.found.pop(image_identity(img), None)
            if labels is not None:
                log.info("rootlets from the lever check's exact path (not segmented again)")
                return labels
        return self.segmenter.segment_image(img, box)

    def __getattr__(self, name: str):
        return getattr(self.segmenter, name)


@contextlib.contextmanager
def replaying(check: SpeedCheck | None, settings):
    """While the checked images run in this process, the worker cache holds the check's models: the exact one
    replays the labels it made for them, and the int8 one (if used) needs no second quantisation."""
    if check is None:
        yield
        return
    from rootlets_task import engines

    o = settings.options
    where = (settings.model_folder, o.device, o.test_time_aug, o.threads)
    exact = check.segmenters["float32"]
    engines.keep_segmenter(Replay(exact, dict(zip(check.identities, check.exact, strict=True))), *where)
    kwargs = settings.levers.segmenter_kwargs(None)  # those of the images not checked
    seg = check.segmenters.get("int8")
    if kwargs and seg is not None and seg.precision == "int8" and \
            tuple(c["File"] for c in check.report["Int8"]["Calibration"]) == tuple(kwargs["calibration"]):
        engines.keep_segmenter(seg, *where, **kwargs)
    try:
        yield
    finally:
        engines.keep_segmenter(exact, *where)
