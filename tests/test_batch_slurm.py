"""`rootlets batch` on the real single-node SLURM of tests/support/slurm.py (tests marked ``slurm``): ``-slurm``
(Dask workers started as sbatch jobs by dask-jobqueue) and ``-slurm-array`` (one job array, no scheduler) give the
sequential run's outputs, byte for byte, on the batch tests' phantom BIDS dataset (tests/support/batch_data.py: 6
images, one broken file; the session fixtures ``bids`` and ``sequential`` of conftest.py); faults on
the scheduler: ``scancel`` of a Dask worker job and of an array task, an array task past its time limit, the node
going down. The last tests need no SLURM: what an array task runs, -collect, bad calls, the job script.

Everything is real (sbatch jobs, nnU-Net inference with the phantom release, the chain) except one thing that cannot
be made to happen on time here: in the time-limit test the task is stopped (SIGSTOP) in the middle of an image, as a
hung file system would, so that SLURM's time limit (1 minute at least, enforced every 30 s) falls inside that image.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest
from support.batch_data import BROKEN, COMMON, NAMES, run
from support.batch_data import assert_same as _assert_same
from support.batch_data import done_names as _done_names
from support.batch_data import outputs as _outputs

from rootlets_task.batch import bids as bids_module
from rootlets_task.batch import run as batch
from rootlets_task.batch import slurm_array
from rootlets_task.cli import rootlets as cli
from rootlets_task.core.errors import RootletsError
from rootlets_task.core.files import sha256_file
from rootlets_task.core.options import ChainOptions, ModelOptions
from rootlets_task.models import install

# two SLURM jobs of one core each fit the 2-core CI machine; the scheduler stays on loopback (tests/conftest.py)
CLUSTER = {"cores": 1, "processes": 1, "memory": "4GB", "walltime": "00:15:00", "scheduler_options": {"host": "127.0.0.1"}}


@pytest.fixture(autouse=True)
def _store(phantom_home):
    """Every test here (and the workers it starts) uses the session's phantom store."""


@pytest.fixture
def on_slurm(slurm, monkeypatch):
    """This process submits to the test cluster (sbatch, squeue and dask-jobqueue read SLURM_CONF)."""
    monkeypatch.setenv("SLURM_CONF", str(slurm.conf))
    return slurm


def _cli(bids_root: Path, out: Path, *args: str) -> list[str]:
    return ["batch", str(bids_root), "-o", str(out), "-release", "phantom", "-threads", "1", "-levels", "-v", "0", *args]


def _label_digests(out: Path, names: set[str]) -> dict[str, str]:
    return {p.relative_to(out).as_posix(): sha256_file(p) for p in sorted(out.rglob("*.nii.gz"))
            if batch.TMP not in p.parts and any(p.name.startswith(f"{n}_") for n in names)}


def _assert_same_images(ref: Path, out: Path, names: set[str]) -> None:
    """The images ``names`` of ``out`` equal those of the reference run: label files byte for byte, tables equal."""
    assert _label_digests(out, names) == _label_digests(ref, names)
    left, right = _outputs(ref), _outputs(out)
    for rel, value in left.items():
        if isinstance(value, pd.DataFrame) and any(f"/{n}_" in rel for n in names):
            pd.testing.assert_frame_equal(value, right[rel], obj=rel)
    ref_levels, out_levels = pd.read_csv(ref / "levels.csv"), pd.read_csv(out / "levels.csv")
    pd.testing.assert_frame_equal(ref_levels[ref_levels["image"].isin(names)].reset_index(drop=True),
                                  out_levels[out_levels["image"].isin(names)].reset_index(drop=True),
                                  check_dtype=False)  # a subset without sessions reads its empty column as float


def _assert_nothing_half_written(out: Path, done: set[str], names: set[str]) -> None:
    """An image not done has no file in the derivative (its record included); a done one is complete."""
    for name in names:
        files = [p for p in out.rglob(f"{name}_*") if batch.TMP not in p.parts and "logs" not in p.parts]
        if name in done:
            assert any(p.name == f"{name}{batch.RECORD_SUFFIX}" for p in files), name
        else:
            assert not files, (name, files)


