"""Worker processes of the inference benchmark: one run of the reference path or of ours, timed from inside.

``python bench_workers.py reference MODEL_FOLDER OUT_DIR IMAGE...`` runs the plain way SCT runs a rootlets model
(nnUNetPredictor, tile step 0.5, Gaussian, no mirroring, all folds, ``predict_single_npy_array`` after reorientation
to LPI); the benchmark starts one such process per image. ``python bench_workers.py ours MODEL_FOLDER OUT_DIR IMAGE...``
runs rootlets_task's default path on all images in one process (``ours-torch``: PyTorch backend; ``ours-crop``:
with the cord mask beside each image; ``ours-int8`` / ``ours-crop-int8``: the int8 network, calibrated on the first
image, quantised beforehand by the benchmark so that only inference is timed; ``ours-bf16`` / ``ours-crop-bf16``: the
network in bfloat16, CPUs with avx512_bf16 or AMX only). Each prints one JSON line with its CPU time, peak resident
memory (``getrusage`` of the process itself; neither path spawns children) and the backend and precision that actually
ran; a variant that cannot run here prints ``{"unavailable": why}`` instead.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path


def _usage() -> dict:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu_s": ru.ru_utime + ru.ru_stime, "peak_rss_mb": ru.ru_maxrss / 1024}


def reference(model_folder: Path, out_dir: Path, images: list[Path]) -> dict:
    """SCT's way (``spinalcordtoolbox/deepseg/{nnunet,inference}.py``): predictor per call, LPI, z-y-x transpose."""
    import glob

    import nibabel as nib
    import numpy as np
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    folds = sorted(int(p.split("_")[-1]) if not p.endswith("fold_all") else "all" for p in glob.glob(f"{model_folder}/fold_*"))
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False, perform_everything_on_device=False,
                                device=torch.device("cpu"), verbose=False, verbose_preprocessing=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model_folder), use_folds=folds, checkpoint_name="checkpoint_final.pth")
    for path in images:
        img = nib.load(path)
        ornt, target = nib.orientations.io_orientation(img.affine), nib.orientations.axcodes2ornt(("R", "A", "S"))
        lpi = nib.orientations.ornt_transform(ornt, target)
        data = nib.orientations.apply_orientation(np.asanyarray(img.dataobj), lpi)
        zooms = np.array(img.header.get_zooms()[:3])[np.argsort(lpi[:, 0])]
        x = data.transpose(2, 1, 0)[None].astype(np.float32)
        seg = predictor.predict_single_npy_array(x, {"spacing": zooms[::-1].tolist()})
        seg = nib.orientations.apply_orientation(seg.transpose(2, 1, 0), nib.orientations.ornt_transform(target, ornt))
        nib.save(nib.Nifti1Image(seg.astype(np.uint8), img.affine, img.header), out_dir / path.name)
    return {"backend": "torch", "precision": "float32"}


def int8_segmenter(model_folder: Path, calibration: Path, verbose: int = 0):
    """The int8 Segmenter of the benchmark: calibrated on ``calibration``; no agreement floor (random weights tie).
    Its ``precision`` and ``backend`` say what runs (float32 or PyTorch where int8 could not be used)."""
    from rootlets_task.inference.int8 import Int8Options
    from rootlets_task.inference.segmenter import Segmenter

    return Segmenter(model_folder, verbose=verbose, precision="int8", calibration=[calibration],
                     int8_options=Int8Options(max_tiles=8, min_agreement=0.0))


def ours(model_folder: Path, out_dir: Path, images: list[Path], backend: str = "auto", crop: bool = False,
         precision: str = "float32") -> dict:
    """rootlets_task's default path: one Segmenter (model loaded once) for all images; returns what ran.

    ``crop``: pass the cord mask written beside each image (``<name>_cord.nii.gz``), as the chain does.
    ``precision`` int8: the int8 network calibrated on the first image (:func:`int8_segmenter`); bf16: bfloat16.
    """
    from _common import segment_to_file

    from rootlets_task.inference.segmenter import Segmenter, physical_cores

    threads = physical_cores()
    segmenter = (int8_segmenter(model_folder, images[0]) if precision == "int8"
                 else Segmenter(model_folder, verbose=0, backend=backend, threads=threads, precision=precision))
    for path in images:
        cord = path.with_name(path.name.replace(".nii.gz", "_cord.nii.gz")) if crop else None
        segment_to_file(segmenter, path, out_dir / path.name, cord=cord)
    return {"backend": segmenter.backend, "precision": segmenter.precision}


MODES = {
    "reference": reference,
    "ours": ours,
    "ours-torch": lambda *a: ours(*a, backend="torch"),
    "ours-crop": lambda *a: ours(*a, crop=True),
    "ours-int8": lambda *a: ours(*a, precision="int8"),
    "ours-crop-int8": lambda *a: ours(*a, crop=True, precision="int8"),
    "ours-bf16": lambda *a: ours(*a, precision="bf16"),
    "ours-crop-bf16": lambda *a: ours(*a, crop=True, precision="bf16"),
}
# What each mode is meant to run (backend, precision): a run that ran something else fell back.
EXPECTED = {"reference": ("torch", "float32"), "ours-torch": ("torch", "float32"),
            **{m: ("openvino", m.rsplit("-", 1)[-1] if m.endswith(("int8", "bf16")) else "float32")
               for m in MODES if m not in ("reference", "ours-torch")}}


if __name__ == "__main__":
    t0 = time.perf_counter()
    mode, model, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    from rootlets_task.core.errors import RootletsError

    try:
        ran = MODES[mode](model, out, [Path(p) for p in sys.argv[4:]])
    except RootletsError as exc:  # e.g. bf16 on a CPU without it: reported, not timed
        print(json.dumps({"unavailable": str(exc)}))
        sys.exit(0)
    print(json.dumps({**_usage(), "wall_inside_s": time.perf_counter() - t0, **ran}))
