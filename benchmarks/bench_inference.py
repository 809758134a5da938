"""Benchmark rootlets_task's inference against the reference path (SCT's plain nnUNetPredictor), in one run.

    python benchmarks/bench_inference.py --json bench.json            # full: 3 single-image runs, 10-image batches
    python benchmarks/bench_inference.py --quick --json quick.json    # 1 run, 3-image batch, 1 phantom

Timing uses the realistic model (nnU-Net 3d_fullres planned for 64x320x320 at 0.8 mm, random weights; built and
cached by bench_model.py). The reference runs a fresh process per image, as ``sct_deepseg`` does per call; ours runs
the whole batch in one process. Paths: ``ours`` (the default, what ``rootlets -i`` does), ``ours-crop`` (the cord
mask given, as ``-levels -crop-to-cord`` does: sub-image around the cord), ``ours-torch`` (PyTorch backend, to show
the backend's share), ``ours-int8`` and ``ours-crop-int8`` (the int8 network, quantised before the timed runs,
calibrated on the first benchmark image), ``ours-bf16`` and ``ours-crop-bf16`` (bfloat16; CPUs with avx512_bf16 or AMX
only, recorded as unavailable elsewhere). Wall time is measured around each process, CPU time and peak RSS inside it.
Every run records the backend and precision that actually ran: a run that fell back (e.g. OpenVINO failing its load
check, so PyTorch ran) gets no speed-up key, and ``fallback_<variant>`` says what ran instead.
Agreement uses the bundled phantom release (a trained model) on a few phantoms: voxel agreement, per-level Dice and
level midpoints of every variant vs the reference (int8 calibrated on the default phantoms). Backends: max |softmax
difference| of OpenVINO (float32, int8, bf16) vs PyTorch and seconds per tile of each, on the realistic model.
The CPU (model, ISA flags, what OpenVINO can run on it) is recorded; ``table`` sums it all up per variant.
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
from bench_workers import EXPECTED  # noqa: E402

import rootlets_task  # noqa: E402
from rootlets_task.io.metrics import agreement  # noqa: E402

PHANTOM_ZIP = Path(rootlets_task.__file__).parent / "data" / "model-spinal-rootlets-phantom.zip"
# variants also timed on the batch (ours-torch only shows the backend's share)
BATCH_VARIANTS = ("ours-crop", "ours-int8", "ours-crop-int8", "ours-bf16", "ours-crop-bf16")
INT8_VARIANTS = ("ours-int8", "ours-crop-int8")
BF16_VARIANTS = ("ours-bf16", "ours-crop-bf16")
TILE_REPS = 3  # timed forward passes per backend on one tile (median), after one warm-up


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
    """Median wall, CPU and memory of the runs, and what ran (every run's backend and precision, when the same)."""
    ran = {(r.get("backend"), r.get("precision")) for r in runs}
    backend, precision = ran.pop() if len(ran) == 1 else ("mixed", "mixed")
    return {k: statistics.median(r[k] for r in runs) for k in ("wall_s", "cpu_s", "peak_rss_mb")} | {
        "backend": backend, "precision": precision, "runs": runs}


def fell_back(mode: str, runs: dict) -> str | None:
    """What ran instead of ``mode``'s backend and precision (None when it ran as meant)."""
    meant = EXPECTED[mode]
    ran = (runs.get("backend"), runs.get("precision"))
    return None if ran == meant else f"{' '.join(map(str, ran))} ran instead of {' '.join(meant)}"


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
    unavailable = result.setdefault("unavailable", {})
    single = {mode: [] for mode in ("reference", "ours", *variants) if mode not in unavailable}
    for mode, runs in result.get("single", {}).items():  # --resume: runs already made
        single.setdefault(mode, []).extend(runs["runs"])
    for r in range(reps):  # interleaved so that every path sees the same machine load
        for mode in list(single):
            if len(single[mode]) <= r:
                run = run_worker(mode, model, images[:1], work / f"single_{mode}_{r}")
                log(f"single {mode} run {r}: {run}")
                if "unavailable" in run:  # cannot run on this machine (bf16 without it): said, never timed
                    unavailable[mode] = run["unavailable"]
                    del single[mode]
                    continue
                single[mode].append(run)
        result["single"] = {m: medians(v) for m, v in single.items()}
        ratios(result, variants)
        log.save(result)
    if batch:
        runs = {mode: [] for mode in ("reference", "ours", *(v for v in variants if v in BATCH_VARIANTS))
                if mode not in unavailable}
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
    """Speed-ups (reference wall / ours wall) and memory ratios (ours / reference) from the medians so far; a variant
    that fell back gets ``fallback_<variant>`` (what ran instead) and no speed-up key."""
    single = result["single"]
    for v in ("ours", *variants):
        if v not in single:
            continue
        why = fell_back(v, single[v])
        suffix = "" if v == "ours" else f"_{v}"
        if why:
            result[f"fallback{suffix}"] = why
            result.pop(f"single_image_speedup{suffix}", None)
            continue
        result[f"single_image_speedup{suffix}"] = single["reference"]["wall_s"] / single[v]["wall_s"]
        result[f"peak_rss_ratio{suffix}"] = single[v]["peak_rss_mb"] / single["reference"]["peak_rss_mb"]
    for short in ("int8", "bf16"):  # the names for the precision levers
        if f"single_image_speedup_ours-{short}" in result:
            result[f"single_image_speedup_{short}"] = result[f"single_image_speedup_ours-{short}"]
    if "ours" in single and not fell_back("ours", single["ours"]):
        result["single_image_cpu_ratio"] = single["reference"]["cpu_s"] / single["ours"]["cpu_s"]
    b = result.get("batch", {})
    if "reference" in b and "ours" in b and not fell_back("ours", b["ours"]):
        result["batch_per_image_speedup"] = b["reference"]["wall_s"] / b["ours"]["wall_s"]
        result["batch_cpu_ratio"] = b["reference"]["cpu_s"] / b["ours"]["cpu_s"]
        result["batch_peak_rss_ratio"] = b["ours"]["peak_rss_mb"] / b["reference"]["peak_rss_mb"]
    for v in variants:
        if "reference" in b and v in b and not fell_back(v, b[v]):
            result[f"batch_per_image_speedup_{v}"] = b["reference"]["wall_s"] / b[v]["wall_s"]


def phantom_agreement(n: int, work: Path, log, int8: bool = False, bf16: bool = False) -> dict:
    """Ours (with the cord crop, int8, bf16) vs the reference on ``n`` phantoms with the bundled phantom release.

    Per variant: the worst voxel and foreground agreement, the worst per-level Dice and the largest difference of a
    spinal level's midpoint (mm, :func:`rootlets_task.levels.compute.compute_levels` on the phantom's cord), and
    the backend and precision that ran (``phantom_ran_<variant>``).
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
    if bf16:
        segmenters["ours-bf16"] = Segmenter(model_folder=folder, threads=threads, precision="bf16")
    variants = [(name, crop) for name in segmenters for crop in (False, True)]
    cases = []
    result = {f"phantom_ran_{name}": f"{seg.backend} {seg.precision}" for name, seg in segmenters.items()}
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


def run_backend_check(model: Path, int8: bool = False, bf16: bool = False) -> dict:
    """``backend_check`` in its own process: a loaded OpenVINO runtime keeps threads that would slow the timed runs."""
    proc = subprocess.run([sys.executable, str(HERE / "bench_inference.py"), "--backend-check", str(model),
                           *(["--int8"] if int8 else []), *(["--bf16"] if bf16 else [])], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"backend check failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def seconds_per_tile(net, patch) -> float:
    """Median seconds of one forward pass on ``patch`` (one sliding-window tile), after a warm-up pass."""
    import torch

    times = []
    with torch.no_grad():
        for _ in range(TILE_REPS + 1):
            t0 = time.perf_counter()
            net(patch)
            times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


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
    if segmenter.precision != "int8":
        return {"int8": {"fallback": f"{segmenter.backend} {segmenter.precision} ran instead of openvino int8"}}
    net = segmenter.predictor.network
    net.load_state_dict(segmenter.predictor.list_of_parameters[0])
    data, _ = segmenter.preprocess(segmenter.prepare(nib.load(images[1])))
    tile = torch.from_numpy(int8.calibration_tiles(segmenter.predictor, [data], 1)[0])
    with torch.no_grad():
        return {"int8": backends.max_softmax_difference(net(patch), reference),
                "int8_on_image_tile": backends.agreement_on_tile(torch_net(tile).numpy(), net(tile).numpy()),
                "per_tile_s_int8": seconds_per_tile(net, patch)}


def backend_check(model: Path, with_int8: bool = False, with_bf16: bool = False) -> dict:
    """This CPU, and per backend and precision on the realistic model: max |softmax difference| vs PyTorch, the
    precision OpenVINO actually ran and the seconds per tile. A backend that failed its load check says so."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from rootlets_task.core.files import read_json
    from rootlets_task.inference import backends, cpu
    from rootlets_task.inference.segmenter import physical_cores

    predictor = nnUNetPredictor(use_mirroring=False, perform_everything_on_device=False, device=torch.device("cpu"),
                                allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model), use_folds=None)
    patch_size = tuple(predictor.configuration_manager.patch_size)
    patch = backends.check_patch(patch_size, seed=1)  # not the seed checked at load
    torch_net, params = predictor.network, predictor.list_of_parameters[0]
    torch.set_num_threads(physical_cores())
    with torch.no_grad():
        torch_net.load_state_dict(params)
        reference = torch_net(patch)
    result = {"cpu": cpu.cpu_info() | {"OpenVINO": list(cpu.openvino_capabilities()), "Threads": physical_cores()},
              "patch_size": list(patch_size), "per_tile_s_torch": seconds_per_tile(torch_net, patch)}
    if not backends.openvino_available():
        return result | {"openvino": None}
    if not backends.use_openvino(predictor, physical_cores()):
        check = read_json(backends.ir_folder(params, patch_size) / "check.json") or {}
        return result | {"openvino": {"fallback": "failed its load check; PyTorch ran", **check}}
    net = predictor.network
    net.load_state_dict(params)
    result |= {"openvino": backends.max_softmax_difference(net(patch), reference),
               "openvino_precision": backends.inference_precision(net._compiled[id(params)]),
               "per_tile_s_openvino": seconds_per_tile(net, patch)}
    if with_bf16 and cpu.has_bf16() and backends.use_bf16(predictor, physical_cores()):
        bf16 = predictor.network
        bf16.load_state_dict(params)
        result |= {"bf16": backends.max_softmax_difference(bf16(patch), reference),
                   "bf16_precision": backends.inference_precision(bf16._compiled[id(params)]),
                   "per_tile_s_bf16": seconds_per_tile(bf16, patch)}
    elif with_bf16:
        result["bf16"] = {"unavailable": f"no native bfloat16 on {cpu.describe()}" if not cpu.has_bf16()
                          else "OpenVINO did not run it in bf16"}
    return result | (int8_check(model, torch_net, patch, reference) if with_int8 else {})


