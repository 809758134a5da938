"""The PAM50 template step: SCT's rootlet-based registration (SCT >= 7.0), PAM50's spinal levels in the subject's
space, and the subject's rootlets and levels in PAM50 space.

Command lines, read from each version's scripts (``sct_register_to_template.py``, ``sct_warp_template.py``,
``sct_apply_transfo.py`` at the git tags 7.0-7.3 and 7.4.dev of SCT's repository):

* ``sct_register_to_template -i IMG -s CORD -lrootlet ROOTLETS -c {t1,t2} -ofolder DIR``: writes
  ``DIR/warp_template2anat.nii.gz`` and ``DIR/warp_anat2template.nii.gz``. SCT 7.0 takes rootlet labels C2-C8 only
  (2-8; it ignores others), SCT 7.1 and later C2-T1 (2-9): for 7.0 the T1 label is left out of the file passed
  (said in a note). ``-c``: ``t2`` for T2w, ``t1`` for T1w and MP2RAGE (SCT's choices: t1, t2, t2s);
* ``sct_warp_template -d IMG -w DIR/warp_template2anat.nii.gz -a 0 -ofolder OUT``: the template's files in the
  subject's space under ``OUT/template/``, ``PAM50_spinal_levels.nii.gz`` and ``PAM50_levels.nii.gz`` with nearest
  neighbour (their names hold ``_levels.``);
* ``sct_apply_transfo -i FILE -d $SCT_DIR/data/PAM50/template/PAM50_t2.nii.gz -w DIR/warp_anat2template.nii.gz -x nn
  -o OUT``: the subject's rootlets, spinal and vertebral levels in PAM50 space (same in every version).

SCT 6.x has no ``-lrootlet``: the step is refused there. Every command runs in a private folder
(:func:`rootlets_task.levels.tools.run_tool`); a failure names the step, the command and the end of its stderr.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import nibabel as nib
import numpy as np
import pandas as pd

from rootlets_task.core.errors import RootletsError
from rootlets_task.core.names import level_name
from rootlets_task.io import labels
from rootlets_task.levels import tools

log = logging.getLogger(__name__)

MIN_VERSION = (7, 0)  # first SCT with sct_register_to_template -lrootlet (PR #4647)
ROOTLETS_UP_TO = {(7, 0): 8}  # SCT 7.0: C2-C8 only; 7.1+: C2-T1 (9)
TEMPLATE_FILES = {"t2": "PAM50_t2.nii.gz", "spinal": "PAM50_spinal_levels.nii.gz", "vertebral": "PAM50_levels.nii.gz"}
REGISTER = tools.Tool("sct_register_to_template", "sct_register_to_template", tools.SCT_INSTALL + " (7.0 or later)",
                      "-template")
WARP = tools.Tool("sct_warp_template", "sct_warp_template", tools.SCT_INSTALL, "-template")
APPLY = tools.Tool("sct_apply_transfo", "sct_apply_transfo", tools.SCT_INSTALL, "-template")
FIX = "the other outputs are complete; check the image, cord and rootlets (QC), or run without -template"
IN_TEMPLATE = ("rootlets", "spinal", "vertebral")


@dataclass
class TemplateResult:
    """What the PAM50 step made: PAM50's spinal levels on the image grid, the subject's labels on the template grid."""

    spinal_pam50: np.ndarray  # on the image grid
    in_template: dict[str, np.ndarray]  # rootlets / spinal / vertebral on the template grid
    template: nib.Nifti1Image  # PAM50_t2 (its grid)
    warps: dict[str, Path]  # template2anat, anat2template (in the private folder until the caller copies them)
    commands: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def register_command(version: tuple[int, int], image: Path, cord: Path, rootlets: Path, contrast: str,
                     folder: Path) -> list[str]:
    """``sct_register_to_template`` of this SCT version (the flags are the same in 7.0-7.4; see the module doc)."""
    if version < MIN_VERSION:
        raise RootletsError(f"the PAM50 step needs SCT >= 7.0 (sct_register_to_template -lrootlet); SCT "
                            f"{'.'.join(map(str, version))} is installed: update SCT, or drop -template")
    return [REGISTER.executable, "-i", str(image), "-s", str(cord), "-lrootlet", str(rootlets), "-c", contrast,
            "-ofolder", str(folder)]


def warp_command(image: Path, warp: Path, folder: Path) -> list[str]:
    return [WARP.executable, "-d", str(image), "-w", str(warp), "-a", "0", "-ofolder", str(folder)]


def apply_command(source: Path, destination: Path, warp: Path, out: Path) -> list[str]:
    return [APPLY.executable, "-i", str(source), "-d", str(destination), "-w", str(warp), "-x", "nn", "-o", str(out)]


def require() -> None:
    """Refuse ``-template`` before any work when SCT's registration is missing or older than 7.0."""
    tools._require(REGISTER)
    version = tools.sct_version()
    if version < MIN_VERSION:
        raise RootletsError(f"-template needs SCT >= 7.0 (sct_register_to_template -lrootlet); SCT "
                            f"{'.'.join(map(str, version))} is installed: update SCT, or drop -template")


