"""Conformance of ``rootlets`` with a real SCT ``sct_deepseg rootlets`` (run by hand, not in CI).

    python benchmarks/sct_conformance.py SCT_SOURCE [--workdir DIR] [--sct-venv VENV] [--release-zip ZIP]
                                         [--parts cmdlines,orient,qc] [--only NAME,...] [--json OUT] [--text OUT]
                                         [--rerender]

SCT_SOURCE is an SCT source tree (``git archive`` of a tag or HEAD). The script

1. creates (or reuses) a virtual environment for that SCT: its ``requirements.txt`` with torch pinned to the local
   CPU build (``torch==2.13.0``) and the pins that cannot install here dropped, SCT itself with
   ``pip install --no-deps --ignore-requires-python -e SCT_SOURCE``; ``totalspineseg`` and ``sc-crop`` with
   ``--no-deps`` (their heavy dependencies need torchvision). It writes IMPORT-ONLY STAND-INS for ``ivadomed``
   and ``totalspineseg`` (SCT imports them at module level for every task, rootlets never calls them) and a
   STAND-IN ``isct_spine_detect`` into ``SCT_SOURCE/bin`` when the real binary is absent (SCT's binaries release
   cannot be downloaded here; the rootlets QC calls it only to centre its mosaic). Everything it changed is
   listed in the report (``sct.setup``);
2. installs the release zip (default: the bundled ``phantom`` release) into that SCT with our bridge
   (``rootlets -install -sct``) and into a private ``ROOTLETS_TASK_HOME`` as our default release
   (``rootlets -install -release r20250318 -custom-url ZIP``), so both tools run the same weights with no
   ``-release`` flag;
3. runs real SCT rootlets command lines (from SCT's docs, tutorial, tests and lab batch scripts) once with
   ``sct_deepseg rootlets`` and once, unchanged, with ``rootlets``, each on its own copy of small phantom data,
   and compares exit codes, the files written, their voxel values, the sidecars' keys (SCT's first, in SCT's order)
   and indent, and the QC entries (keys, dataset/subject/contrast/plane) (``cmdlines``); the differences kept on
   purpose (``rootlets -h``, "Kept on purpose") are reported as ``intended`` when ours behaves as intended;
4. compares both tools' outputs voxel by voxel on phantoms in 4 orientations x 2 spacings (``orient``; targets:
   100 % equal voxels without resampling, >= 99.99 % with it);
5. writes SCT's, ours, SCT's and our QC into one ``-qc`` folder and after each step opens SCT's ``index.html`` in
   headless Chromium (``tests/support/chromium.py``): which entries the page lists, whether their images load,
   whether either tool changed a file of the other, whether our ``js/datasets.js`` is byte for byte what SCT's own
   ``py/refresh_qc_entries.py`` writes, and SCT's lock file (``qc``).

The report is JSON (``--json``, default ``WORKDIR/report.json``) and text (``--text``); timings are wall-clock on
whatever machine it ran on. Needs: this package installed (``rootlets`` on PATH or ``--rootlets``), Python 3.10+
with ``venv``, and Chromium for the QC part (``apt-get install -y chromium``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from rootlets_task.io.metrics import agreement  # noqa: E402

TORCH_PIN = "torch==2.13.0"
NO_DEPS = ("totalspineseg", "sc-crop")          # installed with --no-deps: their dependencies need torchvision
DROPPED = ("ivadomed",)                         # replaced by an import-only stand-in
ORIENTS = ("LPI", "RPI", "AIL", "PSR")
SPACINGS = {"iso1": (1.0, 1.0, 1.0), "aniso": (0.9, 1.0, 0.8)}
STANDIN_NOTE = ('"""IMPORT-ONLY STAND-IN written by rootlets_task benchmarks/sct_conformance.py, not the real package.\n\n'
                "SCT imports this module at module level (deepseg/inference.py) for every task; `sct_deepseg rootlets`\n"
                'never calls it. Calling anything here raises RuntimeError.\n"""\n')
STANDIN_BODY = ("\n\ndef _standin(*args, **kwargs):\n"
                "    raise RuntimeError(__name__ + ' is an import-only stand-in (sct_conformance.py)')\n\n\n"
                "def __getattr__(name):\n    return _standin\n")
SPINE_DETECT = '''#!{python}
"""STAND-IN for SCT's closed-source `isct_spine_detect` (OptiC), written by rootlets_task sct_conformance.py.

Same arguments (`-ctype=dpdt -lambda=1 MODEL INPUT OUTPUT`); reads INPUT.nii (RPI) and writes OUTPUT_ctr.hdr with one
voxel per axial slice at the centre of mass of the brightest 5 % of the slice (CSF around the cord on T2w),
median-filtered along z. SCT's rootlets QC uses it only to centre the mosaic.
"""
import sys

import nibabel as nib
import numpy as np
from scipy import ndimage

_model, fname_in, fname_out = [a for a in sys.argv[1:] if not a.startswith("-")][-3:]
img = nib.load(fname_in + ".nii")
data = np.asarray(img.dataobj, dtype=float)
nx, ny, nz = data.shape[:3]
centres = np.zeros((nz, 2))
for z in range(nz):
    sl = ndimage.gaussian_filter(data[:, :, z], 1.0)
    mask = sl >= np.percentile(sl, 95)
    centres[z] = ndimage.center_of_mass(mask) if mask.any() else ((nx - 1) / 2, (ny - 1) / 2)
centres = ndimage.median_filter(centres, size=(min(5, nz), 1), mode="nearest")
out = np.zeros((nx, ny, nz), dtype=np.uint8)
for z, (cx, cy) in enumerate(centres):
    out[int(round(cx)), int(round(cy)), z] = 1
nib.save(nib.Nifti1Pair(out, img.affine), fname_out + "_ctr.hdr")
'''


