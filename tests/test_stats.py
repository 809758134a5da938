"""`rootlets stats` against the lab's published analysis scripts, run on a hand-built table (tests/data/lab_reference).

expected.json holds the numbers the lab's scripts computed (make_expected.py records them at full precision). Our
numbers come from the same arithmetic (the same numpy / scipy functions in the same order), so they must agree to
1e-9 relative (1e-12 absolute for values near 0). The one exception: the lab's level sizes are rounded to 2 decimals
by its script, so they are compared to ours rounded the same way (within 0.005).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgba

from rootlets_task.cli.rootlets import main
from rootlets_task.core.errors import RootletsError
from rootlets_task.io.phantom import make_phantom
from rootlets_task.levels.compute import levels_from_files
from rootlets_task.levels.stats import LAB_TABLE_COLUMNS, agreement_figure, group_stats, pair_table, read_tables, shift_stats
from rootlets_task.qc.report import level_colour

DATA = Path(__file__).parent / "data" / "lab_reference"
EXPECTED = json.loads((DATA / "expected.json").read_text())
LEVELS, MISSING, PARTICIPANTS = DATA / "spinal_vs_vertebral_levels.csv", DATA / "spinal_vs_vertebral_levels_missing.csv", \
    DATA / "participants.tsv"
PAIRING = {"not_shifted": "unshifted", "shifted": "shifted"}  # the lab's name -> ours
KINDS = ("rootlets", "cord", "discs", "pmj")


def close(ours: float, lab: float | None, tol: float = 1e-9) -> bool:
    """Equal to 1e-9 relative (so tiny p-values count), or 1e-12 absolute near 0; the lab's NaN is stored as None."""
    if lab is None:
        return bool(np.isnan(ours))
    return bool(abs(ours - lab) <= tol * abs(lab) or abs(ours - lab) <= 1e-12)


def lab(run: str) -> dict:
    entry = EXPECTED["runs"][run]
    assert entry["returncode"] == 0 and "unparsed_calls" not in entry, entry.get("stderr_tail")
    return entry["values"]


def run_stats(tmp_path: Path, table: Path = LEVELS, normalise: bool = True) -> dict[str, pd.DataFrame]:
    out = tmp_path / ("norm" if normalise else "raw")
    outputs = group_stats([table], out, participants=PARTICIPANTS if normalise else None, normalise=normalise)
    shift = pd.read_csv(outputs["shift"]).set_index(["pairing", "pair"])
    return {"shift": shift, "levels": pd.read_csv(outputs["levels"]).set_index(["kind", "level"]),
            "midpoints": pd.read_csv(outputs["midpoints"]), "json": json.loads(outputs["json"].read_text()),
            "outputs": outputs}


@pytest.fixture(scope="module")
def complete(tmp_path_factory):
    return run_stats(tmp_path_factory.mktemp("complete"))


def test_expected_json_says_how_it_was_made():
    assert len(EXPECTED["commit"]) == 40 and EXPECTED["repository"].endswith("ivadomed/model-spinal-rootlets")
    for run in EXPECTED["runs"].values():
        assert run["script"].endswith(".py") and run["command"].startswith("MPLBACKEND=Agg python ")
    assert EXPECTED["runs"]["one_table"]["output_equals_input"] is True  # our hand-built table is the lab's layout


def test_global_statistics_equal_the_labs(complete):
    """bland-altman-analysis.py: Spearman, regression, Shapiro-Wilk, median and percentiles over all seven pairs."""
    values = lab("complete/bland-altman-analysis")
    assert complete["json"]["settings"]["median_body_height"] == {
        "spinal": values["median_height"]["rootlets"], "vertebral": values["median_height"]["vertebrae"]}
    for pairing, want in values["global"].items():
        got = complete["shift"].loc[(PAIRING[pairing], "all")]
        assert got.n == want["n"] == 84
        for ours, theirs in (("bias_mm", "median"), ("loa_low_mm", "p2_5"), ("loa_high_mm", "p97_5"),
                             ("spearman_rho", "spearman_rho"), ("spearman_p", "spearman_p"), ("slope", "slope"),
                             ("intercept", "intercept"), ("r2", "r2"), ("regression_p", "regression_p"),
                             ("regression_stderr", "regression_stderr"), ("shapiro_w", "shapiro_w"),
                             ("shapiro_p", "shapiro_p")):
            assert close(got[ours], want[theirs]), (pairing, ours, got[ours], want[theirs])


