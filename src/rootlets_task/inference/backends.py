"""Network backends for nnU-Net inference on CPU: PyTorch (reference) or OpenVINO (optional extra, about 2x per tile).

The OpenVINO backend replaces only the network inside ``nnUNetPredictor``: preprocessing, the Gaussian sliding
window and export stay nnU-Net's, so the result matches the PyTorch path up to float rounding. The network is
converted once per (checkpoint, patch size, library versions) and cached as OpenVINO IR, together with the
result of a numerical check against PyTorch on a seeded random patch; a backend that fails the check (max
softmax difference above ``TOLERANCE``) is not used and PyTorch runs instead, with a warning saying why.

Every compilation states its inference precision (:func:`compile_config`): OpenVINO would otherwise run a float32
network in bfloat16 on CPUs with ``avx512_bf16`` or AMX, about 1e-1 away from PyTorch. ``bf16`` (opt-in, such CPUs
only, :func:`use_bf16`) compiles the same cached IR with the bf16 hint: faster per tile, labels change a little.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rootlets_task.core.files import build_once, read_json, write_json
from rootlets_task.inference import cpu  # first: OpenVINO's telemetry off before openvino is imported

log = logging.getLogger(__name__)

TOLERANCE = 1e-3  # max |softmax difference| allowed between a backend and PyTorch
ENV_CACHE = "ROOTLETS_TASK_CACHE"
CHECK_VERSION = 2  # part of the cache key; 2: the check runs the f32 hint (1 had none, so bf16 on bf16 CPUs)
# OpenVINO's inference precision hint per precision of ours: the float layers of the int8 network stay float32 too.
PRECISION_HINTS = {"float32": "f32", "int8": "f32", "bf16": "bf16"}


def openvino_available() -> bool:
    """True when the ``openvino`` extra is installed."""
    return importlib.util.find_spec("openvino") is not None


def cache_dir() -> Path:
    """Where converted networks are kept: ``ROOTLETS_TASK_CACHE`` if set, else the user cache dir.

    Entries are named by a hash of the weights, patch size and library versions, so any number of model stores
    can share one cache.
    """
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE])
    import platformdirs

    return Path(platformdirs.user_cache_dir("rootlets_task"))


def max_softmax_difference(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """Max absolute difference of the softmax over classes (axis 1) of two logit batches."""
    a, b = torch.as_tensor(np.asarray(a, np.float32)), torch.as_tensor(np.asarray(b, np.float32))
    return float((a.softmax(1) - b.softmax(1)).abs().max())


def check_patch(patch_size: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """The seeded random input used to compare backends (z-scored like nnU-Net's preprocessing output)."""
    return torch.randn((1, 1, *patch_size), generator=torch.Generator().manual_seed(seed))


class OpenVINONetwork(torch.nn.Module):
    """Stands in for the nnU-Net network inside ``nnUNetPredictor``: forward runs a compiled OpenVINO model.

    nnU-Net loads each fold's weights with ``network.load_state_dict(params)`` before its sliding window; here that
    call selects the compiled model made from those very parameters (one per fold).
    """

    def __init__(self, compiled_by_params: dict[int, Any]):
        super().__init__()
        self._compiled = compiled_by_params
        self._request = next(iter(compiled_by_params.values())).create_infer_request()

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # noqa: ARG002 - nn.Module signature
        self._request = self._compiled[id(state_dict)].create_infer_request()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._request.infer({0: x.detach().cpu().numpy()})[0]
        return torch.from_numpy(np.array(out, copy=True))


def _cache_key(params: dict, patch_size: tuple[int, ...]) -> str:
    import openvino

    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in params.items():
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(tensor.detach().cpu().numpy()).view(np.uint8).data)  # no copy for contiguous weights
    digest.update(json.dumps([list(patch_size), openvino.__version__, torch.__version__, platform.machine(),
                              CHECK_VERSION]).encode())
    return digest.hexdigest()[:24]


def ir_folder(params: dict, patch_size: tuple[int, ...]) -> Path:
    """Cache folder of the float32 OpenVINO IR of one fold (``network.xml``, ``check.json``), made by ``use_openvino``."""
    return cache_dir() / "openvino" / _cache_key(params, patch_size)


def compile_config(threads: int | None, precision: str = "float32") -> dict:
    """OpenVINO CPU settings: latency mode, ``threads`` (None: OpenVINO's choice) and always the inference precision
    hint of ``precision`` (:data:`PRECISION_HINTS`), so that float32 means float32 on every CPU."""
    import openvino as ov
    import openvino.properties as props
    import openvino.properties.hint as hints

    config = {hints.performance_mode: hints.PerformanceMode.LATENCY,
              hints.inference_precision: getattr(ov.Type, PRECISION_HINTS[precision])}
    return config | ({props.inference_num_threads: threads} if threads else {})


def inference_precision(compiled) -> str:
    """The precision OpenVINO actually runs a compiled network's float layers in (``f32``, ``bf16``, ...)."""
    import openvino.properties.hint as hints

    return compiled.get_property(hints.inference_precision).to_string()


def run_network(compiled, x: np.ndarray) -> np.ndarray:
    """One forward pass of a compiled OpenVINO network on ``x`` (the load checks' call)."""
    return np.array(compiled.create_infer_request().infer({0: x})[0], copy=True)


