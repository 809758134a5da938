"""Rootlets segmentation with a RootletSeg nnU-Net v2 release, compatible with ``sct_deepseg rootlets``.

:class:`Segmenter` loads the ``nnUNetPredictor`` once and reuses it for every image. One image goes through
five separate stages, so that each can be swapped or sped up on its own:

1. :meth:`Segmenter.prepare`: reorient to the model's orientation, transpose to nnU-Net's (c, z, y, x) order;
2. :meth:`Segmenter.preprocess`: nnU-Net's own preprocessing from plans.json (crop, normalize, resample);
3. :meth:`Segmenter.predict_logits`: sliding window over every fold (mirroring only with test-time augmentation);
4. :meth:`Segmenter.export`: resample the logits back and take the argmax;
5. :meth:`Segmenter.restore`: back to the input's voxel order, as uint8.

These are the steps of ``nnUNetPredictor.predict_single_npy_array`` (the path SCT uses): no worker pools, so no
``if __name__ == "__main__"`` guard is needed. :func:`segment` is the file-level job behind ``rootlets -i``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from rootlets_task import nifti
from rootlets_task._version import __version__
from rootlets_task.errors import RootletsError

SUFFIX = "_rootlets"
DEFAULT_ORIENTATION = "LPI"  # SCT code (= nibabel RAS), what SCT assumes when dataset.json has no "image_orientation"
TILE_STEP_SIZE = 0.5
DEVICES = ("auto", "cpu", "cuda", "mps")
BACKENDS = ("auto", "torch", "openvino")  # auto = OpenVINO on CPU when installed and numerically checked, else torch
# Input spacing within this relative difference of the plans' spacing is taken as equal: no resampling either way.
SPACING_TOLERANCE = 0.01
# In-plane margin around the cord's box when cropping: rootlets on real T2w lie <= 6 mm outside it (README: Speed on CPU)
CROP_MARGIN_MM = 10.0


def code_url() -> str:
    """Where the code that made an output lives: the package's home page if it declares one, else this file."""
    from importlib import metadata

    with contextlib.suppress(metadata.PackageNotFoundError):
        home = metadata.metadata("rootlets_task").get("Home-page")
        if home:
            return f"{home.rstrip('/')}/blob/v{__version__}/rootlets_task/inference.py"
    return Path(__file__).resolve().as_uri()


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


def initialize(predictor, model_folder: Path, folds: tuple[int | str, ...], checkpoint: str) -> None:
    """``predictor.initialize_from_trained_model_folder``, without importing the training code for stock trainers.

    nnU-Net looks the trainer class up by name to build the network, which imports the whole training stack
    (seaborn, the data loaders...): seconds of every start-up. Stock trainers (``nnUNetTrainer``, its
    ``_<N>epochs`` / ``_NoMirroring`` variants, which RootletSeg releases use) build exactly the plans' network, so
    that is built directly; any other trainer goes through nnU-Net's own lookup.
    """
    import re

    import torch

    checkpoints = [torch.load(model_folder / f"fold_{f}" / checkpoint, map_location="cpu", weights_only=False) for f in folds]
    first = checkpoints[0]
    if not re.fullmatch(r"nnUNetTrainer(_\d+epochs)?(_NoMirroring)?", first["trainer_name"]):
        predictor.initialize_from_trained_model_folder(str(model_folder), folds, checkpoint)
        return
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    dataset_json = json.loads((model_folder / "dataset.json").read_text())
    plans_manager = PlansManager(json.loads((model_folder / "plans.json").read_text()))
    cm = plans_manager.get_configuration(first["init_args"]["configuration"])
    network = get_network_from_plans(
        cm.network_arch_class_name, cm.network_arch_init_kwargs, cm.network_arch_init_kwargs_req_import,
        determine_num_input_channels(plans_manager, cm, dataset_json),
        plans_manager.get_label_manager(dataset_json).num_segmentation_heads, deep_supervision=False)
    parameters = [c["network_weights"] for c in checkpoints]
    network.load_state_dict(parameters[0])
    predictor.manual_initialization(network, plans_manager, cm, parameters, dataset_json, first["trainer_name"],
                                    first.get("inference_allowed_mirroring_axes"))


