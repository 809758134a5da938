"""Images per hour of `rootlets batch` on one machine: sequential, ``-jobs 2``, ``-slurm`` (2 SLURM jobs running Dask
workers, dask-jobqueue) and ``-slurm-array`` (one job array of 2 tasks), on the bundled phantom release.

The SLURM modes run on the single-node SLURM of tests/support/slurm.py (started here, in a temporary folder, and
stopped at the end; needs root, Debian's slurm-wlm and munge), one CPU per job or task, so every mode has the same
cores: the sequential run uses them all as model threads, the others one thread per worker. Every mode is the real
`rootlets batch` command in a fresh process; the wall time covers its start, its workers' start and model loads, and
for ``-slurm-array`` the submission, the tasks and the ``-collect`` that merges the results. Rootlets only (no
-levels); with ``--levels`` also the whole chain (the phantoms' cord/discs/PMJ as manual labels), in one JSON.

    python benchmarks/bench_slurm.py --json benchmarks/results/bench_slurm.json [--images 12] [--levels]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from support import slurm as test_slurm  # noqa: E402

import rootlets_task  # noqa: E402

ORIENTS = ("LPI", "RPI", "AIL", "PSR")
ROOTLETS = [sys.executable, "-c", "import sys; from rootlets_task.cli.rootlets import main; sys.exit(main(sys.argv[1:]))"]


def write_dataset(root: Path, n: int) -> None:
    """``n`` subjects with one phantom T2w each and its cord/discs/PMJ in derivatives/labels (used with --levels)."""
    from rootlets_task.io.phantom import write_phantom

    for i in range(n):
        sub = f"sub-{i + 1:02d}"
        files = write_phantom(root / ".staged" / sub, ORIENTS[i % 4], seed=i, prefix=f"{sub}_T2w")
        (root / sub / "anat").mkdir(parents=True)
        shutil.copy(files["image"], root / sub / "anat" / f"{sub}_T2w.nii.gz")
        labels = root / "derivatives" / "labels" / sub / "anat"
        labels.mkdir(parents=True)
        for kind in ("cord", "discs", "pmj"):
            shutil.copy(files[kind], labels / files[kind].name)
    shutil.rmtree(root / ".staged")


def run(cmd: list[str], env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd[3:])} failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}")
    return proc


def array_job(out: Path) -> str:
    (job,) = [json.loads(p.read_text())["job"] for p in (out / "logs" / "array").glob("*/job.json")]
    return job


def bench_modes(bids: Path, work: Path, cluster: test_slurm.Slurm, levels: bool, log) -> dict[str, float]:
    env = {**cluster.env, "ROOTLETS_TASK_HOME": os.environ["ROOTLETS_TASK_HOME"]}
    common = ["-release", "phantom", "-v", "0", *(["-levels"] if levels else [])]
    walls: dict[str, float] = {}
    modes = {"sequential": [], "jobs2": ["-jobs", "2"],
             "slurm_2_jobs": ["-jobs", "2", "-threads", "1", "-slurm", "cores=1", "memory=4GB", "walltime=01:00:00",
                              f"log_directory={work / 'worker_logs'}"],
             "slurm_array_2_tasks": ["-jobs", "2", "-threads", "1", "-slurm-array", "--cpus-per-task=1", "--time=60"]}
    for name, extra in modes.items():
        out = work / name
        t0 = time.perf_counter()
        run([*ROOTLETS, "batch", str(bids), "-o", str(out), *common, *extra], env)
        if name.startswith("slurm_array"):
            cluster.wait_final(array_job(out), 3600)
            run([*ROOTLETS, "batch", str(bids), "-o", str(out), *common, "-collect"], env)
        walls[name] = time.perf_counter() - t0
        log(f"{name}: {walls[name]:.1f} s (load average {os.getloadavg()[0]:.1f})")
    return walls


def figures(walls: dict[str, float], images: int, levels: bool, load_at_start: tuple) -> dict:
    """One variant's section of the JSON: wall times, images per hour, speed relative to the sequential run."""
    return {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                        "load_average_at_start": load_at_start, "load_average_at_end": os.getloadavg()},
            "rootlets_task": rootlets_task.__version__, "images": images, "levels": levels,
            "wall_s": {k: round(v, 1) for k, v in walls.items()},
            "images_per_hour": {k: round(3600 * images / v, 1) for k, v in walls.items()},
            "ratio_vs_sequential": {k: round(walls["sequential"] / v, 2) for k, v in walls.items()}}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", type=Path, default=Path("bench_slurm.json"))
    p.add_argument("--images", type=int, default=12)
    p.add_argument("--levels", action="store_true", help="also the whole chain with the phantoms' manual labels")
    p.add_argument("--note", default="", help="what the JSON should say about the machine (e.g. its load)")
    args = p.parse_args(argv)

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    from rootlets_task.models import install

    result: dict = {"note": args.note}
    with tempfile.TemporaryDirectory(prefix="bench_slurm_") as tmp:
        work = Path(tmp)
        os.environ["ROOTLETS_TASK_HOME"] = str(work / "home")
        install.install_release("phantom", progress=False)
        write_dataset(work / "bids", args.images)
        (work / "slurm").mkdir()
        cluster = test_slurm.start(work / "slurm")
        try:
            env = {**cluster.env, "ROOTLETS_TASK_HOME": os.environ["ROOTLETS_TASK_HOME"]}
            # warm-up: the OpenVINO conversion is cached once per model
            run([*ROOTLETS, "batch", str(work / "bids"), "-o", str(work / "warm"), "-release", "phantom", "-v", "0",
                 "-include", "sub-01/"], env)
            for levels in (False, True) if args.levels else (False,):
                load, folder = os.getloadavg(), work / ("levels" if levels else "rootlets")
                folder.mkdir()
                walls = bench_modes(work / "bids", folder, cluster, levels, log)
                result["with_levels" if levels else "rootlets_only"] = figures(walls, args.images, levels, load)
        finally:
            test_slurm.stop(cluster)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
