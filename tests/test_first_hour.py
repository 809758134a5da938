"""What a new user meets in the first hour: help with defaults, messages said once, tables that say what they
pair, whole numbers printed as such, normalised paths, a batch that reports each image and its QC report, and a
`rootlets clean` that removes what the package installed, and only that.

Real files and runs throughout (phantoms, the bundled release, a batch run in this process). The one MOCK: an
``sct_deepseg`` on PATH that is not a program (it cannot be started), to see the message for a broken installation.
"""

from __future__ import annotations

import argparse
import logging
import shutil

import numpy as np
import pandas as pd
import pytest

from rootlets_task.batch import run as batch
from rootlets_task.cli import clean
from rootlets_task.cli import rootlets as cli
from rootlets_task.core.errors import RootletsError
from rootlets_task.core.options import ChainOptions, ModelOptions
from rootlets_task.io.phantom import write_phantom
from rootlets_task.levels.compute import levels_from_files
from rootlets_task.models import install
from rootlets_task.pipeline.chain import ChainInputs, levels_table, run_chain
from rootlets_task.pipeline.segment import plan_outputs
from rootlets_task.qc.report import qc_subject


def _help(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as done:
        cli.main([*argv, "-h"])
    assert done.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", [None, *cli.COMMANDS])
def test_help_shows_every_default(command, capsys):
    from rootlets_task.cli.clidoc import parsers

    parser = parsers()["rootlets" if command is None else f"rootlets {command}"]
    formatter = cli._Help(parser.prog)
    for action in parser._actions:
        if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
            assert "default" in formatter._get_help_string(action), (command, action.option_strings)
    text = " ".join(_help([] if command is None else [command], capsys).split())
    if command in (None, "batch"):
        assert "compute device (default: auto)" in text  # what -h prints goes through that formatter


def test_batch_verbosity_is_0_1_2_like_every_command():
    for make, _ in [(cli._segment_parser, None), *cli.COMMANDS.values()]:
        for action in make()._actions:
            if "-v" in action.option_strings:
                assert list(action.choices) == [0, 1, 2], make


def test_levels_table_names_the_paper_pair_and_explains_its_columns(files):
    _, result = levels_from_files(files["rootlets"], files["cord"], files["discs"], files["pmj"],
                                  out_dir=files["image"].parent / "table")
    text = levels_table(result.levels, result.shift, result.reference)
    assert "start = rostral end" not in text and "rostral end - caudal end" in text
    rows = {line.split()[0]: line for line in text.splitlines()[2:]}
    assert "(SL C3)" in rows["C2"] and "(SL C8)" in rows["C7"]
    assert "(SL T1)" in rows["T1"]  # the paper pairs VL T1 with SL T1: the cell says so instead of looking repeated
    assert "(SL C8)" in rows["T1"] and "VL T1-SL C8" in text  # ... and its unshifted pair is SL C8, by value


def test_qc_index_chips_name_their_pair_and_counts_agree(files, tmp_path):
    levels_csv = tmp_path / "lv" / "x_levels.csv"
    paths, result = levels_from_files(files["rootlets"], files["cord"], files["discs"], out_dir=tmp_path / "lv",
                                      prefix="x")
    table = pd.read_csv(paths["csv"])
    table.loc[table.index[0], ["start_mm", "end_mm", "mid_mm", "n_voxels"]] = np.nan  # a blank makes the column float
    table.loc[table.index[0], "status"] = "missing"
    table.to_csv(levels_csv, index=False)
    page = qc_subject(tmp_path / "qc", files["image"], files["rootlets"], cord=files["cord"], levels=levels_csv,
                      subject="sub-01")
    index = (tmp_path / "qc" / "rootlets_task" / "index.html").read_text()
    assert "VL C2 → SL C3" in index and "C2/C3 " not in index
    assert "1 subject ·" in index and "1 subjects" not in index
    subject_page = page.read_text()
    n = int(table["n_voxels"].dropna().iloc[0])  # 1 mm voxels: n_voxels then volume_mm3 of the same count
    assert f'<td class="num">{n}</td><td class="num">{n}.0</td>' in subject_page


def test_messages_say_things_once(files, tmp_path, monkeypatch, caplog):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sct_deepseg").write_bytes(b"\x7fELF this is not a program")
    (bin_dir / "sct_deepseg").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(RootletsError) as failed:
        run_chain(files["image"], out_dir=tmp_path / "out", inputs=ChainInputs(rootlets=files["rootlets"]),
                  options=ChainOptions(cord_from="sct", discs_from="none", pmj_from="none"))
    message = str(failed.value)
    assert "could not be started" in message and message.count("install the Spinal Cord Toolbox") == 1
    assert "((" not in message.replace(" ", "") and "))" not in message.replace(" ", "")
    caplog.set_level(logging.INFO, logger="rootlets_task")
    run_chain(files["image"], out_dir=tmp_path / "out2", inputs=ChainInputs(cord=files["cord"], rootlets=files["rootlets"]),
              options=ChainOptions(cord_from="file", discs_from="none", pmj_from="none"))
    assert not [r for r in caplog.records if r.getMessage().startswith("rootlets:")]  # the log prefix is the program's


def test_printed_paths_are_normalised(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a").mkdir()
    assert cli.main(["phantom", "-o", "a/../ph"]) == 0
    printed = capsys.readouterr().out
    assert "ph/phantom_T2w.nii.gz" in printed and ".." not in printed
    (target,) = plan_outputs([tmp_path / "ph" / "phantom_T2w.nii.gz"], "a/../out")
    assert target == tmp_path / "out" / "phantom_T2w_rootlets.nii.gz" and ".." not in str(target)


def test_batch_reports_each_image_and_names_the_qc_report(tmp_path, phantom_home, caplog):
    root = tmp_path / "BIDS"
    for subject, seed in (("sub-01", 1), ("sub-02", 2)):
        files = write_phantom(tmp_path / "ph" / subject, seed=seed, prefix=f"{subject}_T2w")
        (root / subject / "anat").mkdir(parents=True)
        shutil.copy(files["image"], root / subject / "anat" / f"{subject}_T2w.nii.gz")
    caplog.set_level(logging.INFO, logger="rootlets_task")
    summary = batch.run_batch(root, root / "derivatives" / "rootlets" / ".." / "rootlets",
                              batch.BatchOptions(qc=str(tmp_path / "qc")), ModelOptions(release="phantom", threads=1))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("batch ")]
    assert len(lines) == 2 and lines[0].startswith("batch 1/2: done sub-0") and lines[1].startswith("batch 2/2: done")
    text = summary.text()
    assert f"QC report: {tmp_path / 'qc' / 'rootlets_task' / 'index.html'}" in text and "2 done" in text
    caplog.clear()
    again = batch.run_batch(root, root / "derivatives" / "rootlets", batch.BatchOptions(qc=str(tmp_path / "qc")),
                            ModelOptions(release="phantom", threads=1))
    assert [r["status"] for r in again.results] == ["skipped", "skipped"]


def test_clean_removes_what_the_package_installed_and_nothing_else(tmp_path, monkeypatch, capsys):
    cache = tmp_path / "shared_cache"
    monkeypatch.setenv("ROOTLETS_TASK_CACHE", str(cache))
    (cache / "openvino" / "abc").mkdir(parents=True)
    (cache / "openvino" / "abc" / "network.xml").write_text("<net/>")
    (cache / "someone_elses.txt").write_text("keep me")
    install.install_release("phantom", progress=False)
    (install.models_dir() / "notes.txt").write_text("keep me too")
    assert cli.main(["clean", "-dry-run"]) == 0
    listed = capsys.readouterr().out
    assert "would remove model release phantom" in listed and "converted networks" in listed
    assert (install.models_dir() / "phantom").is_dir()  # a dry run removes nothing
    assert cli.main(["clean"]) == 0
    assert "removed model release phantom" in capsys.readouterr().out
    assert not (install.models_dir() / "phantom").exists() and not (cache / "openvino").exists()
    assert (cache / "someone_elses.txt").is_file() and (install.models_dir() / "notes.txt").is_file()
    assert clean.stored() == []
    assert cli.main(["clean"]) == 0 and "nothing to remove" in capsys.readouterr().out
