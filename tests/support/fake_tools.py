"""TEST-ONLY stand-ins for the external tools of the chain (sct_deepseg, sct_label_vertebrae, totalspineseg, spineps,
sct_detect_pmj).

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

The SCT stand-ins speak the command line of the SCT version they belong to (``$SCT_DIR/spinalcordtoolbox/version.txt``,
else the ``version.txt`` beside their ``bin`` folder, as a real SCT installation has it): 6.4/6.5 ``sct_deepseg -i IMG
-task TASK -o OUT``, 7.x ``sct_deepseg TASK -i IMG -o OUT``, the disc task named ``totalspineseg`` (6.5-7.1, outputs
``<OUT stem>_step1_levels``) or ``spine`` (7.2+, ``_totalspineseg_discs``), and refuse other syntaxes with exit 2 as
SCT's parser does (argv checked against what each version's sct_deepseg.py accepts).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from rootlets_task.io import phantom as ph

NAMES = ("sct_deepseg", "sct_label_vertebrae", "totalspineseg", "spineps", "sct_detect_pmj")

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


def sct_version():
    root = Path(os.environ["SCT_DIR"]) if os.environ.get("SCT_DIR") else Path(sys.argv[0]).resolve().parent.parent
    text = (root / "spinalcordtoolbox" / "version.txt").read_text().strip()
    return tuple(int(p) for p in text.split(".")[:2])


def refuse(why):
    print(f"sct_deepseg: error: {why}", file=sys.stderr)
    sys.exit(2)


def deepseg_task():
    """(task, argv without it) as this version's parser reads them."""
    if sct_version() >= (7, 0):
        if not argv or argv[0].startswith("-") or "-task" in argv:
            refuse("the -task syntax was removed in SCT 7.0: use `sct_deepseg TASK -i IMG`")
        return argv[0], argv[1:]
    if not argv or not argv[0].startswith("-"):
        refuse(f"unrecognized arguments: {argv[0] if argv else ''} (SCT 6.x: sct_deepseg -i IMG -task TASK)")
    return arg("-task"), argv


TASKS = {(6, 4): {"seg_sc_contrast_agnostic"}, (6, 5): {"seg_sc_contrast_agnostic", "totalspineseg"},
         (7, 0): {"spinalcord", "totalspineseg"}, (7, 1): {"spinalcord", "totalspineseg"}}
if name == "sct_deepseg":
    task, rest = deepseg_task()
    known = TASKS.get(sct_version(), {"spinalcord", "spine"})
    if task not in known:
        refuse(f"argument TASK: invalid choice: '{task}' (SCT {sct_version()} has {sorted(known)})")
    if task in ("spinalcord", "seg_sc_contrast_agnostic"):
        write("cord", arg("-o"))
    elif task == "spine":
        base = arg("-o")[: -len(".nii.gz")]
        write("discs", base + "_totalspineseg_discs.nii.gz")
        write("cord", base + "_totalspineseg_all.nii.gz")
    else:  # totalspineseg, 6.5-7.1: one file per step-1 output
        base = arg("-o")[: -len(".nii.gz")]
        write("discs", base + "_step1_levels.nii.gz")
        write("cord", base + "_step1_cord.nii.gz")
elif name == "sct_label_vertebrae":
    cord = Path(arg("-s"))
    folder = Path(arg("-ofolder")) if "-ofolder" in argv else Path.cwd()
    if arg("-c") not in ("t1", "t2", "t2s"):
        refuse(f"argument -c: invalid choice: '{arg('-c')}'")
    base = cord.name[: -len(".nii.gz")] if cord.name.endswith(".nii.gz") else cord.stem
    write("discs", folder / (base + "_labeled_discs.nii.gz"))
    write("cord", folder / (base + "_labeled.nii.gz"))
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
    """Write the stand-in executables into ``bin_dir`` (its parent becomes an SCT 7.3-like root unless it is one)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    if not (bin_dir.parent / "spinalcordtoolbox" / "version.txt").is_file():
        set_sct_version(bin_dir.parent, "7.3")
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


def prepare(folder: Path, p: ph.Phantom, seed: int, names: tuple[str, ...] = NAMES, sct_version: str = "7.3") -> Path:
    """Write the stand-ins (``folder/bin``, an SCT-like root with ``spinalcordtoolbox/version.txt``) and their data
    (``folder/data``) once; returns ``folder``."""
    set_sct_version(folder, sct_version)
    install(folder / "bin", names)
    write_data(folder / "data", p, seed)
    return folder


def set_sct_version(root: Path, version: str) -> Path:
    """Make ``root`` an SCT-like folder of ``version`` (what the bridge and the stand-ins read)."""
    (root / "spinalcordtoolbox").mkdir(parents=True, exist_ok=True)
    (root / "spinalcordtoolbox" / "version.txt").write_text(version + "\n")
    return root


def activate(monkeypatch, prepared: Path, log: Path) -> Path:
    """Put prepared stand-ins first on PATH for one test, logging to ``log``; returns ``log``."""
    monkeypatch.setenv("PATH", f"{prepared / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_TOOL_LOG", str(log))
    monkeypatch.setenv("FAKE_TOOL_DATA", str(prepared / "data"))
    monkeypatch.setenv("FAKE_TOOL_MODE", "ok")
    return log
