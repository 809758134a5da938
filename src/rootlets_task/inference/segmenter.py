"""Rootlets segmentation with a RootletSeg nnU-Net v2 release, compatible with ``sct_deepseg rootlets``.

:class:`Segmenter` loads the ``nnUNetPredictor`` once and reuses it for every image. One image goes through
five separate stages, so that each can be swapped or sped up on its own:

1. :meth:`Segmenter.prepare`: reorient to the model's orientation, transpose to nnU-Net's (c, z, y, x) order;
2. :meth:`Segmenter.preprocess`: nnU-Net's own preprocessing from plans.json (crop, normalize, resample);
3. :meth:`Segmenter.predict_logits`: sliding window over every fold (mirroring only with test-time augmentation);
4. :meth:`Segmenter.export`: resample the logits back and take the argmax;
5. :meth:`Segmenter.restore`: back to the input's voxel order, as uint8.

:meth:`Segmenter.predict` is :meth:`Segmenter.segment_image` plus the network's confidence per level
(:mod:`.confidence`), taken from the same logits in the export step (:meth:`Segmenter.export_with_probability`):
the same labels, no second inference pass.

These are the steps of ``nnUNetPredictor.predict_single_npy_array`` (the path SCT uses): no worker pools, so no
``if __name__ == "__main__"`` guard is needed. A Segmenter leaves no process-wide setting changed: it loads and runs
inside :func:`configure_threads`, which restores torch's thread count (and nnU-Net's variables) when the work is done.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import math
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nibabel as nib
import numpy as np

from rootlets_task.core.errors import RootletsError
from rootlets_task.core.files import load_json, read_json
from rootlets_task.core.logs import is_terminal
from rootlets_task.core.names import dataset_levels, level_name
from rootlets_task.core.options import ModelOptions
from rootlets_task.inference import cpu, cropping
from rootlets_task.inference.cropping import Box, grow_to_patch
from rootlets_task.io import nifti
from rootlets_task.models.plans import plans_problem

if TYPE_CHECKING:
    from rootlets_task.inference.int8 import Int8Options

log = logging.getLogger(__name__)

DEFAULT_ORIENTATION = "LPI"  # SCT code (= nibabel RAS), what SCT assumes when dataset.json has no "image_orientation"
TILE_STEP_SIZE = 0.5
DEVICES = ("auto", "cpu", "cuda", "mps")
BACKENDS = ("auto", "torch", "openvino")  # auto = OpenVINO on CPU when installed and numerically checked, else torch
# Input spacing within this relative difference of the plans' spacing is taken as equal: no resampling either way.
SPACING_TOLERANCE = 0.01
MAX_JSON_BYTES = 16 << 20  # dataset.json / plans.json of a model folder
_IMPORT_LOCK = threading.Lock()


_NNUNET_ENV = ("nnUNet_def_n_proc", "nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
_THREADS_LOCK = threading.Lock()
# blocks inside configure_threads now, and what to restore after the last one
_threads_held: dict[str, Any] = {"open": 0, "saved": None}


@contextlib.contextmanager
def configure_threads(threads: int | None = None) -> Iterator[int]:
    """While the block runs: CPU threads for nnU-Net and torch (default: every physical core it may use); yields them.

    nnU-Net caps torch at ``nnUNet_def_n_proc`` (default 8), read when nnunetv2 is first imported, so a model is
    loaded inside this block. It also gives nnU-Net's path variables a harmless value when unset (as SCT does), so its
    import prints no warnings about them. On leaving, torch's thread count and those variables are what they were, so a
    program that embeds the package keeps its own settings (blocks open in several threads at once restore once, when
    the last one closes). A :class:`Segmenter` enters it around its own work.
    """
    import torch

    given = os.environ.get("nnUNet_def_n_proc")
    if given is not None and not (given.strip().isascii() and given.strip().isdigit() and 1 <= int(given) <= 4096):
        raise RootletsError(f"nnUNet_def_n_proc={given[:20]!r}: not a number of processes from 1 to 4096; unset it or "
                            "give e.g. nnUNet_def_n_proc=4")
    threads = threads or physical_cores()
    with _THREADS_LOCK:
        if _threads_held["open"] == 0:
            _threads_held["saved"] = (torch.get_num_threads(), {name: os.environ.get(name) for name in _NNUNET_ENV})
        _threads_held["open"] += 1
        os.environ.setdefault("nnUNet_def_n_proc", str(threads))
        for name in _NNUNET_ENV[1:]:
            os.environ.setdefault(name, os.devnull)
        torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        with _THREADS_LOCK:
            _threads_held["open"] -= 1
            if _threads_held["open"] == 0:
                count, env = _threads_held["saved"]
                torch.set_num_threads(count)
                for name, value in env.items():
                    if value is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = value


def physical_cores() -> int:
    """Physical CPU cores this process may use (hyper-threads do not speed up convolutions)."""
    import psutil

    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(psutil.cpu_count(logical=False) or allowed, allowed))


def resolve_device(device: str = "auto"):
    """``auto`` -> cuda, else mps, else cpu; an explicit device that is not available is an error."""
    import torch

    if device not in DEVICES:
        raise RootletsError(f"device {device!r}: unknown; use one of {', '.join(DEVICES)}")
    available = {
        "cuda": torch.cuda.is_available(),
        "mps": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
        "cpu": True,
    }
    if device == "auto":
        device = next(d for d in ("cuda", "mps", "cpu") if available[d])
    if not available[device]:
        raise RootletsError(f"device {device}: not available on this machine (torch {torch.__version__}); "
                            "use -device cpu or -device auto")
    return torch.device(device)


def find_checkpoints(model_folder: Path) -> tuple[tuple[int | str, ...], str]:
    """Every fold of a trained model folder and the checkpoint to load (final, else best), as SCT picks them."""
    folds = sorted(p for p in model_folder.glob("fold_*") if p.is_dir())
    for name in ("checkpoint_final.pth", "checkpoint_best.pth"):
        with_ckpt = [p.name[len("fold_"):] for p in folds if (p / name).is_file()]
        if with_ckpt:
            return tuple(f if f == "all" else int(f) for f in with_ckpt), name
    raise RootletsError(f"model folder {model_folder}: no fold_*/checkpoint_final.pth or checkpoint_best.pth; "
                        "reinstall the release with `rootlets -install -release TAG`")


STOCK_TRAINER = r"nnUNetTrainer(_\d+epochs)?(_NoMirroring)?"
TRAINER_CODE = "trainer_class.py"  # SCT's optional trainer module in a release's trainer folder


def initialize(predictor, model_folder: Path, folds: tuple[int | str, ...], checkpoint: str,
               allow_code: bool = False) -> None:
    """``predictor.initialize_from_trained_model_folder`` without its ``torch.load(weights_only=False)``.

    Checkpoints are read as data only (:mod:`rootlets_task.models.checkpoints`). The network is built from the plans, as
    nnU-Net builds it for every trainer that does not override ``build_network_architecture`` (the stock trainers and
    their ``_<N>epochs`` / ``_NoMirroring`` variants that RootletSeg releases use, and most custom trainers, which
    change training only), without importing nnU-Net's training stack (seconds of every start-up). A release's own
    ``trainer_class.py`` (SCT's convention: ``get_trainer_class()``) builds the network only with ``allow_code``: it is
    code from the release and runs with the user's rights.
    """
    import inspect
    import re

    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from rootlets_task.models import checkpoints

    loaded = [checkpoints.load(model_folder / f"fold_{f}" / checkpoint) for f in folds]
    first = loaded[0]
    dataset_json = load_json(model_folder / "dataset.json", "model file", MAX_JSON_BYTES, fix="reinstall the release")
    plans_manager = PlansManager(load_json(model_folder / "plans.json", "model file", MAX_JSON_BYTES,
                                           fix="reinstall the release"))
    cm = plans_manager.get_configuration(first["init_args"]["configuration"])
    args = (cm.network_arch_class_name, cm.network_arch_init_kwargs, cm.network_arch_init_kwargs_req_import,
            determine_num_input_channels(plans_manager, cm, dataset_json),
            plans_manager.get_label_manager(dataset_json).num_segmentation_heads)
    code = model_folder / TRAINER_CODE
    if allow_code and code.is_file() and not re.fullmatch(STOCK_TRAINER, first["trainer_name"]):
        build = _release_trainer(code).build_network_architecture
        if "plans_manager" in inspect.signature(build).parameters:  # nnU-Net >= 2.7's signature, else the older one
            network = build(plans_manager, cm, *args[3:], enable_deep_supervision=False)
        else:
            network = build(*args, enable_deep_supervision=False)
    else:
        network = get_network_from_plans(*args, deep_supervision=False)
    parameters = [c["network_weights"] for c in loaded]
    try:
        network.load_state_dict(parameters[0])
    except RuntimeError:  # a trainer whose network is not the plans' one
        hint = (f"run it with -allow-release-code so its {TRAINER_CODE} builds the network (it runs with your rights)"
                if code.is_file() and not allow_code else "this release cannot be run by rootlets_task")
        raise RootletsError(f"model folder {model_folder}: the weights of trainer {first['trainer_name']} do not fit the "
                            f"network of its plans; {hint}") from None
    predictor.manual_initialization(network, plans_manager, cm, parameters, dataset_json, first["trainer_name"],
                                    first.get("inference_allowed_mirroring_axes"))


def _release_trainer(path: Path):
    """The trainer class of a release's ``trainer_class.py`` (SCT's loader: ``get_trainer_class()``); runs its code."""
    import importlib.util

    log.warning("running %s from the release (allowed with -allow-release-code)", path)
    spec = importlib.util.spec_from_file_location("rootlets_release_trainer_class", path)
    assert spec is not None and spec.loader is not None  # a .py file always has a spec and a loader
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        return module.get_trainer_class()
    except Exception as exc:  # the release's own code failed: say so in one line
        raise RootletsError(f"{path}: the release's trainer code failed ({type(exc).__name__}: {nifti.one_line(exc)}); "
                            "it cannot be run here") from None


def _check_precision(precision: str, backend: str, device: str) -> None:
    """Refuse a precision that cannot run with this backend, device and CPU: int8 needs NNCF and OpenVINO on CPU,
    bf16 OpenVINO on a CPU with native bfloat16 (``avx512_bf16`` or AMX)."""
    from rootlets_task.core.options import PRECISIONS
    from rootlets_task.inference import backends, int8

    if precision not in PRECISIONS:
        raise RootletsError(f"precision {precision!r}: unknown; use one of {', '.join(PRECISIONS)}")
    if precision == "float32":
        return
    if precision == "int8":
        int8.require_nncf()
    if backend == "torch" or device != "cpu" or not backends.openvino_available():
        extra = "int8" if precision == "int8" else "openvino"
        raise RootletsError(f"precision {precision}: needs the OpenVINO backend on CPU (here: {backend}, {device}); run "
                            f"`pip install 'rootlets_task[{extra}]'` and use -device cpu")
    if precision == "bf16" and not cpu.has_bf16():
        raise RootletsError(f"precision bf16: this CPU has no native bfloat16 (it needs avx512_bf16 or AMX): "
                            f"{cpu.describe()}; use -precision float32 (exact) or int8")


@contextlib.contextmanager
def _quiet(enabled: bool):
    """Hide nnU-Net's prints while a model loads (device notices), unless the user wants detail (verbose 2)."""
    if not enabled:
        yield
        return
    with contextlib.redirect_stdout(io.StringIO()):
        yield