def test_per_pair_statistics_equal_the_labs(complete):
    """bland-altman-analysis.py (local) and bland-altman-all-levels-analysis.py: every pair of both pairings."""
    local = lab("complete/bland-altman-analysis")["per_pair"]
    combined = lab("complete/bland-altman-all-levels-analysis -normalise y")["per_pair"]
    for pairing, pairs in local.items():
        assert list(pairs) == [p for p in complete["shift"].loc[PAIRING[pairing]].index if p != "all"]
        for pair, want in pairs.items():
            got = complete["shift"].loc[(PAIRING[pairing], pair)]
            assert got.n == want["n"] == 12
            for ours, theirs in (("bias_mm", "median"), ("loa_low_mm", "p2_5"), ("loa_high_mm", "p97_5"),
                                 ("slope", "slope"), ("intercept", "intercept"), ("r2", "r2"),
                                 ("shapiro_w", "shapiro_w"), ("shapiro_p", "shapiro_p")):
                assert close(got[ours], want[theirs]), (pair, ours)
            other = combined[pairing][pair]
            assert close(got.shapiro_p, other["shapiro_p"]) and close(got.bias_mm, other["median"])
            assert close(got.loa_low_mm, other["p2_5"]) and close(got.loa_high_mm, other["p97_5"])


def _assert_midpoints(midpoints: pd.DataFrame, want: dict) -> None:
    """Our per-subject analysed midpoints equal the lab's pivot tables (NaN where the lab has no value)."""
    for kind, columns in want.items():
        for column, by_subject in columns.items():
            level = column.split()[-1]
            for subject, value in by_subject.items():
                row = midpoints[(midpoints.kind == kind) & (midpoints.level == level) & (midpoints.participant == subject)]
                if value is None:
                    assert row.empty, (kind, level, subject)
                else:
                    assert len(row) == 1 and close(row.analysed_mid_mm.iloc[0], value), (kind, level, subject)


@pytest.mark.parametrize("normalise", [True, False])
def test_midpoints_distributions_sizes_and_rmse_equal_the_labs(complete, tmp_path, normalise):
    """bland-altman-all-levels-analysis.py (its midpoint tables) and get_distributions_and_sizes.py."""
    flag = "y" if normalise else "n"
    ours = complete if normalise else run_stats(tmp_path, normalise=False)
    assert ours["json"]["settings"]["normalised"] is normalise
    _assert_midpoints(ours["midpoints"], lab(f"complete/bland-altman-all-levels-analysis -normalise {flag}")["midpoints"])
    values = lab(f"complete/get_distributions_and_sizes -normalised {flag}")
    for kind, levels in values["midpoint_distribution"].items():
        for level, want in levels.items():
            got = ours["levels"].loc[(kind, level)]
            assert got.n == want["n"]
            for o, t in (("fit_mu_mm", "mu"), ("fit_sigma_mm", "sigma"), ("shapiro_w", "shapiro_w"), ("shapiro_p", "shapiro_p")):
                assert close(got[o], want[t]), (kind, level, o)
    for kind, levels in values["level_size_rounded_2"].items():
        for level, want in levels.items():
            got = ours["levels"].loc[(kind, level)]
            assert abs(round(got.mean_height_mm, 2) - want["mean"]) <= 0.005 + 1e-9
            assert abs(round(got.sd_height_mm, 2) - want["sd"]) <= 0.005 + 1e-9
    for pairing, rmse in values["rmse"].items():
        for pair, want in rmse.items():
            assert close(ours["shift"].loc[(PAIRING[pairing], "all" if pair == "overall" else pair), "rmse_mm"], want)