# ------------------------------------------------------------------------------------------------ SCT set-up
def sct_requirements(src: Path) -> tuple[list[str], list[str], list[str]]:
    """SCT's requirements.txt made installable here: (requirements, --no-deps packages, what was changed)."""
    keep, no_deps, changes = [], [], []
    for line in (src / "requirements.txt").read_text().splitlines():
        req = line.split("#")[0].strip()
        if not req:
            continue
        if req.startswith("--"):
            changes.append(f"dropped option line {req!r} (no index but the local one)")
            continue
        name = re.split(r"[<>=!\[; ~]", req)[0].lower().replace("_", "-")
        if name in DROPPED:
            changes.append(f"dropped {req!r}: replaced by an import-only stand-in (needs torchvision)")
        elif name in NO_DEPS:
            no_deps.append(name)
            changes.append(f"{req!r} installed with --no-deps (its dependencies need torchvision)")
        elif name == "torch":
            keep.append(TORCH_PIN)
            changes.append(f"{req!r} -> {TORCH_PIN!r} (the local CPU build)")
        else:
            keep.append(req)
    return keep, no_deps, changes


def _pip(venv: Path, *args: str) -> None:
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *args], check=True)


def setup_sct_venv(src: Path, venv: Path) -> list[str]:
    """Create or reuse the SCT venv (a stamp records the requirements it was built from); returns the changes."""
    requirements, no_deps, changes = sct_requirements(src)
    stamp = venv / ".sct_conformance"
    key = hashlib.sha256(json.dumps([str(src), requirements, no_deps]).encode()).hexdigest()
    if stamp.is_file() and stamp.read_text() == key:
        return changes + [f"reused the virtual environment {venv}"]
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    req_file = venv / "requirements_here.txt"
    req_file.write_text("\n".join(requirements) + "\n")
    _pip(venv, "-r", str(req_file))
    _pip(venv, "--no-deps", "--ignore-requires-python", "-e", str(src))
    if no_deps:
        _pip(venv, "--no-deps", *no_deps)
    stamp.write_text(key)
    return changes + [f"created the virtual environment {venv} (Python {sys.version.split()[0]}, SCT asks for "
                      "3.10: --ignore-requires-python)"]


def write_standins(src: Path, venv: Path, standins: Path) -> list[str]:
    """Import-only stand-ins for ivadomed / totalspineseg, and isct_spine_detect when SCT's binary is absent."""
    notes = []
    for module in ("ivadomed/__init__.py", "ivadomed/inference.py", "totalspineseg/__init__.py",
                   "totalspineseg/inference.py", "totalspineseg/init_inference.py"):
        path = standins / module
        path.parent.mkdir(parents=True, exist_ok=True)
        extra = {"totalspineseg/inference.py": "\ninference = _standin\n",
                 "totalspineseg/init_inference.py": "\ninit_inference = _standin\n"}.get(module, "")
        path.write_text(STANDIN_NOTE + ("" if module.endswith("__init__.py") else STANDIN_BODY + extra))
    notes.append(f"import-only stand-ins for ivadomed and totalspineseg in {standins} (on PYTHONPATH)")
    detect = src / "bin" / "isct_spine_detect"
    if not detect.exists():
        detect.parent.mkdir(parents=True, exist_ok=True)
        detect.write_text(SPINE_DETECT.format(python=venv / "bin" / "python"))
        detect.chmod(0o755)
        notes.append(f"wrote a STAND-IN {detect} (SCT's binaries release is not installed): QC mosaic centres only")
    elif "STAND-IN" in detect.read_text(errors="replace")[:400]:
        notes.append(f"{detect} is a STAND-IN (QC mosaic centres only), not SCT's binary")
    return notes


def sct_env(src: Path, venv: Path, standins: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(SCT_DIR=str(src), PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}",
               PYTHONPATH=str(standins) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""))
    return env


# ---------------------------------------------------------------------------------------------- release + data
def install_release(rootlets: str, zip_path: Path, sct: dict[str, str], ours: dict[str, str]) -> list[str]:
    """The same weights for both tools: into SCT with our bridge, into our home as the default release."""
    bundled = zip_path.name == "model-spinal-rootlets-phantom.zip"
    to_sct = ["-install", "-sct", "-release", "phantom"] if bundled else ["-install", "-sct", "-custom-url", str(zip_path)]
    to_ours = ["-install", "-release", "r20250318", "-custom-url", str(zip_path)]
    log = []
    for args, env in ((to_sct, sct), (to_ours, ours)):
        proc = subprocess.run([rootlets, *args], env=env, capture_output=True, text=True)
        log.append(f"rootlets {' '.join(args)} -> rc={proc.returncode}: {(proc.stdout + proc.stderr).strip()[-300:]}")
        if proc.returncode:
            raise SystemExit("release install failed: " + log[-1])
    return log


def crop_superior(path: Path, out: Path, keep_mm: float = 95.0) -> None:
    """Keep the middle ``keep_mm`` of the superior-inferior axis (small phantoms keep SCT runs short)."""
    img = nib.load(path)
    axis = [c in "SI" for c in nib.aff2axcodes(img.affine)].index(True)
    n, step = img.shape[axis], float(img.header.get_zooms()[axis])
    keep = min(n, int(round(keep_mm / step)))
    start = (n - keep) // 2 + int(round(15 / step))  # the phantom's levels sit slightly above the middle
    start = max(0, min(start, n - keep))
    index = [slice(None)] * 3
    index[axis] = slice(start, start + keep)
    out.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img.slicer[tuple(index)], out)


def make_phantom(rootlets: str, out: Path, work: Path, orient: str = "LPI", spacing=(1.0, 1.0, 1.0),
                 seed: int = 0) -> tuple[Path, Path]:
    """A cropped phantom image and its rootlets truth at ``out`` (and ``<out>_truth.nii.gz``)."""
    tmp = work / "phantoms" / f"{orient}_{'x'.join(map(str, spacing))}_{seed}"
    if not (tmp / "phantom_T2w.nii.gz").is_file():
        subprocess.run([rootlets, "phantom", "-o", str(tmp), "-orient", orient, "-spacing", *map(str, spacing),
                        "-seed", str(seed)], check=True, capture_output=True)
    truth = out.with_name(out.name.replace(".nii.gz", "_truth.nii.gz"))
    crop_superior(tmp / "phantom_T2w.nii.gz", out)
    crop_superior(tmp / "phantom_T2w_label-rootlets_dseg.nii.gz", truth)
    return out, truth