@dataclass
class Prediction:
    """Rootlets of one image (uint8 on the input grid) and the network's confidence in them (the sidecar's ``Confidence``)."""

    labels: np.ndarray
    confidence: dict


@dataclass
class Prepared:
    """An image in the model's frame: (1, z, y, x) float32, spacing (z, y, x) and how to undo the reorientation."""

    data: np.ndarray
    spacing: tuple[float, ...]
    inverse: np.ndarray
    shape: tuple[int, ...]


def _level_lut(dataset_json: dict) -> np.ndarray | None:
    """Lookup table class -> spinal level value when the model's ``dataset.json`` names its classes by level
    (:func:`rootlets_task.core.names.dataset_levels`), else None (SCT's ``lvl<n>``: the class is the level)."""
    labels = dataset_json.get("labels")
    mapping = dataset_levels(labels) if isinstance(labels, dict) else None
    if mapping is None:
        return None
    lut = np.arange(256)
    for value, level in mapping.items():
        if 0 <= value <= 255:
            lut[value] = level
    log.info("model classes named by level: %s", ", ".join(f"{v} -> {level_name(k, 'spinal')}"
                                                            for v, k in sorted(mapping.items())))
    return lut


class Segmenter:
    """An nnU-Net rootlets model loaded once, applied to any number of images.

    ``model_folder`` is the ``nnUNetTrainer*__nnUNetPlans__3d_fullres`` folder of a release (see
    :func:`rootlets_task.models.install.model_folder`); ``record`` is its install record (tag, url, sha256), kept for the
    JSON sidecar. ``options`` (:class:`rootlets_task.core.options.ModelOptions`; its ``release`` is not used here: the
    folder is given) says how the model runs; any of its fields given by keyword replaces the options' one
    (``Segmenter(folder, device="cpu")``). ``threads``: CPU threads of torch, the OpenVINO backend and the export
    (default: every physical core this process may use), set while the model loads and segments and restored after
    (:func:`configure_threads`). ``verbose`` 2 shows nnU-Net's own output. ``allow_code``: let the release's
    ``trainer_class.py`` build the network. ``precision="int8"`` (opt-in, OpenVINO backend and the ``int8`` extra): the
    network quantised with NNCF on ``calibration`` images (paths or NIfTI images; default: phantoms) with
    ``int8_options``, faster per tile, labels change a little; see :mod:`rootlets_task.inference.int8`.
    ``precision="bf16"`` (opt-in, OpenVINO on a CPU with ``avx512_bf16`` or AMX): the network run in bfloat16
    (:func:`rootlets_task.inference.backends.use_bf16`). :attr:`precision` is the one that runs.
    """

    def __init__(self, model_folder: str | os.PathLike, options: ModelOptions = ModelOptions(), *, verbose: int = 1,
                 record: dict | None = None, calibration: Sequence | None = None, int8_options: Int8Options | None = None,
                 **fields: Any):
        options = dataclasses.replace(options, **fields)  # a field that ModelOptions lacks: TypeError, as any call
        self.model_folder = Path(model_folder)
        self.record = dict(record or {})
        self.verbose = verbose
        self.test_time_aug = options.test_time_aug
        self.allow_code = options.allow_code or bool(self.record.get("code"))  # given now, or when the release was installed
        self.crop_pads = cropping.read_crop_metadata(self.model_folder.parent)  # SCT HEAD's models trained on crops
        self.dataset_json = self._json("dataset.json")
        self.plans = self._json("plans.json")  # checked now: present, readable, of a sane size, values in range
        self.orientation = self.dataset_json.get("image_orientation", DEFAULT_ORIENTATION)
        self.level_map = _level_lut(self.dataset_json)  # classes named by level (a thoracic/lumbar model) -> levels
        self.axcodes = nifti.sct_to_axcodes(self.orientation)
        self.folds, self.checkpoint = find_checkpoints(self.model_folder)
        self.device = resolve_device(options.device)
        self.threads = (options.threads or physical_cores()) if self.device.type == "cpu" else None
        _check_precision(options.precision, options.backend, self.device.type)  # before the load: a bad choice costs nothing
        t0 = time.perf_counter()
        with self._threads():
            self.predictor = self._load()
            self.backend = self._select_backend(options.backend)
            self.precision = self._select_precision(options.precision, options.backend, calibration, int8_options)
        self.load_seconds = time.perf_counter() - t0
        log.info("network: %s backend, %s precision, %s threads, on %s", self.backend, self.precision, self.threads,
                 cpu.describe() if self.device.type == "cpu" else self.device.type)

    def _threads(self):
        """This model's torch threads while a block runs (restored after); nothing to set off the CPU."""
        return configure_threads(self.threads) if self.threads else contextlib.nullcontext()

    def _json(self, name: str) -> dict:
        path = self.model_folder / name
        if path.is_file() and path.stat().st_size > MAX_JSON_BYTES:
            raise RootletsError(f"model folder {self.model_folder}: {name} is over {MAX_JSON_BYTES >> 20} MiB, not a "
                                "model's; reinstall the release with `rootlets -install -release TAG`")
        content = read_json(path, MAX_JSON_BYTES)
        if not isinstance(content, dict):
            raise RootletsError(f"model folder {self.model_folder}: {name} missing or unreadable; reinstall the release "
                                "with `rootlets -install -release TAG`")
        problem = plans_problem(content) if name == "plans.json" else None
        if problem:
            raise RootletsError(f"model folder {self.model_folder}: plans.json: {problem}; reinstall the release with "
                                "`rootlets -install -release TAG`")
        return content

    def _load(self):
        with _IMPORT_LOCK, _quiet(self.verbose < 2):
            from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

            predictor = nnUNetPredictor(
                tile_step_size=TILE_STEP_SIZE, use_gaussian=True, use_mirroring=self.test_time_aug,
                perform_everything_on_device=self.device.type == "cuda", device=self.device,
                verbose=self.verbose >= 2, verbose_preprocessing=self.verbose >= 2,
                allow_tqdm=self.verbose >= 1 and is_terminal())  # no bar updates in a log file
            try:
                initialize(predictor, self.model_folder, self.folds, self.checkpoint, self.allow_code)
            except (OSError, RuntimeError, KeyError, ValueError, TypeError, AttributeError) as exc:
                raise RootletsError(f"model folder {self.model_folder}: cannot be loaded ({type(exc).__name__}: "
                                    f"{nifti.one_line(exc)}); reinstall the release") from None
        self.preprocessor = predictor.configuration_manager.preprocessor_class(verbose=self.verbose >= 2)
        return predictor

    def _select_backend(self, backend: str) -> str:
        """Swap the network for OpenVINO when asked or (``auto``) when installed on CPU; see :mod:`.backends`."""
        from rootlets_task.inference import backends

        if backend == "auto":
            backend = os.environ.get("ROOTLETS_TASK_BACKEND", "auto")  # lets a user force torch without code changes
        if backend not in BACKENDS:
            raise RootletsError(f"backend {backend!r}: unknown (ROOTLETS_TASK_BACKEND?); use one of {', '.join(BACKENDS)}")
        if backend == "torch" or self.device.type != "cpu" or (backend == "auto" and not backends.openvino_available()):
            return "torch"
        if not backends.openvino_available():
            raise RootletsError("backend openvino: not installed; run `pip install 'rootlets_task[openvino]'` "
                                "or use the torch backend")
        assert self.threads is not None  # set on CPU
        with _quiet(self.verbose < 2):
            return "openvino" if backends.use_openvino(self.predictor, self.threads) else "torch"

    def _select_precision(self, precision: str, backend: str, calibration: Sequence | None, options) -> str:
        """``float32``; ``bf16``: the OpenVINO network compiled in bfloat16 (:mod:`.backends`); ``int8``: the OpenVINO
        network swapped for its NNCF quantisation (:mod:`.int8`). float32 (with a warning) when it cannot run."""
        from rootlets_task.inference import backends, int8

        if precision == "float32":
            return precision
        if self.backend != "openvino":  # OpenVINO is installed (checked before the load) but failed its check
            log.warning("precision %s: the OpenVINO backend is not usable here; using float32", precision)
            return "float32"
        assert self.threads is not None  # OpenVINO runs on CPU, where threads are set
        if precision == "bf16":
            with _quiet(self.verbose < 2):
                return "bf16" if backends.use_bf16(self.predictor, self.threads) else "float32"
        options = options or int8.Int8Options()
        images = (int8.load_images(calibration) if calibration
                  else int8.default_calibration(float(min(self.predictor.configuration_manager.spacing))))
        digest = int8.calibration_digest(images, self.predictor.plans_manager.plans, options)

        def tiles():
            return int8.calibration_tiles(self.predictor, (self.preprocess(self.prepare(i))[0] for i in images),
                                          options.max_tiles)

        with _quiet(self.verbose < 2):
            return "int8" if int8.use_int8(self.predictor, digest, tiles, self.threads, options) else "float32"

    @property
    def settings(self) -> dict:
        """What the sidecar records about how the prediction was made."""
        return {"TileStepSize": TILE_STEP_SIZE, "UseGaussian": True, "Mirroring": self.test_time_aug,
                "ModelCrop": self.crop_pads,
                "Folds": list(self.folds), "Checkpoint": self.checkpoint, "ModelOrientation": self.orientation,
                "Threads": self.threads, "Backend": self.backend, "Precision": self.precision}

    # --- the five stages -------------------------------------------------------------------------------------
    def prepare(self, img: nib.Nifti1Image) -> Prepared:
        """Reorient to the model's orientation and transpose (x, y, z) -> (1, z, y, x), spacing reversed."""
        data, spacing, inverse = nifti.reorient(img, self.axcodes)
        array = np.ascontiguousarray(np.asarray(data, dtype=np.float32).transpose(2, 1, 0)[None])
        prepared = Prepared(array, self.snap_spacing(tuple(spacing[::-1])), inverse, tuple(img.shape[:3]))
        self._check_resampled(prepared)
        return prepared

    def _check_resampled(self, prepared: Prepared) -> None:
        """Refuse, before nnU-Net allocates it, an image that the plans' spacing would make larger than memory."""
        from rootlets_task.models.plans import CLASSES, MAX_TILE_BYTES, physical_memory

        p = self.predictor
        target = [0.0] * 3
        for i, axis in enumerate(p.plans_manager.transpose_forward):
            target[axis] = float(p.configuration_manager.spacing[i])
        voxels = math.prod(n * s / t for n, s, t in zip(prepared.data.shape[1:], prepared.spacing, target, strict=True))
        need, memory = voxels * 4 * (2 + CLASSES), physical_memory() or MAX_TILE_BYTES
        if need > memory:
            raise RootletsError(f"model folder {self.model_folder}: resampled to the plans' spacing {target} mm this "
                                f"image would need about {need / 2**30:.0f} GiB, more than this machine's "
                                f"{memory / 2**30:.0f} GiB; check the image's voxel size and the release's plans.json")

    def snap_spacing(self, spacing: tuple[float, ...]) -> tuple[float, ...]:
        """The plans' spacing if ``spacing`` (z, y, x) is within ``SPACING_TOLERANCE`` of it, else ``spacing``.

        nnU-Net resamples the image to the plans' spacing and the 10 class logits back; for an input already at
        that spacing (up to header rounding) both steps are pure cost.
        """
        p = self.predictor
        target = [0.0] * 3
        for i, axis in enumerate(p.plans_manager.transpose_forward):
            target[axis] = float(p.configuration_manager.spacing[i])
        if np.allclose(spacing, target, rtol=SPACING_TOLERANCE, atol=0):
            return tuple(target)
        return spacing

    def preprocess(self, prepared: Prepared):
        """nnU-Net preprocessing (crop to nonzero, normalization, resampling to the plans' spacing)."""
        import torch

        p = self.predictor
        data, _, properties = self.preprocessor.run_case_npy(prepared.data, None, {"spacing": list(prepared.spacing)},
                                                             p.plans_manager, p.configuration_manager, p.dataset_json)
        return torch.from_numpy(data), properties

    def predict_logits(self, data):
        """Sliding-window logits averaged over the folds (on the preprocessed grid)."""
        return self.predictor.predict_logits_from_preprocessed_data(data).cpu()

    def export(self, logits, properties: dict) -> np.ndarray:
        """Logits -> label map (z, y, x) on the prepared grid (resampled back, crop reverted)."""
        from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape

        p = self.predictor
        kwargs = {"num_threads_torch": self.threads} if self.threads else {}
        logits = self.resample_logits(logits, properties)
        return convert_predicted_logits_to_segmentation_with_correct_shape(
            logits, p.plans_manager, p.configuration_manager, p.label_manager, properties, **kwargs)

    def export_with_probability(self, logits, properties: dict) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`export`'s label map, and the probability of each voxel's label on the same grid (float32).

        The logits are brought to the export shape once (by :meth:`resample_logits`, or by nnU-Net's own resampling
        function where that one is needed), so :meth:`export` gets logits it passes through unchanged: its labels are
        those of the plain path. The probability is the softmax of the same logits (:func:`confidence.max_probability`),
        put back into the uncropped, untransposed grid as nnU-Net puts the labels.
        """
        from acvl_utils.cropping_and_padding.bounding_boxes import insert_crop_into_image

        from rootlets_task.inference.confidence import max_probability

        p = self.predictor
        logits = self.resample_logits(logits, properties)
        shape = [int(n) for n in properties["shape_after_cropping_and_before_resampling"]]
        if list(logits.shape[1:]) != shape:  # nnU-Net's export would resample here: do it once, for both outputs
            original = [properties["spacing"][i] for i in p.plans_manager.transpose_forward]
            current = (p.configuration_manager.spacing if len(p.configuration_manager.spacing) == len(shape)
                       else [original[0], *p.configuration_manager.spacing])
            logits = p.configuration_manager.resampling_fn_probabilities(logits, shape, current, original)
        probability = insert_crop_into_image(np.zeros(properties["shape_before_cropping"], np.float32),
                                             max_probability(logits), properties["bbox_used_for_cropping"])
        return self.export(logits, properties), probability.transpose(p.plans_manager.transpose_backward)

    def resample_logits(self, logits, properties: dict):
        """Logits resampled to the pre-resampling shape by trilinear interpolation in float32 (torch).

        This is what nnU-Net's export does (order-1 resize with edge mode, pixel centres aligned), but nnU-Net runs
        it per class in float64 with scikit-image, several times slower. When nnU-Net would resample
        anisotropically (nearest along the low-resolution axis) the logits are returned unchanged, and nnU-Net's
        own export does the work.
        """
        import torch
        from nnunetv2.preprocessing.resampling.default_resampling import determine_do_sep_z_and_axis

        shape = tuple(int(n) for n in properties["shape_after_cropping_and_before_resampling"])
        if tuple(logits.shape[1:]) == shape or len(shape) != 3:
            return logits
        p = self.predictor
        config = p.configuration_manager.configuration
        kwargs = config.get("resampling_fn_probabilities_kwargs", {})
        original = [properties["spacing"][i] for i in p.plans_manager.transpose_forward]
        separate_z, _ = determine_do_sep_z_and_axis(kwargs.get("force_separate_z"), p.configuration_manager.spacing, original)
        if (separate_z or config.get("resampling_fn_probabilities") != "resample_data_or_seg_to_shape"
                or kwargs.get("order", 1) != 1 or kwargs.get("is_seg", False)):
            return logits
        return torch.nn.functional.interpolate(torch.as_tensor(logits)[None].float(), size=shape, mode="trilinear",
                                               align_corners=False)[0]

    def restore(self, seg: np.ndarray, prepared: Prepared) -> np.ndarray:
        """(z, y, x) label map -> uint8 array in the input image's voxel order."""
        seg = np.asarray(seg)
        if seg.max(initial=0) > 255:
            raise RootletsError(f"model folder {self.model_folder}: label values above 255 cannot be stored as uint8")
        if self.level_map is not None:
            seg = self.level_map[np.clip(seg, 0, 255).astype(np.intp)]
        out = nifti.undo_reorient(seg.transpose(2, 1, 0), prepared.inverse).astype(np.uint8)
        assert out.shape == prepared.shape, (out.shape, prepared.shape)
        return out

    # --- whole images --------------------------------------------------------------------------------------
    def segment_image(self, img: nib.Nifti1Image, box: Box | None = None) -> np.ndarray:
        """Rootlets of one image: uint8 on the input grid, value = spinal level (2=C2 ... 9=T1), 0 = background.

        With ``box`` (a voxel box of the input image, e.g. :func:`rootlets_task.inference.cropping.crop_box` around the cord)
        the sliding window runs on that sub-image only, grown to at least one patch per axis: fewer tiles, 0 outside
        the box; inside it the tiles sit elsewhere than on the whole image, so labels can differ from the uncropped
        result (docs: segmentation and speed). Off unless asked for.
        """
        return self._labels(img, box, with_probability=False)[0]

    def predict(self, img: nib.Nifti1Image, box: Box | None = None) -> Prediction:
        """:meth:`segment_image` and the confidence per level (same labels; the probabilities come with the export)."""
        from rootlets_task.inference.confidence import summarise

        labels, probability = self._labels(img, box, with_probability=True)
        assert probability is not None  # asked for
        return Prediction(labels, summarise(labels, probability))

    def _labels(self, img: nib.Nifti1Image, box: Box | None,
                with_probability: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Labels (and the winning class's probability) on the input grid, 0 (probability 1) outside any box."""
        with self._threads():
            return self._labels_in_box(img, box, with_probability)

    def _labels_in_box(self, img: nib.Nifti1Image, box: Box | None,
                       with_probability: bool) -> tuple[np.ndarray, np.ndarray | None]:
        if self.crop_pads is not None:  # a model trained on crops sees the crop, as SCT HEAD runs it
            if box is not None:
                log.info("this model is run on its own crop around the cord (crop_metadata.json); -crop-to-cord unused")
            box = cropping.sc_crop_box(img, self.crop_pads)
            labels, probability = self._on_grid(img.slicer[box], None, with_probability)
        else:
            labels, probability = self._on_grid(img, box, with_probability)
            if box is None:
                return labels, probability
            labels, probability = labels[box], None if probability is None else probability[box]  # exact box
        full = np.zeros(img.shape[:3], np.uint8)
        full[box] = labels
        if probability is None:
            return full, None
        certain = np.ones(img.shape[:3], np.float32)
        certain[box] = probability
        return full, certain

    def _on_grid(self, img: nib.Nifti1Image, box: Box | None,
                 with_probability: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """The network on ``img`` (on ``box`` only when given), labels back on ``img``'s grid."""
        prepared = self.prepare(img)
        data, properties = self.preprocess(prepared)
        if box is None:
            logits = self.predict_logits(data)
        else:
            logits = self.predict_logits_cropped(data, self.network_box(img, box, properties, tuple(data.shape[1:])))
        if not with_probability:
            return self.restore(self.export(logits, properties), prepared), None
        seg, probability = self.export_with_probability(logits, properties)
        del logits
        return self.restore(seg, prepared), nifti.undo_reorient(probability.transpose(2, 1, 0), prepared.inverse)

    def network_box(self, img: nib.Nifti1Image, box: Box, properties: dict,
                    data_shape: tuple[int, int, int]) -> tuple[slice, ...]:
        """A voxel box of the input image, mapped onto nnU-Net's preprocessed grid (reoriented, cropped, resampled)."""
        mask = np.zeros(img.shape[:3], np.uint8)
        mask[box] = 1
        prepared = self.prepare(nib.Nifti1Image(mask, img.affine, img.header)).data[0]  # (z, y, x) like the image
        transposed = prepared.transpose(self.predictor.plans_manager.transpose_forward)
        before = properties["shape_after_cropping_and_before_resampling"]
        after = data_shape
        slices = []
        for axis, (lo, hi) in enumerate(properties["bbox_used_for_cropping"]):
            hits = np.flatnonzero(transposed.any(axis=tuple(a for a in range(3) if a != axis)))
            start, stop = max(hits[0], lo) - lo, min(hits[-1] + 1, hi) - lo
            scale = after[axis] / before[axis]
            slices.append(slice(int(np.floor(start * scale)), min(after[axis], int(np.ceil(stop * scale)))))
        return tuple(slices)

    def predict_logits_cropped(self, data, box: tuple[slice, ...]):
        """Sliding-window logits of the sub-image ``box`` (grown to one patch where smaller); background outside it."""
        import torch

        window = grow_to_patch(box, tuple(data.shape[1:]), tuple(self.predictor.configuration_manager.patch_size))
        window_all = (slice(None), *window)  # not data[(slice(None), *window)]: mypy takes it for Python 3.11 syntax
        inside = self.predict_logits(data[window_all].contiguous())
        logits = torch.zeros((inside.shape[0], *data.shape[1:]), dtype=inside.dtype)
        logits[1:] = -1e4  # background wins everywhere outside the box
        box_all = (slice(None), *box)
        box_in_window = (slice(None), *(slice(b.start - w.start, b.stop - w.start) for b, w in zip(box, window, strict=True)))
        logits[box_all] = inside[box_in_window]
        return logits
