"""Benchmark rootlets_task's inference against the reference path (SCT's plain nnUNetPredictor), in one run.

    python benchmarks/bench_inference.py --json bench.json            # full: 3 single-image runs, 10-image batches
    python benchmarks/bench_inference.py --quick --json quick.json    # 1 run, 3-image batch, 1 phantom

Timing uses the realistic model (nnU-Net 3d_fullres planned for 64x320x320 at 0.8 mm, random weights; built and
cached by bench_model.py). The reference runs a fresh process per image, as ``sct_deepseg`` does per call; ours runs
the whole batch in one process. Paths: ``ours`` (the default, what ``rootlets -i`` does), ``ours-crop`` (the cord
mask given, as ``-levels -crop-to-cord`` does: sub-image around the cord), ``ours-torch`` (PyTorch backend, to show
the backend's share), ``ours-int8`` and ``ours-crop-int8`` (the int8 network, quantised before the timed runs,
calibrated on the first benchmark image). Wall time is measured around each process, CPU time and peak RSS inside it.
Agreement uses the bundled phantom release (a trained model) on a few phantoms: voxel agreement, per-level Dice and
level midpoints of every variant vs the reference (int8 calibrated on the default phantoms). Backends: max |softmax
difference| of OpenVINO (float32, int8) vs PyTorch on the realistic model.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import phantom_release  # noqa: E402
from bench_model import benchmark_model, cache_dir, write_benchmark_image  # noqa: E402

import rootlets_task  # noqa: E402
from rootlets_task.io.metrics import agreement  # noqa: E402

PHANTOM_ZIP = Path(rootlets_task.__file__).parent / "data" / "model-spinal-rootlets-phantom.zip"
# variants also timed on the batch (ours-torch only shows the backend's share)
BATCH_VARIANTS = ("ours-crop", "ours-int8", "ours-crop-int8")
INT8_VARIANTS = ("ours-int8", "ours-crop-int8")


def run_worker(mode: str, model: Path, images: list[Path], out_dir: Path, env: dict | None = None) -> dict:
    """One worker process; returns wall (measured here), CPU and peak RSS (measured inside)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(HERE / "bench_workers.py"), mode, str(model), str(out_dir), *map(str, images)],
                          capture_output=True, text=True, env={**os.environ, **(env or {})})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} worker failed:\n{proc.stderr[-3000:]}")
    return {"wall_s": wall, **json.loads(proc.stdout.strip().splitlines()[-1])}


def reference_batch(model: Path, images: list[Path], out_dir: Path) -> dict:
    """The reference on a batch: one fresh process per image (walls and CPU add up, peak RSS is the max)."""
    runs = [run_worker("reference", model, [img], out_dir) for img in images]
    return {"wall_s": sum(r["wall_s"] for r in runs), "cpu_s": sum(r["cpu_s"] for r in runs),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs)}


def medians(runs: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in runs) for k in ("wall_s", "cpu_s", "peak_rss_mb")} | {"runs": runs}


def bench_images(n: int) -> list[Path]:
    """``n`` distinct realistic images (cached)."""
    folder = cache_dir() / "images"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"bench_{i:02d}.nii.gz"
        if not path.with_name(f"bench_{i:02d}_cord.nii.gz").exists():
            write_benchmark_image(path, seed=100 + i)
        paths.append(path)
    return paths


