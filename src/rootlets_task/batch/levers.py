"""The speed levers of ``rootlets batch``: ``-levers crop,int8`` (or ``crop,bf16``; unchecked) or ``-levers auto``
(what passed ``rootlets speedcheck`` with the installed release, from its report or from a check of the dataset's
first images; bf16 only where the CPU runs it).

A lever is part of every image's key (it changes labels) and every image's record says which levers ran and why.
The images the check ran on are written from its exact path (:class:`Replay`), not segmented again.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from rootlets_task.core.errors import RootletsError
from rootlets_task.core.files import read_json, same_file, sha256_file
from rootlets_task.core.options import ModelOptions
from rootlets_task.core.places import shared_paths
from rootlets_task.io import nifti
from rootlets_task.pipeline.speedcheck import (
    CALIBRATION_IMAGES,
    LOW_PRECISIONS,
    REPORT,
    CheckOptions,
    SpeedCheck,
    best_levers,
    check_levers,
    default_levers,
    is_report,
    levers_not_here,
    parse_levers,
    read_report,
    release_problem,
    verify,
    write_report,
)

log = logging.getLogger(__name__)

BATCH_LEVERS = ("crop", "int8", "bf16")  # at most one of int8 and bf16


@dataclass(frozen=True)
class BatchLevers:
    """The levers of a batch run (part of every unit's key: a lever changes labels).

    ``levers`` apply to every image but the ``checked`` ones (BIDS-relative paths), which the lever check ran on and
    which are written from its exact path. int8 is calibrated on ``calibration`` (files, with their sha256) with
    ``int8_options`` (:class:`rootlets_task.inference.int8.Int8Options` fields), so every worker quantises the same network.
    """

    levers: tuple[str, ...] = ()
    checked: tuple[str, ...] = ()
    calibration: tuple[str, ...] = ()
    calibration_sha256: tuple[str, ...] = ()
    int8_options: dict | None = None
    why: str = ""  # how they were chosen (the verdict of the check), kept in every image's record

    @classmethod
    def from_dict(cls, data: dict) -> BatchLevers:
        """Back from :func:`dataclasses.asdict` through JSON (a SLURM array's plan): lists become tuples again."""
        fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**fields)

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
        """The unit ``rel``'s precision (``ModelOptions.precision``) and the calibration arguments of
        :func:`rootlets_task.batch.engines.worker_segmenter`."""
        used = self.used(rel)
        if "bf16" in used:
            return {"precision": "bf16"}
        if "int8" not in used:
            return {}
        return {"precision": "int8", "calibration": self.calibration, "int8_options": self.int8_options}


def check_batch_options(options, model: ModelOptions, chain) -> None:
    """Lever choices of a batch that contradict each other, refused in one line before anything is written."""
    mode = options.levers
    explicit = set(parse_levers(mode, BATCH_LEVERS)) if mode not in ("none", "auto") else set()
    explicit |= {model.precision} - {"float32"}
    if len(explicit & set(LOW_PRECISIONS)) > 1:
        raise RootletsError(f"-levers {mode} / -precision {model.precision}: int8 and bf16 are two precisions; choose one")
    if "bf16" in explicit and levers_not_here():
        raise RootletsError(f"-levers bf16: {levers_not_here()['bf16']}; leave bf16 out (-levers auto checks only "
                            "what this CPU can run)")
    if options.speedcheck is not None and mode != "auto":
        raise RootletsError(f"-speedcheck {options.speedcheck}: only -levers auto reads it; add -levers auto")
    if options.speedcheck is not None and not Path(options.speedcheck).is_file():
        raise RootletsError(f"-speedcheck {options.speedcheck}: file not found; make it with `rootlets speedcheck`")
    if mode == "auto" and (model.precision != "float32" or (chain is not None and chain.crop_to_cord)):
        raise RootletsError(f"-levers auto chooses crop, int8 and bf16 itself; drop -precision {model.precision} "
                            "and -crop-to-cord")
    if not 1 <= options.levers_check <= 100:
        raise RootletsError(f"-levers-check {options.levers_check}: give a number of images from 1 to 100")


def plan_batch_levers(options, settings, units: list, out: Path) -> tuple[BatchLevers, dict | None, SpeedCheck | None]:
    """The levers a batch uses, what its ``dataset_description.json`` records about them, and the check run here.

    ``-levers crop,int8`` (or ``-precision int8``, ``bf16`` likewise): those, unchecked. ``-levers auto``: the fastest
    combination that passed in the ``-speedcheck`` report of this release, or, without one, in a check of the
    dataset's first ``levers_check`` images (the levers this CPU can run; kept in ``logs/speedcheck.json`` and reused
    by later runs); those images are then written from the check's exact path.
    """
    segmented = [u for u in units if "rootlets" not in u.labels]  # the others have manual rootlets: no model runs
    if not segmented:
        return BatchLevers(), None, None
    if options.levers != "auto":
        chosen = set(parse_levers(options.levers, BATCH_LEVERS)) if options.levers != "none" else set()
        chosen |= {settings.options.precision} - {"float32"}
        levers = tuple(n for n in BATCH_LEVERS if n in chosen)
        if not levers:
            return BatchLevers(), None, None
        why = f"{'+'.join(levers)} asked for (-levers or -precision), not checked"
        return _with_int8(BatchLevers(levers, why=why), None, segmented), {"Mode": "explicit (not checked)",
                                                                            "Levers": list(levers)}, None
    report, check, where, ignored = _auto_report(options, settings, segmented, Path(out) / "logs" / REPORT)
    verified = report.get("Verified") or {}
    not_passed = {k: r["why"][:3] for k, r in report["Levers"].items() if not r["passed"]}
    used = best_levers(report)
    not_checked = report.get("NotChecked") or {}
    why = "; ".join([f"-levers auto ({where}): using {'+'.join(used) or 'no lever'} (passed: "
                     f"{', '.join(report['Passed']) or 'none'})",
                     *(f"{k} not used: {w[0]}" for k, w in not_passed.items()), *([ignored] if ignored else []),
                     f"verdicts recomputed from the report's figures (thresholds {verified.get('Thresholds')})",
                     *(f"{k} {text}" for k, text in (verified.get("Overruled") or {}).items()),
                     *([f"{' and '.join(not_checked)} not checked: {next(iter(not_checked.values()))}"]
                       if not_checked else [])])
    picked = BatchLevers(used, tuple(report.get("Checked", ())), why=why)
    note = {"Mode": "auto", "Levers": list(used), "SpeedCheck": where, "Passed": report["Passed"],
            "NotPassed": not_passed, "Checked": list(picked.checked), **({"Ignored": ignored} if ignored else {}),
            "Verified": verified, **({"NotChecked": not_checked} if not_checked else {})}
    for lever, reasons in not_passed.items():
        log.warning("-levers auto: %s not used: %s", lever, "; ".join(reasons))
    log.warning("-levers auto: %s", f"using {'+'.join(used)}" if used else "no lever passed; every image runs the "
                "exact path")
    return _with_int8(picked, report, segmented), note, check


def _auto_report(options, settings, segmented: list, saved: Path) -> tuple[dict, SpeedCheck | None, str, str | None]:
    """The report ``-levers auto`` follows: ``-speedcheck``'s when the installed release made it, else (the other
    ignored, with a message) a check of the dataset's first images; with where it is and why another was ignored."""
    ignored = None
    if options.speedcheck is not None:
        report = verify(read_report(options.speedcheck), str(options.speedcheck))
        ignored = release_problem(report, settings.model)
        if ignored is None:
            return report, None, str(Path(options.speedcheck).absolute()), None
        if same_file(options.speedcheck, saved):  # the check below would write its report over this input
            raise RootletsError(f"-speedcheck {options.speedcheck}: {ignored}, and a check here would replace it; give "
                                "a copy of it, or leave -speedcheck out")
        ignored = f"-speedcheck {options.speedcheck} ignored: {ignored}"
        log.warning("%s; checking the levers on the first images here instead", ignored)
    report, check = _dataset_check(options, settings, segmented, saved)
    return report, check, f"logs/{REPORT}", ignored


def _dataset_check(options, settings, segmented: list, saved: Path) -> tuple[dict, SpeedCheck | None]:
    """The verdict of an earlier run of this release (``saved``), else a check on the first images, saved there."""
    earlier = None if options.overwrite else read_json(saved, limit=16 << 20)
    if is_report(earlier) and isinstance(earlier.get("Checked"), list) and release_problem(earlier, settings.model) is None:
        try:
            earlier = verify(earlier, str(saved))
        except RootletsError as exc:
            log.warning("-levers auto: %s; checking again", exc)
        else:
            log.info("-levers auto: using the check of an earlier run (%s)", saved)
            return {**earlier, "Checked": [str(c) for c in earlier["Checked"]]}, None
    first = segmented[:options.levers_check]
    if not first:
        return {"Levers": {}, "Passed": [], "Checked": []}, None
    levers, skipped = default_levers(), levers_not_here()
    for lever, why in skipped.items():
        log.info("-levers auto: %s not checked: %s", lever, why)
    log.warning("-levers auto: checking %s on %s (exact path and every lever, in this process)", ", ".join(levers),
                ", ".join(u.rel for u in first))
    with shared_paths(saved.parent.parent, {"raw": first[0].dataset_root}):  # the report is part of the derivative
        check = check_levers([u.image for u in first], [u.labels.get("cord") for u in first], levers, settings.options,
                             options=CheckOptions(strict=False))
    check.report["Checked"] = [u.rel for u in first]
    check.report["NotChecked"] = skipped
    saved.parent.mkdir(parents=True, exist_ok=True)
    write_report(check, saved)
    return verify(check.report, str(saved)), check


def _with_int8(levers: BatchLevers, report: dict | None, segmented: list) -> BatchLevers:
    """``levers`` with the int8 calibration: the report's images when they are here unchanged (the very network it
    checked, from the cache), else the dataset's first images."""
    if "int8" not in levers.levers:
        return levers
    from rootlets_task.inference.int8 import Int8Options

    int8 = (report or {}).get("Int8")
    int8 = int8 if isinstance(int8, dict) else {}
    named = int8.get("Calibration") if isinstance(int8.get("Calibration"), list) else []
    options = int8.get("Options")
    if not (isinstance(options, dict) and set(options) <= set(asdict(Int8Options()))):
        options = None
    if named and all(isinstance(c, dict) and isinstance(c.get("File"), str) and Path(c["File"]).is_file()
                     and sha256_file(c["File"]) == c.get("SHA256") for c in named):
        files = tuple(c["File"] for c in named)
    else:
        if named:
            log.warning("-levers auto: the check's int8 calibration images are missing or changed; calibrating on the "
                        "dataset's first images (the int8 network differs a little from the one checked)")
        files = tuple(u.image for u in segmented[:CALIBRATION_IMAGES])
    return replace(levers, calibration=files, calibration_sha256=tuple(sha256_file(f) for f in files),
                   int8_options=options or asdict(Int8Options()))


class Replay:
    """A loaded model whose ``predict`` / ``segment_image`` return, for the images given, the prediction already made
    (the lever check's exact path), once each; every other call and attribute is the model's."""

    def __init__(self, segmenter, found: dict):
        self.segmenter, self.found = segmenter, found

    def predict(self, img: nib.Nifti1Image, box=None):
        made = self.found.pop(nifti.image_digest(img), None) if box is None else None
        if made is None:
            return self.segmenter.predict(img, box)
        log.info("rootlets from the lever check's exact path (not segmented again)")
        return made

    def segment_image(self, img: nib.Nifti1Image, box=None) -> np.ndarray:
        return self.predict(img, box).labels

    def __getattr__(self, name: str):
        return getattr(self.segmenter, name)


@contextlib.contextmanager
def replaying(check: SpeedCheck | None, settings):
    """While the checked images run in this process, the worker cache holds the check's models: the exact one
    replays the labels it made for them, and the int8 or bf16 one (if used) is not made again."""
    if check is None:
        yield
        return
    from rootlets_task.batch import engines

    float32 = replace(settings.options, precision="float32")
    exact = check.segmenters["float32"]
    engines.keep_segmenter(Replay(exact, dict(zip(check.identities, check.exact, strict=True))), settings.model_folder, float32)
    kwargs = settings.levers.segmenter_kwargs(None)  # those of the images not checked
    precision = kwargs.get("precision")
    seg = check.segmenters.get(precision) if precision else None
    if seg is not None and seg.precision == precision and (precision != "int8" or tuple(
            c["File"] for c in check.report["Int8"]["Calibration"]) == tuple(kwargs["calibration"])):
        engines.keep_segmenter(seg, settings.model_folder, replace(float32, precision=precision),
                               kwargs.get("calibration", ()), kwargs.get("int8_options"))
    try:
        yield
    finally:
        engines.keep_segmenter(exact, settings.model_folder, float32)
