"""Does batch pipelining pay? Read + preprocess the next image and export + write the previous one while the network runs.

    python benchmarks/bench_pipeline.py [--images 3] [--reps 2] [--crop] [--precision int8] [--json OUT]

One process, one Segmenter (realistic model of bench_model.py, default backend); the same images are segmented
sequentially (the five stages one after the other, as ``Segmenter.segment_file`` does) and pipelined (stage 1-2 of
image i+1 and stage 4-5 of image i-1 in a worker thread while stage 3 of image i runs), the two alternating ``--reps``
times so that both see the same machine load. Also reports the share of each stage in the sequential runs: the most
pipelining can hide is the pre/post share, and only as far as the network leaves cores idle.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_inference import bench_images  # noqa: E402
from bench_model import benchmark_model  # noqa: E402

from rootlets_task.inference.cropping import crop_box  # noqa: E402
from rootlets_task.inference.segmenter import Segmenter  # noqa: E402
from rootlets_task.io import nifti  # noqa: E402


def cord_of(path: Path) -> Path:
    return path.with_name(path.name.replace(".nii.gz", "_cord.nii.gz"))


def read(seg: Segmenter, path: Path, crop: bool) -> dict:
    """Stages 1-2 (and the crop box): everything before the network."""
    img = nifti.load(path)
    prepared = seg.prepare(img)
    data, properties = seg.preprocess(prepared)
    job = {"img": img, "prepared": prepared, "data": data, "properties": properties, "box": None}
    if crop:
        job["box"] = crop_box(img, nib.load(cord_of(path)))
        job["window"] = seg.network_box(img, job["box"], properties, tuple(data.shape[1:]))
    return job


def network(seg: Segmenter, job: dict) -> dict:
    """Stage 3: the sliding window."""
    job["logits"] = (seg.predict_logits(job["data"]) if job["box"] is None
                     else seg.predict_logits_cropped(job["data"], job["window"]))
    return job


def write(seg: Segmenter, job: dict, out: Path) -> None:
    """Stages 4-5 and the file: everything after the network."""
    labels = seg.restore(seg.export(job["logits"], job["properties"]), job["prepared"])
    if job["box"] is not None:
        inside, labels = labels, np.zeros_like(labels)
        labels[job["box"]] = inside[job["box"]]
    nifti.save_like(labels, job["img"], out)


def sequential(seg: Segmenter, images: list[Path], out: Path, crop: bool) -> dict:
    stages = {"read": 0.0, "network": 0.0, "write": 0.0}
    t0 = time.perf_counter()
    for path in images:
        t = time.perf_counter()
        job = read(seg, path, crop)
        stages["read"] += time.perf_counter() - t
        t = time.perf_counter()
        network(seg, job)
        stages["network"] += time.perf_counter() - t
        t = time.perf_counter()
        write(seg, job, out / path.name)
        stages["write"] += time.perf_counter() - t
    return {"wall_s": time.perf_counter() - t0, **{f"{k}_s": v for k, v in stages.items()}}


def pipelined(seg: Segmenter, images: list[Path], out: Path, crop: bool) -> dict:
    """Network in this thread; reading the next image and writing the previous one in one worker thread."""
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending_read = pool.submit(read, seg, images[0], crop)
        pending_write = None
        for i, path in enumerate(images):
            job = pending_read.result()
            if i + 1 < len(images):
                pending_read = pool.submit(read, seg, images[i + 1], crop)
            network(seg, job)
            if pending_write is not None:
                pending_write.result()
            pending_write = pool.submit(write, seg, job, out / path.name)
        pending_write.result()
    return {"wall_s": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--crop", action="store_true", help="crop to the cord mask beside each image (2 tiles, not 8)")
    parser.add_argument("--precision", default="float32", help="float32 or int8 (calibrated on the first image)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    images = bench_images(args.images)
    model = benchmark_model()
    if args.precision == "int8":
        from bench_workers import int8_segmenter

        seg = int8_segmenter(model, images[0])
    else:
        seg = Segmenter(model, verbose=0)
    runs: dict[str, list[dict]] = {"sequential": [], "pipelined": []}
    with tempfile.TemporaryDirectory() as tmp:
        network(seg, read(seg, images[0], args.crop))  # warm-up: compiled model, caches
        for r in range(args.reps):
            for name, fn in (("sequential", sequential), ("pipelined", pipelined)):
                runs[name].append(fn(seg, images, Path(tmp), args.crop) | {"load": os.getloadavg()[0]})
                print(r, name, json.dumps(runs[name][-1]), flush=True)
    median = {k: float(np.median([r["wall_s"] for r in v])) for k, v in runs.items()}
    result = {"settings": vars(args) | {"json": str(args.json)}, "runs": runs, "median_wall_s": median,
              "pipelined_speedup": median["sequential"] / median["pipelined"]}
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