def _model_loads(results: list[dict]) -> dict[tuple, int]:
    """Model loads per worker process, read from the image logs ("loaded in this process" vs "reused")."""
    loads: dict[tuple, int] = {}
    for result in results:
        text = Path(result["log"]).read_text()
        assert "loaded in this process" in text or "reused: already loaded in this process" in text, result["log"]
        key = (result["slurm_job"], result["host"], result["pid"])
        loads[key] = loads.get(key, 0) + ("reused: already" not in text)
    return loads


def _array(out: Path) -> list[tuple[Path, dict, dict]]:
    """(plan folder, plan, job) of every array submitted for ``out``, oldest first."""
    folders = sorted((out / batch.LOGS / slurm_array.ARRAY_DIR).glob("*/"))
    return [(f, json.loads((f / slurm_array.PLAN).read_text()), json.loads((f / slurm_array.JOB).read_text()))
            for f in folders]


def _task_results(folder: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (folder / slurm_array.RESULTS).glob("*.json")}


def _in_progress(out: Path) -> list[tuple[str, int]]:
    """(image, pid) of every image being written now: its temporary folder ``.tmp/<stem>.<host>-<pid>-<random>``."""
    tmp = out / batch.TMP
    found = [p.name.split(".", 1) for p in tmp.glob("*.*-*-*")] if tmp.is_dir() else []
    return [(stem, int(tag.rsplit("-", 2)[1])) for stem, tag in found]


