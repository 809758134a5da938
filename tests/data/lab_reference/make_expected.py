"""Rerun the lab's published analysis scripts on the hand-built inputs and rewrite ``expected.json``.

Usage (in a Python environment with what the lab's scripts import: numpy, pandas, scipy, matplotlib, seaborn)::

    python make_expected.py /path/to/model-spinal-rootlets [-o expected.json] [-scratch DIR]

``/path/to/model-spinal-rootlets`` is a work tree of github.com/ivadomed/model-spinal-rootlets (its commit is read
from a ``.commit`` file there or from git). The scripts run unchanged, each in its own process, with the headless
matplotlib backend (``MPLBACKEND=Agg``), their figures and tables going to a scratch folder.

The lab's scripts print most numbers rounded to 3-5 decimals. To record them at full precision, each script runs
under a probe (``python make_expected.py -probe LOG SCRIPT ARGS...``) that wraps the library functions the script
calls (scipy.stats.shapiro / spearmanr / linregress / norm.fit, numpy.percentile / sqrt, pandas.Series.median) and
logs their results, but only for calls made directly from the script's own lines. The logged values are then
checked against the script's printed text and stored under the names of what the script computes.

This file contains none of the lab's code; it only knows the order in which their scripts call those functions.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import math
import os
import re
import runpy
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
ANALYSIS = "utilities/hc-leipzig-7t-mp2rage/analysis_MP2RAGE_T2w"
SCRIPTS = {"ba": f"{ANALYSIS}/bland-altman-analysis.py", "al": f"{ANALYSIS}/bland-altman-all-levels-analysis.py",
           "gd": f"{ANALYSIS}/get_distributions_and_sizes.py", "one": f"{ANALYSIS}/get_vertebral_spinal_levels_one_table.py"}
PAIRS = {"not_shifted": ["VLC2-SLC2", "VLC3-SLC3", "VLC4-SLC4", "VLC5-SLC5", "VLC6-SLC6", "VLC7-SLC7", "VLT1-SLC8"],
         "shifted": ["VLC2-SLC3", "VLC3-SLC4", "VLC4-SLC5", "VLC5-SLC6", "VLC6-SLC7", "VLC7-SLC8", "VLT1-SLT1"]}
SPINAL = ["C2", "C3", "C4", "C5", "C6", "C7", "C8", "T1"]
VERTEBRAL = ["C2", "C3", "C4", "C5", "C6", "C7", "T1"]


# ------------------------------------------------------------------------------------------------ probe (child)


def _probe(log_path: str, script: str, argv: list[str]) -> None:
    """Run ``script`` as __main__ with recording wrappers around the library functions it calls."""
    import numpy as np
    import pandas as pd
    import scipy.stats

    script = os.path.abspath(script)
    records = []

    def num(x):
        return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)

    def wrap(owner, name, describe):
        original = getattr(owner, name)

        @functools.wraps(original)
        def wrapper(*args, **kwargs):
            result = original(*args, **kwargs)
            if os.path.abspath(sys._getframe(1).f_code.co_filename) == script:
                records.append({"fn": name, "line": sys._getframe(1).f_lineno, **describe(args, result)})
            return result

        setattr(owner, name, wrapper)

    def sample(*columns):
        arr = np.vstack([np.asarray(c, dtype=float).ravel() for c in columns])
        return {"n": int(arr.shape[1]), "n_nan": int(np.isnan(arr).any(axis=0).sum())}

    wrap(scipy.stats, "shapiro", lambda a, r: {**sample(a[0]), "W": num(r[0]), "p": num(r[1])})
    wrap(scipy.stats, "spearmanr", lambda a, r: {**sample(a[0], a[1]), "rho": num(r[0]), "p": num(r[1])})
    wrap(scipy.stats, "linregress", lambda a, r: {**sample(a[0], a[1]), "slope": num(r.slope), "intercept": num(r.intercept),
                                                  "r": num(r.rvalue), "p": num(r.pvalue), "stderr": num(r.stderr)})
    wrap(scipy.stats.norm, "fit", lambda a, r: {**sample(a[0]), "mu": num(r[0]), "sigma": num(r[1])})
    wrap(np, "percentile", lambda a, r: {**sample(a[0]), "q": float(a[1]), "value": num(r)})
    wrap(np, "sqrt", lambda a, r: {"value": num(r)})
    wrap(pd.Series, "median", lambda a, r: {"series": str(a[0].name), **sample(a[0]), "value": num(r)})
    sys.argv = [script, *argv]
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        Path(log_path).write_text(json.dumps(records))


# ------------------------------------------------------------------------------------------------ parent


def _commit(repo: Path) -> str:
    if (repo / ".commit").is_file():
        return (repo / ".commit").read_text().split()[0]
    out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{repo}: cannot tell its commit; write the commit hash into {repo}/.commit")
    return out.stdout.strip()


def _run(repo: Path, key: str, args: list[str], cwd: Path) -> dict:
    """Run one lab script under the probe; return its command, exit code, output and probe records."""
    cwd.mkdir(parents=True, exist_ok=True)
    log = cwd / "probe.json"
    script = repo / SCRIPTS[key]
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "-probe", str(log), str(script), *args],
                          cwd=cwd, env=env, capture_output=True, text=True)
    records = json.loads(log.read_text()) if log.is_file() else []
    shown = [a if not Path(a).is_absolute() else _show(Path(a)) for a in args]
    return {"script": SCRIPTS[key], "command": f"MPLBACKEND=Agg python {SCRIPTS[key]} {' '.join(shown)}",
            "cwd": _show(cwd), "returncode": proc.returncode, "stdout": proc.stdout.replace(str(_SCRATCH), "SCRATCH"),
            "stderr_tail": proc.stderr.strip().splitlines()[-3:] if proc.returncode else [], "_records": records}


_SCRATCH: Path | None = None


def _show(path: Path) -> str:
    """Paths in expected.json: inputs by file name, scratch outputs as SCRATCH/..."""
    if path.parent == HERE:
        return path.name
    if _SCRATCH is not None and path.is_relative_to(_SCRATCH):
        return str(Path("SCRATCH") / path.relative_to(_SCRATCH))
    return str(path)


def _take(records: list[dict], fn: str, count: int, **match) -> list[dict]:
    """Pop the first ``count`` records of function ``fn`` (in call order), checking optional field values."""
    picked = [r for r in records if r["fn"] == fn and all(r.get(k) == v for k, v in match.items())][:count]
    if len(picked) != count:
        raise SystemExit(f"probe: expected {count} calls of {fn} {match}, found {len(picked)}; has the script changed?")
    for r in picked:
        records.remove(r)
    return picked


def _check_printed(stdout: str, pattern: str, values: list[float | None], fmt: str) -> None:
    """The script's printed numbers (regex groups, in order) must be the recorded values rounded as it prints them."""
    found = re.findall(pattern, stdout)
    found = [g for m in found for g in (m if isinstance(m, tuple) else (m,))]
    expected = ["nan" if v is None else format(v, fmt) for v in values]
    if found != expected:
        raise SystemExit(f"probe: printed {found} but recorded {expected} for /{pattern}/; the probe mapping is wrong")