def _convert(network: torch.nn.Module, params: dict, patch_size: tuple[int, ...], threads: int):
    """Compiled float32 OpenVINO model for ``network`` with ``params`` and its check (``check.json``: max softmax
    difference vs PyTorch, the precision OpenVINO ran); converted once, then cached.

    Built once (:func:`rootlets_task.core.files.build_once`): concurrent processes never read a half-written model, and
    folders of killed conversions are removed by the next one.
    """
    import openvino as ov

    folder = ir_folder(params, patch_size)
    config = compile_config(threads)

    def build(tmp: Path) -> None:
        network.load_state_dict(params)
        network.eval()
        example = check_patch(patch_size)
        with torch.no_grad():
            ov.save_model(ov.convert_model(network, example_input=example), tmp / "network.xml", compress_to_fp16=False)
            reference = network(example)
        compiled = ov.Core().compile_model(tmp / "network.xml", "CPU", config)
        difference = max_softmax_difference(run_network(compiled, example.numpy()), reference)
        (tmp / "check.json").write_text(json.dumps({"max_softmax_difference": difference, "tolerance": TOLERANCE,
                                                    "inference_precision": inference_precision(compiled)}))

    if not (folder / "check.json").exists():
        log.info("converting the network to OpenVINO once (can take minutes on a large model), cached in %s", folder)
    build_once(folder, build)
    return compile_cached(folder, config), json.loads((folder / "check.json").read_text())


def compile_cached(folder: Path, config: dict, precision: str = "float32"):
    """The network of ``folder`` compiled with ``config``, through OpenVINO's cache of compiled blobs
    (``folder/compiled``; ``compiled-bf16`` for ``precision`` bf16). A blob another process is still writing (or a
    damaged one) cannot be read: then it is compiled without the cache."""
    import openvino as ov

    cache = folder / ("compiled-bf16" if precision == "bf16" else "compiled")
    core = ov.Core()
    core.set_property({"CACHE_DIR": str(cache)})
    try:
        return core.compile_model(folder / "network.xml", "CPU", config)
    except RuntimeError as exc:
        log.warning("OpenVINO's compiled-model cache in %s could not be used (%s); compiling without it",
                    cache, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return ov.Core().compile_model(folder / "network.xml", "CPU", config)


def use_openvino(predictor, threads: int) -> bool:
    """Swap the network of an initialised CPU ``nnUNetPredictor`` for OpenVINO; return False (PyTorch kept) if it fails.

    Every fold is converted and checked against PyTorch; one failing fold keeps the whole predictor on PyTorch, with
    one warning line saying by how much, in which precision OpenVINO ran, on which CPU, and what the user can do.
    """
    patch_size = tuple(int(p) for p in predictor.configuration_manager.patch_size)
    try:
        compiled = {}
        for params in predictor.list_of_parameters:
            model, check = _convert(predictor.network, params, patch_size, threads)
            if not check["max_softmax_difference"] <= TOLERANCE:
                log.warning("OpenVINO differs from PyTorch by %.2e (> %g) running the float32 network in %s on %s; "
                            "using PyTorch (exact, slower). Set ROOTLETS_TASK_BACKEND=torch to skip this check, and "
                            "please report this line", check["max_softmax_difference"], TOLERANCE,
                            check.get("inference_precision", "?"), cpu.describe())
                return False
            compiled[id(params)] = model
    except Exception as exc:  # any conversion/runtime failure: the PyTorch path still works
        log.warning("OpenVINO backend unavailable (%s: %s); using PyTorch", type(exc).__name__, exc)
        return False
    predictor.network = OpenVINONetwork(compiled)
    return True


def use_bf16(predictor, threads: int) -> bool:
    """Swap the (checked, float32) OpenVINO network of ``predictor`` for the same IR compiled in bfloat16.

    Returns False (float32 kept, with a warning) when OpenVINO does not run it in bf16 here. The first fold's
    distance to the float32 network on the check patch is cached beside the IR (``check-bf16.json``) and logged.
    """
    patch = tuple(int(p) for p in predictor.configuration_manager.patch_size)
    compiled = {}
    for params in predictor.list_of_parameters:
        folder = ir_folder(params, patch)
        model = compile_cached(folder, compile_config(threads, "bf16"), "bf16")
        if inference_precision(model) != "bf16":
            log.warning("precision bf16: OpenVINO runs the network in %s on %s; using float32",
                        inference_precision(model), cpu.describe())
            return False
        compiled[id(params)] = model
    folder = ir_folder(predictor.list_of_parameters[0], patch)
    check = read_json(folder / "check-bf16.json")
    if not isinstance(check, dict):
        example = check_patch(patch).numpy()
        check = agreement_on_tile(run_network(compile_cached(folder, compile_config(threads)), example),
                                  run_network(compiled[id(predictor.list_of_parameters[0])], example))
        write_json(folder / "check-bf16.json", check)
    log.info("bf16 network vs float32 on the check patch: %s", check)
    predictor.network = OpenVINONetwork(compiled)
    return True


def agreement_on_tile(reference: np.ndarray, other: np.ndarray) -> dict:
    """Max |softmax difference| and share of equal labels where either labels, of two logit tiles."""
    a, b = reference.argmax(1), other.argmax(1)
    labelled = (a > 0) | (b > 0)
    return {"max_softmax_difference": max_softmax_difference(reference, other),
            "label_agreement": float((a == b)[labelled].mean()) if labelled.any() else 1.0}
