"""`rootlets batch` on a small phantom BIDS dataset: sequential, `-jobs 2` and a real Dask LocalCluster give identical
outputs; a worker killed mid-run (SIGKILL) gets its image retried with nothing half-written; a killed driver leaves no
file that looks finished; a second run skips what is done and reruns what changed; a broken file is reported.

Everything is real: nnU-Net inference with the bundled phantom release (or, until it is built, an untrained nnU-Net
zip installed as the phantom tag: then the levels are meaningless but every comparison below still holds), the chain
with the phantom's cord/discs/PMJ as manual labels, Dask on 127.0.0.1. Threads per worker are fixed to 1 in every
mode: OpenVINO's results depend on the thread count at the float-rounding level (README 'Batch runs').
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from support.batch_data import BROKEN, COMMON, NAMES, run
from support.batch_data import assert_same as _assert_same
from support.batch_data import done_names as _done_names

from rootlets_task.batch import bids as bids_module
from rootlets_task.batch import engines
from rootlets_task.batch import run as batch
from rootlets_task.cli import rootlets as cli
from rootlets_task.core.errors import RootletsError
from rootlets_task.core.options import ChainOptions, ModelOptions
from rootlets_task.io.phantom import write_phantom
from rootlets_task.models import install

# the dataset (``bids``) and its sequential reference run (``sequential``) are session fixtures (tests/conftest.py,
# tests/support/batch_data.py), shared with the other batch test modules


def make_settings(model_folder, model, threads=None, levels=False, qc=None, **chain):
    """``batch.Settings`` as a worker gets it, with its choices as keywords."""
    return batch.Settings(model_folder=model_folder, model=model, options=ModelOptions(threads=threads),
                          chain=ChainOptions(**chain) if levels else None, qc=qc)


def find(root, contrasts=("T2w",), include=None, exclude=None):
    return bids_module.find_images(root, contrasts, include, exclude).images


@pytest.fixture(autouse=True)
def _store(phantom_home):
    """Every test here (and the workers it starts) uses the session's phantom store."""


@pytest.fixture(scope="module")
def cluster(phantom_store, tmp_path_factory):
    """A real Dask LocalCluster on 127.0.0.1: 2 worker processes, 1 thread each."""
    from distributed import LocalCluster

    env = {"ROOTLETS_TASK_HOME": str(phantom_store), "ROOTLETS_TASK_CACHE": os.environ.get("ROOTLETS_TASK_CACHE", "")}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None,
                      silence_logs=50, env={k: v for k, v in env.items() if v}) as cluster:
        yield cluster