def _slurm_job_of(pid: int) -> str | None:
    """The SLURM job a process runs in (its SLURM_JOB_ID), None once it has gone."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    return next((v.split(b"=", 1)[1].decode() for v in environ if v.startswith(b"SLURM_JOB_ID=")), None)


def _busy_after_one_done(slurm, out: Path, timeout: float = 180) -> tuple[str, int, str]:
    """Wait until one image of ``out`` is finished and a SLURM process writes the next; (image, pid, job id). A
    finished image keeps its temporary folder for a moment after its record is written: it is not the one in progress."""

    def seen():
        done = set(_records(out))
        if not done:
            return None
        return next(((name, pid, job) for name, pid in _in_progress(out)
                     if name not in done and (job := _slurm_job_of(pid))), None)

    return slurm.wait_until(seen, timeout, f"an image in progress in {out}", every=0.05)


def _leftover(out: Path, name: str) -> list[Path]:
    """The temporary folders of image ``name`` in ``out`` (an interrupted attempt leaves its own behind)."""
    return list((out / batch.TMP).glob(f"{name}.*")) if (out / batch.TMP).is_dir() else []


def _records(out: Path) -> dict[str, str]:
    """The finish time of every image record in ``out`` (a redone image gets a new one)."""
    return {p.name[: -len(batch.RECORD_SUFFIX)]: json.loads(p.read_text())["steps"][batch.UNIT_STEP]["finished"]
            for p in out.rglob(f"*{batch.RECORD_SUFFIX}")}


@pytest.mark.slurm
def test_slurm_dask_identical_to_sequential_with_a_worker_job_cancelled(sequential, bids, on_slurm, tmp_path):
    """-slurm with 2 jobs: real sbatch jobs run the Dask workers, one model load per worker; one worker job is
    cancelled (scancel) in the middle of its second image: Dask gives that image to the other job's worker, which
    finds the dead attempt's temporary folder and redoes it. The outputs are the sequential run's, byte for byte."""
    out, logs, cancelled = tmp_path / "rootlets", tmp_path / "worker_logs", {}

    def second_image_of_a_job():  # a job on its second image has finished one: both jobs then hold results
        for name, pid in _in_progress(out):
            if job := _slurm_job_of(pid):
                seen.setdefault(job, set()).add(name)
                if len(seen[job]) == 2:
                    return name, pid, job
        return None

    def cancel() -> None:
        name, pid, job = on_slurm.wait_until(second_image_of_a_job, 300, "a worker job on its second image", 0.05)
        on_slurm.scancel(job)
        cancelled.update(name=name, pid=pid, job=job)

    seen: dict[str, set[str]] = {}
    thread = threading.Thread(target=cancel)
    thread.start()
    summary = run(bids, out, jobs=2, slurm={**CLUSTER, "log_directory": str(logs)}, **COMMON)
    thread.join()
    assert cancelled, "no worker job was seen on its second image"
    assert _done_names(summary) == NAMES
    assert [(r["rel"], "sub-06_T2w.nii.gz" in r["error"]) for r in summary.failed] == [(BROKEN, True)]
    result = {r["name"]: r for r in summary.results}[cancelled["name"]]
    assert result["status"] == "done" and result["retried"] and result["slurm_job"] != cancelled["job"], result
    assert "1 retried" in summary.text()
    ran = summary.by_status("done") + summary.by_status("failed")
    jobs = {r["slurm_job"] for r in ran}
    assert len(jobs) == 2 and None not in jobs and cancelled["job"] in jobs, "both SLURM worker jobs took images"
    assert {p.name for p in logs.glob("*.err")} == {f"dask-worker-{j}.err" for j in jobs}
    loads = _model_loads(ran)
    assert len(loads) == 2 and all(n == 1 for n in loads.values()), loads
    _assert_same(sequential[0], out)
    assert _label_digests(out, NAMES) == _label_digests(sequential[0], NAMES)
    assert on_slurm.wait_final(cancelled["job"], 60) == {cancelled["job"]: "CANCELLED"}
    # the other job ends with the run (dask-jobqueue cancels it)
    on_slurm.wait_until(lambda: not on_slurm.run("squeue", "-h").stdout.strip(), 60, "the worker jobs to end")


@pytest.mark.slurm
def test_slurm_array_identical_to_sequential(sequential, bids, on_slurm, tmp_path, capsys):
    """-slurm-array: one sbatch --array of 2 tasks returns at once; -collect merges the tables and reports the broken
    image; the outputs are the sequential run's; the same command again resubmits exactly the missing image."""
    out = tmp_path / "rootlets"
    command = _cli(bids, out, "-jobs", "2", "-slurm-array", "--time=00:10:00")
    assert cli.main(command) == 0
    text = capsys.readouterr().out
    ((folder, plan, job),) = _array(out)
    assert "7 submitted" in text and f"SLURM array job {job['job']}" in text and plan["tasks"] == 2
    states = on_slurm.wait_final(job["job"], 240)
    # task 0 holds every other image from the first, the broken sub-06 (7th) among them: its exit code says so
    assert states == {f"{job['job']}_0": "FAILED", f"{job['job']}_1": "COMPLETED"}

    assert cli.main([*_cli(bids, out), "-collect"]) == 1
    text = capsys.readouterr().out
    assert "6 skipped, 1 failed" in text and f"failed: {BROKEN}: " in text and "sub-06_T2w.nii.gz" in text
    _assert_same(sequential[0], out)
    assert _label_digests(out, NAMES) == _label_digests(sequential[0], NAMES)
    results = list(_task_results(folder).values())
    assert len({r["slurm_job"] for r in results}) == 2, "every task ran in its own SLURM job"
    assert all(n == 1 for n in _model_loads(results).values()) and len(_model_loads(results)) == 2

    assert cli.main(command) == 0  # the same command again: only the missing image goes into a new array
    text = capsys.readouterr().out
    assert "6 skipped, 0 failed, 1 submitted" in text
    (_, again, job2) = _array(out)[-1]
    assert [u["name"] for u in again["units"]] == ["sub-06_T2w"] and again["tasks"] == 1
    on_slurm.scancel(job2["job"])  # it would fail again, as test_batch shows for every engine
    on_slurm.wait_final(job2["job"], 60)


# ------------------------------------------------------------------------------------------------ array faults


