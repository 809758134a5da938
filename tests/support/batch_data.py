"""The batch tests' phantom BIDS dataset and how their runs are compared (test_batch, test_batch_slurm,
test_bids_strict; the dataset and its sequential reference run are session fixtures in conftest.py).

Six phantoms over five subjects (sub-03 with two sessions) in four orientations, their cord/discs/PMJ as manual
labels in ``derivatives/labels``, the truth in ``derivatives/truth``, a truncated sub-06 and a T1w that is never
selected by default.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from rootlets_task.batch import run as batch
from rootlets_task.core.options import ChainOptions, ModelOptions
from rootlets_task.io.phantom import write_phantom

# (subject, session, orientation, seed): 6 images over 5 subjects, one with two sessions
SPECS = [("01", None, "LPI", 0), ("02", None, "RPI", 1), ("03", "01", "AIL", 2), ("03", "02", "PSR", 3),
         ("04", None, "LPI", 5), ("05", None, "RPI", 6)]
BROKEN = "sub-06/anat/sub-06_T2w.nii.gz"
COMMON = {"release": "phantom", "threads": 1, "levels": True, "progress": False}
NAMES = {f"sub-{s}{f'_ses-{e}' if e else ''}_T2w" for s, e, _, _ in SPECS}
_MODEL = {"release", "device", "test_time_aug", "threads"}
_CHAIN = {"method", "cord_from", "discs_from", "pmj_from", "crop_to_cord", "renumber", "measure", "measure_mask",
          "measure_method", "template"}


def run(bids_root, out, levels=False, **kwargs):
    """``batch.run_batch`` with its choices as keywords (batch, model and, with ``levels``, chain options)."""
    model = ModelOptions(**{k: v for k, v in kwargs.items() if k in _MODEL})
    chain = ChainOptions(**{k: v for k, v in kwargs.items() if k in _CHAIN}) if levels else None
    options = batch.BatchOptions(**{k: v for k, v in kwargs.items() if k not in _MODEL | _CHAIN})
    return batch.run_batch(bids_root, out, options, model, chain)


def write_dataset(root: Path, work: Path) -> Path:
    """The dataset of the module doc in ``root`` (``work``: scratch for the phantoms)."""
    for sub, ses, orient, seed in SPECS:
        rel = Path(f"sub-{sub}", *([f"ses-{ses}"] if ses else []), "anat")
        stem = f"sub-{sub}{f'_ses-{ses}' if ses else ''}_T2w"
        files = write_phantom(work / stem, orient, seed=seed, prefix=stem)
        (root / rel).mkdir(parents=True)
        shutil.copy(files["image"], root / rel / f"{stem}.nii.gz")
        labels = root / "derivatives" / "labels" / rel
        labels.mkdir(parents=True)
        for kind in ("cord", "discs", "pmj"):
            shutil.copy(files[kind], labels / files[kind].name)
        (root / "derivatives" / "truth").mkdir(parents=True, exist_ok=True)
        shutil.copy(files["truth"], root / "derivatives" / "truth" / f"{stem}.json")
    (root / BROKEN).parent.mkdir(parents=True)
    (root / BROKEN).write_bytes(b"\x1f\x8b truncated download")
    (root / "sub-01" / "anat" / "sub-01_T1w.nii.gz").write_bytes(b"another contrast: never selected by default")
    return root


def outputs(out: Path) -> dict[str, object]:
    """Every image array and table of a derivative folder, by relative path (sidecars and records hold times/hosts)."""
    found = {}
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out).as_posix()
        if rel.startswith(("logs/", ".")) or not path.is_file():
            continue
        if path.name.endswith(".nii.gz"):
            img = nib.load(path)
            found[rel] = (np.asanyarray(img.dataobj), img.affine)
        elif path.suffix == ".csv":
            frame = pd.read_csv(path)
            if "source" in frame:  # group/midpoints.csv names each image's table by its absolute path
                frame["source"] = [os.path.relpath(v, out) if os.path.isabs(str(v)) else v for v in frame["source"]]
            found[rel] = frame
        elif path.suffix == ".png":
            found[rel] = "png"
    return found


def assert_same(a: Path, b: Path) -> None:
    """Two derivative folders hold the same files, arrays and tables."""
    left, right = outputs(a), outputs(b)
    assert sorted(left) == sorted(right)
    for rel, value in left.items():
        if isinstance(value, tuple):
            assert np.array_equal(value[0], right[rel][0]), rel
            assert np.allclose(value[1], right[rel][1]), rel
        elif isinstance(value, pd.DataFrame):
            pd.testing.assert_frame_equal(value, right[rel], obj=rel)


def done_names(summary) -> set[str]:
    return {r["name"] for r in summary.by_status("done")}