def test_sequential_outputs_layout_and_summary(sequential, bids):
    out, summary = sequential
    assert _done_names(summary) == NAMES
    failed = summary.by_status("failed")
    assert [r["rel"] for r in failed] == [BROKEN]
    assert "sub-06_T2w.nii.gz" in failed[0]["error"] and "\n" not in failed[0]["error"]
    assert (out / "logs" / "err.sub-06_T2w.log").is_file() and not (out / "sub-06").exists()
    text = summary.text()
    assert "6 done, 0 skipped, 1 failed" in text and BROKEN in text

    for name in NAMES:
        sub = name.split("_")[0]
        ses = [p for p in name.split("_") if p.startswith("ses-")]
        folder = out.joinpath(sub, *ses, "anat")
        for tail in ("_rootlets.nii.gz", "_rootlets.json", "_label-SC_seg.nii.gz", "_label-discs_dlabel.nii.gz",
                     "_spinal_levels.nii.gz", "_vertebral_levels.nii.gz", "_levels.csv", "_shift.csv", "_batch.json"):
            assert (folder / f"{name}{tail}").is_file(), (name, tail)
        image = nib.load(next(bids.rglob(f"{name}.nii.gz")))
        rootlets = nib.load(folder / f"{name}_rootlets.nii.gz")
        assert rootlets.shape == image.shape and np.allclose(rootlets.affine, image.affine)
        assert (out / "logs" / f"{name}.log").is_file()
        sidecar = json.loads((folder / f"{name}_levels.json").read_text())
        assert ".tmp" not in json.dumps(sidecar), "temporary paths must be rewritten to the final folder"
        record = json.loads((folder / f"{name}_batch.json").read_text())
        key = record["steps"]["unit"]["key"]
        assert record["release"] == "phantom" and key["levels"] is True
        assert set(key["inputs"]) == {f"{Path(record['rel']).as_posix()}", "labels:cord", "labels:discs",
                                               "labels:pmj"}
    assert not (out / ".tmp").exists()

    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative" and description["BIDSVersion"]
    generated = description["GeneratedBy"][0]
    assert generated["Name"] == "rootlets_task" and generated["Release"] == "phantom"
    from rootlets_task import __version__

    assert generated["Version"] == __version__

    levels = pd.read_csv(out / "levels.csv")
    assert set(levels["image"]) == NAMES and {"subject", "session", "kind", "level", "mid_mm"} <= set(levels.columns)
    per_subject = pd.read_csv(out / "sub-02" / "anat" / "sub-02_T2w_levels.csv")
    pd.testing.assert_frame_equal(levels[levels["image"] == "sub-02_T2w"].drop(columns=["image", "subject", "session"])
                                  .reset_index(drop=True), per_subject, check_dtype=False)  # NaN of other rows: float
    assert set(pd.read_csv(out / "shift.csv")["image"]) <= NAMES
    # vertebral levels come from the manual discs: within the two voxel roundings of the disc and PMJ labels
    # (at most sqrt(3)/2 mm each on these 1 mm grids) of the phantom truth, whatever the segmentation
    for name in NAMES:
        truth = json.loads((bids / "derivatives" / "truth" / f"{name}.json").read_text())["vertebral_levels"]
        rows = levels[(levels["image"] == name) & (levels["kind"] == "vertebral") & (levels["status"] == "ok")]
        got = {str(r.value): r.mid_mm for r in rows.itertuples()}
        assert set(truth) <= set(got), (name, sorted(got))
        assert all(abs(got[v] - truth[v]["mid_mm"]) <= 3 ** 0.5 for v in truth), (name, got, truth)
    assert set(summary.tables) >= {"levels", "shift"}
    saved = json.loads((out / "logs" / "batch_summary.json").read_text())
    assert {r["name"]: r["status"] for r in saved["results"]}["sub-06_T2w"] == "failed"
    # every segmented image carries the network's confidence per level, and its numbering check
    spinal = levels[(levels["kind"] == "spinal") & (levels["n_voxels"] > 0)]
    assert spinal["mean_probability"].between(0, 1).all() and spinal["fraction_below_half"].between(0, 1).all()
    for r in saved["results"]:
        if r["status"] == "done":
            assert r["numbering"]["status"] in ("ok", "shifted", "unclear", "not checked") and r["confidence"]["Voxels"] > 0


def test_group_statistics_normalised_by_the_participants_heights(bids, tmp_path, caplog):
    """With a participants.tsv holding heights, the batch's group statistics are normalised by height as the paper
    does; heights missing for one subject: one warning, and the statistics without normalisation."""
    root = tmp_path / "bids"
    for name in ("sub-01", "sub-02"):
        shutil.copytree(bids / name, root / name)
        shutil.copytree(bids / "derivatives" / "labels" / name, root / "derivatives" / "labels" / name)
    (root / "participants.tsv").write_text("participant_id\tage\theight\nsub-01\t30\t170\nsub-02\t41\t182.5\n")
    out = tmp_path / "out"
    run(root, out, **COMMON)
    settings = json.loads((out / "group" / "stats.json").read_text())["settings"]
    assert settings["normalised"] and settings["participants"] == "bids:raw:participants.tsv"
    (root / "participants.tsv").write_text("participant_id\theight\nsub-01\t170\nsub-02\tn/a\n")
    caplog.set_level("WARNING", logger="rootlets_task.batch.run")
    run(root, out, **COMMON)  # images up to date: only the dataset tables are made again
    assert not json.loads((out / "group" / "stats.json").read_text())["settings"]["normalised"]
    assert "group statistics not normalised by height" in caplog.text and "participants.tsv" in caplog.text