@pytest.fixture(scope="module")
def stalled(bids, phantom_store, slurm, _backend_cache, tmp_path_factory):
    """An array of one task with a 1-minute time limit (``--time=1``) over 3 images, stopped (SIGSTOP) once it has
    finished one image and is writing the next: SLURM ends it at its limit in the middle of that image. Submitted
    early so that the time limit runs out while the other fault tests use the node's other core."""
    out = tmp_path_factory.mktemp("time_limit") / "rootlets"
    with pytest.MonkeyPatch.context() as mp:
        env = {"SLURM_CONF": slurm.conf, "ROOTLETS_TASK_HOME": phantom_store, "ROOTLETS_TASK_CACHE": _backend_cache}
        for key, value in env.items():
            mp.setenv(key, str(value))
        command = _cli(bids, out, "-include", "sub-0[12]/|ses-01", "-jobs", "1", "-slurm-array", "--time=1")
        assert cli.main(command) == 0
    job = _array(out)[0][2]["job"]
    name, pid, _ = _busy_after_one_done(slurm, out)
    os.kill(pid, signal.SIGSTOP)
    return {"out": out, "job": job, "name": name, "command": command, "done": _records(out)}


@pytest.mark.slurm
def test_array_task_scancel(stalled, sequential, bids, on_slurm, tmp_path, capsys):
    """scancel of an array task in the middle of an image: -collect reports the images it did not finish as not
    run (cancelled); none of them has a file in the derivative; the same command again finishes exactly those."""
    out = tmp_path / "rootlets"
    subset = {"sub-03_ses-02_T2w", "sub-04_T2w", "sub-05_T2w"}
    command = _cli(bids, out, "-include", "ses-02|sub-0[45]/", "-jobs", "1", "-slurm-array", "--time=00:10:00")
    assert cli.main(command) == 0
    job = _array(out)[0][2]["job"]
    name, _, _ = _busy_after_one_done(on_slurm, out)
    on_slurm.scancel(f"{job}_0")
    assert on_slurm.wait_final(job, 60) == {f"{job}_0": "CANCELLED"}
    done = set(_records(out))
    assert name not in done and 1 <= len(done) < 3
    _assert_nothing_half_written(out, done, subset)
    assert _leftover(out, name), "the cancelled attempt's temporary folder is left (outside the derivative)"

    capsys.readouterr()
    assert cli.main([*_cli(bids, out, "-include", "ses-02|sub-0[45]/"), "-collect"]) == 1
    text = capsys.readouterr().out
    # the next run removes it (same host, its process gone); on a cluster the login node leaves a compute node's
    # folder to the task that redoes the image, which then reports ``retried`` (as in the node-down test)
    assert not _leftover(out, name)
    for missing in subset - done:
        rel = next(r for r in (u.rel for u in _plan_units(out)) if missing in r)
        assert f"not run: {rel}: task 0 of array job {job} was cancelled" in text, text
    before = _records(out)
    assert cli.main(command) == 0  # the same command: a new array of exactly the missing images
    folder, plan, job2 = _array(out)[-1]
    assert {u["name"] for u in plan["units"]} == subset - done
    assert on_slurm.wait_final(job2["job"], 180) == {f"{job2['job']}_0": "COMPLETED"}
    assert _task_results(folder)[name]["status"] == "done"
    assert {n: t for n, t in _records(out).items() if n in done} == before, "finished images are not redone"
    assert cli.main([*_cli(bids, out, "-include", "ses-02|sub-0[45]/"), "-collect"]) == 0
    _assert_same_images(sequential[0], out, subset)


def _plan_units(out: Path) -> list[bids_module.Unit]:
    return [bids_module.Unit(**u) for _, plan, _ in _array(out) for u in plan["units"]]