def test_missing_levels_same_as_the_lab_where_it_gives_numbers(tmp_path):
    """Three level rows removed: the lab normalises spinal and vertebral midpoints by different medians (of the rows
    left), and its medians skip the missing subject; we match all that. Where the lab's NaN poisons a statistic
    (percentiles, Shapiro-Wilk, regression of a pair with a gap, every global statistic but the median), we leave
    the subject out of that pair and report numbers."""
    ours = run_stats(tmp_path, MISSING)
    values = lab("missing/bland-altman-analysis")
    medians = ours["json"]["settings"]["median_body_height"]
    assert medians == {"spinal": values["median_height"]["rootlets"], "vertebral": values["median_height"]["vertebrae"]}
    assert medians["spinal"] != medians["vertebral"]
    _assert_midpoints(ours["midpoints"], lab("missing/bland-altman-all-levels-analysis -normalise y")["midpoints"])
    for pairing, pairs in values["per_pair"].items():
        for pair, want in [*pairs.items(), ("all", values["global"][pairing])]:
            got = ours["shift"].loc[(PAIRING[pairing], pair)]
            assert close(got.bias_mm, want["median"]), (pair,)
            assert got.n == want["n"] - want["n_nan"]
            if want["n_nan"] == 0 and pair != "all":
                assert close(got.loa_low_mm, want["p2_5"]) and close(got.shapiro_p, want["shapiro_p"])
            else:
                assert want["p2_5"] is None and np.isfinite(got.loa_low_mm) and np.isfinite(got.shapiro_p)
    rmse = lab("missing/get_distributions_and_sizes -normalised y")["rmse"]
    for pairing, by_pair in rmse.items():
        for pair, want in by_pair.items():
            got = ours["shift"].loc[(PAIRING[pairing], "all" if pair == "overall" else pair), "rmse_mm"]
            assert (want is None and np.isfinite(got)) if pair == "overall" else close(got, want)


def test_bids_participants_file_gives_the_same_numbers(complete, tmp_path):
    """BIDS participants.tsv: participant_id and height (n/a for a subject not analysed) instead of the lab's names."""
    table = pd.read_csv(PARTICIPANTS, sep="\t").rename(columns={"subject": "participant_id", "height_sub": "height"})
    table = pd.concat([table, pd.DataFrame([{"participant_id": "sub-extra", "height": "n/a"}])])
    bids = tmp_path / "participants.tsv"
    table.to_csv(bids, sep="\t", index=False)
    out = group_stats([LEVELS], tmp_path / "bids", participants=bids)
    pd.testing.assert_frame_equal(pd.read_csv(out["shift"]), complete["shift"].reset_index()[pd.read_csv(out["shift"]).columns])