def test_participants_file_needs_a_height_column_and_reads_crlf(tmp_path):
    assert batch.participants_file(tmp_path) is None  # no participants.tsv
    (tmp_path / "participants.tsv").write_bytes(b"participant_id\tage\r\nsub-01\t30\r\n")
    assert batch.participants_file(tmp_path) is None
    (tmp_path / "participants.tsv").write_bytes(b"participant_id\theight\r\nsub-01\t170\r\n")  # saved on Windows
    assert batch.participants_file(tmp_path) == tmp_path / "participants.tsv"


def test_numbering_warning_in_the_summary_and_renumber_on_request(bids, tmp_path):
    """Manual rootlets labelled one level too high for one image: the summary (text and JSON) and the QC index name
    it; the levels keep their names; -renumber suggested is a new setting, so that image is redone, renamed."""
    root = tmp_path / "bids"
    for name in ("sub-01", "sub-02"):
        shutil.copytree(bids / name, root / name)
        shutil.copytree(bids / "derivatives" / "labels" / name, root / "derivatives" / "labels" / name)
    wrong = root / "derivatives" / "labels" / "sub-02" / "anat" / "sub-02_T2w_label-rootlets_dseg.nii.gz"
    truth = write_phantom(tmp_path / "ph", "RPI", seed=1, prefix="sub-02_T2w")
    img = nib.load(truth["rootlets"])
    data = np.asarray(img.dataobj)
    nib.save(nib.Nifti1Image(np.where(data > 0, data + 1, 0).astype(np.uint8), img.affine, img.header), wrong)
    out, qc = tmp_path / "out", tmp_path / "qc"
    summary = run(root, out, qc=qc, **COMMON)
    assert _done_names(summary) == {"sub-01_T2w", "sub-02_T2w"}
    assert [r["name"] for r in summary.numbering_warnings] == ["sub-02_T2w"]
    flagged = summary.numbering_warnings[0]["numbering"]
    assert flagged["status"] == "shifted" and flagged["offset"] == -1 and not flagged["applied"]
    text = summary.text()
    assert "1 image(s) with a numbering warning" in text and "sub-02_T2w" in text and "C3->C2" in text
    saved = json.loads((out / "logs" / "batch_summary.json").read_text())
    assert {r["name"]: r["numbering"]["status"] for r in saved["results"]}["sub-02_T2w"] == "shifted"
    index = (qc / "rootlets_task" / "index.html").read_text()
    assert 'data-numbering="shifted"' in index and 'id="only-numbering"' in index
    table = pd.read_csv(out / "sub-02" / "anat" / "sub-02_T2w_levels.csv")
    assert table[table.kind == "spinal"]["level"].iloc[0] == "C3" and table["suggested_level"].iloc[0] == "C2"
    again = run(root, out, **COMMON)  # up to date: the summary still names it (from the levels JSON)
    assert [r["name"] for r in again.numbering_warnings] == ["sub-02_T2w"] and not again.by_status("done")
    fixed = run(root, out, renumber="suggested", **COMMON)
    assert _done_names(fixed) == {"sub-01_T2w", "sub-02_T2w"}  # the key holds the renumber setting
    table = pd.read_csv(out / "sub-02" / "anat" / "sub-02_T2w_levels.csv")
    assert table[table.kind == "spinal"]["level"].iloc[0] == "C2" and table["original_level"].iloc[0] == "C3"
    assert (table["numbering"] == "renumbered").all()


def test_jobs_2_identical_to_sequential(sequential, bids, tmp_path):
    out = tmp_path / "rootlets"
    summary = run(bids, out, jobs=2, **COMMON)
    assert _done_names(summary) == NAMES
    assert {r["pid"] for r in summary.by_status("done")} - {os.getpid()}, "-jobs 2 runs in worker processes"
    _assert_same(sequential[0], out)


