"""SLURM job arrays without a long-lived scheduler: ``rootlets batch ... -slurm-array [sbatch options]``.

Submitting writes a *plan* (``<out>/logs/array/<id>/plan.json``: the settings and the images still to do) and one
``sbatch --array=0-(N-1)`` job, then returns. Array task ``i`` runs ``python -m rootlets_task.batch.slurm_array PLAN`` and
takes every N-th image from the ``i``-th on, each through :func:`rootlets_task.batch.run.process_unit`: the same atomic
per-image folders and records as every other engine, so a killed task (``scancel``, its time limit, a failed node)
leaves nothing that looks finished. Each task writes one result file per image next to the plan. A task that
SLURM starts again (requeue after a node failure) skips the images it had finished and redoes the interrupted one.

Running the same command again, once the array has ended, merges the dataset tables of what is done (with
``-levels``), reports what is missing and why (failed: the error; not run: how its task ended, read from the task's
output file), and submits a new array for exactly those images. ``-collect`` does the same without submitting.
Images of an array job still in the queue are reported as *pending*, never submitted twice. The compute nodes must
see the same paths as the login node (a shared file system), as for ``-slurm``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from rootlets_task._version import __version__
from rootlets_task.batch import units as batch
from rootlets_task.batch.bids import Unit
from rootlets_task.batch.levers import BatchLevers
from rootlets_task.core import logs
from rootlets_task.core.errors import RootletsError
from rootlets_task.core.files import load_json, now, printable, read_json, read_tail, write_json, write_text
from rootlets_task.core.options import ChainOptions, ModelOptions

log = logging.getLogger("rootlets_task.batch.slurm_array")  # by name: array tasks run this module as __main__

ARRAY_DIR = "array"  # under <out>/logs
PLAN, JOB, RESULTS = "plan.json", "job.json", "results"
# what slurmstepd writes into a task's output when SLURM ends it, e.g. "*** JOB 12 ON node CANCELLED AT 2026-...
# DUE TO TIME LIMIT ***"
_ENDED = re.compile(r"\*\*\* JOB \d+ ON \S+ CANCELLED AT \S+(?: DUE TO ([A-Z ]+?))? \*\*\*")


def check_sbatch() -> None:
    """``sbatch`` must be on PATH to submit an array (checked before anything is written)."""
    if not shutil.which("sbatch"):
        raise RootletsError("-slurm-array: sbatch not found; run on a SLURM login node (or use -jobs N / -dask)")


# ------------------------------------------------------------------------------------------------ submit


def _settings(data: dict) -> batch.Settings:
    """The plan's settings back as :class:`rootlets_task.batch.run.Settings` (its option objects included)."""
    chain = data.get("chain")
    return batch.Settings(**{**data, "options": ModelOptions(**data["options"]),
                             "chain": ChainOptions(**chain) if chain else None,
                             "levers": BatchLevers.from_dict(data.get("levers") or {})})


def plan_problem(plan, job=None) -> str | None:
    """What makes a plan (and its job record) unusable, or None: both are ours, but lie on a shared file system."""
    if not isinstance(plan, dict):
        return "not a readable array plan"
    tasks, units = plan.get("tasks"), plan.get("units")
    if not (isinstance(units, list) and all(isinstance(u, dict) and isinstance(u.get("name"), str) for u in units)):
        return "its units are malformed"
    if not (isinstance(tasks, int) and not isinstance(tasks, bool) and 1 <= tasks <= max(1, len(units))):
        return f"tasks {str(tasks)[:20]} is not a number from 1 to the number of units"
    if job is not None and not (isinstance(job, dict) and isinstance(job.get("job"), str)
                                and re.fullmatch(r"\d+", job["job"])):
        return "its job record has no SLURM job id"
    return None


def _task_units(plan: dict, index: int) -> list[Unit]:
    units = [Unit(**u) for u in plan["units"]]
    return units[index :: plan["tasks"]]


def write_plan(units: list[Unit], settings: batch.Settings, out: Path, tasks: int | None) -> Path:
    """The plan folder of a new array: settings, the units, the number of tasks (at most one per unit)."""
    folder = out / batch.LOGS / ARRAY_DIR / f"{now()[:19].replace(':', '')}-{uuid.uuid4().hex[:6]}"
    (folder / RESULTS).mkdir(parents=True)
    write_json(folder / PLAN, {"version": __version__, "out": str(out.absolute()), "settings": dataclasses.asdict(settings),
                               "units": [dataclasses.asdict(u) for u in units],
                               "tasks": min(tasks or len(units), len(units))})
    return folder


