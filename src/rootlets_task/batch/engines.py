"""Where batch units run: in this process, in local worker processes, on a Dask scheduler, or on SLURM (dask-jobqueue).

Every engine runs the same function on each unit (``rootlets_task.batch.run.process_unit``) and yields its result
dicts as they complete. A worker process keeps its loaded model in a per-process cache (:func:`worker_segmenter`),
so a model is loaded once per process, not once per image.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from rootlets_task.core.errors import RootletsError
from rootlets_task.core.options import ModelOptions

log = logging.getLogger(__name__)

_CACHE: dict[tuple, Any] = {}  # settings -> Segmenter
_CACHE_LOCK = threading.Lock()
MODEL_LOCK = threading.Lock()  # nnU-Net's predictor is not thread-safe: one image at a time per process


def _worker_threads(threads: int | None) -> int | None:
    """Threads for this process's model: as given, else the cores shared among this Dask worker's task threads."""
    if threads:
        return threads
    try:
        from distributed import get_worker

        per_worker = get_worker().state.nthreads
    except (ImportError, ValueError):
        return None
    from rootlets_task.inference.segmenter import physical_cores

    return max(1, physical_cores() // max(1, per_worker))


def _key(model_folder: str, device: str, test_time_aug: bool, threads: int | None, precision: str,
         calibration: tuple[str, ...], int8_options: dict | None) -> tuple:
    import json

    return model_folder, device, test_time_aug, threads, precision, tuple(calibration), json.dumps(int8_options, sort_keys=True)


def _options_key(model_folder: str, model: ModelOptions, calibration: tuple[str, ...], int8_options: dict | None) -> tuple:
    return _key(model_folder, model.device, model.test_time_aug, model.threads, model.precision, calibration, int8_options)


def keep_segmenter(segmenter, model_folder: str, model: ModelOptions, calibration: tuple[str, ...] = (),
                   int8_options: dict | None = None) -> None:
    """Put a model this process has already loaded (the lever check's) into the worker cache under its settings."""
    with _CACHE_LOCK:
        _CACHE[_options_key(model_folder, model, calibration, int8_options)] = segmenter


def worker_segmenter(model_folder: str, record: dict, model: ModelOptions, calibration: tuple[str, ...] = (),
                     int8_options: dict | None = None):
    """The model, loaded once per process and reused for every later unit (the worker cache).

    ``model``: its device, test-time augmentation, threads and precision are used (the backend is chosen per process).
    ``precision`` int8: quantised on the ``calibration`` images with ``int8_options`` (a dict of
    :class:`rootlets_task.inference.int8.Int8Options` fields), cached on disk by content, so every worker gets the same network;
    bf16: the same network in bfloat16 (CPUs with avx512_bf16 or AMX).
    """
    key = _options_key(model_folder, model, calibration, int8_options)
    with _CACHE_LOCK:
        if key not in _CACHE:
            from rootlets_task.inference.segmenter import Segmenter

            count = _worker_threads(model.threads)
            int8: dict[str, Any] = {}
            if model.precision == "int8":
                from rootlets_task.inference.int8 import Int8Options

                fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in (int8_options or {}).items()}
                options = Int8Options(**fields)
                int8 = {"calibration": list(calibration) or None, "int8_options": options}
            settings = ModelOptions(device=model.device, test_time_aug=model.test_time_aug, threads=count,
                                    precision=model.precision)
            _CACHE[key] = Segmenter(model_folder, settings, verbose=0, record=record, **int8)
            log.info("model loaded in this process (%s, %s threads, %.1f s)", _CACHE[key].backend,
                     _CACHE[key].threads, _CACHE[key].load_seconds)
        else:
            log.info("model reused: already loaded in this process")
        return _CACHE[key]


def sequential(run: Callable, units: list) -> Iterator[dict]:
    for unit in units:
        yield run(unit)


