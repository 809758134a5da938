"""External tools of the chain through their command-line boundary.

The real sct_deepseg, totalspineseg, spineps and sct_detect_pmj need model weights that cannot be downloaded
here, so these tests run TEST-ONLY stand-in executables (``tests/fake_tools.py``, MOCKS) put first on PATH. They
check the exact command lines, the value conventions (SPINEPS instances -> SCT disc numbers) and every failure
path. The SPINEPS conversion itself is real code, tested on phantom anatomy against the phantom's disc truth.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from support import fake_tools

from rootlets_task.core.errors import RootletsError
from rootlets_task.io import labels
from rootlets_task.io.phantom import make_phantom
from rootlets_task.levels import spineps, tools

SEED = 4


def _world(p, ijk) -> np.ndarray:
    return np.asarray(ijk) @ p.affine[:3, :3].T + p.affine[:3, 3]


@pytest.mark.parametrize("orient,spacing", [("LPI", (1.0, 1.0, 1.0)), ("AIL", (1.0, 3.0, 0.5))])
def test_spineps_instances_become_sct_discs_at_the_phantom_truth(orient, spacing):
    p = make_phantom(orient, spacing, seed=SEED)
    discs = spineps.spineps_to_sct_discs(fake_tools.spineps_instances(p, SEED), p.affine)
    assert sorted(np.unique(discs[discs > 0]).tolist()) == list(range(1, 10))
    assert all(np.count_nonzero(discs == v) == 1 for v in range(1, 10))
    si_voxel = float(np.abs(p.affine[2, :3]).max())
    got = {v: _world(p, np.argwhere(discs == v)[0]) for v in range(1, 10)}
    for v in (1, 3, 4, 5, 6, 7, 8, 9):  # 102 -> 3 (C2/C3) ... 108 -> 9 (T1/T2); top of C2 -> 1
        truth = _world(p, p.truth["discs"][str(v)]["voxel"])
        # same S-I position within one voxel; on the disc's posterior tip within 2 voxels in-plane (the truth tip
        # is rounded from the exact posterior edge, the label is the nearest voxel inside the disc)
        assert abs(got[v][2] - truth[2]) <= si_voxel + 1e-6, (v, got[v], truth)
        assert np.linalg.norm(got[v] - truth) <= 2.5, (v, got[v], truth)
    # label 2 is inserted halfway between 1 and 3 along the spine (SPINEPS/SCT convention), at 3's position
    assert abs(got[2][2] - (got[1][2] + got[3][2]) / 2) <= si_voxel
    assert np.linalg.norm((got[2] - got[3])[:2]) <= 2.5


def test_spineps_without_discs_is_refused(phantom):
    only_vertebrae = fake_tools.spineps_instances(phantom, SEED)
    only_vertebrae[only_vertebrae > 100] = 0
    with pytest.raises(ValueError, match="no intervertebral disc"):
        spineps.spineps_to_sct_discs(only_vertebrae, phantom.affine)


def _run(kind_source: str, image: Path):
    reference = nib.load(image)
    return {
        "cord:sct": lambda: tools.cord_from_sct(image, reference),
        "discs:sct": lambda: tools.discs_from_sct(image, reference),
        "discs:totalspineseg": lambda: tools.discs_from_totalspineseg(image, reference),
        "discs:label_vertebrae": lambda: tools.discs_from_label_vertebrae(image, reference, _cord_of(image)),
        "discs:spineps": lambda: tools.discs_from_spineps(image, reference, cpu=True),
        "pmj:sct": lambda: tools.pmj_from_sct(image, reference),
    }[kind_source]()


def _cord_of(image: Path) -> Path:
    return image.with_name(image.name.replace(".nii.gz", "_label-SC_seg.nii.gz"))


def _expected_command(kind_source: str, image: Path, call: list[str]) -> list[str]:
    """The real tools' command lines; temporary paths are taken from the recorded call and checked separately."""
    img = str(image.absolute())
    if kind_source == "cord:sct":
        return ["sct_deepseg", "spinalcord", "-i", img, "-o", call[-1]]
    if kind_source == "discs:sct":
        return ["sct_deepseg", "spine", "-i", img, "-o", call[-1]]
    if kind_source == "discs:totalspineseg":
        return ["totalspineseg", img, call[2], "--step1"]
    if kind_source == "discs:label_vertebrae":
        return ["sct_label_vertebrae", "-i", img, "-s", str(_cord_of(image).absolute()), "-c", "t2", "-ofolder", call[-1]]
    if kind_source == "discs:spineps":
        return ["spineps", "sample", "-i", call[3], "-model_semantic", "t2w", "-model_instance", "instance",
                "-ignore_inference_compatibility", "-cpu"]
    return ["sct_detect_pmj", "-i", img, "-c", "t2", "-ofolder", call[-3], "-o", "phantom_T2w_pmj.nii.gz"]


