"""The PAM50 step (`-template`): SCT's rootlet-based registration and the levels brought to and from PAM50.

SCT's registration needs its binaries and the PAM50 data, which are not installed here: sct_register_to_template,
sct_warp_template and sct_apply_transfo are TEST-ONLY stand-ins (tests/support/fake_template.py, MOCKS) that check
each SCT version's command line and write SCT's output files with an IDENTITY warp, on a PAM50-like template made
from the phantom. With the subject on the template's own grid, PAM50's spinal levels brought into the subject must
be the template's own levels. Everything else (the chain, the tables, the records, the batch) is real.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from support import fake_template, fake_tools
from support.batch_data import run as run_batch

from rootlets_task.cli import rootlets as cli
from rootlets_task.core.errors import RootletsError
from rootlets_task.core.options import ChainOptions
from rootlets_task.io.phantom import write_phantom
from rootlets_task.pipeline.chain import ChainInputs, run_chain


@pytest.fixture
def pam50(monkeypatch, tmp_path, phantom):
    """An SCT 7.3-like root with the stand-ins first on PATH and a PAM50-like template from the phantom; the log."""
    root = fake_tools.set_sct_version(tmp_path / "sct", "7.3")
    fake_template.make_template(root, phantom)
    bin_dir = fake_template.install(root / "bin")
    monkeypatch.setenv("SCT_DIR", str(root))
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("FAKE_TOOL_LOG", str(tmp_path / "calls.jsonl"))
    monkeypatch.setenv("FAKE_TOOL_MODE", "ok")
    return tmp_path / "calls.jsonl"


def _inputs(files) -> ChainInputs:
    return ChainInputs(cord=files["cord"], discs=files["discs"], pmj=files["pmj"], rootlets=files["rootlets"])


def test_identity_warp_gives_back_the_template_levels_and_every_output(pam50, tmp_path, files, phantom):
    out = tmp_path / "out"
    result = run_chain(files["image"], out, _inputs(files), ChainOptions(template=True, measure=()))
    assert result.steps["template"] == "computed", result.notes
    spinal = np.asarray(nib.load(result.outputs["spinal_pam50"]).dataobj)
    np.testing.assert_array_equal(spinal, phantom.spinal_levels)  # the template's own levels, back through identity
    calls = fake_tools.calls(pam50)
    register = calls[0]
    assert register[:7] == ["sct_register_to_template", "-i", str(files["image"]), "-s", str(result.outputs["cord"]),
                            "-lrootlet", register[6]] and register[7:9] == ["-c", "t2"]
    assert [c[0] for c in calls] == ["sct_register_to_template", "sct_warp_template"] + ["sct_apply_transfo"] * 3
    assert all(c[c.index("-x") + 1] == "nn" for c in calls[2:])
    # PAM50's levels as a third kind beside the rootlets' levels: the same levels, compared, numbering checked
    table = pd.read_csv(result.outputs["levels_pam50"])
    ours = result.levels[result.levels["kind"] == "spinal"]
    assert set(table["level"]) == set(ours["level"]) and (table["kind"] == "spinal_pam50").all()
    assert table["pam50_minus_rootlets_mm"].abs().max() < 3.0  # the truth vs the rootlets' levels of the same phantom
    assert (table["numbering"] == "ok").all()
    document = json.loads(result.outputs["levels_pam50_json"].read_text())
    assert document["numbering"]["status"] == "ok" and len(document["commands"]) == 5
    # the subject's labels in PAM50 space and their positions in template coordinates
    in_template = np.asarray(nib.load(result.outputs["spinal_in_pam50"]).dataobj)
    np.testing.assert_array_equal(in_template, np.asarray(nib.load(result.outputs["spinal"]).dataobj))
    positions = pd.read_csv(result.outputs["positions_pam50"])
    assert set(positions["kind"]) == {"rootlets", "spinal", "vertebral"}
    assert (positions["rostral_z_mm"] > positions["caudal_z_mm"]).all()
    # measured by level with the three kinds
    measured = pd.read_csv(result.outputs["measure_csv"])
    assert set(measured["kind"]) == {"spinal", "vertebral", "spinal_pam50"}
    # resumed: nothing runs again
    again = run_chain(files["image"], out, _inputs(files), ChainOptions(template=True, measure=()))
    assert again.steps["template"] == "up to date" and len(fake_tools.calls(pam50)) == len(calls)


@pytest.mark.parametrize("version", ["7.0", "7.1", "7.2", "7.3", "7.4"])
def test_every_sct_7_version_gets_its_command_line(pam50, tmp_path, files, version):
    fake_tools.set_sct_version(tmp_path / "sct", version)
    result = run_chain(files["image"], tmp_path / "out", _inputs(files), ChainOptions(template=True))
    assert result.steps["template"] == "computed", result.notes
    register = fake_tools.calls(pam50)[0]
    assert register[0] == "sct_register_to_template" and register[register.index("-c") + 1] == "t2"
    given = json.loads(pam50.with_suffix(".lrootlet.json").read_text())  # the labels the stand-in was given
    rootlets = set(np.unique(np.asarray(nib.load(files["rootlets"]).dataobj)).tolist()) - {0}
    assert 9 in rootlets  # the phantom has T1 rootlets
    assert set(given) == (rootlets - {9} if version == "7.0" else rootlets)  # SCT 7.0: C2-C8 only
    assert any("C2-C8 only" in n for n in result.notes) == (version == "7.0")


def test_sct_before_7_is_refused_before_any_work(pam50, tmp_path, files):
    fake_tools.set_sct_version(tmp_path / "sct", "6.5")
    with pytest.raises(RootletsError, match="needs SCT >= 7.0"):
        run_chain(files["image"], tmp_path / "out", _inputs(files), ChainOptions(template=True))
    assert not (tmp_path / "out").exists()


def test_a_failed_registration_leaves_the_other_outputs_complete_and_says_why(pam50, monkeypatch, tmp_path, files, capsys):
    monkeypatch.setenv("FAKE_TOOL_MODE", "fail")
    out = tmp_path / "out"
    argv = ["-i", str(files["image"]), "-levels", "-rootlets", str(files["rootlets"]), "-s", str(files["cord"]),
            "-discs", str(files["discs"]), "-pmj", str(files["pmj"]), "-ofolder", str(out), "-template", "-measure"]
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert "PAM50 step failed at registration (sct_register_to_template)" in err and "isct_antsRegistration" in err
    names = {p.name for p in out.iterdir()}
    assert {"phantom_T2w_levels.csv", "phantom_T2w_spinal_levels.nii.gz", "phantom_T2w_measure.csv"} <= names
    assert not any("pam50" in n.lower() for n in names)
    record = json.loads((out / "phantom_T2w_chain.json").read_text())["steps"]
    assert "template" not in record and "measure" in record  # not recorded: the next run tries again


def test_batch_writes_group_tables_in_template_coordinates(pam50, phantom_home, tmp_path):
    """Two subjects through `rootlets batch -levels -template -measure` (their rootlets from the labels folder)."""
    root = tmp_path / "bids"
    for sub, orient, seed in (("01", "LPI", 4), ("02", "RPI", 1)):
        files = write_phantom(tmp_path / f"ph{sub}", orient, seed=seed, prefix=f"sub-{sub}_T2w")
        (root / f"sub-{sub}" / "anat").mkdir(parents=True)
        shutil.copy(files["image"], root / f"sub-{sub}" / "anat" / f"sub-{sub}_T2w.nii.gz")
        labels = root / "derivatives" / "labels" / f"sub-{sub}" / "anat"
        labels.mkdir(parents=True)
        for kind in ("cord", "discs", "pmj", "rootlets"):
            shutil.copy(files[kind], labels / Path(files[kind]).name)
    out = tmp_path / "derivatives"
    summary = run_batch(root, out, levels=True, release="phantom", threads=1, progress=False, template=True, measure=(),
                        qc=tmp_path / "qc")
    assert not summary.failed, summary.text()
    for sub in ("01", "02"):  # each subject's QC page shows its measure figure
        figure = out / f"sub-{sub}" / "anat" / f"sub-{sub}_T2w_measure.png"
        assert (tmp_path / "qc" / "rootlets_task" / f"sub-{sub}_T2w" / "measure.png").read_bytes() == figure.read_bytes()
    positions = pd.read_csv(out / "levels_space-PAM50.csv")
    assert set(positions["subject"]) == {"sub-01", "sub-02"} and set(positions["kind"]) == {"rootlets", "spinal", "vertebral"}
    pam50_levels = pd.read_csv(out / "levels_pam50.csv")
    assert set(pam50_levels["subject"]) == {"sub-01", "sub-02"}
    measured = pd.read_csv(out / "measure.csv")
    assert set(measured["kind"]) == {"spinal", "vertebral", "spinal_pam50"}
    assert {"register", "warp"} <= {c[0].split("_")[1] for c in fake_tools.calls(pam50)}