@contextlib.contextmanager
def _quiet(enabled: bool):
    """Hide nnU-Net's prints (environment-variable warnings, device notices) unless the user wants detail."""
    if not enabled:
        yield
        return
    with contextlib.redirect_stdout(io.StringIO()):
        yield


@dataclass
class Prepared:
    """An image in the model's frame: (1, z, y, x) float32, spacing (z, y, x) and how to undo the reorientation."""

    data: np.ndarray
    spacing: tuple[float, float, float]
    inverse: np.ndarray
    shape: tuple[int, int, int]


class Segmenter:
    """An nnU-Net rootlets model loaded once, applied to any number of images.

    ``model_folder`` is the ``nnUNetTrainer*__nnUNetPlans__3d_fullres`` folder of a release (see
    :func:`rootlets_task.install.model_folder`); ``record`` is its install record (tag, url, sha256), kept for the
    JSON sidecar. ``threads``: CPU threads for this model (default: every physical core this process may use; give
    fewer when several processes share the machine, as ``rootlets batch -jobs N`` does). ``precision="int8"``
    (opt-in, OpenVINO backend and the ``int8`` extra): the network quantised with NNCF on ``calibration`` images
    (paths or NIfTI images; default: phantoms), faster per tile, labels change a little; see :mod:`rootlets_task.int8`.
    """

    def __init__(self, model_folder: str | os.PathLike, device: str = "auto", test_time_aug: bool = False,
                 verbose: int = 1, record: dict | None = None, backend: str = "auto",
                 threads: int | None = None, precision: str = "float32", calibration: Sequence | None = None,
                 int8_options=None):
        self.model_folder = Path(model_folder)
        self.record = dict(record or {})
        self.verbose = verbose
        self.test_time_aug = test_time_aug
        for name in ("dataset.json", "plans.json"):
            if not (self.model_folder / name).is_file():
                raise RootletsError(f"model folder {self.model_folder}: {name} missing; reinstall the release with "
                                    "`rootlets -install -release TAG`")
        self.dataset_json = json.loads((self.model_folder / "dataset.json").read_text())
        self.orientation = self.dataset_json.get("image_orientation", DEFAULT_ORIENTATION)
        self.axcodes = nifti.sct_to_axcodes(self.orientation)
        self.folds, self.checkpoint = find_checkpoints(self.model_folder)
        self.device = resolve_device(device)
        self.threads = (threads or physical_cores()) if self.device.type == "cpu" else None
        t0 = time.perf_counter()
        self.predictor = self._load()
        self.backend = self._select_backend(backend)
        self.precision = self._select_precision(precision, backend, calibration, int8_options)
        self.load_seconds = time.perf_counter() - t0

    def _load(self):
        import torch

        if self.threads:
            # nnU-Net caps torch threads at nnUNet_def_n_proc (default 8), read when nnunetv2 is first imported.
            os.environ.setdefault("nnUNet_def_n_proc", str(self.threads))
            torch.set_num_threads(self.threads)
        with _quiet(self.verbose < 2):
            from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

            predictor = nnUNetPredictor(
                tile_step_size=TILE_STEP_SIZE, use_gaussian=True, use_mirroring=self.test_time_aug,
                perform_everything_on_device=self.device.type == "cuda", device=self.device,
                verbose=self.verbose >= 2, verbose_preprocessing=self.verbose >= 2, allow_tqdm=self.verbose >= 1)
            try:
                initialize(predictor, self.model_folder, self.folds, self.checkpoint)
            except (OSError, RuntimeError, KeyError, ValueError) as exc:
                raise RootletsError(f"model folder {self.model_folder}: cannot be loaded ({type(exc).__name__}: "
                                    f"{str(exc).splitlines()[0] if str(exc) else ''}); reinstall the release") from None
        self.preprocessor = predictor.configuration_manager.preprocessor_class(verbose=self.verbose >= 2)
        return predictor

    def _select_backend(self, backend: str) -> str:
        """Swap the network for OpenVINO when asked or (``auto``) when installed on CPU; see :mod:`rootlets_task.backends`."""
        from rootlets_task import backends

        if backend == "auto":
            backend = os.environ.get("ROOTLETS_TASK_BACKEND", "auto")  # lets a user force torch without code changes
        if backend not in BACKENDS:
            raise RootletsError(f"backend {backend!r}: unknown (ROOTLETS_TASK_BACKEND?); use one of {', '.join(BACKENDS)}")
        if backend == "torch" or self.device.type != "cpu" or (backend == "auto" and not backends.openvino_available()):
            return "torch"
        if not backends.openvino_available():
            raise RootletsError("backend openvino: not installed; run `pip install 'rootlets_task[openvino]'` "
                                "or use the torch backend")
        def log(msg: str) -> None:
            if self.verbose:
                print(f"rootlets: {msg}", file=sys.stderr)

        with _quiet(self.verbose < 2):
            return "openvino" if backends.use_openvino(self.predictor, self.threads, log) else "torch"

    def _select_precision(self, precision: str, backend: str, calibration: Sequence | None, options) -> str:
        """``float32``, or ``int8``: the OpenVINO network swapped for its NNCF quantisation (:mod:`rootlets_task.int8`)."""
        from rootlets_task import backends, int8

        if precision not in int8.PRECISIONS:
            raise RootletsError(f"precision {precision!r}: unknown; use one of {', '.join(int8.PRECISIONS)}")
        if precision == "float32":
            return precision
        int8.require_nncf()
        if self.backend != "openvino":
            if backend == "torch" or self.device.type != "cpu" or not backends.openvino_available():
                raise RootletsError(f"precision int8: needs the OpenVINO backend on CPU (here: {backend}, "
                                    f"{self.device.type}); run `pip install 'rootlets_task[int8]'` and use -device cpu")
            warnings.warn("precision int8: the OpenVINO backend is not usable here; using float32", stacklevel=3)
            return "float32"
        options = options or int8.Int8Options()
        images = (int8.load_images(calibration) if calibration
                  else int8.default_calibration(float(min(self.predictor.configuration_manager.spacing))))
        digest = int8.calibration_digest(images, self.predictor.plans_manager.plans, options)

        def tiles():
            return int8.calibration_tiles(self.predictor, (self.preprocess(self.prepare(i))[0] for i in images),
                                          options.max_tiles)

        def log(msg: str) -> None:
            if self.verbose:
                print(f"rootlets: {msg}", file=sys.stderr)

        with _quiet(self.verbose < 2):
            return "int8" if int8.use_int8(self.predictor, digest, tiles, self.threads, options, log) else "float32"

    @property
    def settings(self) -> dict:
        """What the sidecar records about how the prediction was made."""
        return {"TileStepSize": TILE_STEP_SIZE, "UseGaussian": True, "Mirroring": self.test_time_aug,
                "Folds": list(self.folds), "Checkpoint": self.checkpoint, "ModelOrientation": self.orientation,
                "Threads": self.threads, "Backend": self.backend, "Precision": self.precision}

    # --- the five stages -------------------------------------------------------------------------------------
    def prepare(self, img: nib.Nifti1Image) -> Prepared:
        """Reorient to the model's orientation and transpose (x, y, z) -> (1, z, y, x), spacing reversed."""
        data, spacing, inverse = nifti.reorient(img, self.axcodes)
        array = np.ascontiguousarray(np.asarray(data, dtype=np.float32).transpose(2, 1, 0)[None])
        return Prepared(array, self.snap_spacing(tuple(spacing[::-1])), inverse, tuple(img.shape[:3]))

    def snap_spacing(self, spacing: tuple[float, float, float]) -> tuple[float, float, float]:
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
        out = nifti.undo_reorient(seg.transpose(2, 1, 0), prepared.inverse).astype(np.uint8)
        assert out.shape == prepared.shape, (out.shape, prepared.shape)
        return out

    # --- whole images and files --------------------------------------------------------------------------------
    def segment_image(self, img: nib.Nifti1Image, cord: nib.Nifti1Image | np.ndarray | None = None,
                      margin_mm: float = CROP_MARGIN_MM) -> np.ndarray:
        """Rootlets of one image: uint8 on the input grid, value = spinal level (2=C2 ... 9=T1), 0 = background.

        With ``cord`` (a spinal cord mask on the input grid) the sliding window runs on a sub-image only: the box
        holding the cord plus ``margin_mm`` in the axial plane (whole superior-inferior extent), grown to at least
        one patch per axis. Fewer tiles, 0 outside the box; inside it the tiles sit elsewhere than on the whole
        image, so labels can differ from the uncropped result (README: Speed on CPU). Off unless asked for.
        """
        prepared = self.prepare(img)
        data, properties = self.preprocess(prepared)
        if cord is None:
            return self.restore(self.export(self.predict_logits(data), properties), prepared)
        box = crop_box(img, cord, margin_mm)
        logits = self.predict_logits_cropped(data, self.network_box(img, box, properties, tuple(data.shape[1:])))
        labels = np.zeros(img.shape[:3], np.uint8)
        labels[box] = self.restore(self.export(logits, properties), prepared)[box]  # exact box despite resampling
        if touches_box_side(labels, box):
            warnings.warn(f"rootlets reach the side of the crop box ({margin_mm:g} mm around the cord): some may lie "
                          "outside it; segment without -crop-to-cord to keep them", stacklevel=2)
        return labels

    def network_box(self, img: nib.Nifti1Image, box: tuple[slice, slice, slice], properties: dict,
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
        inside = self.predict_logits(data[(slice(None), *window)].contiguous())
        logits = torch.zeros((inside.shape[0], *data.shape[1:]), dtype=inside.dtype)
        logits[1:] = -1e4  # background wins everywhere outside the box
        logits[(slice(None), *box)] = inside[(slice(None), *(slice(b.start - w.start, b.stop - w.start)
                                                            for b, w in zip(box, window, strict=True)))]
        return logits

    def segment_file(self, path: str | os.PathLike, out: str | os.PathLike, command: str | None = None,
                     cord: str | os.PathLike | None = None, margin_mm: float = CROP_MARGIN_MM) -> Path:
        """Segment one NIfTI file into ``out`` (atomic, input grid/affine/header, uint8) plus its JSON sidecar.

        ``cord``: optional spinal cord mask file on the same grid; the segmentation is then cropped around it
        (``margin_mm`` in the axial plane, see :meth:`segment_image`); the sidecar records the crop.
        """
        path, out = Path(path), Path(out)
        img = nifti.load(path)
        seg = self.segment_image(img, None if cord is None else nifti.load_labels(cord, "cord")[0], margin_mm)
        nifti.save_like(seg, img, out)
        crop = None if cord is None else {"CordFile": str(Path(cord).absolute()), "MarginMM": margin_mm}
        write_sidecar(out, self.sidecar(path, out, command, crop))
        return out

    def sidecar(self, source: Path, out: Path, command: str | None = None, crop: dict | None = None) -> dict:
        """SCT-style ``GeneratedBy`` metadata for one output."""
        tag = self.record.get("tag")
        if command is None:
            command = f"-i {source.name} -o {out.name}" + (f" -release {tag}" if tag else "") + (
                " -test-time-aug" if self.test_time_aug else "") + f" -device {self.device.type}"
        return {
            "GeneratedBy": [{
                "Name": f"rootlets_task: rootlets {command}",
                "Version": __version__,
                "CodeURL": code_url(),
                "ModelURL": self.record.get("url"),
                "Release": tag,
                "ModelSHA256": self.record.get("sha256"),
                "ModelFolder": str(self.model_folder),
                "Device": self.device.type,
                "Settings": self.settings | {"CropToCord": crop},
            }],
            "InputFile": str(source.absolute()),
        }


def crop_box(img: nib.Nifti1Image, cord: nib.Nifti1Image | np.ndarray, margin_mm: float = CROP_MARGIN_MM
             ) -> tuple[slice, slice, slice]:
    """Voxel box of ``img`` holding the cord mask plus ``margin_mm`` in the axial plane and the full S-I extent."""
    mask = np.asarray(cord.dataobj if isinstance(cord, nib.Nifti1Image) else cord) > 0
    name = cord.get_filename() if isinstance(cord, nib.Nifti1Image) else None
    if mask.shape != img.shape[:3] or (isinstance(cord, nib.Nifti1Image) and not np.allclose(cord.affine, img.affine, atol=1e-3)):
        raise RootletsError(f"cord mask {name or ''}: not on the image grid {img.shape[:3]}; resample it onto the image first")
    if not mask.any():
        raise RootletsError(f"cord mask {name or ''}: empty; segment the cord first (or segment without a cord mask)")
    si = nifti.si_axis(img.affine)
    zooms = img.header.get_zooms()[:3]
    box = []
    for axis in range(3):
        if axis == si:
            box.append(slice(0, img.shape[axis]))
            continue
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        pad = int(np.ceil(margin_mm / zooms[axis]))
        box.append(slice(max(0, hits[0] - pad), min(img.shape[axis], hits[-1] + 1 + pad)))
    return tuple(box)


def touches_box_side(labels: np.ndarray, box: tuple[slice, ...]) -> bool:
    """True when a label voxel lies on a face of ``box`` that is not the image's own border (labels cut by the box)."""
    for axis, b in enumerate(box):
        for index in {b.start, b.stop - 1} - {0, labels.shape[axis] - 1}:
            if np.take(labels, index, axis=axis)[tuple(box[a] for a in range(3) if a != axis)].any():
                return True
    return False


def grow_to_patch(box: tuple[slice, ...], shape: tuple[int, ...], patch: tuple[int, ...]) -> tuple[slice, ...]:
    """``box`` grown symmetrically to at least ``patch`` voxels per axis (as far as ``shape`` allows).

    A sub-image smaller than the patch would be zero-padded by nnU-Net; the image around it is better context.
    """
    grown = []
    for b, n, k in zip(box, shape, patch, strict=True):
        size = min(max(b.stop - b.start, k), n)
        start = min(max(0, (b.start + b.stop - size) // 2), n - size)
        grown.append(slice(start, start + size))
    return tuple(grown)


def sidecar_path(out: Path) -> Path:
    """``<output without .nii/.nii.gz>.json``, as SCT names it."""
    return out.with_name(nifti.stem(out) + ".json")


def write_sidecar(out: Path, content: dict) -> Path:
    path = sidecar_path(out)
    with nifti.atomic_path(path) as tmp:
        tmp.write_text(json.dumps(content, indent=2) + "\n")
    return path


def plan_outputs(inputs: Sequence[str | os.PathLike], output: str | os.PathLike | None = None) -> list[Path]:
    """Output path of every input, refusing anything that would overwrite an input or another output.

    No ``output``: ``<input stem>_rootlets.nii.gz`` beside each input (SCT's default). ``output`` ending in
    ``.nii``/``.nii.gz``: that exact file (one input only). Any other ``output``: a folder that receives
    ``<input stem>_rootlets.nii.gz`` for every input.
    """
    sources = [Path(p) for p in inputs]
    if output is not None and str(output).endswith((".nii", ".nii.gz")):
        if len(sources) > 1:
            raise RootletsError(f"output {output}: one file cannot hold {len(sources)} inputs; give a folder as -o")
        targets = [Path(output)]
    else:
        folder = None if output is None else Path(output)
        targets = [(folder or p.parent) / f"{nifti.stem(p)}{SUFFIX}.nii.gz" for p in sources]
    seen: dict[Path, Path] = {}
    for source, target in zip(sources, targets, strict=True):
        key = target.absolute().resolve()
        if key in seen:
            raise RootletsError(f"output {target}: would be written for both {seen[key]} and {source}; "
                                "give each input a distinct name or segment them separately with -o")
        seen[key] = source
    input_sidecars = {sidecar_path(p.absolute().resolve()) for p in sources}
    checked = []
    for target in targets:
        target = nifti.check_output_path(target, sources)
        if sidecar_path(target.resolve()) in input_sidecars:
            raise RootletsError(f"output {target}: its JSON sidecar would overwrite an input's sidecar; choose another -o")
        checked.append(target)
    return checked


def _release_folder(release: str | None) -> tuple[Path, dict]:
    from rootlets_task import install

    return install.model_folder(release)


def segment(inputs: str | os.PathLike | Sequence[str | os.PathLike], output: str | os.PathLike | None = None,
            release: str | None = None, device: str = "auto", test_time_aug: bool = False, verbose: int = 1,
            qc: str | os.PathLike | None = None) -> list[Path]:
    """Segment rootlets in one or more NIfTI images, like ``sct_deepseg rootlets -i ...``; returns the outputs.

    Every input and output is checked before the model is loaded, so a bad call writes nothing. The model is
    loaded once for all inputs. Each output is uint8 on its input's grid with a ``.json`` sidecar beside it.
    ``qc``: a folder that receives a QC page per image (:func:`rootlets_task.qc.qc_subject`).
    """
    if isinstance(inputs, str | os.PathLike):
        inputs = [inputs]
    sources = [Path(p) for p in inputs]
    if not sources:
        raise RootletsError("no input image given; pass at least one -i IMG")
    for source in sources:
        nifti.load(source)  # validates (exists, NIfTI, 3D, finite, non-empty); loaded again when segmented
    device = resolve_device(device).type  # an unknown or unavailable device is refused before anything is written
    folder, record = _release_folder(release)
    targets = plan_outputs(sources, output)
    if qc is not None:
        from rootlets_task import qc as qc_mod

        nifti.writable_folder(qc, "QC folder", "-qc")

    segmenter = Segmenter(folder, device=device, test_time_aug=test_time_aug, verbose=verbose, record=record)
    tag = record.get("tag", release)
    start = time.perf_counter()
    for source, target in zip(sources, targets, strict=True):
        t0 = time.perf_counter()
        command = " ".join(["-i", source.name, *(["-o", str(output)] if output is not None else []),
                            *(["-release", tag] if tag else []), *(["-test-time-aug"] if test_time_aug else []),
                            "-device", segmenter.device.type])
        segmenter.segment_file(source, target, command)
        if qc is not None:
            page = qc_mod.qc_subject(qc, source, target, subject=nifti.stem(source),
                                     provenance={"release": tag, "command": f"rootlets {command}"})
            if verbose:
                print(f"rootlets: QC {page}", file=sys.stderr)
        if verbose:
            print(f"rootlets: {source} -> {target} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    if verbose:
        total = time.perf_counter() - start
        print(f"rootlets: total inference time {int(total // 60)} minute(s) {total % 60:.0f} seconds for "
              f"{len(sources)} image(s) on {segmenter.device.type}"
              + (f" ({segmenter.threads} threads)" if segmenter.threads else "")
              + f"; model loaded in {segmenter.load_seconds:.1f} s", file=sys.stderr)
    return targets
