"""`rootlets-bids`, the BIDS App, on the batch tests' phantom BIDS dataset (tests/support/batch_data.py): the
participant level is `rootlets batch` of the labelled participants (the same files as the sequential reference run),
one participant-level job per subject then the group level gives the dataset tables and group statistics, and the
exit codes are 0 done, 1 an image failed or the run could not start, 2 a malformed command line.

Everything is real: nnU-Net inference with the bundled phantom release, the chain with the phantom's manual labels.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from support.batch_data import outputs

from rootlets_task._version import __version__
from rootlets_task.cli import bids_app

FAST = ["--release", "phantom", "--threads", "1", "-q"]


@pytest.fixture(autouse=True)
def _store(phantom_home):
    """Every test here uses the session's phantom store."""


def _same_files(out, reference, prefixes: tuple[str, ...]) -> None:
    """The images and tables under ``prefixes`` are those of the reference run, and nothing else is there."""
    mine = outputs(out)
    theirs = {k: v for k, v in outputs(reference).items() if k.startswith(prefixes)}
    assert sorted(k for k in mine if k.startswith("sub-")) == sorted(theirs)
    for rel, value in theirs.items():
        if isinstance(value, tuple):
            assert np.array_equal(value[0], mine[rel][0]) and np.allclose(value[1], mine[rel][1]), rel
        elif isinstance(value, pd.DataFrame):
            pd.testing.assert_frame_equal(value, mine[rel], obj=rel)


def test_participant_level_is_the_batch_of_those_participants(bids, sequential, tmp_path, capsys):
    out, reference = tmp_path / "derivatives" / "rootlets", sequential[0]
    code = bids_app.main([str(bids), str(out), "participant", "--participant_label", "sub-01", "02", "--levels", *FAST])
    assert code == 0, capsys.readouterr().err
    assert "2 done, 0 skipped, 0 failed" in capsys.readouterr().out
    _same_files(out, reference, ("sub-01/", "sub-02/"))
    assert sorted(pd.read_csv(out / "levels.csv")["subject"].unique()) == ["sub-01", "sub-02"]


def test_group_level_after_one_job_per_participant_and_session_labels(bids, sequential, tmp_path, capsys):
    out, reference = tmp_path / "rootlets", sequential[0]
    jobs = [["--participant_label", "02"], ["--participant_label", "03", "--session_label", "ses-01", "02"]]
    for job in jobs:  # as a cluster runs a BIDS App: one participant-level job per subject
        assert bids_app.main([str(bids), str(out), "participant", *job, "--levels", *FAST]) == 0, capsys.readouterr().err
    _same_files(out, reference, ("sub-02/", "sub-03/"))
    (out / "levels.csv").unlink()  # the group level writes the tables again, from the participants' own tables

    assert bids_app.main([str(bids), str(out), "group", *FAST]) == 0
    printed = capsys.readouterr().out
    levels = pd.read_csv(out / "levels.csv")
    mine = sorted(out.rglob("sub-*_levels.csv"))
    assert len(mine) == 3 and len(levels) == sum(len(pd.read_csv(p)) for p in mine)
    assert sorted(levels["subject"].unique()) == ["sub-02", "sub-03"]
    assert (out / "group").is_dir() and "group_" in printed and str(out / "levels.csv") in printed

    # the group level of one session covers that session's image only
    assert bids_app.main([str(bids), str(out), "group", "--session_label", "02", *FAST]) == 0
    assert set(pd.read_csv(out / "levels.csv")["image"]) == {"sub-03_ses-02_T2w"}


def test_release_default_from_the_container_environment(bids, tmp_path, monkeypatch, capsys):
    """The container sets ROOTLETS_BIDS_RELEASE to the release it bakes in: no --release needed there."""
    monkeypatch.setenv(bids_app.ENV_RELEASE, "phantom")
    out = tmp_path / "rootlets"
    assert bids_app.main([str(bids), str(out), "participant", "--participant_label", "04", "--threads", "1"]) == 0
    assert (out / "sub-04" / "anat" / "sub-04_T2w_rootlets.nii.gz").is_file()
    assert "1 done" in capsys.readouterr().out


def test_failed_image_is_exit_1_with_the_summary(bids, tmp_path, capsys):
    out = tmp_path / "rootlets"
    assert bids_app.main([str(bids), str(out), "participant", "--participant_label", "06", *FAST]) == 1
    captured = capsys.readouterr()
    assert "sub-06/anat/sub-06_T2w.nii.gz" in captured.out and "1 failed" in captured.out
    assert captured.err.splitlines()[-1].startswith("rootlets-bids: error: 1 of 1 image(s) not done")
    assert "Traceback" not in captured.err
    assert (out / "logs" / "err.sub-06_T2w.log").is_file() and not (out / "sub-06").exists()


@pytest.mark.parametrize("args, message", [
    (["participant", "--participant_label", "07"], "no sub-07 folder"),
    (["group"], "no rootlets_task derivative here; run the participant level"),
    (["participant", "--participant_label", "01", "--session_label", "01"], "and the participant/session labels"),
])
def test_runs_that_cannot_start_are_exit_1_and_write_nothing(bids, tmp_path, capsys, args, message):
    out = tmp_path / "rootlets"
    assert bids_app.main([str(bids), str(out), *args, *FAST]) == 1
    err = capsys.readouterr().err
    assert err.startswith("rootlets-bids: error: ") and message in err and len(err.splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize("args, message", [
    (["everyone"], "invalid choice: 'everyone'"),
    (["participant", "--participant_label", "sub-0/1"], "--participant_label sub-0/1: a label is letters and digits"),
    (["participant", "--jobs", "0"], "--jobs and --threads take a number from 1"),
    (["participant", "--participant-label", "01"], "unrecognized arguments"),
])
def test_malformed_command_lines_are_exit_2(bids, tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        bids_app.main([str(bids), str(tmp_path / "out"), *args])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_help_version_and_exit_codes_of_the_real_process(bids, tmp_path):
    run = [sys.executable, "-m", "rootlets_task.cli.bids_app"]
    shown = subprocess.run([*run, "-h"], capture_output=True, text=True, check=True).stdout
    assert shown.startswith("usage: rootlets-bids") and "--participant_label" in shown and "Exit codes" in shown
    version = subprocess.run([*run, "--version"], capture_output=True, text=True, check=True).stdout
    assert version.strip() == f"rootlets-bids (rootlets_task) {__version__}"
    usage = subprocess.run([*run, str(bids), str(tmp_path / "o")], capture_output=True, text=True)
    assert usage.returncode == 2 and "ANALYSIS_LEVEL" in usage.stderr
    missing = subprocess.run([*run, str(tmp_path / "nowhere"), str(tmp_path / "o"), "participant"], capture_output=True,
                             text=True)
    assert missing.returncode == 1 and "BIDS folder" in missing.stderr and "Traceback" not in missing.stderr
