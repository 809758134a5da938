"""`rootlets batch -levels` needs a model only for the images without a rootlets file in the labels derivative.

Two phantom subjects with cord, discs, PMJ and rootlets as manual labels; no model is installed (the test's private
model store is empty): the batch derives every subject's levels. Without sub-02's rootlets file it stops before
anything runs, naming sub-02 as the one image that needs the model.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from rootlets_task.cli.rootlets import main
from rootlets_task.io.phantom import write_phantom

SUBJECTS = (("01", "LPI", 0), ("02", "RPI", 1))


@pytest.fixture
def bids(tmp_path):
    root = tmp_path / "bids"
    for sub, orient, seed in SUBJECTS:
        stem = f"sub-{sub}_T2w"
        files = write_phantom(tmp_path / "work" / stem, orient, seed=seed, prefix=stem)
        (root / f"sub-{sub}" / "anat").mkdir(parents=True)
        shutil.copy(files["image"], root / f"sub-{sub}" / "anat" / f"{stem}.nii.gz")
        labels = root / "derivatives" / "labels" / f"sub-{sub}" / "anat"
        labels.mkdir(parents=True)
        for kind in ("cord", "discs", "pmj", "rootlets"):
            shutil.copy(files[kind], labels / files[kind].name)
    return root


def test_batch_levels_with_every_rootlets_file_runs_without_a_model(bids, tmp_path, capsys):
    out = bids / "derivatives" / "rootlets"
    assert main(["batch", str(bids), "-o", str(out), "-levels", "-threads", "1"]) == 0
    levels = pd.read_csv(out / "levels.csv")
    assert set(levels["subject"]) == {"sub-01", "sub-02"}
    assert (levels.loc[levels.kind == "spinal", "status"] == "ok").all()
    shift = pd.read_csv(out / "shift.csv")
    assert set(shift["pairing"]) == {"unshifted", "shifted"}
    for sub, _, _ in SUBJECTS:
        assert (out / f"sub-{sub}" / "anat" / f"sub-{sub}_T2w_levels.json").is_file()


def test_batch_levels_names_the_images_that_need_the_model(bids, tmp_path, capsys):
    missing = next((bids / "derivatives" / "labels" / "sub-02" / "anat").glob("*rootlets*"))
    missing.unlink()
    out = bids / "derivatives" / "rootlets"
    assert main(["batch", str(bids), "-o", str(out), "-levels", "-threads", "1"]) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("rootlets: error:")]
    assert len(errors) == 1 and errors[0].startswith("rootlets: error: cannot install model release r20250318")
    assert "only for the 1 of 2 image(s)" in errors[0] and "sub-02/anat/sub-02_T2w.nii.gz" in errors[0]
    assert "sub-01" not in errors[0]
    assert not Path(out).exists()