def make_data(rootlets: str, work: Path) -> Path:
    """The data tree every command line runs on (copied per tool): SCT tutorial, docs, test and BIDS layouts."""
    data = work / "data"
    if (data / ".complete").is_file():
        return data
    make_phantom(rootlets, data / "single" / "t2" / "t2.nii.gz", work, seed=0)
    shutil.copy(data / "single" / "t2" / "t2.nii.gz", data / "single" / "t2" / "input.nii.gz")
    for n, seed in (("01", 1), ("02", 2)):
        make_phantom(rootlets, data / "ds-phantom" / f"sub-{n}" / "anat" / f"sub-{n}_T2w.nii.gz", work, seed=seed)
    for path in data.rglob("*_truth.nii.gz"):
        path.rename(work / "phantoms" / f"truth_{path.parent.parent.name}_{path.name}")
    (data / ".complete").write_text("ok")
    return data


# ------------------------------------------------------------------------------------------------ command lines
# args after `sct_deepseg rootlets` / `rootlets`; {qc} = this tool's QC folder; cwd relative to the data tree.
TUTORIAL = "SCT batch_single_subject.sh:542; tutorials/.../rootlets-segmentation.rst:14"
LAB = "lab batch scripts (RootletSeg analyses): -qc ${PATH_QC} -qc-subject ${SUBJECT} -o ${FILESEGROOTLETS}.nii.gz"
# Differences kept on purpose (README / `rootlets -h` "Kept on purpose"): (expected rc of ours, why).
SEVERAL = (0, "several -i: each input gets its own output (SCT writes them all to the first input's name)")
CMDLINES = [
    ("tutorial_o_qc", TUTORIAL, "single/t2", "-i t2.nii.gz -o t2_rootlets.nii.gz -qc {qc}", {}),
    ("tutorial_qc", "SCT 7.x tutorial rootlets-segmentation.rst (`sct_deepseg rootlets -i t2.nii.gz -qc ~/qc_singleSubj`)",
     "single/t2", "-i t2.nii.gz -qc {qc}", {}),
    ("docs_default", "SCT documentation command-line/sct_deepseg.rst:135", "single/t2", "-i input.nii.gz", {}),
    ("test_o_subdir_qc", "SCT testing/cli/test_sct_deepseg.py (rootlets: -o tmp/t2_seg_deepseg.nii.gz -qc)", "single/t2",
     "-i t2.nii.gz -o tmp/t2_seg_deepseg.nii.gz -qc {qc}", {}),
    ("batch_qc_subject", LAB, "ds-phantom/sub-01/anat",
     "-i sub-01_T2w.nii.gz -qc {qc} -qc-subject sub-01 -o sub-01_T2w_label-rootlets_dseg.nii.gz", {}),
    ("batch_gpu_env", LAB + " with CUDA_VISIBLE_DEVICES=0 SCT_USE_GPU=1 (CPU here)", "ds-phantom/sub-01/anat",
     "-i sub-01_T2w.nii.gz -qc {qc} -qc-subject sub-01 -o sub-01_gpu_rootlets.nii.gz",
     {"CUDA_VISIBLE_DEVICES": "0", "SCT_USE_GPU": "1"}),
    ("qc_dataset_subject", "sct_deepseg -qc-dataset/-qc-subject (SCT QC options)", "ds-phantom/sub-01/anat",
     "-i sub-01_T2w.nii.gz -qc {qc} -qc-dataset phantom -qc-subject S01 -o sub-01_T2w_rootlets.nii.gz", {}),
    ("qc_plane_seg", "sct_deepseg -qc-plane Sagittal -qc-seg (hidden / ignored for rootlets)", "ds-phantom/sub-01/anat",
     "-i sub-01_T2w.nii.gz -qc {qc} -qc-plane Sagittal -qc-seg sub-01_T2w.nii.gz -o sub-01_T2w_plane.nii.gz", {}),
    ("r0", "SCT common -r {0,1} (keep temporary files)", "single/t2", "-i t2.nii.gz -r 0 -o t2_r0.nii.gz", {}),
    ("v2", "SCT common -v {0,1,2}", "single/t2", "-i t2.nii.gz -v 2 -o t2_v2.nii.gz", {}),
    ("v0", "SCT common -v {0,1,2}", "single/t2", "-i t2.nii.gz -v 0 -o t2_v0.nii.gz", {}),
    ("profile", "SCT common -profile-time / -trace-memory (hidden in 7.2+)", "single/t2",
     "-i t2.nii.gz -profile-time -trace-memory mem -o t2_prof.nii.gz", {}),
    ("test_time_aug", "sct_deepseg nnU-Net tasks -test-time-aug (7.2+)", "single/t2",
     "-i t2.nii.gz -test-time-aug -o t2_tta.nii.gz", {}),
    ("largest", "sct_deepseg -largest 1", "single/t2", "-i t2.nii.gz -largest 1 -o t2_largest.nii.gz", {}),
    ("remove_small", "sct_deepseg -remove-small 5vox", "single/t2", "-i t2.nii.gz -remove-small 5vox -o t2_rs.nii.gz", {}),
    ("remove_small_mm3", "sct_deepseg -remove-small 10mm3", "single/t2",
     "-i t2.nii.gz -remove-small 10mm3 -o t2_rs_mm3.nii.gz", {}),
    ("thr0", "sct_deepseg -thr 0 (hidden for rootlets, accepted)", "single/t2", "-i t2.nii.gz -thr 0 -o t2_thr0.nii.gz", {}),
    ("thr_fill", "sct_deepseg -thr 0.5 -fill-holes 1 (binary map: fill-holes runs)", "single/t2",
     "-i t2.nii.gz -thr 0.5 -fill-holes 1 -o t2_thr_fill.nii.gz", {}),
    ("custom_url_ignored", "sct_deepseg -custom-url without -install (ignored)", "single/t2",
     "-i t2.nii.gz -custom-url http://127.0.0.1:9/none.zip -o t2_cu.nii.gz", {}),
    ("several_i", "sct_deepseg -i IMG [IMG ...] (no -o)", "ds-phantom",
     "-i sub-01/anat/sub-01_T2w.nii.gz sub-02/anat/sub-02_T2w.nii.gz", {}, SEVERAL),
    ("several_i_o", "sct_deepseg -i IMG IMG -o OUT", "ds-phantom",
     "-i sub-01/anat/sub-01_T2w.nii.gz sub-02/anat/sub-02_T2w.nii.gz -o both_rootlets.nii.gz", {},
     (1, "-o FILE holds one input (SCT writes both results to FILE with _rootlets inserted, the last wins)")),
    ("o_no_extension", "sct_deepseg -o without .nii/.nii.gz", "single/t2", "-i t2.nii.gz -o t2_out", {},
     (0, "-o X without .nii is a folder (SCT writes X.nii, then fails)")),
    ("o_new_folder", "sct_deepseg -o in a folder that does not exist", "single/t2",
     "-i t2.nii.gz -o derivatives/labels/t2_rootlets.nii.gz", {}),
    ("abbreviation", "argparse allow_abbrev (SCT's parser accepts -larg for -largest)", "single/t2",
     "-i t2.nii.gz -larg 1 -o t2_abbrev.nii.gz", {}, (2, "abbreviations are off: -larg is refused, never read as "
                                                         "another flag")),
    ("err_bad_choice", "bad value: SCT exits 2 with an argparse error", "single/t2", "-i t2.nii.gz -largest 5", {}),
    ("err_missing_input", "missing -i file: SCT exits 2", "single/t2", "-i missing.nii.gz", {},
     (1, "a missing -i file is exit code 1 with one line")),
    ("err_unknown_flag", "unknown flag: SCT exits 2", "single/t2", "-i t2.nii.gz -foo", {}),
    ("err_fill_holes", "-fill-holes 1 on a multi-class map: SCT crashes (AssertionError, exit 1)", "single/t2",
     "-i t2.nii.gz -fill-holes 1 -o t2_fill.nii.gz", {}),
    ("err_remove_small_two", "-remove-small 5vox 10: SCT crashes (ValueError length mismatch, exit 1)", "single/t2",
     "-i t2.nii.gz -remove-small 5vox 10 -o t2_rs2.nii.gz", {}),
    ("err_remove_small_abc", "-remove-small abc: SCT crashes (ValueError int(), exit 1)", "single/t2",
     "-i t2.nii.gz -remove-small abc -o t2_rsabc.nii.gz", {}),
]


