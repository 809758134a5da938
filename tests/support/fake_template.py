"""TEST-ONLY stand-ins for SCT's PAM50 commands (sct_register_to_template, sct_warp_template, sct_apply_transfo).

These are MOCKS: the real registration needs SCT's binaries (isct_antsRegistration ...) and the PAM50 data, which
are not installed here. Each stand-in is an executable script put first on PATH, so the chain runs it through the
same subprocess boundary as SCT. It checks its argv against the command line of the SCT version it belongs to
(``$SCT_DIR/spinalcordtoolbox/version.txt``; read from each version's scripts, see
rootlets_task.measures.template): ``-lrootlet`` exists from 7.0 (older: exit 2, as argparse does), ``-c`` is one of
t1, t2, t2s. It records its argv (one JSON list per line in ``$FAKE_TOOL_LOG``) and writes SCT's output files at
SCT's paths:

* sct_register_to_template: ``warp_template2anat.nii.gz`` (on the image's grid), ``warp_anat2template.nii.gz`` (on
  the template's grid), ``anat2template.nii.gz``, ``template2anat.nii.gz`` in ``-ofolder``. The warps are IDENTITY
  displacement fields (SCT's 5D layout, x, y, z, 1, 3; zero displacement): registration is not imitated;
* sct_warp_template: every ``$SCT_DIR/data/PAM50/template/*.nii.gz`` through the warp onto ``-d``, in
  ``OFOLDER/template/``;
* sct_apply_transfo: ``-i`` through the warp onto ``-d`` (nearest neighbour, in world coordinates).

``$FAKE_TOOL_MODE=fail`` makes sct_register_to_template exit 1 with a traceback-like stderr.
:func:`make_template` writes a PAM50-like template folder (PAM50_t2, PAM50_spinal_levels, PAM50_levels) from a
phantom, so an identity warp on the template's own grid must give back the template's own levels.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from rootlets_task.io import phantom as ph

NAMES = ("sct_register_to_template", "sct_warp_template", "sct_apply_transfo")

SCRIPT = r'''#!{python}
"""TEST-ONLY stand-in for `{name}` (see tests/support/fake_template.py): checks argv, writes identity warps."""
import json, os, sys
from pathlib import Path

name = Path(sys.argv[0]).name
argv = sys.argv[1:]
with open(os.environ["FAKE_TOOL_LOG"], "a") as log:
    log.write(json.dumps([name] + argv) + "\n")

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

root = Path(os.environ["SCT_DIR"])
version = tuple(int(p) for p in (root / "spinalcordtoolbox" / "version.txt").read_text().strip().split(".")[:2])


def arg(flag, default=None):
    return argv[argv.index(flag) + 1] if flag in argv else default


def refuse(why):
    print(f"{name}: error: {why}", file=sys.stderr)
    sys.exit(2)


def identity_warp(grid, path):
    field = np.zeros(grid.shape[:3] + (1, 3), np.float32)
    img = nib.Nifti1Image(field, grid.affine)
    img.header.set_intent("vector")
    nib.save(img, path)


def apply(source, destination, warp, out):
    field = nib.load(warp)
    if field.ndim != 5 or field.shape[-1] != 3 or field.shape[:3] != destination.shape[:3]:
        refuse(f"-w {warp}: not a displacement field on the destination's grid")
    data = np.asanyarray(source.dataobj)
    ijk = np.indices(destination.shape[:3]).reshape(3, -1).T
    world = ijk @ destination.affine[:3, :3].T + destination.affine[:3, 3]
    world = world + np.asanyarray(field.dataobj).reshape(-1, 3)  # zero: identity
    src = np.rint(world @ np.linalg.inv(source.affine)[:3, :3].T + np.linalg.inv(source.affine)[:3, 3]).astype(int)
    inside = np.all((src >= 0) & (src < data.shape[:3]), axis=1)
    values = np.zeros(len(ijk), data.dtype)
    values[inside] = data[tuple(src[inside].T)]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(values.reshape(destination.shape[:3]), destination.affine), out)


template = root / "data" / "PAM50" / "template"
if name == "sct_register_to_template":
    if version < (7, 0) and "-lrootlet" in argv:
        refuse("unrecognized arguments: -lrootlet")
    if arg("-c", "t2") not in ("t1", "t2", "t2s"):
        refuse(f"argument -c: invalid choice: '{arg('-c')}' (choose from 't1', 't2', 't2s')")
    for flag in ("-i", "-s", "-lrootlet"):
        if not Path(arg(flag, "")).is_file():
            refuse(f"argument {flag}: file not found")
    given = np.unique(np.asanyarray(nib.load(arg("-lrootlet")).dataobj)).astype(int).tolist()
    Path(os.environ["FAKE_TOOL_LOG"]).with_suffix(".lrootlet.json").write_text(json.dumps([v for v in given if v]))
    if os.environ.get("FAKE_TOOL_MODE") == "fail":
        print("Traceback (most recent call last):", file=sys.stderr)
        print("RuntimeError: isct_antsRegistration failed (fake, on purpose)", file=sys.stderr)
        sys.exit(1)
    folder = Path(arg("-ofolder", "."))
    folder.mkdir(parents=True, exist_ok=True)
    image, t2 = nib.load(arg("-i")), nib.load(template / "PAM50_t2.nii.gz")
    identity_warp(image, folder / "warp_template2anat.nii.gz")
    identity_warp(t2, folder / "warp_anat2template.nii.gz")
    apply(t2, image, folder / "warp_template2anat.nii.gz", folder / "template2anat.nii.gz")
    apply(image, t2, folder / "warp_anat2template.nii.gz", folder / "anat2template.nii.gz")
elif name == "sct_warp_template":
    destination = nib.load(arg("-d"))
    out = Path(arg("-ofolder", "label")) / "template"
    for path in sorted(template.glob("*.nii.gz")):
        apply(nib.load(path), destination, arg("-w"), out / path.name)
elif name == "sct_apply_transfo":
    if arg("-x", "spline") not in ("nn", "linear", "spline", "label"):
        refuse(f"argument -x: invalid choice: '{arg('-x')}'")
    apply(nib.load(arg("-i")), nib.load(arg("-d")), arg("-w"), arg("-o"))
'''


def install(bin_dir: Path) -> Path:
    """Write the three stand-ins into ``bin_dir``."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in NAMES:
        path = bin_dir / name
        path.write_text(SCRIPT.replace("{python}", sys.executable).replace("{name}", name))
        path.chmod(0o755)
    return bin_dir


def make_template(sct_root: Path, p: ph.Phantom) -> Path:
    """A PAM50-like ``data/PAM50/template`` folder from a phantom: its image as PAM50_t2, its true spinal levels as
    PAM50_spinal_levels, its vertebral levels as PAM50_levels; returns the folder."""
    folder = sct_root / "data" / "PAM50" / "template"
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in (("PAM50_t2", p.image), ("PAM50_spinal_levels", p.spinal_levels), ("PAM50_levels", p.vertebral_levels)):
        nib.save(nib.Nifti1Image(np.asarray(data), p.affine), folder / f"{name}.nii.gz")
    return folder
