"""What made an output: the JSON sidecars beside label files and the derivative dataset's description.

Sidecars follow SCT's ``GeneratedBy`` convention (BIDS), so tools that read SCT's sidecars read ours: SCT's keys in
SCT's order first (``GeneratedBy[0]``: Name, Version, CodeURL, ModelURL), ours after. URLs are
stored without user info or query (:func:`rootlets_task.core.urls.redact`): a signed mirror URL never leaks into
shared data.
"""

from __future__ import annotations

import os
from pathlib import Path

from rootlets_task._version import __url__, __version__
from rootlets_task.core.urls import redact
from rootlets_task.io.nifti import stem

HOME_PAGE = __url__  # the package's public source (setup.py url); CodeURL points into it at this version


def code_url(module: str = "pipeline/segment.py") -> str:
    """Where the code that made an output lives: ``<home>/blob/v<version>/src/rootlets_task/<module>`` (public URL)."""
    return f"{HOME_PAGE}/blob/v{__version__}/src/rootlets_task/{module}"


def sidecar_path(out: str | os.PathLike) -> Path:
    """``<output without .nii/.nii.gz>.json``, as SCT names it."""
    out = Path(out)
    return out.with_name(stem(out) + ".json")


def is_sidecar(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a sidecar rootlets_task or SCT wrote (so a rerun may replace it)."""
    from rootlets_task.core.files import read_json

    content = read_json(path, limit=1 << 20)
    generated = content.get("GeneratedBy") if isinstance(content, dict) else None
    name = generated[0].get("Name", "") if isinstance(generated, list) and generated and isinstance(generated[0], dict) else ""
    return isinstance(name, str) and name.startswith(("rootlets_task", "spinalcordtoolbox"))


def model_fields(record: dict) -> dict:
    """The sidecar fields that identify a model from its install record (URL redacted)."""
    url = record.get("url")
    return {"ModelURL": redact(url) if url else None, "Release": record.get("tag"), "ModelSHA256": record.get("sha256")}


def rootlets_sidecar(segmenter, source: str | os.PathLike | None, command: str, crop: dict | None = None,
                     confidence: dict | None = None) -> dict:
    """SCT-style ``GeneratedBy`` metadata of one rootlets segmentation made by ``segmenter``.

    ``command``: the arguments after ``rootlets`` (SCT basenames every token of its own: callers do the same).
    SCT's keys first, in SCT's order (``sct_deepseg.py``: Name, Version, CodeURL, ModelURL), then ours.
    ``confidence``: the network's confidence per level (:mod:`rootlets_task.inference.confidence`), when computed.
    """
    return {
        "GeneratedBy": [{
            "Name": f"rootlets_task: rootlets {command}",
            "Version": __version__,
            "CodeURL": code_url(),
            **model_fields(segmenter.record),
            "ModelFolder": str(segmenter.model_folder),
            "Device": segmenter.device.type,
            "Settings": segmenter.settings | {"CropToCord": crop},
        }],
        "InputFile": str(Path(source).absolute()) if source is not None else None,
        **({"Confidence": confidence} if confidence is not None else {}),
    }


def sidecar_command(argv) -> str:
    """The sidecar's command text from the arguments as typed: every token basename'd, as SCT's sidecar ``Name``."""
    return " ".join(os.path.basename(str(a)) for a in argv)



def dataset_description(record: dict, levels: bool, bids_root: Path) -> dict:
    """The derivative dataset's ``dataset_description.json`` (BIDS 1.10: DatasetType derivative, GeneratedBy)."""
    return {
        "Name": "rootlets_task: spinal nerve rootlets" + (" and spinal/vertebral levels" if levels else ""),
        "BIDSVersion": "1.10.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "rootlets_task", "Version": __version__,
                         "Description": "RootletSeg nnU-Net rootlets segmentation (rootlets batch)",
                         "CodeURL": code_url("batch/run.py"), **model_fields(record)}],
        "SourceDatasets": [{"URL": bids_root.absolute().as_uri()}],
    }
