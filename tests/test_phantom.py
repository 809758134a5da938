"""The phantom is the ground truth of every other test: check it against its own definition."""

import json

import nibabel as nib
import numpy as np
import pytest

from rootlets_task.cli.rootlets import main
from rootlets_task.io.nifti import orientation
from rootlets_task.io.phantom import SPINAL_LEVELS, make_phantom


def test_seeded_and_deterministic():
    a, b, c = make_phantom(seed=3), make_phantom(seed=3), make_phantom(seed=4)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.rootlets, b.rootlets)
    assert not np.array_equal(a.image, c.image)
    assert a.truth == b.truth and a.truth != c.truth


@pytest.mark.parametrize("orient,spacing", [("LPI", (0.8, 0.8, 0.8)), ("AIL", (0.8, 0.8, 0.8)),
                                            ("RPI", (0.5, 0.5, 3.0)), ("PSR", (1.0, 1.0, 1.0))])
def test_every_level_present_in_any_grid(orient, spacing):
    ph = make_phantom(orient, spacing, seed=0)
    assert set(np.unique(ph.rootlets)) == {0, *SPINAL_LEVELS}
    assert set(np.unique(ph.discs)) == {0, *range(1, 10)}
    assert (ph.discs > 0).sum() == 9 and (ph.pmj > 0).sum() == 1
    assert not (ph.rootlets.astype(bool) & ph.cord.astype(bool)).any(), "rootlets lie in the CSF, outside the cord"
    img = ph.nifti("image")
    assert orientation(img) == orient
    assert np.allclose(img.header.get_zooms(), spacing)


def test_same_anatomy_in_every_orientation():
    """The rootlets of one seed occupy the same world positions whatever the orientation."""
    centroids = []
    for orient in ("LPI", "RPI", "AIL", "PSR"):
        ph = make_phantom(orient, (1.0, 1.0, 1.0), seed=2)
        ijk = np.argwhere(ph.rootlets == 5)
        centroids.append((ph.affine[:3, :3] @ ijk.mean(0)) + ph.affine[:3, 3])
    assert np.ptp(np.array(centroids), axis=0).max() < 1e-6


def test_truth_matches_drawn_labels():
    """Truth spans (mm from the PMJ along the cord) agree with where rootlets and discs are drawn."""
    ph = make_phantom("LPI", (0.5, 0.5, 0.5), seed=1)
    z = (np.argwhere(ph.rootlets > 0) @ ph.affine[:3, :3].T + ph.affine[:3, 3])[:, 2]
    levels = ph.rootlets[ph.rootlets > 0]
    pmj_z = (np.argwhere(ph.pmj)[0] @ ph.affine[:3, :3].T + ph.affine[:3, 3])[2]
    for k in SPINAL_LEVELS:
        span = ph.truth["spinal_levels"][str(k)]
        top = pmj_z - z[levels == k].max()  # rostral end of the entry zone, as depth
        assert abs(top - span["start_mm"]) < 1.0
    mids = [ph.truth["spinal_levels"][str(k)]["mid_mm"] for k in SPINAL_LEVELS]
    assert np.all(np.diff(mids) > 0), "levels run rostral to caudal"
    shift = [ph.truth["vertebral_levels"][str(k - 1)]["mid_mm"] - ph.truth["spinal_levels"][str(k)]["mid_mm"]
             for k in range(3, 9)]
    assert -3 < shift[0] < 3 and shift[-1] > shift[0] + 3, "shift grows caudally as in the RootletSeg paper"


def test_cli_writes_files_and_truth(tmp_path):
    assert main(["phantom", "-o", str(tmp_path), "-orient", "AIL", "-spacing", "1", "1", "1", "-seed", "5"]) == 0
    img = nib.load(tmp_path / "phantom_T2w.nii.gz")
    seg = nib.load(tmp_path / "phantom_T2w_label-rootlets_dseg.nii.gz")
    assert orientation(img) == "AIL" and np.allclose(img.affine, seg.affine)
    assert seg.get_data_dtype() == np.uint8
    truth = json.loads((tmp_path / "phantom_truth.json").read_text())
    assert truth["seed"] == 5 and set(truth["spinal_levels"]) == {str(k) for k in SPINAL_LEVELS}


def test_cli_subject_names_the_files_as_the_readme_uses_them(tmp_path, capsys):
    """`rootlets phantom -subject 01`: the image and labels the README's step-by-step names, to try it without scans."""
    assert main(["phantom", "-o", str(tmp_path), "-subject", "01"]) == 0
    names = {p.name for p in tmp_path.iterdir()}
    assert {"sub-01_T2w.nii.gz", "sub-01_T2w_label-SC_seg.nii.gz", "sub-01_T2w_label-discs_dlabel.nii.gz",
            "sub-01_T2w_label-PMJ_dlabel.nii.gz", "sub-01_T2w_truth.json"} <= names
    assert not any(n.startswith("phantom") for n in names)
    assert main(["phantom", "-o", str(tmp_path / "b"), "-subject", "sub-02"]) == 0
    assert (tmp_path / "b" / "sub-02_T2w.nii.gz").is_file()
    capsys.readouterr()
    assert main(["phantom", "-o", str(tmp_path / "c"), "-subject", "0_1"]) == 1
    assert "-subject 0_1" in capsys.readouterr().err and not (tmp_path / "c").exists()


def test_bad_orientation_is_a_clean_error(tmp_path, capsys):
    assert main(["phantom", "-o", str(tmp_path), "-orient", "LLI"]) == 1
    assert "LLI" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