def _snapshot(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime for p in root.rglob("*") if p.is_file()}


def run_tool(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 1800) -> dict:
    """One command line; returns rc, wall time and the tails of its output."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        rc, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc, out, err = "timeout", str(exc.stdout or ""), str(exc.stderr or "")
    clean = re.sub(r"\x1b\[[0-9;]*m", "", out + "\n" + err)
    lines = [line for line in clean.splitlines() if line.strip() and "it/s]" not in line]
    return {"rc": rc, "wall_s": round(time.perf_counter() - start, 1), "tail": lines[-4:]}


def nifti_summary(path: Path) -> dict:
    img = nib.load(path)
    data = np.asanyarray(img.dataobj)
    values, counts = np.unique(data, return_counts=True)
    return {"shape": list(img.shape), "dtype": str(img.get_data_dtype()),
            "axcodes": "".join(nib.aff2axcodes(img.affine)),
            "values": {str(v.item()): int(c) for v, c in zip(values, counts, strict=True) if v != 0}}


def compare_niftis(a: Path, b: Path) -> dict:
    ia, ib = nib.load(a), nib.load(b)
    row = {"same_grid": ia.shape == ib.shape and bool(np.allclose(ia.affine, ib.affine, atol=1e-4)),
           "sct": nifti_summary(a), "ours": nifti_summary(b)}
    if ia.shape == ib.shape:
        da, db = np.asanyarray(ia.dataobj), np.asanyarray(ib.dataobj)
        row.update(agreement(da, db, [int(v) for v in np.unique(da) if v]))
    return row


def json_keys(path: Path) -> list:
    """Key structure of a JSON file: keys, and the keys of GeneratedBy[0] for sidecars."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return [f"unreadable: {exc}"]
    if isinstance(doc, dict) and isinstance(doc.get("GeneratedBy"), list) and doc["GeneratedBy"]:
        return list(doc) + [f"GeneratedBy[0].{k}" for k in doc["GeneratedBy"][0]]
    return list(doc) if isinstance(doc, dict) else [type(doc).__name__]


def run_cmdline(spec: tuple, tools: dict[str, dict], data: Path, work: Path) -> dict:
    """One command line with both tools, each on a fresh copy of the data; compares what they wrote."""
    name, source, cwd, args, extra_env = spec[:5]
    intended = spec[5] if len(spec) > 5 else None
    row = {"name": name, "source": source, "args": args, "env": extra_env,
           "intended": {"ours_rc": intended[0], "why": intended[1]} if intended else None}
    written = {}
    for tool, t in tools.items():
        root = work / "runs" / name / tool
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(data, root / "data", ignore=shutil.ignore_patterns(".complete"))
        qc = root / "qc"
        argv = args.format(qc=qc).split()
        before = _snapshot(root)
        row[tool] = run_tool(t["cmd"] + argv, root / "data" / cwd, {**t["env"], **extra_env})
        row[tool]["command"] = " ".join(t["cmd"][-2:] if tool == "sct" else t["cmd"][-1:]) + " " + args
        after = _snapshot(root)
        new = sorted(p for p, m in after.items() if before.get(p) != m and not p.startswith("qc/"))
        written[tool] = new
        row[tool]["written"] = new
        row[tool]["qc_entries"] = [json.loads((root / p).read_text()) for p in after if re.match(r"qc/_json/.*\.json$", p)]
    row["compare"] = _compare_written(work / "runs" / name, written)
    row["status"] = _status(row)
    return row


# Written by ours beside its outputs on purpose (docs/qc.md, viewers.py): the per-output .tsv and, once per folder,
# the FSLeyes / ITK-SNAP colour tables. Listed apart (status "... (+ our viewer files: N)"), not as differences.
VIEWER_FILES = re.compile(r"(^|/)rootlets_task_[a-z]+(_itksnap\.txt|\.lut)$|\.tsv$")