def _pivot_csv(path: Path) -> dict:
    import pandas as pd

    table = pd.read_csv(path)
    return {col: {s: (None if pd.isna(v) else float(v)) for s, v in zip(table["subject"], table[col], strict=True)}
            for col in table.columns[1:]}


def _heights_median(records: list[dict]) -> dict:
    got = _take(records, "median", 2, series="height_sub")
    return {"rootlets": got[0]["value"], "vertebrae": got[1]["value"], "n_rows": {"rootlets": got[0]["n"],
                                                                                "vertebrae": got[1]["n"]}}


def _parse_ba(run: dict) -> dict:
    """bland-altman-analysis.py: global and per-pair statistics of both pairings (normalised midpoints)."""
    rec, out = run["_records"], {}
    out["median_height"] = _heights_median(rec)
    for pairing in ("not_shifted", "shifted"):
        (sp,), (lr,), (sw,) = _take(rec, "spearmanr", 1), _take(rec, "linregress", 1), _take(rec, "shapiro", 1)
        (med,), (lo, hi) = _take(rec, "median", 1, series="Difference"), _take(rec, "percentile", 2)
        out.setdefault("global", {})[pairing] = {
            "n": sp["n"], "n_nan": sp["n_nan"], "spearman_rho": sp["rho"], "spearman_p": sp["p"],
            "slope": lr["slope"], "intercept": lr["intercept"], "r": lr["r"], "r2": None if lr["r"] is None else lr["r"] ** 2,
            "regression_p": lr["p"], "regression_stderr": lr["stderr"], "shapiro_w": sw["W"], "shapiro_p": sw["p"],
            "median": med["value"], "p2_5": lo["value"], "p97_5": hi["value"]}
        assert (lo["q"], hi["q"]) == (2.5, 97.5)
    for pairing in ("not_shifted", "shifted"):
        shapiros = _take(rec, "shapiro", 7)  # check_normality(local): groupby order = sorted pair names
        by_pair = dict(zip(sorted(PAIRS[pairing]), shapiros, strict=True))
        for pair in PAIRS[pairing]:
            (lr,), (med,), (lo, hi) = _take(rec, "linregress", 1), _take(rec, "median", 1, series="Difference"), \
                _take(rec, "percentile", 2)
            out.setdefault("per_pair", {}).setdefault(pairing, {})[pair] = {
                "n": lr["n"], "n_nan": lr["n_nan"], "slope": lr["slope"], "intercept": lr["intercept"], "r": lr["r"],
                "r2": None if lr["r"] is None else lr["r"] ** 2, "shapiro_w": by_pair[pair]["W"],
                "shapiro_p": by_pair[pair]["p"], "median": med["value"], "p2_5": lo["value"], "p97_5": hi["value"]}
    g = out["global"]
    _check_printed(run["stdout"], r"Spearman correlation: (\S+), p-value: (\S+)\n",
                   [v for p in PAIRS for v in (g[p]["spearman_rho"], g[p]["spearman_p"])], ".3f")
    _check_printed(run["stdout"], r"y = (\S+)x \+ (\S+), R2 = (\S+)\n",
                   [v for p in PAIRS for v in (g[p]["slope"], g[p]["intercept"], g[p]["r2"])], ".3f")
    local = [out["per_pair"][p][pair] for p in PAIRS for pair in sorted(PAIRS[p])]
    _check_printed(run["stdout"], r"Level \S+: Statistics=(\S+), p=(\S+)\n",
                   [v for r in local for v in (r["shapiro_w"], r["shapiro_p"])], ".3f")
    return out