@pytest.mark.parametrize("change, message", [
    (lambda t: t.drop(columns=["height_sub"]), "no height column"),
    (lambda t: t.assign(height_sub=t.height_sub.where(t.subject != "sub-amu02", 0)), "sub-amu02"),
    (lambda t: t.assign(height_sub=t.height_sub.astype(object).where(t.subject != "sub-cmrra03", "n/a")), "sub-cmrra03"),
    (lambda t: t.assign(height_sub=t.height_sub.where(t.subject != "sub-geneva01", -170)), "sub-geneva01"),
    (lambda t: t[t.subject != "sub-amu01"], "sub-amu01"),
])
def test_bad_heights_are_one_line_naming_the_file(tmp_path, capsys, change, message):
    bad = tmp_path / "participants.tsv"
    change(pd.read_csv(PARTICIPANTS, sep="\t")).to_csv(bad, sep="\t", index=False)
    out = tmp_path / "out"
    assert main(["stats", str(LEVELS), "-participants", str(bad), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("rootlets: error: ") and str(bad) in err and message in err and err.count("\n") == 1
    assert not out.exists()


def test_lab_table_with_a_blank_level_is_one_line(tmp_path, capsys):
    broken = tmp_path / "spinal_vs_vertebral_levels.csv"
    table = pd.read_csv(LEVELS)
    table.loc[3, "spinal_level"] = None
    table.to_csv(broken, index=False)
    assert main(["stats", str(broken), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert str(broken) in err and "not a number" in err and err.count("\n") == 1 and not (tmp_path / "out").exists()


def test_normalising_without_participants_is_refused(tmp_path):
    with pytest.raises(RootletsError, match="-participants"):
        group_stats([LEVELS], tmp_path / "out", normalise=True)
    assert not (tmp_path / "out").exists()


def _our_table(folder: Path, unit: str, **provenance) -> Path:
    """A *_levels.csv + _levels.json as `rootlets levels` writes them, made from the hand-built table's rows."""
    rows = pd.read_csv(LEVELS)
    rows = rows[rows.subject == unit.split("_")[0]]
    kind = rows.spinal_level_type.map({"rootlets": "spinal", "vertebrae": "vertebral"})
    table = pd.DataFrame({"kind": kind, "level": "", "value": rows.spinal_level, "start_slice": 0, "end_slice": 0,
                          "mid_slice": 0, "start_mm": rows.distance_from_pmj_end, "end_mm": rows.distance_from_pmj_start,
                          "mid_mm": 0.0, "height_mm": rows.height, "reference": "PMJ", "n_voxels": 1, "volume_mm3": 1.0,
                          "status": "ok"})
    folder.mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / f"{unit}_levels.csv", index=False)
    (folder / f"{unit}_levels.json").write_text(json.dumps({"method": "gapfree", **provenance}))
    return folder / f"{unit}_levels.csv"


@pytest.mark.parametrize("provenance, message", [({"method": "reference"}, "-method"),
                                                 ({"version": "0.9"}, "version")])
def test_mixed_methods_or_versions_are_refused(tmp_path, capsys, provenance, message):
    first = _our_table(tmp_path / "a", "sub-amu01_T2w_rootlets")
    second = _our_table(tmp_path / "b", "sub-amu02_T2w_rootlets", **provenance)
    assert main(["stats", str(first), str(second), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert str(second) in err and message in err and err.count("\n") == 1 and not (tmp_path / "out").exists()
    assert main(["stats", str(first), str(LEVELS), "-o", str(tmp_path / "out")]) == 1  # ours with the lab's
    assert "separately" in capsys.readouterr().err


def test_our_tables_give_the_same_numbers_as_the_lab_layout(complete, tmp_path):
    """Twelve *_levels.csv (ours) made from the hand-built rows: the same statistics as the lab's combined table."""
    units = [f"{s}_T2w_rootlets" for s in pd.read_csv(PARTICIPANTS, sep="\t").subject]
    for unit in units:
        _our_table(tmp_path / "tables" / unit.split("_")[0], unit)
    out = group_stats([tmp_path / "tables"], tmp_path / "out", participants=PARTICIPANTS)
    got = pd.read_csv(out["shift"]).set_index(["pairing", "pair"])
    numbers = got.columns[3:]
    assert np.allclose(got[numbers].to_numpy(float), complete["shift"][numbers].to_numpy(float), rtol=1e-12,
                       atol=1e-12, equal_nan=True)


def test_spinal_levels_only_give_level_statistics(tmp_path):
    """Tables without vertebral levels (no disc labels): level statistics, no pair statistics and no figure."""
    path = _our_table(tmp_path, "sub-amu01_T2w_rootlets")
    table = pd.read_csv(path)
    table[table.kind == "spinal"].to_csv(path, index=False)
    out = group_stats([path], tmp_path / "out")
    assert "shift" not in out and "plot" not in out and not (tmp_path / "out" / "bland_altman.png").exists()
    assert list(pd.read_csv(out["levels"]).kind.unique()) == ["spinal"]


def test_figure_one_colour_per_pair_shared_by_both_panels(complete):
    """The scatter of each pair has the colour of its spinal level, the same in the regression and Bland-Altman panels."""
    tables = read_tables([LEVELS])
    from rootlets_task.levels.stats import _combine  # the rows the figure is drawn from

    rows = _combine(tables).assign(analysed_mid_mm=lambda r: r.mid_mm)
    pairs = pair_table(rows)
    fig = agreement_figure(pairs, shift_stats(pairs), normalised=False)
    axes = fig.axes
    assert len(axes) == 4
    for (reg, ba), pairing in ((axes[0:2]), "unshifted"), ((axes[2:4]), "shifted"):
        colours = []
        for ax in (reg, ba):
            found = {c.get_label(): tuple(c.get_facecolors()[0][:3]) for c in ax.collections}
            colours.append(found)
            sizes = {c.get_label(): len(c.get_offsets()) for c in ax.collections}
            assert all(n == 12 for n in sizes.values())
        assert colours[0] == colours[1] and len(colours[0]) == 7
        for pair, colour in colours[0].items():
            spinal = pair.split("-SL")[1]
            assert colour == pytest.approx(to_rgba(level_colour(spinal))[:3]), (pairing, pair)
        assert len(set(colours[0].values())) == 7
    assert (complete["outputs"]["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_lab_layout_import_export_roundtrip(complete, tmp_path):
    """The lab's combined table -> our export -> the same table; per-file 02a / discs CSVs read like the combined one."""
    exported = pd.read_csv(complete["outputs"]["lab"])
    original = pd.read_csv(LEVELS)
    assert list(exported.columns) == LAB_TABLE_COLUMNS
    pd.testing.assert_frame_equal(exported.reset_index(drop=True), original.reset_index(drop=True))
    split = tmp_path / "split"
    for fname, rows in original.groupby("fname"):  # as 02a_rootlets_to_spinal_levels.py / discs_to_vertebral_levels.py
        suffix = "_pmj_distance.csv" if "rootlets" in fname else "_pmj_distance_vertebral_disc.csv"
        (split / fname.split("_")[0]).mkdir(parents=True, exist_ok=True)
        rows[LAB_TABLE_COLUMNS[:7]].to_csv(split / fname.split("_")[0] / fname.replace(".nii.gz", suffix), index=False)
    out = group_stats([split], tmp_path / "split_out", participants=PARTICIPANTS)
    pd.testing.assert_frame_equal(pd.read_csv(out["shift"]), complete["shift"].reset_index()[pd.read_csv(out["shift"]).columns])


def test_reads_the_labs_own_02a_and_discs_csvs(tmp_path):
    """The CSVs that 02a and discs_to_vertebral_levels.py wrote with a real SCT (sct/cases/tilt15, see sct/README.md): one
    subject, spinal C2-T1 and vertebral C2-T1 (the lab's vertebral level 1 = C1 left out, as its one-table script
    does); exported back in the lab's layout row for row."""
    folder = DATA / "sct" / "cases" / "tilt15"
    out = group_stats([folder], tmp_path / "out")
    mids = pd.read_csv(out["midpoints"])
    assert set(mids.unit) == {"phantom"}
    assert sorted(mids[mids.kind == "spinal"].value) == list(range(2, 10))
    assert sorted(mids[mids.kind == "vertebral"].value) == list(range(2, 9))
    written = pd.concat([pd.read_csv(p) for p in sorted(folder.glob("*pmj_distance*.csv"))])
    spinal = written[written.fname.str.contains("rootlets")].set_index("spinal_level")
    for row in mids[mids.kind == "spinal"].itertuples():
        want = (spinal.loc[row.value, "distance_from_pmj_start"] + spinal.loc[row.value, "distance_from_pmj_end"]) / 2
        assert close(row.mid_mm, want) and row.rostral_mm == spinal.loc[row.value, "distance_from_pmj_end"]
    shift = pd.read_csv(out["shift"]).set_index(["pairing", "pair"])
    assert (shift.n.drop(index="all", level=1) == 1).all()
    exported = pd.read_csv(out["lab"])
    assert len(exported) == len(written) and set(exported.subject) == {"phantom"}
    pd.testing.assert_frame_equal(exported[LAB_TABLE_COLUMNS[:7]].sort_values(["fname", "spinal_level"]).reset_index(drop=True),
                                  written.sort_values(["fname", "spinal_level"]).reset_index(drop=True))


@pytest.fixture(scope="module")
def phantom_levels(tmp_path_factory):
    """Three phantom subjects through `rootlets levels -method reference`, one of them in AIL orientation."""
    root = tmp_path_factory.mktemp("phantoms")
    for seed, orient in ((1, "LPI"), (2, "AIL"), (3, "RPI")):
        ph = make_phantom(orient, (1.0, 1.0, 1.0), seed=seed)
        folder = root / f"sub-{seed:02d}"
        folder.mkdir()
        for kind in KINDS:
            nib.save(ph.nifti(kind), folder / f"sub-{seed:02d}_{kind}.nii.gz")
        levels_from_files(*(folder / f"sub-{seed:02d}_{k}.nii.gz" for k in KINDS), method="reference")
    return root


def test_export_of_our_levels_in_the_lab_layout(phantom_levels, tmp_path):
    """Our tables exported with the lab's meaning: start = caudal end, slices = RPI z of the level's end slices (read
    back from our spinal-levels image reoriented to RAS); importing the export gives the same statistics."""
    out = group_stats([phantom_levels], tmp_path / "ours")
    exported = pd.read_csv(out["lab"])
    assert set(exported.subject) == {"sub-01", "sub-02", "sub-03"}
    assert (exported.distance_from_pmj_start > exported.distance_from_pmj_end).all()
    assert np.allclose(exported.height, exported.distance_from_pmj_start - exported.distance_from_pmj_end)
    assert (exported.slice_start < exported.slice_end).all()
    for subject, rows in exported[exported.spinal_level_type == "rootlets"].groupby("subject"):
        assert rows.fname.str.contains("rootlets").all()
        levels = nib.as_closest_canonical(nib.load(phantom_levels / subject / f"{subject}_rootlets_spinal_levels.nii.gz"))
        data = np.asarray(levels.dataobj)
        for row in rows.itertuples():
            z = np.flatnonzero((data == row.spinal_level).any(axis=(0, 1)))
            assert (row.slice_start, row.slice_end) == (z.min(), z.max()), (subject, row.spinal_level)
    back = group_stats([out["lab"]], tmp_path / "back")
    a, b = (pd.read_csv(p["shift"]) for p in (out, back))
    pd.testing.assert_frame_equal(a, b)


def test_cli_prints_every_output_and_keeps_old_callers(phantom_levels, tmp_path, capsys):
    """`rootlets stats` with and without -participants; folders holding *_shift.csv too (as batch passes them)."""
    participants = tmp_path / "participants.tsv"
    participants.write_text("participant_id\theight\nsub-01\t170\nsub-02\t180\nsub-03\t165\n")
    assert main(["stats", str(phantom_levels), "-participants", str(participants), "-o", str(tmp_path / "a")]) == 0
    printed = capsys.readouterr().out
    assert "normalised by body height" in printed and "VLT1-SLC8" in printed and "VLT1-SLT1" in printed
    assert len(list((tmp_path / "a").iterdir())) == 6 and all(str(p) in printed for p in (tmp_path / "a").iterdir())
    assert json.loads((tmp_path / "a" / "stats.json").read_text())["settings"]["median_body_height"]["spinal"] == 170
    files = sorted(map(str, phantom_levels.rglob("*.csv")))
    assert any(f.endswith("_shift.csv") for f in files)
    assert main(["stats", *files, "-o", str(tmp_path / "b")]) == 0
    assert "not normalised" in capsys.readouterr().out
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(next(phantom_levels.rglob("*_shift.csv")), lone)
    assert main(["stats", str(next(lone.iterdir())), "-o", str(tmp_path / "c")]) == 1
    assert "_levels.csv instead" in capsys.readouterr().err