def test_qc_requested_later_reruns_those_images(sequential, bids, tmp_path):
    """-qc on a finished folder: the selected images are redone with their QC pages; the index lists them."""
    out, qc = tmp_path / "rootlets", tmp_path / "qc"
    shutil.copytree(sequential[0], out)
    summary = run(bids, out, qc=qc, include="sub-0[12]/", **COMMON)
    assert _done_names(summary) == {"sub-01_T2w", "sub-02_T2w"}
    report = qc / "rootlets_task"  # our report inside the QC folder (its root is SCT's report)
    index = (report / "index.html").read_text()
    for name in ("sub-01_T2w", "sub-02_T2w"):
        assert name in index and (report / name / "rootlets.png").is_file() and (report / name / "levels.png").is_file()
        page = (report / name / "index.html").read_text()
        assert "phantom" in page and batch.TMP + "/" not in page
    again = run(bids, out, qc=qc, include="sub-0[12]/", **COMMON)
    assert {r["name"] for r in again.by_status("skipped")} == {"sub-01_T2w", "sub-02_T2w"}
    _assert_same(sequential[0], out)


def test_dask_cluster_identical_to_sequential(sequential, bids, cluster, tmp_path):
    out = tmp_path / "rootlets"
    summary = run(bids, out, dask=cluster.scheduler_address, **COMMON)
    assert _done_names(summary) == NAMES
    assert len({r["pid"] for r in summary.by_status("done")}) == 2, "both workers took images"
    _assert_same(sequential[0], out)


def test_worker_killed_mid_image_is_retried(sequential, bids, cluster, tmp_path):
    """SIGKILL the worker process that is writing an image: Dask reschedules it, the result is complete and correct."""
    import threading

    out = tmp_path / "rootlets"
    killed: dict = {}
    thread = threading.Thread(target=_kill_first_worker_seen, args=(out, killed))
    thread.start()
    summary = run(bids, out, dask=cluster.scheduler_address, **COMMON)
    thread.join()
    assert killed, "no image was seen in progress"
    result = {r["name"]: r for r in summary.results}[killed["name"]]
    assert result["status"] == "done" and result["retried"] and result["pid"] != killed["pid"]
    assert _done_names(summary) == NAMES
    _assert_same(sequential[0], out)
    assert "retried" in summary.text()


def _kill_first_worker_seen(out: Path, killed: dict) -> None:
    """SIGKILL the process named by the first temporary image folder that appears (``<stem>.<host>-<pid>-<random>``)."""
    deadline = time.time() + 240
    while time.time() < deadline and not killed:
        for tmp in (out / batch.TMP).glob("*.*-*-*") if (out / batch.TMP).is_dir() else []:
            pid = int(tmp.name.rsplit(".", 1)[1].rsplit("-", 2)[1])
            if pid != os.getpid():
                os.kill(pid, signal.SIGKILL)
                killed.update(pid=pid, name=tmp.name.split(".")[0])
                return
        time.sleep(0.01)


def test_worker_killed_too_often_is_reported(bids, cluster, tmp_path):
    """With no failure allowed (the scheduler's real setting, set to 0 here), the killed worker's image is reported."""
    import threading

    out = tmp_path / "rootlets"
    killed: dict = {}
    thread = threading.Thread(target=_kill_first_worker_seen, args=(out, killed))
    allowed = cluster.scheduler.allowed_failures
    cluster.scheduler.allowed_failures = 0
    try:
        thread.start()
        summary = run(bids, out, dask=cluster.scheduler_address, include="sub-0[1-3]/", **COMMON)
        thread.join()
    finally:
        cluster.scheduler.allowed_failures = allowed
    results = {r["name"]: r for r in summary.results}
    assert killed and results[killed["name"]]["status"] == "failed"
    assert "worker process died" in results[killed["name"]]["error"] and killed["name"] in summary.text()
    for name, result in results.items():  # a reported image left nothing in its folder; the others are complete
        unit_files = list(out.rglob(f"{name}_*"))
        assert bool(unit_files) == (result["status"] == "done"), (name, result, unit_files)
    again = run(bids, out, dask=cluster.scheduler_address, include="sub-0[1-3]/", **COMMON)
    assert {r["name"] for r in again.by_status("done")} == {n for n, r in results.items() if r["status"] == "failed"}