def _parse_al(run: dict, normalise: bool, cwd: Path) -> dict:
    """bland-altman-all-levels-analysis.py: per-pair statistics and the per-subject midpoint tables it writes."""
    rec, out = run["_records"], {}
    label = "normalised" if normalise else "not_normalised"
    if normalise:
        out["median_height"] = _heights_median(rec)
    for pairing in ("not_shifted", "shifted"):
        for pair in PAIRS[pairing]:
            (sw,), (med,), (lo, hi) = _take(rec, "shapiro", 1), _take(rec, "median", 1, series="Difference"), \
                _take(rec, "percentile", 2)
            means = _take(rec, "median", 5, series="Mean")
            out.setdefault("per_pair", {}).setdefault(pairing, {})[pair] = {
                "n": sw["n"], "n_nan": sw["n_nan"], "shapiro_w": sw["W"], "shapiro_p": sw["p"], "median": med["value"],
                "median_shown": round(med["value"], 2) if med["value"] is not None else None,
                "p2_5": lo["value"], "p97_5": hi["value"], "median_of_means": means[0]["value"]}
    _check_printed(run["stdout"], r"for pair \S+: p-value=(\S+)\n",
                   [out["per_pair"][p][pair]["shapiro_p"] for p in PAIRS for pair in PAIRS[p]], ".5f")
    out["midpoints"] = {"spinal": _pivot_csv(cwd / f"rootlets_distances_{label}.csv"),
                        "vertebral": _pivot_csv(cwd / f"vertebrae_distances_{label}.csv")}
    return out


