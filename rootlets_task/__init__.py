"""rootlets_task: RootletSeg spinal nerve rootlets segmentation, spinal and vertebral levels, QC and batch runs.

The public API is imported lazily, so ``import rootlets_task`` (and ``rootlets -h``) stays fast and does not
load torch until a model is needed.
"""

from importlib import import_module

from rootlets_task._version import __version__
from rootlets_task.errors import RootletsError

# public name -> module that defines it
_API = {
    "make_phantom": "phantom",
    "write_phantom": "phantom",
    "compute_levels": "levels",
    "levels_from_files": "levels",
    "group_stats": "stats",
    "segment": "segment",
    "segment_files": "segment",
    "load_segmenter": "segment",
    "write_levels": "levels",
    "ModelOptions": "options",
    "ChainOptions": "options",
    "ChainInputs": "chain",
    "BatchOptions": "batch",
    "install_release": "install",
    "model_folder": "install",
    "models_dir": "install",
    "installed_releases": "install",
    "get_release": "releases",
    "install_sct": "sct",
    "sct_status": "sct",
    "sct_model_entry": "sct",
    "sct_task_entry": "sct",
    "qc_subject": "qc",
    "rebuild_index": "qc",
    "run_chain": "chain",
    "run_batch": "batch",
}

__all__ = ["__version__", "RootletsError", "make_phantom", "write_phantom", "compute_levels", "levels_from_files", "group_stats",
           "segment", "segment_files", "load_segmenter", "write_levels", "ModelOptions", "ChainOptions", "ChainInputs",
           "BatchOptions", "install_release",
           "model_folder", "models_dir", "installed_releases", "get_release",
           "install_sct", "sct_status", "sct_model_entry", "sct_task_entry", "qc_subject", "rebuild_index", "run_chain",
           "run_batch"]  # noqa: F822


def __getattr__(name: str):
    if name in _API:
        return getattr(import_module(f"rootlets_task.{_API[name]}"), name)
    raise AttributeError(f"module 'rootlets_task' has no attribute {name!r}")
