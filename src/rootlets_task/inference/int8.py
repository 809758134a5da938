"""Opt-in int8 inference: post-training quantisation of the OpenVINO network with NNCF (``rootlets_task[int8]``).

The float32 OpenVINO IR made by :mod:`rootlets_task.inference.backends` is quantised once per (fold weights, calibration data,
options, library versions) and cached beside it in ``<cache>/openvino-int8/<key>``: written to a private folder and
renamed into place, so a concurrent or killed quantisation never leaves a half-written entry. Calibration data are
nnU-Net-preprocessed sliding-window tiles of a few images (default: seeded phantoms at the model's spacing); their
identity (voxels, affines, the model's plans, the options) is part of the key. int8 runs each tile faster but
changes labels a little, so it is never chosen automatically: ``Segmenter(..., precision="int8")``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from rootlets_task.core.errors import RootletsError
from rootlets_task.core.files import build_once
from rootlets_task.inference import backends

log = logging.getLogger(__name__)


PHANTOM_SEEDS = (0, 1)  # default calibration images: these phantoms (rootlets_task.io.phantom), at the model's spacing


@dataclass(frozen=True)
class Int8Options:
    """NNCF post-training quantisation settings (all part of the cache key).

    ``preset``: ``mixed`` (symmetric weights, asymmetric activations) or ``performance`` (symmetric both).
    ``max_tiles``: calibration tiles (NNCF ``subset_size``), spread evenly over the calibration images' tiles.
    ``keep_float``: convolutions left in float32, ``"first"`` (on the image) and/or ``"last"`` (the seg layer); both
    by default: on the phantom release that lifts the worst per-level Dice vs float32 from 0.84 to 0.91 at no
    measurable cost in speed on a RootletSeg-sized network (benchmarks/bench_inference.py).
    ``min_agreement``: the int8 network must give the float32 labels on at least this share of the voxels that
    either labels on a calibration tile, else float32 is kept (a warning says so).
    """

    preset: str = "mixed"
    fast_bias_correction: bool = True
    max_tiles: int = 16
    keep_float: tuple[str, ...] = ("first", "last")
    min_agreement: float = 0.9


def nncf_available() -> bool:
    """True when the ``int8`` extra (NNCF) is installed."""
    return importlib.util.find_spec("nncf") is not None


def require_nncf() -> None:
    """Refuse int8 in one line when NNCF is missing."""
    if not nncf_available():
        raise RootletsError("precision int8: NNCF is not installed; run `pip install 'rootlets_task[int8]'` "
                            "or use precision float32")


def default_calibration(spacing_mm: float) -> list[nib.Nifti1Image]:
    """The default calibration images: phantoms of ``PHANTOM_SEEDS`` at an isotropic ``spacing_mm``."""
    from rootlets_task.io.phantom import make_phantom

    return [make_phantom("LPI", (spacing_mm,) * 3, seed=seed).nifti("image") for seed in PHANTOM_SEEDS]


def load_images(images: Sequence[nib.Nifti1Image | str | os.PathLike]) -> list[nib.Nifti1Image]:
    """Calibration images as NIfTI objects (paths are loaded and checked like any input)."""
    from rootlets_task.io import nifti

    return [img if isinstance(img, nib.Nifti1Image) else nifti.load(img) for img in images]


def calibration_digest(images: Iterable[nib.Nifti1Image], plans: dict, options: Int8Options) -> str:
    """Identity of the calibration data: the images' voxels and affines, the plans that preprocess them, the options."""
    digest = hashlib.blake2b(digest_size=16)
    for img in images:
        data = np.ascontiguousarray(np.asanyarray(img.dataobj))
        digest.update(json.dumps([list(data.shape), str(data.dtype)]).encode())
        digest.update(data.view(np.uint8).data)
        digest.update(np.asarray(img.affine, np.float64).tobytes())
    digest.update(json.dumps([plans, asdict(options)], sort_keys=True, default=str).encode())
    return digest.hexdigest()


def calibration_tiles(predictor, preprocessed: Iterable[torch.Tensor], max_tiles: int) -> list[np.ndarray]:
    """The network inputs nnU-Net's sliding window makes from each preprocessed image, ``max_tiles`` spread evenly."""
    from acvl_utils.cropping_and_padding.padding import pad_nd_image

    patch = predictor.configuration_manager.patch_size
    tiles = []
    for data in preprocessed:
        padded, _ = pad_nd_image(data, patch, "constant", {"value": 0}, True, None)
        for slicer in predictor._internal_get_sliding_window_slicers(padded.shape[1:]):
            tiles.append(np.ascontiguousarray(np.asarray(padded[slicer], np.float32)[None]))
    pick = np.unique(np.linspace(0, len(tiles) - 1, min(max_tiles, len(tiles))).round().astype(int))
    return [tiles[i] for i in pick]


