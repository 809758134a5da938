"""BIDS datasets: which images a batch runs on, the manual labels beside them, and where their outputs go.

Images are found by BIDS entities: ``sub-*/[ses-*/]anat/<entities>_<suffix>.nii[.gz]``. Files that look like images
but are not valid BIDS names (or sit in another subject's folder) are not run and are reported with the reason.
Manual labels come from a labels derivative (default ``derivatives/labels``) under the names of
:data:`rootlets_task.io.labels.SUFFIX`, the NeuroPoly convention the chain itself writes.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from rootlets_task.core.errors import RootletsError
from rootlets_task.core.files import sha256_file
from rootlets_task.io import labels as label_files
from rootlets_task.io import nifti

SKIP_DIRS = {"derivatives", "sourcedata", "code", "stimuli"}
IMAGE_RE = re.compile(r"^(?P<entities>sub-[A-Za-z0-9]+(?:_[A-Za-z0-9]+-[A-Za-z0-9]+)*)_(?P<suffix>[A-Za-z0-9]+)\.nii(?:\.gz)?$")
T1_LIKE = {"T1w", "UNIT1", "MP2RAGE", "T1map"}  # contrast given to sct_detect_pmj (-c t1); every other suffix: t2


@dataclass(frozen=True)
class Unit:
    """One input image of the dataset and where its outputs go."""

    name: str  # the image stem, e.g. sub-01_ses-02_T2w
    rel: str  # path of the image inside the BIDS root
    image: str
    subject: str
    session: str | None
    suffix: str
    out_dir: str  # final folder: <out>/sub-XX/[ses-YY/]anat
    labels: dict = field(default_factory=dict)  # kind -> manual file from the labels derivative
    inputs: dict = field(default_factory=dict)  # name inside the BIDS root -> sha256

    @property
    def dataset_root(self) -> Path:
        """The raw BIDS dataset the image is in."""
        return Path(self.image).parents[len(Path(self.rel).parent.parts)]

    @property
    def contrast(self) -> str:
        """What sct_detect_pmj is told (``-c``)."""
        return "t1" if self.suffix in T1_LIKE else "t2"


@dataclass
class Found:
    """The images a selection picked, and the candidates it passed over with the reason (for the summary)."""

    images: list[tuple[Path, dict[str, str], str]]
    ignored: list[tuple[str, str]]


def parse_contrast(spec: str) -> tuple[str, dict[str, str]]:
    """``T2w`` -> ("T2w", {}); ``inv-2`` -> ("MP2RAGE", {"inv": "2"}); ``MP2RAGE`` -> both inversions."""
    match = re.fullmatch(r"inv-([A-Za-z0-9]+)", spec)
    if match:
        return "MP2RAGE", {"inv": match[1]}
    if not re.fullmatch(r"[A-Za-z0-9]+", spec):
        raise RootletsError(f"-contrast {spec}: not a BIDS suffix; use e.g. T2w, T1w, UNIT1, MP2RAGE, inv-1 or inv-2")
    return spec, {}


def _entities(text: str) -> dict[str, str]:
    return dict(part.split("-", 1) for part in text.split("_"))


def find_images(bids_root: str | os.PathLike, contrasts: tuple[str, ...] = ("T2w",), include: str | None = None,
                exclude: str | None = None, subjects: tuple[str, ...] = (), sessions: tuple[str, ...] = ()) -> Found:
    """(image, entities, suffix) of every ``anat`` image with a selected contrast, sorted by path.

    ``include``/``exclude`` are regular expressions searched in the path relative to the root
    (``sub-01/ses-02/anat/sub-01_ses-02_T2w.nii.gz``), so they can name subjects, sessions or any entity.
    ``subjects``/``sessions``: only these labels (``01``, not ``sub-01``; a BIDS App's ``--participant_label`` and
    ``--session_label``); a subject label without its ``sub-<label>`` folder is an error.
    """
    root = Path(bids_root)
    if not root.is_dir():
        raise RootletsError(f"BIDS folder {root}: not found; give the dataset root (the folder holding sub-*/)")
    missing = [s for s in subjects if not (root / f"sub-{s}").is_dir()]
    if missing:
        raise RootletsError(f"BIDS folder {root}: no {', '.join(f'sub-{s}' for s in missing)} folder; check the "
                            "participant labels")
    wanted = [parse_contrast(c) for c in contrasts]
    try:
        inc = re.compile(include) if include else None
        exc = re.compile(exclude) if exclude else None
    except re.error as err:
        raise RootletsError(f"-include/-exclude: invalid regular expression ({err}); check the pattern") from None
    found, ignored = [], []
    for sub in sorted(p for p in root.glob("sub-*") if p.is_dir() and p.name not in SKIP_DIRS):
        folders = sorted(p for p in sub.glob("ses-*") if p.is_dir()) or [sub]
        for folder in folders:
            for path in sorted((folder / "anat").glob("*.nii*")):
                rel = path.relative_to(root).as_posix()
                match = IMAGE_RE.match(path.name)
                if not match:
                    ignored.append((rel, "not a BIDS file name (sub-<label>[_<key>-<value>...]_<suffix>.nii[.gz], "
                                         "letters and digits only in labels)"))
                    continue
                entities, suffix = _entities(match["entities"]), match["suffix"]
                if entities["sub"] != sub.name[4:] or (folder != sub and entities.get("ses") != folder.name[4:]):
                    ignored.append((rel, "its sub-/ses- entities do not match its folder"))
                    continue
                if not any(suffix == s and all(entities.get(k) == v for k, v in f.items()) for s, f in wanted):
                    continue
                if (inc and not inc.search(rel)) or (exc and exc.search(rel)):
                    continue
                if (subjects and entities["sub"] not in subjects) or (sessions and entities.get("ses") not in sessions):
                    continue
                found.append((path, entities, suffix))
    return Found(found, ignored)


def labels_root(bids_root: str | os.PathLike, labels: str | os.PathLike | None = None) -> Path:
    return Path(labels).absolute() if labels else Path(bids_root).absolute() / "derivatives" / "labels"


def plan_units(bids_root: str | os.PathLike, out: str | os.PathLike, images: list[tuple[Path, dict[str, str], str]],
               labels_dir: str | os.PathLike | None = None, with_labels: bool = False) -> list[Unit]:
    """One :class:`Unit` per image, with its manual labels (``with_labels``) and the sha256 of every input."""
    root, out = Path(bids_root).absolute(), Path(out).absolute()
    manual = labels_root(root, labels_dir)
    units = []
    for path, entities, suffix in images:
        path = path.absolute()
        name = nifti.stem(path)
        rel_dir = path.parent.relative_to(root)
        found = {}
        if with_labels:
            for kind, tail in label_files.SUFFIX.items():
                candidate = manual / rel_dir / f"{name}{tail}.nii.gz"
                if candidate.is_file():
                    found[kind] = str(candidate)
        inputs = {path.relative_to(root).as_posix(): sha256_file(path)}
        inputs.update({f"labels:{kind}": sha256_file(Path(p)) for kind, p in found.items()})
        units.append(Unit(name=name, rel=path.relative_to(root).as_posix(), image=str(path), subject=f"sub-{entities['sub']}",
                          session=f"ses-{entities['ses']}" if "ses" in entities else None, suffix=suffix,
                          out_dir=str(out / rel_dir), labels=found, inputs=inputs))
    names = [u.name for u in units]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise RootletsError(f"images with the same name in several folders ({', '.join(duplicates)}); "
                            "rename them or select one with -include/-exclude")
    return units