def _split_viewer_files(out: dict) -> dict:
    """Move our viewer files from ``only_ours`` to ``ours_viewer_files``."""
    extra = out["only_ours"] + out.get("ours_viewer_files", [])
    out["only_ours"] = [p for p in extra if not VIEWER_FILES.search(p)]
    out["ours_viewer_files"] = [p for p in extra if VIEWER_FILES.search(p)]
    return out


def _compare_written(root: Path, written: dict[str, list[str]]) -> dict:
    both = sorted(set(written["sct"]) & set(written["ours"]))
    out = _split_viewer_files({"only_sct": sorted(set(written["sct"]) - set(written["ours"])),
                               "only_ours": sorted(set(written["ours"]) - set(written["sct"])), "files": {}})
    for rel in both:
        a, b = root / "sct" / rel, root / "ours" / rel
        if rel.endswith((".nii", ".nii.gz")):
            out["files"][rel] = compare_niftis(a, b)
        elif rel.endswith(".json"):
            ka, kb = json_keys(a), json_keys(b)
            out["files"][rel] = {"same_keys": ka == kb, "scts_keys_first": scts_keys_first(ka, kb), "sct_keys": ka,
                                 "ours_keys": kb, "indent": {"sct": _indent(a), "ours": _indent(b)}}
    return out


def scts_keys_first(sct: list, ours: list) -> bool:
    """SCT's sidecar keys, in SCT's order, lead ours at the top level and in ``GeneratedBy[0]`` (ours may follow)."""
    def split(keys: list) -> tuple[list, list]:
        return [k for k in keys if "[0]." not in k], [k for k in keys if "[0]." in k]

    (st, sg), (ot, og) = split(sct), split(ours)
    return ot[:len(st)] == st and og[:len(sg)] == sg


QC_FIELDS = ("command", "dataset", "subject", "contrast", "inputFile", "plane")


def _qc_differences(sct: list[dict], ours: list[dict]) -> list[str]:
    """What differs between both tools' QC entries of one command line (count, keys and order, naming fields)."""
    if len(sct) != len(ours):
        return [f"QC entries: ours {len(ours)}, SCT {len(sct)}"]
    diffs = []
    for a, b in zip(sct, ours, strict=True):
        if list(a) != list(b):
            diffs.append(f"QC entry keys {list(b)} (SCT {list(a)})")
        diffs += [f"QC {k}: ours {b.get(k)!r}, SCT {a.get(k)!r}" for k in QC_FIELDS if a.get(k) != b.get(k)]
    return diffs


def _status(row: dict) -> str:
    """``same``, ``same error``, ``intended: ...`` (a difference kept on purpose, as expected) or the differences."""
    sct, ours, cmp_ = row["sct"], row["ours"], row["compare"]
    diffs = []
    if sct["rc"] != ours["rc"]:
        diffs.append(f"exit code {ours['rc']} (SCT {sct['rc']})")
    if cmp_["only_sct"]:
        diffs.append("missing " + ", ".join(cmp_["only_sct"]))
    if cmp_["only_ours"]:
        diffs.append("extra " + ", ".join(cmp_["only_ours"]))
    for rel, f in cmp_["files"].items():
        if "voxel_agreement" in f and f["voxel_agreement"] < 1.0:
            diffs.append(f"{rel}: {100 * f['voxel_agreement']:.3f} % equal voxels")
        elif "same_grid" in f and not f["same_grid"]:
            diffs.append(f"{rel}: different grid")
        elif "same_keys" in f and not f.get("scts_keys_first"):
            missing = [k for k in f["sct_keys"] if k not in f["ours_keys"]]
            diffs.append(f"{rel}: JSON keys" + (f" missing {missing}" if missing else " of SCT not first / in order"))
        elif "indent" in f and f["indent"]["sct"] != f["indent"]["ours"]:
            diffs.append(f"{rel}: indent {f['indent']['ours']} (SCT {f['indent']['sct']})")
    diffs += _qc_differences(sct["qc_entries"], ours["qc_entries"])
    viewer = f" (+ our viewer files: {len(cmp_['ours_viewer_files'])})" if cmp_.get("ours_viewer_files") else ""
    intended = row.get("intended")
    if intended and ours["rc"] == intended["ours_rc"]:
        return f"intended: {intended['why']}" + (f" ({'; '.join(diffs)})" if diffs else "") + viewer
    if diffs:
        return "; ".join(diffs) + viewer
    return ("same" if sct["rc"] == 0 else "same error") + viewer


# ------------------------------------------------------------------------------------------------ orientations
def run_orientations(tools: dict[str, dict], rootlets: str, work: Path) -> list[dict]:
    """Both tools on the same phantom in 4 orientations x 2 spacings: voxel agreement and Dice to the truth."""
    rows = []
    for orient in ORIENTS:
        for label, spacing in SPACINGS.items():
            root = work / "orient" / f"{orient}_{label}"
            image, truth = make_phantom(rootlets, root / "img.nii.gz", work, orient, spacing, seed=3)
            row = {"orientation": orient, "spacing": list(spacing), "input": nifti_summary(image)}
            for tool, t in tools.items():
                out = root / f"{tool}_rootlets.nii.gz"
                out.unlink(missing_ok=True)
                row[tool] = run_tool(t["cmd"] + ["-i", str(image), "-o", str(out)], root, t["env"])
                if out.is_file():
                    gt = np.asanyarray(nib.load(truth).dataobj)
                    row[tool]["dice_to_truth"] = agreement(gt, np.asanyarray(nib.load(out).dataobj),
                                                           [int(v) for v in np.unique(gt) if v])["dice"]
            sct_out, our_out = root / "sct_rootlets.nii.gz", root / "ours_rootlets.nii.gz"
            if sct_out.is_file() and our_out.is_file():
                row["compare"] = compare_niftis(sct_out, our_out)
            rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------------------- QC