def _parse_gd(run: dict, normalise: bool, folder: Path) -> dict:
    """get_distributions_and_sizes.py: normality and normal fit of each level's midpoints, level sizes, RMSE."""
    import pandas as pd

    rec, out = run["_records"], {}
    if normalise:
        out["median_height"] = _heights_median(rec)
    shapiro = _take(rec, "shapiro", len(SPINAL) + len(VERTEBRAL))
    fits = _take(rec, "fit", len(SPINAL) + len(VERTEBRAL))
    for kind, names, offset in (("spinal", SPINAL, 0), ("vertebral", VERTEBRAL, len(SPINAL))):
        out.setdefault("midpoint_distribution", {})[kind] = {
            name: {"n": fits[offset + i]["n"], "shapiro_w": shapiro[offset + i]["W"], "shapiro_p": shapiro[offset + i]["p"],
                   "normal": shapiro[offset + i]["p"] > 0.05, "mu": fits[offset + i]["mu"], "sigma": fits[offset + i]["sigma"]}
            for i, name in enumerate(names)}
    for kind, file, col in (("spinal", "rootlets_size_mean_std.csv", "Spinal level"),
                            ("vertebral", "vertebrae_size_mean_std.csv", "Vertebral level")):
        table = pd.read_csv(folder / file)
        out.setdefault("level_size_rounded_2", {})[kind] = {
            row[col].split()[-1]: {"mean": float(row["Mean height"]), "sd": float(row["Std height"])}
            for _, row in table.iterrows()}
    for pairing in ("not_shifted", "shifted"):
        roots = _take(rec, "sqrt", 8)
        out.setdefault("rmse", {})[pairing] = {**{p: r["value"] for p, r in zip(PAIRS[pairing], roots[:7], strict=True)},
                                               "overall": roots[7]["value"]}
    _check_printed(run["stdout"], r"RMSE between .*: (\S+)\n",
                   [out["rmse"][p][pair] for p in PAIRS for pair in PAIRS[p]], ".4f")
    _check_printed(run["stdout"], r"Overall RMSE for \S+: (\S+)\n", [out["rmse"][p]["overall"] for p in PAIRS], ".4f")
    return out


def _one_table(repo: Path, levels: Path, participants: Path, scratch: Path) -> dict:
    """Split the hand-built table into per-file CSVs as 02a / discs_to_vertebral_levels.py write them, rerun the lab's
    one-table script on them and check that its ``spinal_vs_vertebral_levels.csv`` equals the hand-built table."""
    import pandas as pd

    table = pd.read_csv(levels)
    folder = scratch / "one_table"
    for fname, rows in table.groupby("fname"):
        suffix = "_pmj_distance.csv" if "rootlets" in fname else "_pmj_distance_vertebral_disc.csv"
        sub = folder / fname.split("_")[0] / "anat"
        sub.mkdir(parents=True, exist_ok=True)
        rows.drop(columns=["spinal_level_type", "subject"]).to_csv(sub / fname.replace(".nii.gz", suffix), index=False)
    run = _run(repo, "one", ["-i", str(folder), "-participants", str(participants)], scratch / "one_table_run")
    if run["returncode"] == 0:
        made = pd.read_csv(folder / "spinal_vs_vertebral_levels.csv")
        run["output_equals_input"] = bool(made.reset_index(drop=True).equals(table.reset_index(drop=True)))
    return run


