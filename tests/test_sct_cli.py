"""``rootlets -i ...`` as a drop-in for ``sct_deepseg rootlets -i ...``: SCT's arguments, post-processing, first-use
install, QC entries in SCT's report, the sidecar.

Ground truth is what SCT does (7.0 to HEAD), read in its source and measured by running SCT HEAD (7.4.dev0) beside the
project: argument table, error texts, the counts each post-processing flag left on a rootlets map, SCT's QC
layout/JSON/lock/index files and its sidecar. SCT itself is not installed in CI (LGPL, not committed): SCT's QC
folder is rebuilt here from SCT-written ``_json`` entries (tests/data/sct_qc, copied from a real SCT run) plus
placeholder files under SCT's asset names, whose bytes the tests check are never touched.
``benchmarks/sct_conformance.py`` runs both tools side by side against a real SCT (manual).

Models: the random-weight model of the ``random_store`` fixture (fast I/O and flag tests) and the bundled phantom
release (``phantom_home``) where real rootlets are needed (post-processing on a rootlets map, QC images).
Installs on first use come from a loopback HTTP server (tests/test_install.py's ``Server``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import uuid
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from support.chromium import MISSING, Chromium, chromium_path
from support.cli import run_cli as _run
from support.required import needs
from test_install import Server

import rootlets_task
from rootlets_task.cli import rootlets as cli
from rootlets_task.core.errors import RootletsError
from rootlets_task.inference import postprocess
from rootlets_task.inference.postprocess import PostOptions
from rootlets_task.io import provenance, viewers
from rootlets_task.io.phantom import write_phantom
from rootlets_task.models import install
from rootlets_task.models.releases import DEFAULT_TAG, ENV_MIRROR, RELEASES
from rootlets_task.qc import sct_report as sct_qc

DATA = Path(__file__).parent / "data"
# The rootlets map SCT HEAD post-processed side by side (phantom release on a cropped 40x50x112 1 mm LPI phantom):
# made by rootlets_task with the same release, voxel-identical to SCT's plain output.
PROBE = DATA / "probe_rootlets.nii.gz"
PROBE_BASE = {2: 252, 3: 247, 4: 236, 5: 280, 6: 279, 7: 254, 8: 265}
# What SCT HEAD wrote for each flag on that map (nonzero values and their voxel counts).
SCT_MEASURED = {
    "-thr 0.5": ({"thr": 0.5}, {1: 1813}),
    "-largest 1": ({"largest": 1}, {5: 2, 6: 25}),
    "-remove-small 5vox": ({"remove_small": ("5vox",)}, {**PROBE_BASE, 6: 278}),
    "-remove-small 10mm3": ({"remove_small": ("10mm3",)}, {**PROBE_BASE, 6: 278}),
    "-remove-small 40": ({"remove_small": ("40",)}, {6: 10, 7: 212, 8: 221}),
}


def _counts(data: np.ndarray) -> dict[int, int]:
    values, counts = np.unique(data, return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts, strict=True) if v}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def small_image(tmp_path_factory) -> Path:
    """A 2 mm phantom cut to 32 slices around C4-C6 in a BIDS-like tree (one 32^3 tile of the random model)."""
    root = tmp_path_factory.mktemp("ds")
    img = nib.load(write_phantom(root / "ph", "LPI", (2.0, 2.0, 2.0))["image"]).slicer[:, :, 30:62]
    path = root / "ds-test" / "sub-01" / "anat" / "sub-01_T2w.nii.gz"
    path.parent.mkdir(parents=True)
    nib.save(img, path)
    return path


@pytest.fixture
def image(small_image, tmp_path) -> Path:
    """A private copy of the small image, in <tmp>/ds-test/sub-01/anat/ (dataset/subject/contrast for SCT's QC)."""
    path = tmp_path / "ds-test" / "sub-01" / "anat" / small_image.name
    path.parent.mkdir(parents=True)
    shutil.copy(small_image, path)
    return path


@pytest.fixture
def random_home(random_store, monkeypatch):
    monkeypatch.setenv(install.ENV_HOME, str(random_store))
    return random_store


# ------------------------------------------------------------------------------------------------ the parser
# SCT HEAD's parser of `sct_deepseg rootlets` (its argparse actions, read from a running SCT 7.4.dev0):
# flag -> (our dest, type, choices, default, nargs). SCT's dests differ for -thr (binarize_prediction) and
# -largest (keep_largest); the values and defaults are SCT's.
SCT_ARGUMENTS = {
    "-i": ("i", None, None, None, "+"),
    "-o": ("o", None, None, None, None),
    "-install": ("install", None, None, False, 0),
    "-custom-url": ("custom_url", None, None, None, "+"),
    "-thr": ("thr", float, None, None, None),
    "-largest": ("largest", int, [0, 1], 0, None),
    "-fill-holes": ("fill_holes", int, [0, 1], 0, None),
    "-remove-small": ("remove_small", None, None, None, "+"),
    "-qc": ("qc", None, None, None, None),
    "-qc-dataset": ("qc_dataset", None, None, None, None),
    "-qc-subject": ("qc_subject", None, None, None, None),
    "-qc-plane": ("qc_plane", None, ("Axial", "Sagittal"), "Axial", None),
    "-qc-seg": ("qc_seg", None, None, None, None),
    "-v": ("v", int, [0, 1, 2], 1, None),
    "-profile-time": ("profile_time", None, None, None, "?"),
    "-trace-memory": ("trace_memory", None, None, None, "?"),
    "-r": ("r", int, [0, 1], 1, None),
    "-test-time-aug": ("test_time_aug", None, None, False, 0),
}


def test_every_sct_argument_has_scts_type_choices_default_and_arity():
    parser = cli._segment_parser()
    actions = {o: a for a in parser._actions for o in a.option_strings}
    for flag, (dest, kind, choices, default, nargs) in SCT_ARGUMENTS.items():
        action = actions[flag]
        got_nargs = 0 if isinstance(action, argparse._StoreTrueAction) else action.nargs
        assert (action.dest, action.type, action.default, got_nargs) == (dest, kind, default, nargs), flag
        assert (list(action.choices) if action.choices else None) == (list(choices) if choices else None), flag
    assert parser.allow_abbrev is False
    for make in (factory for factory, _ in cli.COMMANDS.values()):
        assert make().allow_abbrev is False, make


def test_sct_command_lines_parse_as_sct_reads_them():
    parse = cli._segment_parser().parse_args
    args = parse(["-i", "a.nii.gz", "b.nii.gz", "-o", "x.nii.gz", "-thr", "-1", "-largest", "1", "-fill-holes", "0",
                  "-remove-small", "5", "10vox", "-qc", "q", "-qc-dataset", "D", "-qc-subject", "S", "-qc-plane",
                  "Sagittal", "-qc-seg", "s.nii.gz", "-v", "2", "-r", "0", "-test-time-aug", "-profile-time",
                  "-trace-memory", "mem"])
    assert (args.i, args.o, args.thr, args.largest, args.fill_holes, args.remove_small) == \
        (["a.nii.gz", "b.nii.gz"], "x.nii.gz", -1.0, 1, 0, ["5", "10vox"])
    assert (args.qc, args.qc_dataset, args.qc_subject, args.qc_plane, args.qc_seg) == ("q", "D", "S", "Sagittal", "s.nii.gz")
    assert (args.v, args.r, args.test_time_aug, args.profile_time, args.trace_memory) == (2, 0, True, ".", "mem")
    # single-dash forms SCT accepts; the last of a repeated option wins, as in SCT
    joined = parse(["-i", "a", "-r0", "-v2", "-thr=0.3", "-o", "x", "-o", "y"])
    assert (joined.r, joined.v, joined.thr, joined.o) == (0, 2, 0.3, "y")
    assert parse(["-i", "a"]).thr is None and parse(["-i", "a", "-profile-time", "p.txt"]).profile_time == "p.txt"
    # our -levels rootlets file is -rootlets now that -r is SCT's
    assert parse(["-i", "a", "-levels", "-rootlets", "r.nii.gz"]).rootlets == "r.nii.gz"


@pytest.mark.parametrize("argv, message", [
    (["-largest", "5"], "argument -largest: invalid choice: 5 (choose from 0, 1)"),
    (["-fill-holes", "2"], "argument -fill-holes: invalid choice: 2 (choose from 0, 1)"),
    (["-largest", "1.0"], "argument -largest: invalid int value: '1.0'"),
    (["-thr", "abc"], "argument -thr: invalid float value: 'abc'"),
    (["-r", "3"], "argument -r: invalid choice: 3 (choose from 0, 1)"),
    (["-v", "3"], "argument -v: invalid choice: 3 (choose from 0, 1, 2)"),
    (["-qc-plane", "X"], "argument -qc-plane: invalid choice: 'X' (choose from 'Axial', 'Sagittal')"),
    (["-o"], "argument -o: expected one argument"),
    (["-foo"], "unrecognized arguments: -foo"),
    # abbreviations SCT's parser accepts (allow_abbrev): refused here, never read as another flag
    (["-larg", "1"], "unrecognized argument: -larg (abbreviations are off; did you mean -largest?)"),
    (["-inst"], "-inst (abbreviations are off; did you mean -install?)"),
    (["-test"], "did you mean -test-time-aug?"),
    (["-qc-s", "S"], "did you mean -qc-seg or -qc-subject?"),
    (["-remove", "5vox"], "did you mean -remove-small?"),
])
def test_bad_values_give_scts_message_as_one_line(argv, message, image, capsys):
    before = sorted(image.parent.iterdir())
    with pytest.raises(SystemExit) as exc:
        cli.main(["-i", str(image), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and message in err[0] and err[0].startswith("rootlets: error:"), err
    assert sorted(image.parent.iterdir()) == before


def test_missing_i_is_scts_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["-o", "x.nii.gz"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "You must specify either a task name + '-install'" in err


def test_help_shows_defaults_sct_flags_and_the_differences(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["-h"])
    out = capsys.readouterr().out
    assert exc.value.code == 0
    for text in ("-largest {0,1}", "(default: 0)", "-fill-holes {0,1}", "-remove-small N[vox|mm3]", "-thr T",
                 "-qc-plane {Axial,Sagittal}", "(default: Axial)", "-qc-seg FILE", "accepted and ignored",
                 "-r {0,1}", "(default: 1)", "-profile-time [FILE|DIR]", "-trace-memory [DIR]", "-rootlets FILE",
                 "Kept on purpose", "several -i", "a missing -i file is exit code 1", "-thr -> -largest -> -fill-holes",
                 "DIR/rootlets_task/index.html", "First use"):
        assert text in out, text


# --------------------------------------------------------------------------------------- post-processing on arrays
@pytest.mark.parametrize("flags", SCT_MEASURED)
def test_postprocessing_leaves_what_sct_left_on_a_rootlets_map(flags):
    img = nib.load(PROBE)
    data = np.asanyarray(img.dataobj)
    assert _counts(data) == PROBE_BASE
    options, expected = SCT_MEASURED[flags]
    result = postprocess.apply(data, PostOptions(**options), img.header.get_zooms()[:3])
    assert _counts(result) == expected and result.dtype == np.uint8 and result.shape == data.shape
    assert _counts(data) == PROBE_BASE, "the input map is not modified"
    if options.get("largest"):
        from scipy import ndimage

        assert ndimage.label(result)[1] == 1, "one 6-connected blob, of mixed levels"
    removed = (data > 0) & (result == 0)
    if "remove_small" in options:
        assert np.array_equal(result[result > 0], data[result > 0]), "kept voxels keep their level"
        assert removed.sum() == sum(PROBE_BASE.values()) - sum(expected.values())


def test_postprocessing_order_and_scts_special_cases():
    data = np.zeros((9, 9, 9), np.uint8)
    data[1:4, 1:4, 1:4] = 3                      # 27 voxels, level 3
    data[1:4, 1:4, 4] = 4                        # touching (6-connected): one blob of mixed levels
    data[6, 6, 6] = 5                            # a corner away (not connected at all)
    data[7, 7, 6] = 6                            # edge-diagonal to (6,6,6): 18-connected, not 6-connected
    zooms = (1.0, 1.0, 1.0)
    assert postprocess.apply(data, PostOptions(thr=0), zooms) is data, "-thr 0 does nothing (SCT: `if threshold:`)"
    assert _counts(postprocess.apply(data, PostOptions(thr=3.5), zooms)) == {1: 11}, "levels above 3.5 -> 1"
    assert _counts(postprocess.apply(data, PostOptions(thr=-1), zooms)) == {1: 729}, "negative: everything -> 1"
    assert _counts(postprocess.keep_largest(data)) == {3: 27, 4: 9}
    # remove-small is 18-connected: the two diagonal voxels are one blob of 2, kept at 2, removed at 3
    assert _counts(postprocess.remove_small(data, ["2vox"], zooms)) == {3: 27, 4: 9, 5: 1, 6: 1}
    assert _counts(postprocess.remove_small(data, ["3"], zooms)) == {3: 27, 4: 9}
    # mm3: size / voxel volume, rounded half to even (numpy): 10 mm3 / 4 mm3 = 2.5 -> 2 voxels
    assert _counts(postprocess.remove_small(data, ["10mm3"], (1.0, 2.0, 2.0))) == {3: 27, 4: 9, 5: 1, 6: 1}
    assert _counts(postprocess.remove_small(data, ["14mm3"], (1.0, 2.0, 2.0))) == {3: 27, 4: 9}
    # SCT's order: thr, then largest, then fill-holes (binary by then), then remove-small
    ring = np.zeros((7, 7, 7), np.uint8)
    ring[1:6, 1:6, 1:6] = 2
    ring[3, 3, 3] = 0                            # a hole
    ring[0, 0, 0] = 7                            # a lone voxel, removed by -largest
    both = postprocess.apply(ring, PostOptions(thr=0.5, largest=1, fill_holes=1, remove_small=("200",)), zooms)
    assert _counts(both) == {}, "125 filled voxels, then removed as smaller than 200"
    filled = postprocess.apply(ring, PostOptions(thr=0.5, largest=1, fill_holes=1), zooms)
    assert _counts(filled) == {1: 125}
    with pytest.raises(RootletsError, match=re.escape(postprocess.FILL_HOLES_REFUSAL)):
        postprocess.apply(ring, PostOptions(fill_holes=1), zooms)


@pytest.mark.parametrize("tokens, message", [
    (("5vox", "10"), "Length mismatch for remove small object postprocessing step: threshold length of 2 while the "
                     "number of predicted class is 1."),
    (("abc",), "invalid literal for int() with base 10: 'abc'"),
    (("5mm3", "10"), "invalid literal for int() with base 10: '5mm3'"),  # the unit comes from the last value
])
def test_remove_small_values_refused_with_scts_message(tokens, message):
    with pytest.raises(RootletsError, match=re.escape(message)):
        PostOptions(remove_small=tokens).check()
    assert postprocess.remove_small_sizes(("5vox",)) == ("vox", [5])
    assert postprocess.remove_small_sizes(("7mm3",)) == ("mm3", [7])
    assert postprocess.remove_small_sizes(("7",)) == ("vox", [7])


# ------------------------------------------------------------------------------------------ flags on a real run
def test_sct_flags_act_on_real_runs(random_home, image, tmp_path, capsys, monkeypatch):
    """Three runs of the random-weight model on one image: plain, then -thr/-largest, then -thr/-remove-small with
    SCT's misc flags: each output equals the plain one post-processed on arrays (same model, same input). The random
    model labels nearly every voxel as one blob: -thr 8.5 (levels 9 only) leaves blobs for the other flags to act on."""
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(["-i", image, "-o", "plain.nii.gz"], capsys)
    assert code == 0, err
    plain = np.asanyarray(nib.load(tmp_path / "plain.nii.gz").dataobj)
    zooms = nib.load(image).header.get_zooms()[:3]
    binary = postprocess.apply(plain, PostOptions(thr=8.5), zooms)
    assert len(_counts(plain)) > 2 and binary.any(), "several levels, and some 9s (else the flags test nothing)"
    code, out, err = _run(["-i", image, "-o", "thr.nii.gz", "-thr", "8.5", "-largest", "1"], capsys)
    assert code == 0, err
    largest = np.asanyarray(nib.load(tmp_path / "thr.nii.gz").dataobj)
    assert np.array_equal(largest, postprocess.apply(plain, PostOptions(thr=8.5, largest=1), zooms))
    assert set(_counts(largest)) == {1} and 0 < largest.sum() < binary.sum(), "one blob kept of several"
    code, out, err = _run(["-i", image, "-o", "rs.nii.gz", "-thr", "8.5", "-remove-small", "24mm3", "-r", "0", "-v", "2",
                           "-qc-seg", "nowhere.nii.gz", "-custom-url", "http://127.0.0.1:9/x.zip",
                           "-profile-time", "prof.txt", "-trace-memory", "mem"], capsys)
    assert code == 0, err
    rs = np.asanyarray(nib.load(tmp_path / "rs.nii.gz").dataobj)
    assert np.array_equal(rs, postprocess.apply(plain, PostOptions(thr=8.5, remove_small=("24mm3",)), zooms))
    assert largest.sum() < rs.sum() < binary.sum(), "24 mm3 = 3 voxels of 8 mm3: small blobs removed, not all"
    assert "-custom-url is only used with -install; ignored" in err and "-qc-seg nowhere.nii.gz: ignored" in err
    assert "-r 0: rootlets keeps no temporary files" in err
    assert "Ordered by: cumulative time" in (tmp_path / "prof.txt").read_text()
    assert re.fullmatch(r"PEAK; \d+\.\d{3}", (tmp_path / "mem" / "peak_memory.txt").read_text())
    made = {p.name for p in tmp_path.iterdir() if not p.name.startswith("ds-")} - set(viewers.FOLDER_FILES)
    assert sorted(made) == sorted(["plain.nii.gz", "plain.json", "plain.tsv", "thr.nii.gz", "thr.json", "thr.tsv",
                                   "rs.nii.gz", "rs.json", "rs.tsv", "prof.txt", "mem"])  # + the viewers' lookup tables


def test_fill_holes_refused_before_the_model_loads(random_home, image, tmp_path, capsys, monkeypatch):
    from rootlets_task.inference import segmenter as inference

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded")

    before = sorted(p.name for p in image.parent.iterdir())
    with monkeypatch.context() as mp:
        mp.setattr(inference.Segmenter, "__init__", no_load)
        code, out, err = _run(["-i", image, "-fill-holes", "1"], capsys)
    lines = err.strip().splitlines()
    assert code == 1 and out == "" and len(lines) == 1, err
    assert lines[0].startswith("rootlets: error: -fill-holes 1: fill_holes expects a binary segmentation as input. "
                               "Use `-thr` to binarize the prediction before using fill_holes.")
    for argv in (["-remove-small", "5vox", "10"], ["-remove-small", "abc"]):
        with monkeypatch.context() as mp:
            mp.setattr(inference.Segmenter, "__init__", no_load)
            code, out, err = _run(["-i", image, *argv], capsys)
        assert code == 1 and len(err.strip().splitlines()) == 1 and "(SCT's ValueError)" in err, err
    assert sorted(p.name for p in image.parent.iterdir()) == before, "nothing written"
    code, out, err = _run(["-i", image, "-thr", "0.5", "-fill-holes", "1", "-o", tmp_path / "f.nii.gz"], capsys)
    assert code == 0 and set(_counts(np.asanyarray(nib.load(tmp_path / "f.nii.gz").dataobj))) <= {1}, err


# ------------------------------------------------------------------------------------------------ the sidecar
def test_sidecar_has_scts_keys_in_scts_order_and_indent(random_home, image, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(image.parent)
    out = tmp_path / "sub" / "t2_rootlets.nii.gz"
    code, _, err = _run(["-i", image.name, "-o", out, "-qc", tmp_path / "qc", "-v", "0"], capsys)
    assert code == 0, err
    text = (tmp_path / "sub" / "t2_rootlets.json").read_text()
    side = json.loads(text)
    assert text.splitlines()[1] == '    "GeneratedBy": [', "json.dump(..., indent=4) as SCT"
    assert list(side) == ["GeneratedBy", "InputFile", "Confidence"]  # SCT's keys first, then ours
    gen = side["GeneratedBy"][0]
    assert list(gen) == ["Name", "Version", "CodeURL", "ModelURL", "Release", "ModelSHA256", "ModelFolder", "Device",
                         "Settings"], "SCT's four keys first, in SCT's order, then ours"
    assert gen["Name"] == "rootlets_task: rootlets -i sub-01_T2w.nii.gz -o t2_rootlets.nii.gz -qc qc -v 0", \
        "the command as run, every token basename'd (as SCT)"
    assert gen["Version"] == rootlets_task.__version__
    assert gen["CodeURL"] == f"https://github.com/ivadomed/rootlets_task/blob/v{rootlets_task.__version__}/src/rootlets_task/pipeline/segment.py"
    assert gen["CodeURL"].startswith(provenance.HOME_PAGE)
    record = json.loads((random_home / "models" / DEFAULT_TAG / install.RECORD).read_text())
    assert gen["ModelURL"] == Path(record["url"]).name and gen["Release"] == DEFAULT_TAG, "a local zip: its name only"
    assert side["InputFile"] == os.path.relpath(image, tmp_path / "sub"), "relative to the sidecar: no local folders"


def test_home_page_is_defined_once_for_setup_and_sidecars():
    from importlib import metadata

    meta = metadata.metadata("rootlets_task")
    urls = [meta.get("Home-page") or ""] + [u.split(", ", 1)[-1] for u in meta.get_all("Project-URL") or []]
    assert provenance.HOME_PAGE in urls, "setup.py's url is provenance.HOME_PAGE (src/rootlets_task/_version.py)"
    assert "portalocker" in " ".join(metadata.requires("rootlets_task") or [])


# ------------------------------------------------------------------------------------------ install on first use
def _random_zip(tmp_path: Path) -> bytes:
    from support.random_model import write_random_model

    folder = write_random_model(tmp_path / "model")
    return Path(shutil.make_archive(str(tmp_path / "release"), "zip", folder.parent, folder.name)).read_bytes()


def test_first_use_installs_the_release_then_segments(image, tmp_path, capsys, monkeypatch):
    """Empty model store (autouse fixture); the registry's mirror is a loopback server (ROOTLETS_TASK_MIRROR)."""
    server = Server()
    try:
        asset = RELEASES[DEFAULT_TAG].asset
        server.add(asset, _random_zip(tmp_path))
        monkeypatch.setenv(ENV_MIRROR, server.base)
        code, out, err = _run(["-i", image, "-o", tmp_path / "a.nii.gz"], capsys)
        assert code == 0, err
        assert f"rootlets: Model release {DEFAULT_TAG} is not installed. Installing it now..." in err
        assert "100%" not in err and "\r" not in err, "stderr is not a terminal here: no progress bar in the log"
        assert f"rootlets: installed model release {DEFAULT_TAG} from {server.base}/{asset}" in err
        assert (tmp_path / "a.nii.gz").is_file() and server.hits[asset] == 1
        code, out, err = _run(["-i", image, "-o", tmp_path / "b.nii.gz"], capsys)
        assert code == 0 and "Installing" not in err and server.hits[asset] == 1, "installed and current: no download"
        # an outdated install (the registry now names another asset) is installed again first, as SCT does
        record_path = install.models_dir() / DEFAULT_TAG / install.RECORD
        record = json.loads(record_path.read_text())
        record_path.write_text(json.dumps({**record, "asset": "model-spinal-rootlets-old.zip"}))
        code, out, err = _run(["-i", image, "-o", tmp_path / "c.nii.gz"], capsys)
        assert code == 0, err
        assert f"Model release {DEFAULT_TAG} is out of date (the release is now {asset}). Re-installing it now..." in err
        assert server.hits[asset] == 2
        # damaged (a checkpoint gone): reinstalled too
        next((install.models_dir() / DEFAULT_TAG).rglob("*.pth")).unlink()
        code, out, err = _run(["-i", image, "-o", tmp_path / "d.nii.gz", "-v", "0"], capsys)
        assert code == 0 and server.hits[asset] == 3 and "Installing" not in err, "-v 0: warnings only"
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


def test_bundled_phantom_release_installs_silently_without_network(image, tmp_path, capsys):
    code, out, err = _run(["-i", image, "-release", "phantom", "-o", tmp_path / "p.nii.gz"], capsys)
    assert code == 0, err
    assert "Installing" not in err and "installed model release" not in err
    assert install.installed_release("phantom") is not None and (tmp_path / "p.nii.gz").is_file()


# ------------------------------------------------------------------------------------------ SCT's QC report
SCT_ASSETS = ("index.html", "js/datasets.js", "images/key-icon.png", "py/refresh_qc_entries.py")


def sct_qc_folder(root: Path) -> tuple[Path, dict[str, str]]:
    """A QC folder as SCT leaves it: two SCT-written entries (tests/data/sct_qc/_json), placeholder bytes under the
    names of SCT's assets and entry images (SCT's files are not committed), datasets.js in SCT's format. Returns the
    folder and the sha256 of every file in it."""
    qc = root / "qc"
    shutil.copytree(DATA / "sct_qc", qc)
    entries = [json.loads(p.read_text()) for p in sorted((qc / "_json").glob("*.json"))]
    for entry in entries:
        for key in ("backgroundImage", "overlayImage"):
            (qc / entry[key]).parent.mkdir(parents=True, exist_ok=True)
            (qc / entry[key]).write_bytes(f"placeholder for SCT's {entry[key]}".encode())
    for name in SCT_ASSETS:
        (qc / name).parent.mkdir(parents=True, exist_ok=True)
        (qc / name).write_bytes(f"placeholder for SCT's {name}".encode())
    report_uuid = str(uuid.uuid4())
    (qc / "js" / "datasets.js").write_text(f"\nwindow.SCT_QC_UUID = '{report_uuid}';\n"
                                           f"window.SCT_QC_DATASETS = {json.dumps(entries)};\n")
    return qc, {str(p.relative_to(qc)): _sha(p) for p in sorted(qc.rglob("*")) if p.is_file()}


def test_qc_entries_join_an_sct_qc_folder_without_touching_scts_files(phantom_home, image, tmp_path, capsys,
                                                                     monkeypatch):
    qc, before = sct_qc_folder(tmp_path)
    report_uuid = re.search(r"SCT_QC_UUID = '(.*)';", (qc / "js" / "datasets.js").read_text()).group(1)
    monkeypatch.chdir(tmp_path)
    rel = image.relative_to(tmp_path)
    code, out, err = _run(["-i", rel, "-release", "phantom", "-qc", "qc", "-qc-dataset", "phantom"], capsys)
    assert code == 0, err
    code, out, err = _run(["-i", rel, "-release", "phantom", "-qc", qc, "-qc-subject", "S02", "-qc-plane", "Sagittal",
                           "-o", tmp_path / "second.nii.gz"], capsys)
    assert code == 0, err
    after = {str(p.relative_to(qc)): _sha(p) for p in sorted(qc.rglob("*")) if p.is_file()}
    changed = sorted(k for k in before if after.get(k) != before[k])
    assert changed == ["js/datasets.js"], "only SCT's entry list is rebuilt; every other SCT file is untouched"
    ours = sorted(set(after) - set(before))
    entries = {p: json.loads((qc / p).read_text()) for p in ours if p.startswith("_json/")}
    assert len(entries) == 2
    first, second = (entries[k] for k in sorted(entries))
    for path, entry in entries.items():
        assert list(entry) == list(sct_qc.KEYS) and (qc / path).read_text().splitlines()[1].startswith(' "path"')
        stamp = re.fullmatch(r"_json/qc_(\d{4}_\d\d_\d\d_\d{6}\.\d{6})\.json", path).group(1)
        assert entry["backgroundImage"] == f"{entry['dataset']}/{entry['subject']}/anat/sct_deepseg/{stamp}/background_img.png"
        assert entry["overlayImage"] == entry["backgroundImage"].replace("background_img", "overlay_img")
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}", entry["date"])
        assert (entry["command"], entry["contrast"], entry["inputFile"], entry["rank"], entry["qc"]) == \
            ("sct_deepseg", "anat", "sub-01_T2w.nii.gz", "", "")
        assert entry["path"] == str(tmp_path) and entry["sctVersion"] == f"rootlets_task {rootlets_task.__version__}"
        background, overlay = (Image.open(qc / entry[k]) for k in ("backgroundImage", "overlayImage"))
        assert background.size == overlay.size and background.width == 1060, "SCT's page overlays them"
        alpha = np.asarray(overlay.convert("RGBA"))[..., 3]
        assert (alpha == 0).mean() > 0.5 and (alpha == 255).any(), "a transparent overlay with the rootlets on it"
    assert (first["dataset"], first["subject"], first["plane"]) == ("phantom", "sub-01", "Axial"), \
        "-qc-dataset given, subject derived from the input's folders"
    assert first["cmdline"] == f"rootlets -i {rel} -release phantom -qc qc -qc-dataset phantom"
    assert (second["dataset"], second["subject"], second["plane"]) == ("ds-test", "S02", "Sagittal")
    datasets = (qc / "js" / "datasets.js").read_text()
    every = [json.loads(p.read_text()) for p in sorted((qc / "_json").glob("*.json"))]
    assert datasets == f"\nwindow.SCT_QC_UUID = '{report_uuid}';\nwindow.SCT_QC_DATASETS = {json.dumps(every)};\n", \
        "SCT's refresh_qc_entries.py format: every entry, sorted by file name, the report's UUID kept"
    assert len(every) == 4 and sum(e["command"] == "sct_deepseg" for e in every) == 4
    assert (qc / "rootlets_task" / "index.html").is_file(), "our report, inside its own folder"
    # the reverse: what SCT writes on its next QC entry (its assets, its entry files) never hits a file of ours
    scts_next = set(SCT_ASSETS) | {"_json/qc_2030_01_01_000000.000000.json"}
    assert not scts_next & set(ours) and all(not p.startswith(("index.html", "js/", "images/", "py/")) for p in ours)


def test_entry_names_derived_as_sct_derives_them(tmp_path):
    image = tmp_path / "data" / "sub-07" / "ses-1" / "anat" / "sub-07_T2w.nii.gz"
    image.parent.mkdir(parents=True)
    image.write_bytes(b"")
    assert sct_qc.entry_names(image) == ("sub-07", "ses-1", "anat", "sub-07_T2w.nii.gz"), \
        "SCT reads <dataset>/<subject>/<contrast>/<file>, whatever the folders are (a session becomes the subject)"
    assert sct_qc.entry_names(image, sct_qc.QcNames("D", "S")) == ("D", "S", "anat", "sub-07_T2w.nii.gz")
    link = tmp_path / "elsewhere" / "x" / "link.nii.gz"
    link.parent.mkdir(parents=True)
    link.symlink_to(image)
    assert sct_qc.entry_names(link) == ("sub-07", "ses-1", "anat", "sub-07_T2w.nii.gz"), "the resolved path, as SCT HEAD"
    assert sct_qc.command_line("rootlets", ["-i", "a b.nii.gz", "-qc", "q"]) == "rootlets -i 'a b.nii.gz' -qc q"
    real = (tmp_path / "qc").resolve()
    assert sct_qc.lock_name(tmp_path / "qc") == f"sct_qc-qc-{hashlib.md5(str(real).encode()).hexdigest()}"


def test_qc_waits_for_scts_lock_and_never_creates_scts_files(phantom_home, tmp_path, monkeypatch):
    """SCT's lock held by another process (here: this test, through portalocker as SCT takes it): the entry's images
    are drawn, the record is not written until the lock is free; a folder without SCT's report gets no datasets.js."""
    import portalocker

    ph = write_phantom(tmp_path / "ph", "LPI", (2.0, 2.0, 2.0))
    img, roots = nib.load(ph["image"]), nib.load(ph["rootlets"])
    qc = tmp_path / "qc"
    qc.mkdir()
    held = portalocker.BoundedSemaphore(maximum=1, name=sct_qc.lock_name(qc), timeout=1, check_interval=0.1)
    held.acquire()
    monkeypatch.setattr(sct_qc, "LOCK_TIMEOUT_S", 0.5)
    try:
        with pytest.raises(RootletsError, match=r"held its QC lock sct_qc-qc-[0-9a-f]{32} for 0.5 s"):
            sct_qc.add_entry(qc, ph["image"], img, roots, "rootlets -i x")
    finally:
        held.release()
    assert not (qc / "_json").exists() or not list((qc / "_json").glob("*.json"))
    path = sct_qc.add_entry(qc, ph["image"], img, roots, "rootlets -i x")
    assert json.loads(path.read_text())["cmdline"] == "rootlets -i x"
    dataset = sct_qc.entry_names(ph["image"])[0]
    assert sorted(p.name for p in qc.iterdir()) == sorted(["_json", dataset]), "the entry's record and images only"
    assert not (qc / "js").exists() and not (qc / "index.html").exists(), "SCT's assets are SCT's to write"


@needs("chromium", chromium_path(), MISSING)
def test_our_report_renders_beside_scts(phantom_home, image, tmp_path, capsys):
    qc, _ = sct_qc_folder(tmp_path)
    code, _, err = _run(["-i", image, "-release", "phantom", "-qc", qc, "-v", "0"], capsys)
    assert code == 0, err
    load_all = """Promise.all(Array.from(document.images).map(i => { i.loading = "eager";
        return i.decode().catch(() => null); })).then(() => Array.from(document.images).map(i => i.naturalWidth))"""
    with Chromium(tmp_path / "profile") as browser:
        browser.open((qc / "rootlets_task" / "index.html").as_uri())
        widths = browser.evaluate(load_all)
        rows = browser.evaluate("document.querySelectorAll('#subjects tbody tr').length")
        assert rows == 1 and widths and min(widths) > 0, (rows, widths)
        (page,) = (qc / "rootlets_task").glob("*/index.html")
        browser.open(page.as_uri())
        assert min(browser.evaluate(load_all)) > 0
        assert browser.errors == []