PAGE_STATE = """(async () => {
  for (let i = 0; i < 100 && document.querySelectorAll('tbody tr').length === 0; i++)
    await new Promise(r => setTimeout(r, 100));
  const entries = window.SCT_QC_DATASETS || [];
  const load = src => new Promise(r => { const im = new Image(); im.onload = () => r(im.naturalWidth > 0);
                                          im.onerror = () => r(false); im.src = src; });
  const images = await Promise.all(entries.map(async e => [await load(e.backgroundImage), await load(e.overlayImage)]));
  return {uuid: window.SCT_QC_UUID, entries: entries.map(e => e.command + ' ' + e.cmdline),
          rows: [...document.querySelectorAll('tbody tr')].map(r => r.innerText.replace(/\\s+/g, ' ').trim()),
          images_loaded: images};
})()"""


def qc_root_files(qc: Path) -> dict:
    """Files of the QC folder other than the entries' own images and records, with their md5 (first 12 digits)."""
    entry_files = set()
    for record in (qc / "_json").glob("*.json"):
        entry = json.loads(record.read_text())
        entry_files.update({entry.get("backgroundImage"), entry.get("overlayImage"), f"_json/{record.name}"})
    return {str(p.relative_to(qc)): hashlib.md5(p.read_bytes()).hexdigest()[:12]
            for p in sorted(qc.rglob("*")) if p.is_file() and str(p.relative_to(qc)) not in entry_files}


def look_at_page(qc: Path, shot: Path) -> dict:
    """Open ``qc/index.html`` in headless Chromium; what it lists and whether every entry's images load."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    from support.chromium import Chromium, chromium_path

    if not chromium_path():
        return {"error": "chromium not installed (apt-get install -y chromium)"}
    with Chromium(qc.parent / f".chromium_{shot.stem}") as browser:
        browser.open((qc / "index.html").as_uri())
        state = browser.evaluate(PAGE_STATE)
        browser.screenshot(shot)
        if state["rows"]:  # open the last entry (SCT's viewer shows its background and overlay)
            browser.evaluate("(async () => { const rows = document.querySelectorAll('tbody tr'); "
                             "rows[rows.length - 1].click(); await new Promise(r => setTimeout(r, 1500)); })()")
            state["selected_screenshot"] = str(browser.screenshot(shot.with_name(f"{shot.stem}_last_entry.png")))
        state["page_errors"] = browser.errors
    state["screenshot"] = str(shot)
    return state


def _hashes(qc: Path) -> dict[str, str]:
    return {str(p.relative_to(qc)): hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(qc.rglob("*")) if p.is_file()}


def _scts_refresh(qc: Path, sct: dict, work: Path) -> str | None:
    """``js/datasets.js`` as SCT's own ``py/refresh_qc_entries.py`` rebuilds it, run on a copy of the folder."""
    copy = work / "qc_refresh_copy"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(qc, copy)
    python = sct["cmd"][0].replace("sct_deepseg", "python")
    code = "import sys; sys.path.insert(0, 'py'); import refresh_qc_entries as r; r.main('.')"
    proc = subprocess.run([python, "-c", code], cwd=copy, env=sct["env"], capture_output=True, text=True)
    return (copy / "js" / "datasets.js").read_text() if proc.returncode == 0 else f"failed: {proc.stderr[-300:]}"


def _entry_tool(entry: dict) -> str:
    return "ours" if str(entry.get("cmdline", "")).startswith("rootlets") else "sct"


def run_shared_qc(tools: dict[str, dict], data: Path, work: Path, sct_src: Path) -> dict:
    """SCT, ours, SCT, ours into one -qc folder. After each step: what SCT's page lists (headless Chromium), whether
    each tool left the other's files alone, and (after ours) whether our datasets.js is what SCT's refresh writes."""
    root = work / "qc_shared"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(data, root / "data", ignore=shutil.ignore_patterns(".complete"))
    qc, anat = root / "qc", root / "data" / "ds-phantom" / "sub-01" / "anat"
    sct_index = hashlib.md5((sct_src / "spinalcordtoolbox" / "reports" / "assets" / "index.html").read_bytes()).hexdigest()
    result: dict = {"steps": []}
    owned: dict[str, dict[str, str]] = {"sct": {}, "ours": {}}  # files each tool wrote, with their hashes
    for step, tool in enumerate(("sct", "ours", "sct", "ours")):
        args = ["-i", "sub-01_T2w.nii.gz", "-qc", str(qc), "-qc-dataset", "phantom", "-qc-subject", f"S{step}",
                "-o", f"step{step}_{tool}_rootlets.nii.gz"]
        before = _hashes(qc) if qc.is_dir() else {}
        run = run_tool(tools[tool]["cmd"] + args, anat, tools[tool]["env"])
        after = _hashes(qc)
        other = "ours" if tool == "sct" else "sct"
        touched = sorted(k for k, h in owned[other].items() if after.get(k) != h)
        # js/datasets.js is the one file both rebuild (SCT's entry list); every other file has one owner
        owned[tool].update({k: h for k, h in after.items() if before.get(k) != h and k != "js/datasets.js"})
        index = qc / "index.html"
        run.update(tool=tool, entries=len(list(qc.glob("_json/*.json"))), touched_other_tools_files=touched,
                   index_is_scts=index.is_file() and hashlib.md5(index.read_bytes()).hexdigest() == sct_index)
        if tool == "ours":
            run["datasets_js_as_scts_refresh"] = _scts_refresh(qc, tools["sct"], work) == (qc / "js" / "datasets.js").read_text()
        if step:
            run["page"] = look_at_page(qc, work / f"qc_page_after_step{step}_{tool}.png")
        result["steps"].append(run)
    real = qc.resolve()
    lock = Path(tempfile.gettempdir()) / f"sct_qc-{real.name}-{hashlib.md5(str(real).encode()).hexdigest()}.00.lock"
    result["lock_file"] = {"path": str(lock), "exists": lock.exists()}
    result["root_files"] = qc_root_files(qc)
    result["entries"] = [json.loads(p.read_text()) for p in sorted(qc.glob("_json/*.json"))]
    result["ours_files"] = sorted(owned["ours"])
    return result


