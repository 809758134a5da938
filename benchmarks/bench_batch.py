"""Images per hour of `rootlets batch` (sequential, -jobs 2) vs the per-image command line (`rootlets -i`, a fresh
process per image, as a shell loop or `sct_run_batch` calling `sct_deepseg` would), on two models:

* ``tiny``: the bundled phantom release on phantoms (or, until that zip is built, the untrained tiny nnU-Net of
  tests/random_model.py, recorded as such in the JSON);
* ``realistic``: the speed benchmark's nnU-Net 3d_fullres planned for 64x320x320 at 0.8 mm (bench_model.py).

Each model is installed as the ``phantom`` tag into a private model store (ROOTLETS_TASK_HOME in a temp folder), so
every variant goes through the real `rootlets` command in a fresh Python process; wall time is measured around it.
Rootlets only (no -levels), so the three variants do the same work.

    python benchmarks/bench_batch.py --json bench_batch.json [--tiny-images 12] [--realistic-images 4] [--skip-realistic]
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
sys.path.insert(0, str(HERE))

import rootlets_task  # noqa: E402

ORIENTS = ("LPI", "RPI", "AIL", "PSR")
ROOTLETS = [sys.executable, "-c", "import sys; from rootlets_task.cli.rootlets import main; sys.exit(main(sys.argv[1:]))"]


def install_model(kind: str, home: Path) -> str:
    """Install the model of ``kind`` as tag ``phantom`` into ``home``; returns what was installed."""
    from rootlets_task.models import install

    os.environ["ROOTLETS_TASK_HOME"] = str(home)
    if kind == "tiny":
        install.install_release("phantom", progress=False)
        return "bundled phantom release"
    from bench_model import benchmark_model

    folder = benchmark_model()
    archive = shutil.make_archive(str(home / "release"), "zip", folder.parent, folder.name)
    install.install_release("phantom", custom_url=archive, progress=False)
    return f"realistic benchmark model {folder}"


def write_dataset(kind: str, root: Path, n: int) -> list[Path]:
    """``n`` subjects sub-01.. with one T2w each: phantoms (tiny) or the realistic synthetic images."""
    images = []
    for i in range(n):
        anat = root / f"sub-{i + 1:02d}" / "anat"
        anat.mkdir(parents=True)
        path = anat / f"sub-{i + 1:02d}_T2w.nii.gz"
        staged = root / ".staged" / str(i)
        if kind == "tiny":
            from rootlets_task.io.phantom import write_phantom

            shutil.copy(write_phantom(staged, ORIENTS[i % 4], seed=i, prefix="ph")["image"], path)
        else:
            from bench_model import write_benchmark_image

            staged.mkdir(parents=True)
            shutil.copy(write_benchmark_image(staged / path.name, seed=100 + i), path)
        images.append(path)
    shutil.rmtree(root / ".staged")
    return images


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[3:])} failed:\n{proc.stderr[-3000:]}")
    return wall


def bench(kind: str, n: int, work: Path, log) -> dict:
    home = work / kind / "home"
    home.mkdir(parents=True)
    model = install_model(kind, home)
    bids = work / kind / "bids"
    images = write_dataset(kind, bids, n)
    log(f"{kind}: {model}; {n} images")
    # warm-up (OpenVINO conversion is cached once per model; imports warm the page cache)
    timed([*ROOTLETS, "-i", str(images[0]), "-o", str(work / kind / "warm.nii.gz"), "-release", "phantom", "-v", "0"])
    walls = {}
    walls["per_image_cli"] = sum(timed([*ROOTLETS, "-i", str(img), "-o", str(work / kind / "cli" / img.name),
                                        "-release", "phantom", "-v", "0"]) for img in images)
    log(f"{kind}: per-image CLI {walls['per_image_cli']:.1f} s")
    for name, jobs in (("batch_sequential", 1), ("batch_jobs2", 2)):
        walls[name] = timed([*ROOTLETS, "batch", str(bids), "-o", str(work / kind / name), "-release", "phantom",
                             "-jobs", str(jobs), "-v", "0"])
        log(f"{kind}: {name} {walls[name]:.1f} s")
    return {"model": model, "images": n, "wall_s": walls,
            "images_per_hour": {k: round(3600 * n / v, 1) for k, v in walls.items()},
            "speedup_vs_per_image_cli": {k: round(walls["per_image_cli"] / v, 2) for k, v in walls.items()}}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", type=Path, default=Path("bench_batch.json"))
    p.add_argument("--tiny-images", type=int, default=12)
    p.add_argument("--realistic-images", type=int, default=4)
    p.add_argument("--skip-realistic", action="store_true")
    args = p.parse_args(argv)

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    result = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                          "load_average_at_start": os.getloadavg()}, "rootlets_task": rootlets_task.__version__}
    with tempfile.TemporaryDirectory(prefix="bench_batch_") as tmp:
        for kind, n in (("tiny", args.tiny_images), ("realistic", args.realistic_images)):
            if kind == "realistic" and args.skip_realistic:
                continue
            result[kind] = bench(kind, n, Path(tmp), log)
            result["machine"]["load_average_at_end"] = os.getloadavg()
            args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