@pytest.mark.slurm
def test_array_task_time_limit(stalled, sequential, bids, on_slurm, capsys):
    """The stopped task of ``stalled`` reaches its 1-minute limit: SLURM ends it (TIMEOUT) mid-image; -collect says
    so; nothing of that image is in the derivative; the same command (longer limit) finishes exactly the rest."""
    out, job, subset = stalled["out"], stalled["job"], {"sub-01_T2w", "sub-02_T2w", "sub-03_ses-01_T2w"}
    assert on_slurm.wait_final(job, 150) == {f"{job}_0": "TIMEOUT"}
    done = set(_records(out))
    assert done == set(stalled["done"]) and stalled["name"] not in done
    _assert_nothing_half_written(out, done, subset)
    assert _leftover(out, stalled["name"]), "the timed-out attempt's temporary folder is left (outside the derivative)"
    capsys.readouterr()
    assert cli.main([*stalled["command"][: stalled["command"].index("-slurm-array")], "-collect"]) == 1
    text = capsys.readouterr().out
    assert f"task 0 of array job {job} was cancelled due to time limit" in text, text
    assert not _leftover(out, stalled["name"]), "removed by the next run (same host, its process gone)"
    # the same command with a longer limit, as one would after a time-out (sbatch options are not part of the record)
    assert cli.main([*stalled["command"][:-1], "--time=00:10:00"]) == 0
    folder, plan, job2 = _array(out)[-1]
    assert {u["name"] for u in plan["units"]} == subset - done
    assert on_slurm.wait_final(job2["job"], 180) == {f"{job2['job']}_0": "COMPLETED"}
    assert _task_results(folder)[stalled["name"]]["status"] == "done"
    assert {n: t for n, t in _records(out).items() if n in done} == stalled["done"]
    assert cli.main([*stalled["command"][: stalled["command"].index("-slurm-array")], "-collect"]) == 0
    _assert_same_images(sequential[0], out, subset)


@pytest.mark.slurm
def test_node_down_requeues_the_array_task(sequential, bids, on_slurm, tmp_path, capsys):
    """The node goes down (scontrol update state=down) while an array task writes an image: SLURM requeues the task;
    when the node is back, the restarted task skips the images it had finished and redoes the interrupted one."""
    out = tmp_path / "rootlets"
    subset = {"sub-01_T2w", "sub-02_T2w", "sub-04_T2w"}
    command = _cli(bids, out, "-include", "sub-0[124]/", "-jobs", "1", "-slurm-array", "--time=00:10:00")
    assert cli.main(command) == 0
    folder, _, job = _array(out)[0]
    task = f"{job['job']}_0"
    name, _, _ = _busy_after_one_done(on_slurm, out)
    before = _records(out)
    on_slurm.node_down("fault test: node failure")
    try:
        requeued = on_slurm.wait_until(lambda: (f := on_slurm.jobs(job["job"]).get(task)) and int(f["Restarts"]) >= 1
                                       and f["JobState"] == "PENDING" and f, 60, "the task to be requeued")
        assert requeued["Requeue"] == "1"
    finally:
        on_slurm.node_resume()
    assert on_slurm.wait_final(job["job"], 240) == {task: "COMPLETED"}
    results = _task_results(folder)
    assert results[name]["status"] == "done" and results[name]["retried"], results[name]
    assert {n: t for n, t in _records(out).items() if n in before} == before, "finished images are not redone"
    output = next(folder.glob("task-*.out")).read_text()
    assert "done by an earlier start of this task" in output and "NODE FAILURE" in output
    assert cli.main([*_cli(bids, out, "-include", "sub-0[124]/"), "-collect"]) == 0
    _assert_same_images(sequential[0], out, subset)


# ------------------------------------------------------------------------------------------------ without SLURM


