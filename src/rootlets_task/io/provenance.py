"""What made an output: the JSON sidecars beside label files and the derivative dataset's description.

Sidecars follow SCT's ``GeneratedBy`` convention (BIDS), so tools that read SCT's sidecars read ours: SCT's keys in
SCT's order first (``GeneratedBy[0]``: Name, Version, CodeURL, ModelURL), ours after. URLs are
stored without user info or query (:func:`rootlets_task.core.urls.redact`): a signed mirror URL never leaks into
shared data, and a release installed from a file is named by its public URL (the bundled phantom) or its file name.
Paths are written as :func:`rootlets_task.core.places.portable` writes them: BIDS URIs or relative paths, never this
machine's folders.
"""

from __future__ import annotations

import os
from pathlib import Path

from rootlets_task._version import __url__, __version__
from rootlets_task.core.places import portable, portable_text
from rootlets_task.core.urls import redact
from rootlets_task.io.nifti import stem

PACKAGE_DATA = Path(__file__).parents[1] / "data"
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


def model_url(url: str | None) -> str | None:
    """Where a release came from, as shared files say it: a web URL redacted; the bundled phantom zip's public URL (in
    the package's source at this version); any other file or ``file://`` URL by its file name only."""
    if not url:
        return None
    from urllib.parse import unquote, urlparse

    if urlparse(url).scheme.lower() in ("http", "https", "ftp"):
        return redact(url)
    path = Path(unquote(urlparse(url).path)) if url.lower().startswith("file:") else Path(url)
    if path.parent.resolve() == PACKAGE_DATA.resolve():  # the bundled phantom release
        return code_url(f"data/{path.name}")
    return path.name


def model_fields(record: dict) -> dict:
    """The sidecar fields that identify a model from its install record (URL as :func:`model_url` writes it)."""
    return {"ModelURL": model_url(record.get("url")), "Release": record.get("tag"), "ModelSHA256": record.get("sha256")}


def model_folder_name(folder: str | os.PathLike) -> str:
    """The model's folder as ``<release>/<trainer folder>``: which model, without where this machine keeps it."""
    folder = Path(folder)
    return f"{folder.parent.name}/{folder.name}"


def rootlets_sidecar(segmenter, source: str | os.PathLike | None, command: str, crop: dict | None = None,
                     confidence: dict | None = None) -> dict:
    """SCT-style ``GeneratedBy`` metadata of one rootlets segmentation made by ``segmenter``.

    ``command``: the arguments after ``rootlets`` (SCT basenames every token of its own: callers do the same), e.g.
    ``batch BIDS ...`` for a batch.
    SCT's keys first, in SCT's order (``sct_deepseg.py``: Name, Version, CodeURL, ModelURL), then ours.
    ``confidence``: the network's confidence per level (:mod:`rootlets_task.inference.confidence`), when computed.
    """
    return {
        "GeneratedBy": [{
            "Name": f"rootlets_task: rootlets {portable_text(command)}",
            "Version": __version__,
            "CodeURL": code_url(),
            **model_fields(segmenter.record),
            "ModelFolder": model_folder_name(segmenter.model_folder),
            "Device": segmenter.device.type,
            "Settings": segmenter.settings | {"CropToCord": crop},
        }],
        "InputFile": portable(source),
        **({"Confidence": confidence} if confidence is not None else {}),
    }


def sidecar_command(argv) -> str:
    """The sidecar's command text from the arguments as typed: every token basename'd, as SCT's sidecar ``Name``."""
    return " ".join(os.path.basename(str(a)) for a in argv)



def dataset_links(bids_root: Path, out: Path) -> dict:
    """``DatasetLinks`` of a derivative in ``out``: ``raw`` = the source dataset, as a path relative to the derivative
    (BIDS allows it), so that ``bids:raw:`` URIs resolve; none when the two share no folder below the file system's
    root (an absolute path would name this machine's folders)."""
    raw, here = Path(os.path.abspath(bids_root)), Path(os.path.abspath(out))
    if Path(os.path.commonpath([raw, here])) == Path(raw.anchor):
        return {}
    return {"raw": Path(os.path.relpath(raw, here)).as_posix()}


def dataset_description(record: dict, levels: bool, bids_root: Path, out: Path) -> dict:
    """The derivative dataset's ``dataset_description.json`` (BIDS 1.10: DatasetType derivative, GeneratedBy); the
    source dataset as the BIDS URI ``bids:raw:``, resolved by ``DatasetLinks`` (:func:`dataset_links`)."""
    links = dataset_links(bids_root, out)
    return {
        "Name": "rootlets_task: spinal nerve rootlets" + (" and spinal/vertebral levels" if levels else ""),
        "BIDSVersion": "1.10.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "rootlets_task", "Version": __version__,
                         "Description": "RootletSeg nnU-Net rootlets segmentation (rootlets batch)",
                         "CodeURL": code_url("batch/run.py"), **model_fields(record)}],
        "SourceDatasets": [{"URL": "bids:raw:"}],
        **({"DatasetLinks": links} if links else {}),
    }