def qc_keys_by_tool(qc: dict) -> dict:
    """The record keys of each tool's QC entries (told apart by their cmdline) and whether ours equal SCT's."""
    by_tool = {}
    for entry in qc.get("entries", []):
        by_tool.setdefault(_entry_tool(entry), list(entry))
    return {"keys": by_tool, "equal_to_sct": by_tool.get("ours") == by_tool.get("sct") if by_tool.get("ours") else None}


# --------------------------------------------------------------------------------------------------- report
def sidecars_side_by_side(work: Path, name: str = "tutorial_o_qc", rel: str = "data/single/t2/t2_rootlets.json") -> dict:
    """Both tools' sidecar of one command line, whole, with the keys and ``GeneratedBy[0]`` fields compared."""
    docs = {}
    for tool in ("sct", "ours"):
        path = work / "runs" / name / tool / rel
        docs[tool] = json.loads(path.read_text()) if path.is_file() else None
    if not all(docs.values()):
        return {"command_line": name, "file": rel, **docs}
    gen = {tool: (d.get("GeneratedBy") or [{}])[0] for tool, d in docs.items()}
    fields = list(dict.fromkeys([*gen["sct"], *gen["ours"]]))
    return {"command_line": name, "file": rel, "top_keys": {t: list(d) for t, d in docs.items()},
            "GeneratedBy[0]": {f: {"sct": gen["sct"].get(f), "ours": gen["ours"].get(f)} for f in fields},
            "indent": {t: _indent(work / "runs" / name / t / rel) for t in docs}, **docs}


def _indent(path: Path) -> int | None:
    second = path.read_text().splitlines()[1:2]
    return len(second[0]) - len(second[0].lstrip(" ")) if second else None


def summary(report: dict) -> dict:
    rows = report.get("cmdlines", [])
    same = [r["name"] for r in rows if r["status"] in ("same", "same error")]
    same_viewer = [r["name"] for r in rows if r["status"].startswith("same (+ our viewer files")]
    intended = [r["name"] for r in rows if r["status"].startswith("intended")]
    orient = report.get("orient", [])
    agree = {label: [r["compare"]["voxel_agreement"] for r in orient if "voxel_agreement" in r.get("compare", {})
                     and tuple(r["spacing"]) == spacing] for label, spacing in SPACINGS.items()}
    qc = report.get("qc", {})
    steps = qc.get("steps", [])
    last_page = steps[-1].get("page", {}) if steps else {}
    return {"cmdlines_same": f"{len(same)}/{len(rows)}", "cmdlines_intended": f"{len(intended)}/{len(rows)}",
            "cmdlines_same_plus_viewer_files": f"{len(same_viewer)}/{len(rows)}",
            "cmdlines_differing": [r["name"] for r in rows if r["name"] not in same + same_viewer + intended],
            "cmdlines_same_names": same, "cmdlines_same_plus_viewer_files_names": same_viewer,
            "cmdlines_intended_names": intended,
            "orient_min_voxel_agreement_no_resampling": min(agree["iso1"]) if agree["iso1"] else None,
            "orient_min_voxel_agreement_resampled": min(agree["aniso"]) if agree["aniso"] else None,
            "orient_targets_met": bool(agree["iso1"]) and min(agree["iso1"]) == 1.0 and bool(agree["aniso"])
            and min(agree["aniso"]) >= 0.9999,
            "orient_runs_compared": f"{sum(map(len, agree.values()))}/{len(orient)}",
            "qc_final_page_rows": len(last_page.get("rows", [])), "qc_final_page_entries": len(last_page.get("entries", [])),
            "qc_final_page_entries_ours": sum(e.split(" ", 1)[-1].startswith("rootlets ") for e in last_page.get("entries", [])),
            "qc_all_images_loaded": all(all(pair) for pair in last_page.get("images_loaded", [])) if last_page else None,
            "qc_page_errors": last_page.get("page_errors"),
            "qc_files_of_the_other_tool_touched": sorted({f for st in steps for f in st.get("touched_other_tools_files", [])}),
            "qc_datasets_js_as_scts_refresh": [st["datasets_js_as_scts_refresh"] for st in steps if st["tool"] == "ours"],
            "qc_entry_keys_equal_to_sct": qc_keys_by_tool(qc)["equal_to_sct"],
            "qc_lock_file": qc.get("lock_file")}


def text_report(report: dict) -> str:
    lines = [f"SCT {report['sct']['version']} ({report['sct']['source']}) vs rootlets {report['ours']['version']}",
             f"release zip: {report['release_zip']}", ""]
    lines += ["SCT set-up:"] + [f"  - {c}" for c in report["sct"]["setup"]] + [""]
    if report.get("cmdlines"):
        lines.append("Command lines (`sct_deepseg rootlets ARGS` vs `rootlets ARGS`, rc SCT/ours, wall s SCT/ours):")
        for r in report["cmdlines"]:
            lines.append(f"  [{r['name']}] {r['args']}  rc {r['sct']['rc']}/{r['ours']['rc']}  "
                         f"{r['sct']['wall_s']}/{r['ours']['wall_s']} s -> {r['status']}")
            if r["ours"]["rc"] != 0 and r["status"] != "same error":
                lines.append(f"      ours: {' | '.join(r['ours']['tail'][-2:])[:240]}")
        lines.append("")
    if report.get("orient"):
        lines.append("Orientation x spacing (SCT vs ours on the same phantom, -i img -o out):")
        for r in report["orient"]:
            c = r.get("compare", {})
            if "voxel_agreement" in c:
                n_diff = round((1 - c["voxel_agreement"]) * float(np.prod(r["input"]["shape"])))
                dice = {t: np.nanmean(list(r[t].get("dice_to_truth", {}).values()) or [np.nan]) for t in ("sct", "ours")}
                agree = (f"{n_diff} of {int(np.prod(r['input']['shape']))} voxels differ, foreground agreement "
                         f"{100 * c['foreground_agreement']:.2f} %; mean Dice to truth SCT {dice['sct']:.3f} / ours "
                         f"{dice['ours']:.3f}; wall {r['sct']['wall_s']}/{r['ours']['wall_s']} s")
            else:
                agree = f"not compared (rc SCT {r['sct']['rc']}, ours {r['ours']['rc']})"
            lines.append(f"  {r['orientation']} {r['spacing']} {r['input']['shape']}: {agree}")
        lines.append("")
    side = report.get("sidecar")
    if side and "GeneratedBy[0]" in side:
        lines.append(f"Sidecar ({side['command_line']}: {side['file']}; indent SCT/ours {side['indent']}):")
        lines.append(f"  top-level keys: SCT {side['top_keys']['sct']} / ours {side['top_keys']['ours']}")
        for field, pair in side["GeneratedBy[0]"].items():
            lines.append(f"  GeneratedBy[0].{field}: SCT {json.dumps(pair['sct'])} | ours {json.dumps(pair['ours'])}"[:300])
        lines.append("")
    qc = report.get("qc")
    if qc:
        lines.append("Shared QC folder (SCT, ours, SCT, ours; -qc-dataset phantom -qc-subject S<step>):")
        for s in qc["steps"]:
            page = s.get("page", {})
            lines.append(f"  {s['tool']}: rc {s['rc']}, {s['entries']} JSON entries, index.html is SCT's: "
                         f"{s['index_is_scts']}, files of the other tool changed: {s.get('touched_other_tools_files')}"
                         + (f", datasets.js = SCT's refresh: {s['datasets_js_as_scts_refresh']}"
                            if "datasets_js_as_scts_refresh" in s else "")
                         + (f"; page lists {len(page.get('rows', []))} rows, images loaded "
                            f"{page.get('images_loaded')}, errors {page.get('page_errors')}" if page else ""))
            for row in page.get("rows", []):
                lines.append(f"      row: {row[:200]}")
        keys = qc_keys_by_tool(qc)
        lines.append(f"  entries by tool: {sorted(keys['keys'], key=str)}; our keys equal to SCT's (names, order): "
                     f"{keys['equal_to_sct']}; SCT's lock file {qc['lock_file']}")
        lines.append(f"  QC root files: {sorted(qc['root_files'])}")
        lines.append("")
    lines.append("Summary: " + json.dumps(report["summary"]))
    return "\n".join(lines) + "\n"