def test_array_task_resumes_and_collect_reports(bids, tmp_path, monkeypatch, capsys):
    """What every array task runs (``python -m rootlets_task.batch.slurm_array PLAN`` with SLURM_ARRAY_TASK_ID), here in this
    process: it does its slice and records each result; started again (as SLURM does after a requeue) it skips what it
    finished and retries the rest. -collect, which needs no SLURM, reports the failure from the error log."""
    out = tmp_path / "rootlets"
    folder, record = install.model_folder("phantom")
    settings = batch.Settings(model_folder=str(folder), model={k: record.get(k) for k in ("tag", "sha256", "url")},
                              options=ModelOptions(threads=1), chain=ChainOptions())
    found = bids_module.find_images(bids, include="sub-0[16]/").images
    units = bids_module.plan_units(bids, out, found, with_labels=True)
    plan = slurm_array.write_plan(units, settings, out, tasks=1)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "0")
    assert slurm_array.main([str(plan / slurm_array.PLAN)]) == 1  # one image of its slice failed
    results = _task_results(plan)
    assert {n: r["status"] for n, r in results.items()} == {"sub-01_T2w": "done", "sub-06_T2w": "failed"}
    finished = _records(out)
    assert slurm_array.main([str(plan / slurm_array.PLAN)]) == 1  # started again: sub-01 is not redone
    task_output = capsys.readouterr().err  # the task logs to stderr, which sbatch writes into its output file
    assert _records(out) == finished and "sub-01_T2w.nii.gz: done by an earlier start of this task" in task_output

    assert cli.main([*_cli(bids, out, "-include", "sub-0[16]/"), "-collect"]) == 1
    text = capsys.readouterr().out
    assert "1 skipped, 1 failed" in text and f"failed: {BROKEN}: " in text and "err.sub-06_T2w.log" in text


def test_array_bad_calls_write_nothing(bids, tmp_path, monkeypatch, capsys):
    out = tmp_path / "rootlets"
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no sbatch here
    assert cli.main([*_cli(bids, out), "-slurm-array", "--time=1"]) == 1
    err = capsys.readouterr().err
    assert "sbatch not found" in err and len(err.strip().splitlines()) == 1 and not out.exists()
    with pytest.raises(RootletsError, match="-slurm and -slurm-array exclude each other"):
        run(bids, out, slurm={}, slurm_array=(), release="phantom")
    with pytest.raises(RootletsError, match="-dask and -collect exclude each other"):
        run(bids, out, dask="tcp://127.0.0.1:1", collect=True, release="phantom")
    assert not out.exists()


def test_array_job_script(tmp_path):
    """Our defaults are #SBATCH lines (the user's sbatch options, given on the command line, win); the task command is
    this interpreter with unbuffered output; the output is appended to across requeues."""
    script = slurm_array.job_script(tmp_path, 4)
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash" and "#SBATCH --array=0-3" in lines and "#SBATCH --open-mode=append" in lines
    assert f"#SBATCH --output={tmp_path}/task-%A_%a.out" in lines
    assert lines[-1] == f"exec {sys.executable} -u -m rootlets_task.batch.slurm_array {tmp_path / slurm_array.PLAN}"


def test_a_plan_gives_back_every_setting_levers_included(tmp_path):
    """A task rebuilds the driver's settings from the plan's JSON: option objects and the speed levers included."""
    from rootlets_task.batch.bids import Unit
    from rootlets_task.batch.levers import BatchLevers

    settings = batch.Settings(model_folder=str(tmp_path), model={"tag": "phantom", "sha256": "0" * 64, "url": None},
                              options=ModelOptions(release="phantom", threads=1, precision="int8"),
                              chain=ChainOptions(method="reference", renumber="suggested"), qc=str(tmp_path / "qc"),
                              levers=BatchLevers(levers=("crop", "int8"), checked=("sub-01/anat/sub-01_T2w.nii.gz",),
                                                 calibration=("a.nii.gz",), calibration_sha256=("1" * 64,),
                                                 int8_options={"preset": "mixed"}, why="passed the check"),
                              bids_strict=True)
    unit = Unit(name="sub-01_T2w", rel="sub-01/anat/sub-01_T2w.nii.gz", image=str(tmp_path / "sub-01_T2w.nii.gz"),
                subject="sub-01", session=None, suffix="T2w", out_dir=str(tmp_path / "out" / "sub-01" / "anat"))
    folder = slurm_array.write_plan([unit], settings, tmp_path / "out", tasks=1)
    back = slurm_array._settings(json.loads((folder / slurm_array.PLAN).read_text())["settings"])
    assert back == settings
    assert back.key("sub-02/anat/sub-02_T2w.nii.gz") == settings.key("sub-02/anat/sub-02_T2w.nii.gz")