SOURCES = ["cord:sct", "discs:sct", "discs:label_vertebrae", "discs:totalspineseg", "discs:spineps", "pmj:sct"]


@pytest.mark.parametrize("kind_source", SOURCES)
def test_tool_command_line_and_checked_output(fake, phantom, files, kind_source):
    image = files["image"]
    out = _run(kind_source, image)
    call = fake_tools.calls(fake)[-1]
    assert call == _expected_command(kind_source, image, call)
    inputs = {str(image.absolute()), str(_cord_of(image).absolute())}
    temporaries = [Path(a) for a in call[1:] if a.startswith("/") and a not in inputs]
    assert temporaries and not any(t.exists() for t in temporaries), "the private folder is removed afterwards"
    assert out.notes == []
    kind = kind_source.split(":")[0]
    if kind_source == "discs:spineps":
        assert out.command[-1] == "-cpu" and call[3].endswith("sub-rootlets_T2w.nii.gz")
        assert sorted(np.unique(out.data[out.data > 0]).tolist()) == list(range(1, 10))
    else:
        assert np.array_equal(out.data, getattr(phantom, kind))
        assert out.data.dtype == np.uint8


@pytest.mark.parametrize("kind_source", SOURCES)
def test_same_space_other_grid_is_resampled_with_a_note(fake, monkeypatch, phantom, files, kind_source):
    monkeypatch.setenv("FAKE_TOOL_MODE", "othergrid")
    out = _run(kind_source, files["image"])
    assert out.data.shape == phantom.image.shape
    assert any("resampled" in n for n in out.notes)
    kind = kind_source.split(":")[0]
    if kind_source != "discs:spineps":
        assert np.array_equal(out.data, getattr(phantom, kind))


FLAG = {"cord": "-s CORD", "discs": "-discs DISCS", "pmj": "-pmj PMJ"}


@pytest.mark.parametrize("kind_source", SOURCES)
@pytest.mark.parametrize("mode,message", [
    ("fail", r"failed \(exit 3\): command `.+`; last lines of its stderr: .*RuntimeError: fake .* crashed on purpose"),
    ("nothing", "exited 0 but wrote no"),
    ("otherspace", "does not overlap the image"),
    ("badvalues", "not a binary mask|span several voxels|2 labelled voxels|no intervertebral disc"),
])
def test_tool_failures_name_tool_command_stderr_and_the_file_flag(fake, monkeypatch, files, kind_source, mode,
                                                                   message):
    if kind_source == "pmj:sct" and mode == "nothing":
        pytest.skip("sct_detect_pmj writes nothing when it finds no PMJ: tested below")
    monkeypatch.setenv("FAKE_TOOL_MODE", mode)
    kind, source = kind_source.split(":")
    with pytest.raises(RootletsError, match=message) as err:
        _run(kind_source, files["image"])
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith(tools.TOOLS[kind, source].name)
    assert f"give the file yourself with {FLAG[kind]}" in text
    assert "command `" in text


def test_pmj_not_found_is_none(fake, monkeypatch, files):
    monkeypatch.setenv("FAKE_TOOL_MODE", "nothing")
    assert tools.pmj_from_sct(files["image"], nib.load(files["image"])) is None


@pytest.mark.parametrize("kind_source", SOURCES)
def test_missing_tool_says_how_to_install_and_how_to_give_the_file(monkeypatch, tmp_path, files, kind_source):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing there
    kind, source = kind_source.split(":")
    assert not tools.available(kind, source)
    with pytest.raises(RootletsError, match="was not found on PATH") as err:
        _run(kind_source, files["image"])
    text = str(err.value)
    assert FLAG[kind] in text
    hint = {"sct": "Spinal Cord Toolbox", "label_vertebrae": "Spinal Cord Toolbox",
            "totalspineseg": "pip install 'rootlets_task[totalspineseg]'",
            "spineps": "pip install 'rootlets_task[spineps]'"}[source]
    assert hint in text


def test_user_label_files_are_checked(tmp_path, phantom, files):
    reference = nib.load(files["image"])
    data, notes = labels.load(files["discs"], "discs", reference)
    assert np.array_equal(data, phantom.discs) and notes == []
    rootlets_as_cord = files["rootlets"]
    with pytest.raises(ValueError, match="not a binary mask"):
        labels.load(rootlets_as_cord, "cord", reference)
    with pytest.raises(ValueError, match="not SCT disc labels"):
        labels.load(files["pmj"], "discs", reference)