def summary_table(result: dict) -> list[dict]:
    """One row per variant: backend and precision that ran, seconds per tile (realistic model), per image (median,
    single image), speed-up vs the reference, and agreement with the reference on the phantoms (voxels, worst level
    Dice); a fallback or unavailable variant says so instead of a speed-up."""
    checks, single = result.get("backends_max_softmax_diff", {}), result.get("single", {})
    tiles = {("torch", "float32"): checks.get("per_tile_s_torch"), ("openvino", "float32"): checks.get("per_tile_s_openvino"),
             ("openvino", "int8"): checks.get("per_tile_s_int8"), ("openvino", "bf16"): checks.get("per_tile_s_bf16")}
    rows = []
    for mode in ("reference", *single, *result.get("unavailable", {})):
        if mode in {r["variant"] for r in rows}:
            continue
        if mode in result.get("unavailable", {}):
            rows.append({"variant": mode, "unavailable": result["unavailable"][mode]})
            continue
        run = single[mode]
        suffix = "" if mode == "ours" else f"_{mode}"
        ran = (run["backend"], run["precision"])
        agreement = {k: result.get(f"phantom_{k}{suffix}") for k in ("voxel_agreement", "min_level_dice")}
        rows.append({"variant": mode, "backend": ran[0], "precision": ran[1], "per_tile_s": tiles.get(ran),
                     "per_image_s": run["wall_s"],
                     "speedup": None if mode == "reference" else result.get(f"single_image_speedup{suffix}"),
                     **({"fallback": result[f"fallback{suffix}"]} if f"fallback{suffix}" in result else {}),
                     **({"agreement": agreement} if mode != "reference" and any(agreement.values()) else {})})
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--reps", type=int, default=3, help="single-image runs of each path (median reported)")
    parser.add_argument("--batch", type=int, default=10, help="images in the batch run (0 = no batch run)")
    parser.add_argument("--reps-batch", type=int, default=1, help="batch runs of each path")
    parser.add_argument("--phantoms", type=int, default=3, help="phantoms for the agreement check (0 = skip)")
    parser.add_argument("--variants", default="ours-torch,ours-crop,ours-int8,ours-crop-int8,ours-bf16,ours-crop-bf16",
                        help="extra single-image paths, comma-separated: ours-torch (PyTorch backend), ours-crop (cord "
                             "given), ours-int8 (int8 network), ours-crop-int8 (both), ours-bf16 (bfloat16 network, "
                             "CPUs with avx512_bf16 or AMX), ours-crop-bf16")
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
        with_bf16 = any(v in BF16_VARIANTS for v in variants)
        checked = result.get("backends_max_softmax_diff", {})
        if "cpu" not in checked or (with_int8 and "int8" not in checked) or (with_bf16 and "bf16" not in checked):
            checked = result["backends_max_softmax_diff"] = run_backend_check(model, with_int8, with_bf16)  # also quantises
        result["cpu"] = checked["cpu"]
        log(f"backend check: {checked}")
        timing(model, args.reps, args.batch, args.reps_batch, variants, work, log, result, args.reference_batch_from_single)
        if args.phantoms and PHANTOM_ZIP.exists():
            from rootlets_task.inference import cpu

            result.update(phantom_agreement(args.phantoms, work, log, int8=with_int8, bf16=with_bf16 and cpu.has_bf16()))
        elif args.phantoms:
            log(f"agreement skipped: {PHANTOM_ZIP} not built")
    result["table"] = summary_table(result)
    save(result)
    log(json.dumps({k: v for k, v in result.items() if not isinstance(v, dict | list)}, indent=1))
    for row in result["table"]:
        log(json.dumps(row))
    return result


if __name__ == "__main__":
    if sys.argv[1:2] == ["--backend-check"]:
        print(json.dumps(backend_check(Path(sys.argv[2]), with_int8="--int8" in sys.argv[3:],
                                       with_bf16="--bf16" in sys.argv[3:])))
    else:
        main()
