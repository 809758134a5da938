"""rootlets_task: RootletSeg spinal nerve rootlets segmentation, spinal and vertebral levels, QC and batch runs.

The public API is imported lazily, so ``import rootlets_task`` (and ``rootlets -h``) stays fast and does not
load torch until a model is needed.
"""

import logging
from importlib import import_module

from rootlets_task._version import __version__
from rootlets_task.core.errors import RootletsError

logging.getLogger(__name__).addHandler(logging.NullHandler())  # a library logs; the program decides where it goes

# public name -> module that defines it
_API = {
    "make_phantom": "io.phantom",
    "write_phantom": "io.phantom",
    "compute_levels": "levels.compute",
    "levels_from_files": "levels.compute",
    "group_stats": "levels.stats",
    "segment": "pipeline.segment",
    "segment_files": "pipeline.segment",
    "load_segmenter": "pipeline.segment",
    "write_levels": "levels.compute",
    "ModelOptions": "core.options",
    "ChainOptions": "core.options",
    "LevelsOptions": "levels.compute",
    "ChainInputs": "pipeline.chain",
    "BatchOptions": "batch.run",
    "install_release": "models.install",
    "model_folder": "models.install",
    "models_dir": "models.install",
    "installed_releases": "models.install",
    "get_release": "models.releases",
    "install_sct": "models.sct",
    "sct_status": "models.sct",
    "sct_model_entry": "models.sct",
    "sct_task_entry": "models.sct",
    "qc_subject": "qc.report",
    "QcOptions": "qc.report",
    "rebuild_index": "qc.report",
    "run_chain": "pipeline.chain",
    "run_batch": "batch.run",
    "measure": "measures.perlevel",
    "measure_levels": "measures.perlevel",
    "MeasureOptions": "core.options",
    "measure_files": "pipeline.measuring",
}

__all__ = ["__version__", "RootletsError", "make_phantom", "write_phantom", "compute_levels", "levels_from_files", "group_stats",
           "segment", "segment_files", "load_segmenter", "write_levels", "ModelOptions", "ChainOptions", "ChainInputs",
           "BatchOptions", "LevelsOptions", "install_release",
           "model_folder", "models_dir", "installed_releases", "get_release",
           "install_sct", "sct_status", "sct_model_entry", "sct_task_entry", "qc_subject", "QcOptions", "rebuild_index",
           "run_chain", "run_batch", "measure", "measure_levels", "MeasureOptions", "measure_files"]  # noqa: F822


def __getattr__(name: str):
    if name in _API:
        return getattr(import_module(f"rootlets_task.{_API[name]}"), name)
    raise AttributeError(f"module 'rootlets_task' has no attribute {name!r}")