def job_script(folder: Path, tasks: int) -> str:
    """The array's batch script: our defaults as #SBATCH lines (the user's options on the sbatch line override them).

    The task output is appended to, so a requeued task's file keeps what happened before (e.g. the node failure)."""
    command = shlex.join([sys.executable, "-u", "-m", "rootlets_task.batch.slurm_array", str(folder / PLAN)])
    return "\n".join(["#!/bin/bash", "#SBATCH --job-name=rootlets", f"#SBATCH --array=0-{tasks - 1}",
                      f"#SBATCH --output={folder}/task-%A_%a.out", "#SBATCH --open-mode=append", "",
                      f"exec {command}", ""])


def submit(units: list[Unit], settings: batch.Settings, out: Path, tasks: int | None,
           options: tuple[str, ...]) -> tuple[str, Path]:
    """Write the plan and submit its array with ``sbatch [options]``; returns (job id, plan folder)."""
    folder = write_plan(units, settings, out, tasks)
    n = read_json(folder / PLAN)["tasks"]
    script = write_text(folder / "job.sh", job_script(folder, n))
    done = subprocess.run(["sbatch", "--parsable", *options, str(script)], capture_output=True, text=True)
    if done.returncode:
        shutil.rmtree(folder, ignore_errors=True)
        raise RootletsError(f"-slurm-array {shlex.join(options)}: sbatch refused the job ({done.stderr.strip()}); "
                            "check the sbatch options")
    job = done.stdout.strip().split(";")[0]
    write_json(folder / JOB, {"job": job, "tasks": n, "options": list(options), "submitted": now()})
    log.info("submitted SLURM array job %s: %d image(s) in %d task(s); plan %s", job, len(units), n, folder)
    return job, folder


# ------------------------------------------------------------------------------------------------ collect


@dataclasses.dataclass
class _Array:
    """One submitted array of an output folder: its plan folder, job id, task count, unit positions, whether queued."""

    folder: Path
    job: str
    tasks: int
    position: dict[str, int]
    active: bool | None


def _arrays(out: Path) -> list[_Array]:
    """Every array submitted for ``out``, oldest first."""
    found = []
    for folder in sorted((out / batch.LOGS / ARRAY_DIR).glob("*/")):
        plan, job = read_json(folder / PLAN), read_json(folder / JOB)
        if plan is None or job is None:  # submitting, or never submitted
            continue
        problem = plan_problem(plan, job)
        if problem:
            log.warning("array plan %s: %s; skipped (remove that folder)", folder, problem)
        else:
            found.append(_Array(folder, job["job"], plan["tasks"], {u["name"]: i for i, u in enumerate(plan["units"])},
                                _active(job["job"])))
    return found


def _active(job: str) -> bool | None:
    """Whether array job ``job`` still has a task in the queue (pending, running, requeued); None: squeue unusable."""
    if not shutil.which("squeue"):
        return None
    done = subprocess.run(["squeue", "-h", "-r", "-j", job, "-o", "%i"], capture_output=True, text=True)
    if done.returncode:
        return False if "Invalid job id" in done.stderr else None
    return bool(done.stdout.strip())


def _task_end(folder: Path, job: str, index: int) -> str:
    """How task ``index`` of ``job`` ended, from what SLURM wrote into its output file."""
    path = folder / f"task-{job}_{index}.out"
    if not path.is_file():
        return f"task {index} of array job {job} never started (no {path.name})"
    ends = _ENDED.findall(read_tail(path))
    if ends:
        return f"task {index} of array job {job} was cancelled" + (f" due to {ends[-1].lower()}" if ends[-1] else "")
    return f"task {index} of array job {job} ended before this image (see {path})"


def _why(out: Path, name: str, arrays: list[_Array]) -> tuple[str, str, str | None]:
    """(status, reason, queued job) of a unit not done, from the newest array that holds it."""
    for array in reversed(arrays):
        if name not in array.position:
            continue
        if array.active:
            return "pending", f"in array job {array.job}, still in the queue", array.job
        result = read_json(array.folder / RESULTS / f"{name}.json")
        result = result if isinstance(result, dict) else {}
        if result.get("status") == "failed":
            return "failed", printable(result.get("error") or "failed"), None
        if result.get("status") == "done":
            return "not run", f"done by array job {array.job}, but its outputs are missing or changed since", None
        return "not run", _task_end(array.folder, array.job, array.position[name] % array.tasks), None
    return _last_attempt(out, name)