def template_folder() -> Path:
    """SCT's PAM50 template folder (``$SCT_DIR/data/PAM50/template``)."""
    from rootlets_task.models import sct

    return sct.find_sct().root / "data" / "PAM50" / "template"


def sct_contrast(contrast: str) -> str:
    """SCT's ``-c`` for the image's contrast: t1 for T1w and MP2RAGE (UNIT1), t2 otherwise."""
    return "t1" if contrast.lower() in ("t1", "t1w", "mp2rage", "unit1") else "t2"


def _step(tool: tools.Tool, command: list[str], workdir: Path, what: str, commands: list[str]) -> None:
    commands.append(" ".join(command))
    try:
        tools.run_tool(tool, command, workdir, FIX)
    except RootletsError as exc:
        raise RootletsError(f"PAM50 step failed at {what}: {exc}") from None


def _expect(path: Path, what: str, command: list[str]) -> Path:
    if not path.is_file():
        raise RootletsError(f"PAM50 step failed at {what}: `{' '.join(command)}` exited 0 but wrote no {path.name}")
    return path


def run_template(image: Path, grid: nib.Nifti1Image, cord: Path, rootlets: np.ndarray, levels: dict[str, Path],
                 scratch: Path, contrast: str = "t2") -> TemplateResult:
    """Register to PAM50 with the rootlets, bring PAM50's spinal levels to the image and the subject's labels
    (``rootlets`` on the image grid, ``levels``: spinal / vertebral files) to PAM50, working in the private folder
    ``scratch`` (the warps stay there). Raises a RootletsError that names the failed step."""
    version = tools.sct_version()
    folder = template_folder()
    template_t2 = folder / TEMPLATE_FILES["t2"]
    if not template_t2.is_file():
        raise RootletsError(f"PAM50 step: {template_t2} not found; SCT's data are incomplete (reinstall SCT)")
    notes: list[str] = []
    commands: list[str] = []
    top = ROOTLETS_UP_TO.get(version, 9)
    passed = np.where(rootlets <= top, rootlets, 0).astype(np.uint8)
    if (rootlets > top).any():
        notes.append(f"SCT {'.'.join(map(str, version))} registers with rootlets C2-C8 only: the T1 rootlets were "
                     "left out of -lrootlet")
    rootlets_file, all_rootlets = scratch / "rootlets_registration.nii.gz", scratch / "rootlets.nii.gz"
    nib.save(nib.Nifti1Image(passed, grid.affine), rootlets_file)
    nib.save(nib.Nifti1Image(rootlets.astype(np.uint8), grid.affine), all_rootlets)
    reg = scratch / "reg"
    command = register_command(version, image, cord, rootlets_file, sct_contrast(contrast), reg)
    _step(REGISTER, command, scratch, "registration (sct_register_to_template)", commands)
    warps = {"template2anat": _expect(reg / "warp_template2anat.nii.gz", "registration", command),
             "anat2template": _expect(reg / "warp_anat2template.nii.gz", "registration", command)}
    warped = scratch / "warped"
    command = warp_command(image, warps["template2anat"], warped)
    _step(WARP, command, scratch, "warping the template (sct_warp_template)", commands)
    spinal_file = _expect(warped / "template" / TEMPLATE_FILES["spinal"], "warping the template", command)
    warped_levels = cast(nib.Nifti1Image, nib.load(spinal_file))
    try:
        spinal_pam50, grid_notes = labels.on_grid(warped_levels, np.asanyarray(warped_levels.dataobj).round()
                                                  .astype(np.int32), grid, points=False)
    except ValueError as exc:
        raise RootletsError(f"PAM50 step failed at warping the template: {spinal_file.name}: {exc}") from None
    notes += grid_notes
    in_template = {}
    sources = {"rootlets": all_rootlets, **levels}
    for kind in IN_TEMPLATE:
        if kind not in sources:
            continue
        out = scratch / f"{kind}_pam50.nii.gz"
        command = apply_command(sources[kind], template_t2, warps["anat2template"], out)
        _step(APPLY, command, scratch, f"bringing the {kind} to PAM50 (sct_apply_transfo)", commands)
        moved = cast(nib.Nifti1Image, nib.load(_expect(out, "sct_apply_transfo", command)))
        in_template[kind] = np.asanyarray(moved.dataobj).round()
    template = cast(nib.Nifti1Image, nib.load(template_t2))
    return TemplateResult(spinal_pam50.astype(np.uint8), {k: v.astype(np.uint8) for k, v in in_template.items()},
                          template, warps, commands, notes)