def test_killed_driver_leaves_nothing_that_looks_finished(bids, tmp_path):
    """SIGKILL a sequential `rootlets batch` while it writes: every image is either complete with its record or redone."""
    out = tmp_path / "rootlets"
    cmd = [sys.executable, "-c", "import sys; from rootlets_task.cli.rootlets import main; sys.exit(main(sys.argv[1:]))",
           "batch", str(bids), "-o", str(out), "-release", "phantom", "-threads", "1", "-levels", "-v", "0",
           "-include", "sub-0[1-3]/"]
    log = tmp_path / "driver.log"
    with open(log, "w") as stderr:
        proc = subprocess.Popen(cmd, stdout=stderr, stderr=stderr)
    deadline = time.time() + 240
    while time.time() < deadline:  # kill while the second image is in its temporary folder (the first one is done)
        assert proc.poll() is None, f"the driver ended before it was killed:\n{log.read_text()[-2000:]}"
        if list(out.rglob("*_batch.json")) and (out / batch.TMP).is_dir() and any((out / batch.TMP).iterdir()):
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    units = bids_module.plan_units(bids, out, find(bids, include="sub-0[1-3]/"), with_labels=True)
    settings = make_settings(model_folder=str(install.model_folder("phantom")[0]),
                              model={k: install.model_folder("phantom")[1].get(k) for k in ("tag", "sha256", "url")},
                              levels=True, threads=1)
    done = [u for u in units if batch.is_done(u, settings)]
    assert 1 <= len(done) < len(units)
    finished = {u.name for u in done}
    for unit in units:  # an image without its record is not finished, whatever files it may have moved in already
        assert (Path(unit.out_dir) / f"{unit.name}_batch.json").is_file() == (unit.name in finished)
    for path in out.rglob("*.nii.gz"):  # and no file outside the temporary folder is truncated
        if batch.TMP not in path.parts:
            assert nib.load(path).get_fdata().size, path

    summary = run(bids, out, include="sub-0[1-3]/", **COMMON)
    assert {r["name"] for r in summary.by_status("skipped")} == finished
    assert _done_names(summary) | finished == {u.name for u in units}
    assert not (out / batch.TMP).exists(), sorted(str(p.relative_to(out)) for p in (out / batch.TMP).rglob("*"))


def test_a_unit_this_run_finished_is_read_back_not_redone(sequential, bids, tmp_path):
    """Dask runs a task again when the worker holding its result dies before the driver fetched it (seen on SLURM:
    "lose already computed task(s), which will be recomputed elsewhere"). process_unit then finds the unit finished by
    the same batch run and reads its result back from its record and files; another run (e.g. -overwrite) redoes it."""
    from dataclasses import replace

    from rootlets_task.batch.units import process_unit

    source, summary = sequential
    out = tmp_path / "rootlets"
    shutil.copytree(source, out)
    (unit,) = bids_module.plan_units(bids, out, find(bids, include="sub-02/"), with_labels=True)
    record_path = Path(unit.out_dir) / f"{unit.name}_batch.json"
    step = json.loads(record_path.read_text())["steps"]["unit"]
    settings = make_settings(model_folder=str(install.model_folder("phantom")[0]),
                             model={k: install.model_folder("phantom")[1].get(k) for k in ("tag", "sha256", "url")},
                             levels=True, threads=1)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    result = process_unit(unit, replace(settings, run=step["run"]), str(out))
    original = {r["name"]: r for r in summary.results}[unit.name]
    assert result["status"] == "done" and result["recovered"] and step["run"]
    assert {k: result[k] for k in ("host", "pid", "slurm_job", "numbering", "confidence")} == \
        {k: original[k] for k in ("host", "pid", "slurm_job", "numbering", "confidence")}
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before, "nothing rewritten, the log neither"
    again = process_unit(unit, replace(settings, run="another run"), str(out))
    assert again["status"] == "done" and "recovered" not in again
    assert json.loads(record_path.read_text())["steps"]["unit"]["run"] == "another run"