def _last_attempt(out: Path, name: str) -> tuple[str, str, None]:
    """(status, reason, None) of a unit no array holds, from its error log (any engine writes one on failure)."""
    err = out / batch.LOGS / f"err.{name}.log"
    if err.is_file():
        line = next((x for x in reversed(read_tail(err).splitlines()) if "FAILED: " in x), None)
        return "failed", printable(line.split("FAILED: ", 1)[1] if line else "failed") + f" (log: {err})", None
    return "not run", "no finished record (never run, interrupted, or its inputs or settings changed since)", None


def run_array(todo: list[Unit], settings: batch.Settings, out: Path, tasks: int | None,
              sbatch_options: tuple[str, ...] | None, collect: bool) -> list[dict]:
    """The engine of ``-slurm-array`` / ``-collect``: results for ``todo`` (the images not done).

    Each is ``pending`` (a queued array will do it), ``failed`` or ``not run`` (with ``collect``: why), or
    ``submitted`` in one new array job (the reason it was missing is kept in ``error``).
    """
    if not todo:
        return []
    arrays = _arrays(out)
    results, resubmit = [], []
    for unit in todo:
        status, reason, job = _why(out, unit.name, arrays)
        results.append({"name": unit.name, "rel": unit.rel, "status": status, "error": reason, "seconds": None,
                        "job": job})
        if status != "pending" and not collect:
            resubmit.append(unit)
    if resubmit:
        job, _ = submit(resubmit, settings, out, tasks, tuple(sbatch_options or ()))
        again = {u.name for u in resubmit}
        for result in results:
            if result["name"] in again:
                result.update(status="submitted", job=job)
    return results


# ------------------------------------------------------------------------------------------------ one task


def _task_threads(settings: batch.Settings) -> batch.Settings:
    """The task's model uses the CPUs SLURM gave it (``--cpus-per-task``), unless ``-threads`` fixed them."""
    if settings.options.threads:
        return settings
    cpus = os.environ.get("SLURM_CPUS_PER_TASK") or os.environ.get("SLURM_CPUS_ON_NODE") or "1"
    digits = re.match(r"\d+", cpus)
    options = dataclasses.replace(settings.options, threads=max(1, int(digits[0]) if digits else 1))
    return dataclasses.replace(settings, options=options)


def run_task(plan_path: Path, index: int) -> int:
    """Run task ``index`` of a plan: its slice of units, one result file each; returns the number of failures."""
    plan = load_json(plan_path, "array plan", fix="submit the array again (-slurm-array)")
    problem = plan_problem(plan)
    if problem:
        raise RootletsError(f"array plan {plan_path}: {problem}; submit the array again (-slurm-array)")
    try:
        settings = _task_threads(_settings(plan["settings"]))
        units = _task_units(plan, index)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise RootletsError(f"array plan {plan_path}: its settings are malformed ({printable(exc, 80)}); submit the "
                            "array again (-slurm-array)") from None
    results = plan_path.parent / RESULTS
    log.info("task %d of %d: %d image(s), %d thread(s)", index, plan["tasks"], len(units), settings.options.threads)
    failed = 0
    for unit in units:
        previous = read_json(results / f"{unit.name}.json")
        if isinstance(previous, dict) and previous.get("status") == "done" and batch.is_done(unit, settings):
            log.info("%s: done by an earlier start of this task", unit.rel)  # the task was requeued
            continue
        result = batch.process_unit(unit, settings, plan["out"])
        write_json(results / f"{unit.name}.json", result)
        failed += result["status"] != "done"
        log.info("%s: %s in %.1f s%s", unit.rel, result["status"], result["seconds"],
                 f": {result['error']}" if result["error"] else "")
    return failed


def main(argv: list[str] | None = None) -> int:
    """``python -m rootlets_task.batch.slurm_array PLAN``: the command of every array task (``SLURM_ARRAY_TASK_ID``)."""
    argv = sys.argv[1:] if argv is None else argv
    logs.configure(1)
    index = os.environ.get("SLURM_ARRAY_TASK_ID")
    if len(argv) != 1 or index is None or not index.isdigit():
        log.error("usage: SLURM_ARRAY_TASK_ID=i python -m rootlets_task.batch.slurm_array PLAN (run by sbatch --array)")
        return 2
    try:
        failed = run_task(Path(argv[0]), int(index))
    except RootletsError as exc:
        log.error("%s", exc)
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
