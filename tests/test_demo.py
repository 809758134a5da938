"""``rootlets demo``: the whole job offline, as a new user runs it first (``make demo``)."""

import json

import nibabel as nib
import numpy as np
import pandas as pd

from rootlets_task.cli.rootlets import main
from rootlets_task.io.metrics import agreement, dice, dice_per_level
from rootlets_task.io.phantom import SPINAL_LEVELS
from rootlets_task.models import install


def test_demo_runs_the_whole_chain_offline(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "-v", "0"]) == 0
    printed = capsys.readouterr().out
    derivatives = out / "derivatives"
    rootlets = derivatives / "sub-phantom_T2w_rootlets.nii.gz"
    for path in (rootlets, derivatives / "sub-phantom_T2w_spinal_levels.nii.gz",
                 derivatives / "sub-phantom_T2w_vertebral_levels.nii.gz", derivatives / "sub-phantom_T2w_shift.csv",
                 out / "qc" / "rootlets_task" / "sub-phantom_T2w" / "index.html"):
        assert path.is_file() and str(path) in printed, path  # every output exists and is named on the terminal
    report = out / "qc" / "rootlets_task"  # our report inside the QC folder
    assert (report / "index.html").is_file() and (report / "sub-phantom_T2w" / "levels.png").is_file()
    # the segmentation really comes from the bundled model and matches the phantom truth
    pred = np.asarray(nib.load(rootlets).dataobj)
    truth = np.asarray(nib.load(out / "data" / "sub-phantom_T2w_label-rootlets_dseg.nii.gz").dataobj)
    assert np.nanmean(list(dice_per_level(pred, truth, SPINAL_LEVELS).values())) >= 0.6
    levels = pd.read_csv(derivatives / "sub-phantom_T2w_levels.csv")
    spinal = levels[(levels.kind == "spinal") & (levels.status == "ok")]
    assert set(spinal.value) == set(SPINAL_LEVELS) and (spinal.reference == "PMJ").all()
    sidecar = json.loads((derivatives / "sub-phantom_T2w_rootlets.json").read_text())
    assert sidecar["GeneratedBy"][0]["Release"] == "phantom"
    assert "sub-phantom_T2w" in (out / "qc" / "rootlets_task" / "index.html").read_text()
    assert f"The demo model is in {install.models_dir()}" in printed and "`rootlets clean` removes them" in printed
    assert "make " not in printed, "pip users have no Makefile"


def test_dice_per_level():
    a = np.zeros((4, 4, 4), np.uint8)
    b = a.copy()
    a[0, 0, :2] = 2
    b[0, 0, :1] = 2
    a[3, 3, 3] = 5  # in one map only: 0
    scores = dice_per_level(a, b, levels=(0, 2, 3, 5))
    assert scores[2] == 2 / 3 and scores[5] == 0.0 and np.isnan(scores[3]) and 0 not in scores  # 3 in neither: NaN
    assert dice_per_level(a, b) == {2: 2 / 3, 5: 0.0}  # default: the levels present in either map
    assert dice(a == 3, b == 3, empty=1.0) == 1.0
    found = agreement(b, a)  # a against b: 64 voxels, 2 differ; 3 labelled voxels, 1 equal
    assert found == {"voxel_agreement": 62 / 64, "foreground_agreement": 1 / 3, "dice": {2: 2 / 3, 5: 0.0}}
    assert agreement(np.zeros(3), np.zeros(3))["foreground_agreement"] == 1.0
