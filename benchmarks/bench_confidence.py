"""What the confidence per level costs: ``Segmenter.predict`` (labels + confidence) vs ``segment_image`` (labels).

    python benchmarks/bench_confidence.py --json benchmarks/results/bench_confidence.json [--pairs 3] [--memory 2]

On the realistic benchmark model and image (bench_model.py: nnU-Net 3d_fullres planned for 64x320x320 at 0.8 mm,
random weights). The machine may be shared, so both paths are measured side by side, interleaved:

* time: one process, one warm-up call, then ``--pairs`` pairs (labels, then labels + confidence, alternating which
  goes first), each call timed alone; the ratio of the medians and the ratio per pair;
* memory: fresh processes, ``--memory`` of each path, interleaved; the peak resident memory of each (``getrusage``;
  the model load is in both);
* the labels of both paths are compared byte for byte; the load average is recorded before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_model import benchmark_model, write_benchmark_image  # noqa: E402


def _segmenter(model: Path):
    from rootlets_task.inference.segmenter import Segmenter

    return Segmenter(model, verbose=0)


def _call(segmenter, img, mode: str):
    t0 = time.perf_counter()
    out = segmenter.predict(img).labels if mode == "confidence" else segmenter.segment_image(img)
    return time.perf_counter() - t0, out


def timing(model: Path, image: Path, pairs: int) -> dict:
    """Both paths in one process, interleaved."""
    import nibabel as nib

    segmenter = _segmenter(model)
    img = nib.load(image)
    _call(segmenter, img, "labels")  # warm-up
    runs = {"labels": [], "confidence": []}
    identical = True
    for i in range(pairs):
        order = ("labels", "confidence") if i % 2 == 0 else ("confidence", "labels")
        outputs = {}
        for mode in order:
            seconds, outputs[mode] = _call(segmenter, img, mode)
            runs[mode].append(seconds)
        identical &= outputs["labels"].tobytes() == outputs["confidence"].tobytes()
    ratios = [c / s for s, c in zip(runs["labels"], runs["confidence"], strict=True)]
    return {"runs_s": runs, "median_s": {k: statistics.median(v) for k, v in runs.items()},
            "time_ratio": statistics.median(runs["confidence"]) / statistics.median(runs["labels"]),
            "time_ratio_per_pair": ratios, "labels_identical": identical, "backend": segmenter.backend,
            "threads": segmenter.threads}


def worker(model: Path, image: Path, mode: str) -> None:
    """One call in a fresh process: its peak resident memory."""
    import nibabel as nib

    seconds, _ = _call(_segmenter(model), nib.load(image), mode)
    print(json.dumps({"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def memory(model: Path, image: Path, repeats: int) -> dict:
    runs = {"labels": [], "confidence": []}
    for i in range(repeats):
        for mode in (("labels", "confidence") if i % 2 == 0 else ("confidence", "labels")):
            proc = subprocess.run([sys.executable, __file__, "--worker", mode, str(model), str(image)],
                                  capture_output=True, text=True, check=True)
            runs[mode].append(json.loads(proc.stdout.strip().splitlines()[-1])["peak_rss_mb"])
    return {"peak_rss_mb": runs, "memory_ratio": statistics.median(runs["confidence"]) / statistics.median(runs["labels"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--memory", type=int, default=2)
    parser.add_argument("--worker", nargs=3, metavar=("MODE", "MODEL", "IMAGE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(Path(args.worker[1]), Path(args.worker[2]), args.worker[0])
    model = benchmark_model()
    with tempfile.TemporaryDirectory() as tmp:
        image = write_benchmark_image(Path(tmp) / "bench.nii.gz")
        load = {"before": os.getloadavg()}
        result = {"model": str(model), "image": "64x320x320 at 0.8 mm (bench_model.write_benchmark_image)",
                  "cpus": os.cpu_count(), **timing(model, image, args.pairs), **memory(model, image, args.memory)}
        load["after"] = os.getloadavg()
    result["load_average"] = load
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