def test_second_run_skips_and_reruns_what_changed(sequential, bids, tmp_path):
    out = tmp_path / "rootlets"
    shutil.copytree(sequential[0], out)
    again = run(bids, out, **COMMON)
    assert {r["name"] for r in again.by_status("skipped")} == NAMES
    assert [r["rel"] for r in again.by_status("failed")] == [BROKEN], "a failed image is tried again"

    # a changed input reruns that image only; a deleted output reruns its image
    changed = tmp_path / "bids"
    shutil.copytree(bids, changed)
    image = changed / "sub-02" / "anat" / "sub-02_T2w.nii.gz"
    img = nib.load(image)
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj)[::-1].copy(), img.affine, img.header), image)
    (out / "sub-04" / "anat" / "sub-04_T2w_levels.csv").unlink()
    third = run(changed, out, **COMMON)
    assert _done_names(third) == {"sub-02_T2w", "sub-04_T2w"}
    assert (out / "sub-04" / "anat" / "sub-04_T2w_levels.csv").is_file()

    forced = run(changed, out, overwrite=True, include="sub-01/", **COMMON)
    assert _done_names(forced) == {"sub-01_T2w"}

    # changed settings (method, release digest, -levels): not done any more
    units = [u for u in bids_module.plan_units(changed, out, find(changed), with_labels=True) if u.name in NAMES]
    folder, record = install.model_folder("phantom")
    base = {"model_folder": str(folder), "model": {k: record.get(k) for k in ("tag", "sha256", "url")}, "threads": 1}
    assert all(batch.is_done(u, make_settings(**base, levels=True)) for u in units)
    for other in (make_settings(**base, levels=True, method="reference"), make_settings(**base, levels=False),
                  make_settings(**{**base, "model": {**base["model"], "sha256": "0" * 64}}, levels=True),
                  make_settings(**base, levels=True, qc=str(tmp_path / "qc")),
                  make_settings(**base, levels=True, crop_to_cord=True)):
        assert not any(batch.is_done(u, other) for u in units), other


def test_crop_to_cord_reaches_the_segmentation(bids, tmp_path):
    out = tmp_path / "cropped"
    summary = run(bids, out, include="sub-01/", crop_to_cord=True, **COMMON)
    assert _done_names(summary) == {"sub-01_T2w"}
    sidecar = json.loads((out / "sub-01" / "anat" / "sub-01_T2w_rootlets.json").read_text())
    assert sidecar["GeneratedBy"][0]["Settings"]["CropToCord"]["MarginMM"] == 10.0


def test_stop_at_first_error_and_selection(bids, tmp_path, capsys):
    out = tmp_path / "rootlets"
    code = cli.main(["batch", str(bids), "-o", str(out), "-release", "phantom", "-threads", "1", "-v", "0",
                     "-include", "sub-0[56]", "-continue-on-error", "0"])
    assert code == 1
    text = capsys.readouterr()
    assert "not done" in text.err and BROKEN in text.out
    statuses = {r["name"]: r["status"] for r in json.loads((out / "logs" / "batch_summary.json").read_text())["results"]}
    assert statuses == {"sub-05_T2w": "done", "sub-06_T2w": "failed"}  # sorted order: sub-05 first

    out2 = tmp_path / "stop"
    (bids_first := tmp_path / "bids_broken_first").mkdir()
    shutil.copytree(bids / "sub-05", bids_first / "sub-05")
    shutil.copytree(bids / "sub-06", bids_first / "sub-00")
    (bids_first / "sub-00" / "anat" / "sub-06_T2w.nii.gz").rename(bids_first / "sub-00" / "anat" / "sub-00_T2w.nii.gz")
    summary = run(bids_first, out2, continue_on_error=False, release="phantom", threads=1, progress=False)
    assert [(r["name"], r["status"]) for r in summary.results] == [("sub-00_T2w", "failed"), ("sub-05_T2w", "not run")]

    found = [p.relative_to(bids).as_posix() for p, _, _ in find(bids, ("T2w",), exclude="ses-02|sub-06")]
    assert "sub-03/ses-01/anat/sub-03_ses-01_T2w.nii.gz" in found and len(found) == 5
    assert [p.name for p, _, _ in find(bids, ("T1w",))] == ["sub-01_T1w.nii.gz"]