def template_positions(in_template: dict[str, np.ndarray], template: nib.Nifti1Image) -> pd.DataFrame:
    """Where each level lies in PAM50: its rostral and caudal template slice (superior-inferior axis) and their z (mm)."""
    from rootlets_task.io.nifti import si_axis

    axis = si_axis(template.affine)
    rows = []
    for kind, data in in_template.items():
        naming = "vertebral" if kind == "vertebral" else "spinal"
        for value in sorted(int(v) for v in np.unique(data) if v > 0):
            slices = np.flatnonzero(np.moveaxis(data == value, axis, 0).reshape(data.shape[axis], -1).any(1))
            ijk = np.zeros((2, 3))
            ijk[:, axis] = slices.min(), slices.max()
            z = (ijk @ template.affine[:3, :3].T + template.affine[:3, 3])[:, 2]
            rostral, caudal = (1, 0) if z[1] > z[0] else (0, 1)
            rows.append({"kind": kind, "level": level_name(value, naming), "value": value,
                         "rostral_slice": int(ijk[rostral, axis]), "caudal_slice": int(ijk[caudal, axis]),
                         "rostral_z_mm": float(z[rostral]), "caudal_z_mm": float(z[caudal]),
                         "mid_z_mm": float((z[0] + z[1]) / 2), "voxels": int((data == value).sum())})
    return pd.DataFrame.from_records(rows, columns=["kind", "level", "value", "rostral_slice", "caudal_slice",
                                                    "rostral_z_mm", "caudal_z_mm", "mid_z_mm", "voxels"])


def pam50_levels(spinal_pam50: np.ndarray, slice_mm: np.ndarray, axis: int) -> dict[int, tuple[float, float, int, int]]:
    """{value: (rostral mm, caudal mm, rostral slice, caudal slice)} of PAM50's spinal levels in the subject, in the
    frame of the subject's own levels (``slice_mm``: :func:`rootlets_task.levels.compute.slice_distances`)."""
    out = {}
    n = spinal_pam50.shape[axis]
    planes = np.moveaxis(spinal_pam50, axis, 0).reshape(n, -1)
    for value in sorted(int(v) for v in np.unique(spinal_pam50) if v > 0):
        slices = np.flatnonzero((planes == value).any(1))
        order = slices[np.argsort(slice_mm[slices])]
        out[value] = (float(slice_mm[order[0]]), float(slice_mm[order[-1]]), int(order[0]), int(order[-1]))
    return out