def timing(model: Path, reps: int, batch: int, reps_batch: int, variants: list[str], work: Path, log, result: dict,
           reference_batch_from_single: bool = False) -> None:
    """Single-image runs of every path, interleaved, then the batch of each path; fills ``result`` as it goes.

    ``reference_batch_from_single``: the reference runs a fresh process per image, so its batch is N copies of its
    single-image run; take N times the single-image median instead of running it again (saves N reference runs).
    """
    images = bench_images(max(batch, 1))
    single = {mode: [] for mode in ("reference", "ours", *variants)}
    for mode, runs in result.get("single", {}).items():  # --resume: runs already made
        single.setdefault(mode, []).extend(runs["runs"])
    for r in range(reps):  # interleaved so that every path sees the same machine load
        for mode in single:
            if len(single[mode]) <= r:
                single[mode].append(run_worker(mode, model, images[:1], work / f"single_{mode}_{r}"))
                log(f"single {mode} run {r}: {single[mode][-1]}")
        result["single"] = {m: medians(v) for m, v in single.items()}
        ratios(result, variants)
        log.save(result)
    if batch:
        runs = {mode: [] for mode in ("reference", "ours", *(v for v in variants if v in BATCH_VARIANTS))}
        for r in range(reps_batch):
            for mode in runs:
                if mode != "reference":
                    runs[mode].append(run_worker(mode, model, images[:batch], work / f"batch_{mode}_{r}"))
                elif reference_batch_from_single:
                    ref = result["single"]["reference"]
                    runs[mode].append({"wall_s": batch * ref["wall_s"], "cpu_s": batch * ref["cpu_s"],
                                       "peak_rss_mb": ref["peak_rss_mb"], "from_single_image_median": True})
                else:
                    runs[mode].append(reference_batch(model, images[:batch], work / f"batch_reference_{r}"))
                log(f"batch {mode} run {r}: {runs[mode][-1]}")
                result["batch"] = {m: medians(v) for m, v in runs.items() if v} | {"n_images": batch}
                ratios(result, variants)
                log.save(result)


def ratios(result: dict, variants: list[str]) -> None:
    """Speed-ups (reference wall / ours wall) and memory ratios (ours / reference) from the medians so far."""
    single = result["single"]
    result["single_image_speedup"] = single["reference"]["wall_s"] / single["ours"]["wall_s"]
    result["single_image_cpu_ratio"] = single["reference"]["cpu_s"] / single["ours"]["cpu_s"]
    result["peak_rss_ratio"] = single["ours"]["peak_rss_mb"] / single["reference"]["peak_rss_mb"]
    for v in variants:
        if v in single:
            result[f"single_image_speedup_{v}"] = single["reference"]["wall_s"] / single[v]["wall_s"]
            result[f"peak_rss_ratio_{v}"] = single[v]["peak_rss_mb"] / single["reference"]["peak_rss_mb"]
    b = result.get("batch", {})
    if "reference" in b and "ours" in b:
        result["batch_per_image_speedup"] = b["reference"]["wall_s"] / b["ours"]["wall_s"]
        result["batch_cpu_ratio"] = b["reference"]["cpu_s"] / b["ours"]["cpu_s"]
        result["batch_peak_rss_ratio"] = b["ours"]["peak_rss_mb"] / b["reference"]["peak_rss_mb"]
    for v in variants:
        if "reference" in b and v in b:
            result[f"batch_per_image_speedup_{v}"] = b["reference"]["wall_s"] / b[v]["wall_s"]