def test_contrasts_mp2rage_inversions(tmp_path):
    for name in ("sub-01_inv-1_MP2RAGE.nii.gz", "sub-01_inv-2_MP2RAGE.nii.gz", "sub-01_UNIT1.nii.gz", "sub-01_T2w.nii.gz"):
        (tmp_path / "sub-01" / "anat").mkdir(parents=True, exist_ok=True)
        (tmp_path / "sub-01" / "anat" / name).write_bytes(b"")
    names = {c: [p.name for p, _, _ in find(tmp_path, (c,))] for c in ("inv-2", "MP2RAGE", "UNIT1")}
    assert names == {"inv-2": ["sub-01_inv-2_MP2RAGE.nii.gz"],
                     "MP2RAGE": ["sub-01_inv-1_MP2RAGE.nii.gz", "sub-01_inv-2_MP2RAGE.nii.gz"],
                     "UNIT1": ["sub-01_UNIT1.nii.gz"]}
    assert len(find(tmp_path, ("UNIT1", "inv-1"))) == 2


def test_bad_calls_write_nothing(bids, tmp_path, phantom_store, monkeypatch, capsys):
    out = tmp_path / "rootlets"
    with pytest.raises(RootletsError, match="no sub-"):
        run(bids, out, contrasts=("FLAIR",), release="phantom")
    with pytest.raises(RootletsError, match="regular expression"):
        run(bids, out, include="sub-(", release="phantom")
    with pytest.raises(RootletsError, match="cannot install model release r20250318: .* cannot connect"):
        run(bids, out)  # first use installs the default release, once, before any work: here the network is loopback only
    with monkeypatch.context() as mp, pytest.raises(RootletsError, match=r"rootlets_task\[slurm\]"):
        mp.setitem(sys.modules, "dask_jobqueue", None)  # MOCK: the optional extra made absent (import fails)
        run(bids, out, slurm={}, release="phantom", progress=False)
    with pytest.raises(RootletsError, match="manual labels folder, whose files must be kept"):
        run(bids, bids / "derivatives" / "labels", release="phantom", levels=True)
    with pytest.raises(RootletsError, match="is the BIDS root"):
        run(bids, bids, release="phantom")
    with pytest.raises(SystemExit):
        cli.main(["batch", str(bids), "-o", str(out), "-release", "phantom", "-crop-to-cord"])
    assert "-crop-to-cord needs the cord, which only -levels computes" in capsys.readouterr().err
    with pytest.raises(RootletsError, match="BIDS folder .* not found"):
        run(tmp_path / "nowhere", out, release="phantom")
    with pytest.raises(RootletsError, match="KEY=VALUE"):
        engines.parse_slurm(["cores"])
    assert engines.parse_slurm(["cores=4", "memory=16GB", "job_extra_directives=--gres=gpu:1"]) == {
        "cores": 4, "memory": "16GB", "job_extra_directives": ["--gres=gpu:1"]}
    assert not any(p for p in out.rglob("*.nii.gz")) if out.exists() else True


def test_slurm_job_script():
    """The SLURM worker job dask-jobqueue would submit (sbatch itself cannot run here): our defaults and the user's
    options, one task thread per worker, the scheduler kept on loopback for the test."""
    pytest.importorskip("dask_jobqueue")
    options = engines.parse_slurm(["cores=4", "memory=16GB", "walltime=04:00:00", "account=def-lab",
                                 "job_extra_directives=--exclusive"])
    with engines.slurm_cluster({**options, "scheduler_options": {"host": "127.0.0.1"}}) as cluster:
        script = cluster.job_script()
    assert "--cpus-per-task=4" in script and "#SBATCH -A def-lab" in script and "#SBATCH --exclusive" in script
    assert "#SBATCH -t 04:00:00" in script and "distributed.cli.dask_worker tcp://127.0.0.1:" in script
    assert script.rstrip().endswith("--nthreads 1"), script