def on_dask(client, run: Callable, units: list, stop: Callable[[], bool], describe: Callable[[Any], dict]) -> Iterator[dict]:
    """Submit ``run(unit)`` for every unit to ``client``; yield results as they complete.

    A worker that dies while processing a unit gets it rescheduled by Dask, up to
    ``distributed.scheduler.allowed-failures`` times (default 3); after that the unit is reported as failed
    (``describe(unit)`` gives its name fields). When ``stop()`` turns true the units not finished are cancelled (and
    reported by the caller as not run). Each result is released as soon as it is read: a finished result still held
    on a worker that dies later would make Dask run that unit again (and overwrite its log).
    """
    from distributed import as_completed

    token = uuid.uuid4().hex[:8]
    futures = {client.submit(run, u, key=f"rootlets-{describe(u)['name']}-{token}", pure=False): u for u in units}
    for future in as_completed(list(futures)):
        unit = futures.pop(future)
        try:
            result = future.result()
        except Exception as exc:  # KilledWorker (its workers died too often), or the worker could not run it at all
            from rootlets_task.io.nifti import one_line

            died = type(exc).__name__ == "KilledWorker"
            text = one_line(exc) if isinstance(exc, RootletsError) else f"{type(exc).__name__}: {one_line(exc)}"
            result = {**describe(unit), "status": "failed", "seconds": None, "retried": died, "log": None,
                      "error": f"worker process died while processing it ({text})" if died else text}
        future.release()
        yield result
        if stop():
            client.cancel([f for f in futures if not f.done()])
            return


def _slurm_cluster_class():
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise RootletsError("-slurm needs dask-jobqueue; run `pip install 'rootlets_task[slurm]'`") from None
    return SLURMCluster


def require_slurm() -> None:
    """Refuse ``-slurm`` early (before anything is written) when the extra is missing."""
    _slurm_cluster_class()


def slurm_cluster(options: dict):
    """A ``dask_jobqueue.SLURMCluster`` (no job submitted yet): our defaults, then ``options``.

    Each SLURM job runs one worker process with one task thread (``--nthreads 1`` is appended: a process segments one
    image at a time), and its model uses every core the job was given (``cores``).
    """
    options = {"cores": 2, "processes": 1, "memory": "8GB", "walltime": "02:00:00", **options}
    options["worker_extra_args"] = [*options.get("worker_extra_args", []), "--nthreads", "1"]
    return _slurm_cluster_class()(**options)


@contextlib.contextmanager
def client(jobs: int, dask: str | None, slurm: dict | None):
    """A Dask client: on ``dask`` (address), on a new SLURM cluster, or on ``jobs`` local worker processes."""
    from distributed import Client, LocalCluster

    if dask:
        try:
            connected = Client(dask, timeout=30)
        except (OSError, TimeoutError) as exc:
            raise RootletsError(f"-dask {dask}: cannot reach the Dask scheduler ({exc}); check the address "
                                "(tcp://HOST:8786) and that `dask scheduler` runs") from None
        with connected:
            yield connected
        return
    if slurm is not None:
        with slurm_cluster(slurm) as cluster, Client(cluster) as connected:
            cluster.scale(jobs=jobs)
            yield connected
        return
    with LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None,
                      silence_logs=40) as cluster, Client(cluster) as connected:
        yield connected


def parse_slurm(options: list[str]) -> dict:
    """``["cores=4", "memory=16GB", "job_extra_directives=--gres=gpu:1"]`` -> SLURMCluster keyword arguments."""
    parsed: dict = {}
    for item in options:
        key, sep, text = item.partition("=")
        value: str | int = text
        if not sep or not key:
            raise RootletsError(f"-slurm {item}: expected KEY=VALUE (e.g. cores=4 memory=16GB walltime=04:00:00 "
                                "queue=NAME account=NAME)")
        key = key.replace("-", "_")
        if key in ("cores", "processes"):
            try:
                value = int(text)
            except ValueError:
                raise RootletsError(f"-slurm {item}: {key} must be a whole number") from None
            if not 1 <= value <= 4096:
                raise RootletsError(f"-slurm {item}: {key} must be between 1 and 4096")
        if key in ("job_extra_directives", "job_script_prologue", "worker_extra_args"):
            parsed.setdefault(key, []).append(value)
        else:
            parsed[key] = value
    return parsed