def phantom_agreement(n: int, work: Path, log, int8: bool = False) -> dict:
    """Ours (with the cord crop, int8) vs the reference on ``n`` phantoms with the bundled phantom release.

    Per variant: the worst voxel and foreground agreement, the worst per-level Dice and the largest difference of a
    spinal level's midpoint (mm, :func:`rootlets_task.levels.compute.compute_levels` on the phantom's cord).
    """
    from bench_workers import reference

    from rootlets_task.inference.cropping import crop_box
    from rootlets_task.inference.segmenter import Segmenter, physical_cores
    from rootlets_task.io.phantom import write_phantom

    folder = phantom_release(work)
    threads = physical_cores()
    segmenters = {"ours": Segmenter(model_folder=folder, threads=threads)}
    if int8:  # calibrated on the default phantoms
        segmenters["ours-int8"] = Segmenter(model_folder=folder, threads=threads, precision="int8")
    variants = [(name, crop) for name in segmenters for crop in (False, True)]
    cases, result = [], {}
    for seed in range(n):
        case = work / f"phantom_{seed}"
        orient, spacing = (("LPI", (1.0, 1.0, 1.0)), ("AIL", (0.8, 0.8, 0.8)), ("RPI", (0.9, 0.9, 1.2)))[seed % 3]
        files = write_phantom(case, orient=orient, spacing=spacing, seed=100 + seed)
        image = files["image"]
        (case / "ref").mkdir(exist_ok=True)
        reference(folder, case / "ref", [image])
        a = np.asarray(nib.load(case / "ref" / image.name).dataobj)
        row = {"seed": 100 + seed, "orientation": orient, "spacing": spacing}
        img = nib.load(image)
        cord = np.asarray(nib.load(files["cord"]).dataobj)
        for name, crop in variants:
            b = segmenters[name].segment_image(img, crop_box(img, cord) if crop else None)
            key = name.replace("ours", "ours-crop") if crop else name
            row[key] = agreement(a, b) | {"max_level_mid_mm_diff": level_mid_difference(a, b, cord, img.affine)}
        cases.append(row)
        log(f"phantom {seed}: {row}")
    for name in (n.replace("ours", "ours-crop") if crop else n for n, crop in variants):
        suffix = "" if name == "ours" else f"_{name}"
        result[f"phantom_voxel_agreement{suffix}"] = min(c[name]["voxel_agreement"] for c in cases)
        result[f"phantom_foreground_agreement{suffix}"] = min(c[name]["foreground_agreement"] for c in cases)
        result[f"phantom_min_level_dice{suffix}"] = min(min(c[name]["dice"].values()) for c in cases)
        result[f"phantom_max_level_mid_mm_diff{suffix}"] = max(c[name]["max_level_mid_mm_diff"] for c in cases)
    return {"cases": cases, **result}


def level_mid_difference(a: np.ndarray, b: np.ndarray, cord: np.ndarray, affine: np.ndarray) -> float:
    """Largest |difference| (mm) of a spinal level's midpoint between two rootlets maps on one cord (inf: level lost)."""
    from rootlets_task.levels.compute import compute_levels

    mids = [compute_levels(x, cord, affine).levels.query("kind == 'spinal'").set_index("value")["mid_mm"] for x in (a, b)]
    difference = (mids[0] - mids[1]).abs()
    return float("inf") if difference.isna().any() else float(difference.max()) if len(difference) else 0.0