def _finish(run: dict, values: dict | None) -> dict:
    leftover = sorted({r["fn"] for r in run.pop("_records")}) if values is not None else []
    if values is not None:
        run["values"] = values
    if leftover and run["returncode"] == 0:
        run["unparsed_calls"] = leftover
    return run


def _versions() -> dict:
    return {"python": sys.version.split()[0],
            **{p: metadata.version(p) for p in ("numpy", "pandas", "scipy", "matplotlib", "seaborn")}}


def main() -> None:
    global _SCRATCH
    if len(sys.argv) > 1 and sys.argv[1] == "-probe":
        return _probe(sys.argv[2], sys.argv[3], sys.argv[4:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("repo", type=Path, help="work tree of ivadomed/model-spinal-rootlets")
    parser.add_argument("-o", type=Path, default=HERE / "expected.json", help="output JSON (default: expected.json here)")
    parser.add_argument("-scratch", type=Path, help="folder for the scripts' figures and tables (default: a temporary one)")
    args = parser.parse_args()
    for script in SCRIPTS.values():
        if not (args.repo / script).is_file():
            raise SystemExit(f"{args.repo}: no {script}; give a work tree of ivadomed/model-spinal-rootlets")
    scratch = (args.scratch or Path(tempfile.mkdtemp(prefix="lab_reference_"))).resolve()
    _SCRATCH = scratch
    levels, missing, participants = (HERE / n for n in ("spinal_vs_vertebral_levels.csv",
                                                        "spinal_vs_vertebral_levels_missing.csv", "participants.tsv"))
    runs = {"one_table": _finish(_one_table(args.repo, levels, participants, scratch), None)}
    for case, table in (("complete", levels), ("missing", missing)):
        base = scratch / case
        io = ["-i", str(table), "-p", str(participants)]
        run = _run(args.repo, "ba", [*io, "-o", str(base / "ba")], base / "ba")
        runs[f"{case}/bland-altman-analysis"] = _finish(run, _parse_ba(run) if run["returncode"] == 0 else None)
        for flag, normalise in (("y", True), ("n", False)):
            cwd = base / f"al_{flag}"
            run = _run(args.repo, "al", [*io, "-o", str(cwd), "-normalise", flag], cwd)
            runs[f"{case}/bland-altman-all-levels-analysis -normalise {flag}"] = _finish(
                run, _parse_al(run, normalise, cwd) if run["returncode"] == 0 else None)
            cwd = base / f"gd_{flag}"
            run = _run(args.repo, "gd", [*io, "-o", str(cwd), "-normalised", flag], cwd)
            runs[f"{case}/get_distributions_and_sizes -normalised {flag}"] = _finish(
                run, _parse_gd(run, normalise, cwd) if run["returncode"] == 0 else None)
    document = {
        "about": "Numbers computed by the lab's published scripts on the hand-built inputs in this folder; "
                 "written by make_expected.py (see README.md). 'complete' = spinal_vs_vertebral_levels.csv, "
                 "'missing' = spinal_vs_vertebral_levels_missing.csv (three level rows removed).",
        "repository": "https://github.com/ivadomed/model-spinal-rootlets", "commit": _commit(args.repo),
        "date": datetime.date.today().isoformat(), "environment": _versions(),
        "made_by": "python tests/data/lab_reference/make_expected.py MODEL_SPINAL_ROOTLETS -scratch SCRATCH",
        "probe": "each command ran as `python make_expected.py -probe LOG SCRIPT ARGS...` in its cwd: the script "
                 "unchanged, scipy/numpy/pandas calls made from its own lines recorded at full precision",
        "inputs": {"levels": levels.name, "levels_missing": missing.name, "participants": participants.name},
        "runs": runs}
    args.o.write_text(json.dumps(document, indent=1, allow_nan=False) + "\n")
    if args.scratch is None:
        shutil.rmtree(scratch)
    print(f"wrote {args.o}")


if __name__ == "__main__":
    main()
