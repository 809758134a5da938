"""TEST-ONLY stand-ins for the external tools of the chain (sct_deepseg, totalspineseg, spineps, sct_detect_pmj).

These are MOCKS: the real tools need model weights that cannot be downloaded here. Each stand-in is a small
executable Python script written into a temporary ``bin`` folder that the test puts first on PATH, so the chain
runs it through the same subprocess boundary as the real program. It records its argv (one JSON list per line
in ``$FAKE_TOOL_LOG``) and writes the files the real tool would write, at the same paths, from known data in
``$FAKE_TOOL_DATA`` (made from the phantom truth). ``$FAKE_TOOL_MODE`` selects a behaviour:

* ``ok``: write the expected files;
* ``fail``: print a traceback-like text on stderr and exit 3;
* ``nothing``: exit 0 without writing anything;
* ``othergrid``: the same data on a grid twice as fine along the first axis (same space);
* ``otherspace``: the data with its affine moved 1 m away (another space);
* ``badvalues``: unexpected values (cord 0/2, a disc or PMJ label on two voxels, a SPINEPS mask without discs).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from rootlets_task import phantom as ph

NAMES = ("sct_deepseg", "totalspineseg", "spineps", "sct_detect_pmj")

SCRIPT = r'''#!{python}
"""TEST-ONLY stand-in for `{name}` (see tests/fake_tools.py): records argv, writes known files."""
import json, os, sys
from pathlib import Path

name = Path(sys.argv[0]).name
argv = sys.argv[1:]
with open(os.environ["FAKE_TOOL_LOG"], "a") as log:
    log.write(json.dumps([name] + argv) + "\n")
mode = os.environ.get("FAKE_TOOL_MODE", "ok")
data = Path(os.environ["FAKE_TOOL_DATA"])
if mode == "fail":
    print("Loading model weights ...", file=sys.stderr)
    print("Traceback (most recent call last):", file=sys.stderr)
    print("RuntimeError: fake {name} crashed on purpose", file=sys.stderr)
    sys.exit(3)
if mode == "nothing":
    sys.exit(0)

import nibabel as nib  # noqa: E402 - after the early exits, which must stay fast
import numpy as np  # noqa: E402


def arg(flag):
    return argv[argv.index(flag) + 1]


def write(kind, dst):
    img = nib.load(data / (kind + ".nii.gz"))
    arr = np.asanyarray(img.dataobj).copy()
    affine = img.affine.copy()
    if mode == "othergrid":
        points = kind in ("discs", "pmj")
        fine = np.zeros((2 * arr.shape[0],) + arr.shape[1:], arr.dtype)
        if points:
            fine[::2] = arr
        else:
            fine = np.repeat(arr, 2, axis=0)
        arr = fine
        affine[:3, 3] -= 0.25 * affine[:3, 0]
        affine[:3, 0] *= 0.5
    elif mode == "otherspace":
        affine[:3, 3] += 1000.0
    elif mode == "badvalues":
        if kind == "cord":
            arr = arr * 2
        elif kind in ("discs", "pmj"):
            i, j, k = np.argwhere(arr > 0)[0]
            arr[i, j, k + 1] = arr[i, j, k]
        elif kind == "vert":
            arr[arr > 100] = 0
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, affine), dst)


if name == "sct_deepseg" and argv[0] == "spinalcord":
    write("cord", arg("-o"))
elif name == "sct_deepseg" and argv[0] == "spine":
    base = arg("-o")[: -len(".nii.gz")]
    write("discs", base + "_totalspineseg_discs.nii.gz")
    write("cord", base + "_totalspineseg_all.nii.gz")
elif name == "totalspineseg":
    src, out = Path(argv[0]), Path(argv[1])
    stem = src.name[: -len(".nii.gz")] if src.name.endswith(".nii.gz") else src.stem
    write("discs", out / "step1_levels" / (stem + ".nii.gz"))
    write("cord", out / "step1_cord" / (stem + ".nii.gz"))
elif name == "spineps":
    src = Path(arg("-i"))
    write("vert", src.parent / "derivatives_seg" / src.name.replace("_T2w.nii.gz", "_mod-T2w_seg-vert_msk.nii.gz"))
elif name == "sct_detect_pmj":
    write("pmj", Path(arg("-ofolder")) / arg("-o"))
else:
    print("fake tool: unexpected arguments", argv, file=sys.stderr)
    sys.exit(2)
'''


def install(bin_dir: Path, names: tuple[str, ...] = NAMES) -> Path:
    """Write the stand-in executables into ``bin_dir``."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = bin_dir / name
        path.write_text(SCRIPT.replace("{python}", sys.executable).replace("{name}", name))
        path.chmod(0o755)
    return bin_dir


def calls(log: Path) -> list[list[str]]:
    """argv of every stand-in call so far (first item: the program name)."""
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def spineps_instances(p: ph.Phantom, seed: int) -> np.ndarray:
    """A SPINEPS-like ``seg-vert`` instance mask of an untilted phantom, from its analytic anatomy.

    Vertebral bodies X = 2..8 (C2..T1) get value X, the disc below vertebra X gets 100+X (VERIDAH values), the
    body of C2 reaching up to the phantom's disc label 1 (top of the dens).
    """
    _, depths = ph._levels_layout(np.random.default_rng(seed))  # same draw as make_phantom(seed=seed)
    ijk = np.indices(p.image.shape).reshape(3, -1).T
    x, y, z = (ijk @ p.affine[:3, :3].T + p.affine[:3, 3]).T
    depth = -z
    dx, dy = x, y - ph.centerline_offset(depth)
    body_front = dy - ph.CANAL_RADII[1] - 1.0
    bone = (np.abs(dx) <= 12.0) & (body_front >= 0) & (body_front <= 17.0)
    out = np.zeros(x.shape, np.uint8)
    for vert in range(2, 9):
        top = depths[1] if vert == 2 else depths[vert]
        out[bone & (depth >= top) & (depth < depths[vert + 1])] = vert
    for sct in range(3, 10):
        disc = (dx / 13.0) ** 2 + ((body_front - 8.5) / 8.5) ** 2 + ((depth - depths[sct]) / 2.5) ** 2 <= 1.0
        out[disc] = 100 + sct - 1
    return out.reshape(p.image.shape)


def write_data(folder: Path, p: ph.Phantom, seed: int) -> Path:
    """The files the stand-ins copy: the phantom's true cord, discs, PMJ and a SPINEPS-like vertebra mask."""
    folder.mkdir(parents=True, exist_ok=True)
    for kind in ("cord", "discs", "pmj"):
        nib.save(p.nifti(kind), folder / f"{kind}.nii.gz")
    nib.save(nib.Nifti1Image(spineps_instances(p, seed), p.affine), folder / "vert.nii.gz")
    return folder


def prepare(folder: Path, p: ph.Phantom, seed: int, names: tuple[str, ...] = NAMES) -> Path:
    """Write the stand-ins (``folder/bin``) and their data (``folder/data``) once; returns ``folder``."""
    install(folder / "bin", names)
    write_data(folder / "data", p, seed)
    return folder


def activate(monkeypatch, prepared: Path, log: Path) -> Path:
    """Put prepared stand-ins first on PATH for one test, logging to ``log``; returns ``log``."""
    monkeypatch.setenv("PATH", f"{prepared / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_TOOL_LOG", str(log))
    monkeypatch.setenv("FAKE_TOOL_DATA", str(prepared / "data"))
    monkeypatch.setenv("FAKE_TOOL_MODE", "ok")
    return log