def run_backend_check(model: Path, int8: bool = False) -> dict:
    """``backend_check`` in its own process: a loaded OpenVINO runtime keeps threads that would slow the timed runs."""
    proc = subprocess.run([sys.executable, str(HERE / "bench_inference.py"), "--backend-check", str(model),
                           *(["--int8"] if int8 else [])], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"backend check failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def int8_check(model: Path, torch_net, patch, reference) -> dict:
    """Max |softmax difference| of the int8 network vs PyTorch (``torch_net``) on the check patch and on a tile of an
    image it was not calibrated on; the realistic model has random weights, whose near-tied logits make it a worst case.

    Quantises (and caches) the network that the int8 workers then load, so that their timings hold inference only.
    """
    import torch
    from bench_workers import int8_segmenter

    from rootlets_task.inference import backends, int8

    images = bench_images(2)
    segmenter = int8_segmenter(model, images[0], verbose=1)
    net = segmenter.predictor.network
    net.load_state_dict(segmenter.predictor.list_of_parameters[0])
    data, _ = segmenter.preprocess(segmenter.prepare(nib.load(images[1])))
    tile = torch.from_numpy(int8.calibration_tiles(segmenter.predictor, [data], 1)[0])
    with torch.no_grad():
        return {"int8": backends.max_softmax_difference(net(patch), reference),
                "int8_on_image_tile": int8.agreement_on_tile(torch_net(tile).numpy(), net(tile).numpy())}


def backend_check(model: Path, with_int8: bool = False) -> dict:
    """Max |softmax difference| of each installed alternative backend vs PyTorch on the realistic model."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from rootlets_task.inference import backends
    from rootlets_task.inference.segmenter import physical_cores

    if not backends.openvino_available():
        return {"openvino": None}
    predictor = nnUNetPredictor(use_mirroring=False, perform_everything_on_device=False, device=torch.device("cpu"),
                                allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model), use_folds=None)
    patch = backends.check_patch(tuple(predictor.configuration_manager.patch_size), seed=1)  # not the seed checked at load
    torch_net = predictor.network
    with torch.no_grad():
        torch_net.load_state_dict(predictor.list_of_parameters[0])
        reference = torch_net(patch)
    if not backends.use_openvino(predictor, physical_cores()):
        return {"openvino": "failed its load check"}
    predictor.network.load_state_dict(predictor.list_of_parameters[0])
    result = {"openvino": backends.max_softmax_difference(predictor.network(patch), reference)}
    return result | (int8_check(model, torch_net, patch, reference) if with_int8 else {})


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--reps", type=int, default=3, help="single-image runs of each path (median reported)")
    parser.add_argument("--batch", type=int, default=10, help="images in the batch run (0 = no batch run)")
    parser.add_argument("--reps-batch", type=int, default=1, help="batch runs of each path")
    parser.add_argument("--phantoms", type=int, default=3, help="phantoms for the agreement check (0 = skip)")
    parser.add_argument("--variants", default="ours-torch,ours-crop,ours-int8,ours-crop-int8",
                        help="extra single-image paths, comma-separated: ours-torch (PyTorch backend), ours-crop (cord "
                             "given), ours-int8 (int8 network), ours-crop-int8 (both)")
    parser.add_argument("--quick", action="store_true", help="1 single run, a 3-image batch, 1 phantom")
    parser.add_argument("--rebuild-model", action="store_true", help="plan and build the realistic model again")
    parser.add_argument("--reference-batch-from-single", action="store_true",
                        help="reference batch = N x its single-image median (it is N identical fresh processes anyway)")
    parser.add_argument("--resume", type=Path, help="a JSON of an earlier run: keep its single-image runs and backend check")
    args = parser.parse_args(argv)
    if args.quick:
        args.reps, args.batch, args.reps_batch, args.phantoms = 1, 3, 1, 1

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    def save(result: dict) -> None:  # after every stage, so that a long run interrupted late still leaves figures
        if args.json:
            args.json.write_text(json.dumps(result, indent=1, default=str))

    log.save = save
    model = benchmark_model(rebuild=args.rebuild_model)
    log(f"realistic model: {model}")
    result = json.loads(args.resume.read_text()) if args.resume else {}
    result.update(model=str(model), settings=vars(args) | {"json": str(args.json), "resume": str(args.resume)})
    with tempfile.TemporaryDirectory(prefix="rootlets_bench_") as tmp:
        work = Path(tmp)
        variants = [v for v in args.variants.split(",") if v]
        with_int8 = any(v in INT8_VARIANTS for v in variants)
        if "backends_max_softmax_diff" not in result or (with_int8 and "int8" not in result["backends_max_softmax_diff"]):
            result["backends_max_softmax_diff"] = run_backend_check(model, with_int8)  # also quantises for the int8 runs
        log(f"backend check: {result['backends_max_softmax_diff']}")
        timing(model, args.reps, args.batch, args.reps_batch, variants, work, log, result, args.reference_batch_from_single)
        if args.phantoms and PHANTOM_ZIP.exists():
            result.update(phantom_agreement(args.phantoms, work, log, int8=with_int8))
        elif args.phantoms:
            log(f"agreement skipped: {PHANTOM_ZIP} not built")
    save(result)
    log(json.dumps({k: v for k, v in result.items() if not isinstance(v, dict | list)}, indent=1))
    return result


if __name__ == "__main__":
    if sys.argv[1:2] == ["--backend-check"]:
        print(json.dumps(backend_check(Path(sys.argv[2]), with_int8="--int8" in sys.argv[3:])))
    else:
        main()