def tool_versions(tools: dict[str, dict]) -> tuple[str, str]:
    sct = subprocess.run([tools["sct"]["cmd"][0].replace("sct_deepseg", "python"), "-c",
                          "from spinalcordtoolbox.utils.sys import __version__; print(__version__)"],
                         env=tools["sct"]["env"], capture_output=True, text=True).stdout.strip()
    ours = subprocess.run([tools["ours"]["cmd"][0], "--version"], capture_output=True, text=True)
    if ours.returncode:
        ours = subprocess.run([sys.executable, "-c", "import rootlets_task; print(rootlets_task.__version__)"],
                              capture_output=True, text=True)
    return sct, ours.stdout.strip()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("sct_source", type=Path, help="SCT source tree (git archive of a tag or HEAD)")
    p.add_argument("--workdir", type=Path, default=Path("sct_conformance_work"), help="scratch folder (reused)")
    p.add_argument("--sct-venv", type=Path, help="virtual environment for SCT (default WORKDIR/sct_venv)")
    p.add_argument("--release-zip", type=Path, help="release zip both tools run (default: the bundled phantom release)")
    p.add_argument("--rootlets", default=shutil.which("rootlets") or str(Path(sys.executable).parent / "rootlets"),
                   help="our `rootlets` command")
    p.add_argument("--parts", default="cmdlines,orient,qc", help="comma-separated: cmdlines, orient, qc")
    p.add_argument("--only", help="comma-separated command-line names to run (default: all)")
    p.add_argument("--json", type=Path, help="JSON report (default WORKDIR/report.json)")
    p.add_argument("--text", type=Path, help="text report (default WORKDIR/report.txt)")
    p.add_argument("--rerender", action="store_true", help="only rewrite the reports from the existing --json one")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    src, work = args.sct_source.resolve(), args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    if args.rerender:
        return write_reports(json.loads((args.json or work / "report.json").read_text()), args, work)
    venv, standins = (args.sct_venv or work / "sct_venv").resolve(), work / "standins"
    bundled = HERE.parent / "src" / "rootlets_task" / "data" / "model-spinal-rootlets-phantom.zip"
    zip_path = (args.release_zip or bundled).resolve()
    setup = setup_sct_venv(src, venv) + write_standins(src, venv, standins)
    tools = {"sct": {"cmd": [str(venv / "bin" / "sct_deepseg"), "rootlets"], "env": sct_env(src, venv, standins)},
             "ours": {"cmd": [args.rootlets], "env": {**os.environ, "ROOTLETS_TASK_HOME": str(work / "rootlets_home")}}}
    setup += install_release(args.rootlets, zip_path, {**tools["sct"]["env"], "PATH": os.environ["PATH"]}, tools["ours"]["env"])
    sct_version, our_version = tool_versions(tools)
    report = {"sct": {"version": sct_version, "source": str(src), "venv": str(venv), "setup": setup},
              "ours": {"version": our_version, "command": args.rootlets}, "release_zip": str(zip_path)}
    parts, data = args.parts.split(","), make_data(args.rootlets, work)
    if "cmdlines" in parts:
        chosen = [c for c in CMDLINES if not args.only or c[0] in args.only.split(",")]
        report["cmdlines"] = [run_cmdline(spec, tools, data, work) for spec in chosen]
        report["sidecar"] = sidecars_side_by_side(work)
    if "orient" in parts:
        report["orient"] = run_orientations(tools, args.rootlets, work)
    if "qc" in parts:
        report["qc"] = run_shared_qc(tools, data, work, src)
    return write_reports(report, args, work)


def write_reports(report: dict, args: argparse.Namespace, work: Path) -> int:
    for row in report.get("cmdlines", []):  # reports written before VIEWER_FILES: classify again
        if "ours_viewer_files" not in row["compare"]:
            _split_viewer_files(row["compare"])
            row["status"] = _status(row)
    if report.get("cmdlines") and "sidecar" not in report:
        report["sidecar"] = sidecars_side_by_side(work)
    report["summary"] = summary(report)
    (args.json or work / "report.json").write_text(json.dumps(report, indent=1, default=str))
    text = text_report(report)
    (args.text or work / "report.txt").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