def _keep_float_names(model, keep: Sequence[str]) -> list[str]:
    """Names of the first and/or last convolution of an OpenVINO model (the ones ``keep_float`` asks for)."""
    convs = [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() == "Convolution"]
    unknown = set(keep) - {"first", "last"}
    if unknown:
        raise RootletsError(f"int8 keep_float {sorted(unknown)}: unknown; use 'first' and/or 'last'")
    return [convs[0]] * ("first" in keep) + [convs[-1]] * ("last" in keep)


def quantize(ir: Path, tiles: list[np.ndarray], options: Int8Options, dest: Path) -> dict:
    """Quantise the float32 IR ``ir`` on ``tiles`` into ``dest`` (network.xml + check.json); return the check."""
    import nncf
    import openvino as ov

    core = ov.Core()
    model = core.read_model(ir)
    ignored = _keep_float_names(model, options.keep_float)
    quantized = nncf.quantize(
        model, nncf.Dataset(tiles), subset_size=len(tiles), preset=nncf.QuantizationPreset(options.preset),
        fast_bias_correction=options.fast_bias_correction,
        ignored_scope=nncf.IgnoredScope(names=ignored) if ignored else None)
    ov.save_model(quantized, dest / "network.xml", compress_to_fp16=False)
    tile = tiles[len(tiles) // 2]
    config = backends.compile_config(None, "int8")  # float32 layers in float32 on every CPU, both networks
    outputs = [backends.run_network(core.compile_model(m, "CPU", config), tile) for m in (model, quantized)]
    check = backends.agreement_on_tile(*outputs) | {"tiles": len(tiles), "options": asdict(options)}
    (dest / "check.json").write_text(json.dumps(check))
    return check


def _entry(ir: Path, calibration: str, options: Int8Options) -> Path:
    import nncf
    import openvino

    key = hashlib.blake2b(json.dumps([ir.name, calibration, asdict(options), nncf.__version__, openvino.__version__])
                          .encode(), digest_size=12).hexdigest()
    return backends.cache_dir() / "openvino-int8" / key


def quantized_folder(ir: Path, calibration: str, tiles: Callable[[], list[np.ndarray]], options: Int8Options) -> Path:
    """The cached int8 entry of the float32 IR folder ``ir``; quantised (``tiles()`` called) only when missing.

    Built once (:func:`rootlets_task.core.files.build_once`): concurrent or killed quantisations never leave a half-built entry.
    """
    folder = _entry(ir, calibration, options)
    if not (folder / "check.json").exists():
        log.info("quantising the network to int8 once (minutes on a large model), cached in %s", folder)
    return build_once(folder, lambda tmp: quantize(ir / "network.xml", tiles(), options, tmp))


def use_int8(predictor, calibration: str, tiles: Callable[[], list[np.ndarray]], threads: int,
             options: Int8Options | None = None) -> bool:
    """Swap the OpenVINO network of ``predictor`` (see ``backends.use_openvino``) for its int8 quantisation.

    ``calibration``: :func:`calibration_digest` of the images behind ``tiles`` (called once, and only when some fold
    is not cached yet). Returns False (float32 kept, with a warning) when a fold's int8 labels agree with float32 on
    less than ``options.min_agreement`` of a calibration tile.
    """
    options = options or Int8Options()
    patch = tuple(int(p) for p in predictor.configuration_manager.patch_size)
    made: list[np.ndarray] = []

    def once() -> list[np.ndarray]:
        made[:] = made or tiles()
        return made

    compiled = {}
    for params in predictor.list_of_parameters:
        folder = quantized_folder(backends.ir_folder(params, patch), calibration, once, options)
        check = json.loads((folder / "check.json").read_text())
        if not check["label_agreement"] >= options.min_agreement:
            log.warning("int8 labels agree with float32 on %.3f of a calibration tile (< %s); using float32",
                        check["label_agreement"], options.min_agreement)
            return False
        compiled[id(params)] = backends.compile_cached(folder, backends.compile_config(threads, "int8"))
        log.info("int8 fold: %s", check)
    predictor.network = backends.OpenVINONetwork(compiled)
    return True
