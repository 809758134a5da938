"""Registry of the RootletSeg model releases (``ivadomed/model-spinal-rootlets``) and the bundled phantom release.

Facts come from the model repository's tags and SCT's model table (see docs/install.md "Model releases"). The real releases'
SHA-256 digests are not published; ``sha256`` is ``None`` for them and the installer records the digest it computed.
``phantom`` is the tiny demo/test release shipped inside the package (``rootlets_task/data``); its digest comes from
the manifest written by ``model_release/build_phantom_release.py``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from rootlets_task.core.errors import RootletsError
from rootlets_task.core.urls import is_url

DEFAULT_TAG = "r20250318"
ENV_MIRROR = "ROOTLETS_TASK_MIRROR"  # base URL(s) or folder(s) holding release zips, replacing GitHub
SCT_MODEL = "model_seg_spinal_rootlets_nnunet"  # SCT's MODELS key for rootlets, in every SCT version that has it
DATA_DIR = Path(__file__).parents[1] / "data"
PHANTOM_ZIP = DATA_DIR / "model-spinal-rootlets-phantom.zip"
PHANTOM_MANIFEST = DATA_DIR / "phantom_manifest.json"

_GITHUB = "https://github.com/ivadomed/model-spinal-rootlets/releases/download"
_C2_T1 = ("C2", "C3", "C4", "C5", "C6", "C7", "C8", "T1")


@dataclass(frozen=True)
class Release:
    """One model release: where to get it and what it segments (output value = spinal level, 2=C2 ... 9=T1)."""

    tag: str
    date: str                      # release date (ISO)
    urls: tuple[str, ...]          # mirrors, tried in order; a local path for the bundled release
    contrasts: tuple[str, ...]
    levels: tuple[str, ...]        # spinal levels it labels
    rootlets: str                  # which rootlets: "dorsal" or "dorsal+ventral" (same value for both sides)
    description: str
    sha256: str | None = None      # None: not published, computed and recorded at install
    size: int | None = None        # bytes of the zip, when known
    sct_task: str | None = None    # SCT task name that used this release, and the SCT versions that shipped it
    sct_versions: str | None = None
    sct_model: str = SCT_MODEL
    bundled: bool = False          # shipped inside the package, installs with no network

    @property
    def asset(self) -> str:
        """File name of the release zip (the same on every mirror)."""
        return Path(urlparse(self.urls[0]).path).name

    @property
    def default(self) -> bool:
        return self.tag == DEFAULT_TAG


def _phantom() -> Release:
    """The bundled phantom release; digest and description from its manifest once the release is built."""
    manifest = json.loads(PHANTOM_MANIFEST.read_text()) if PHANTOM_MANIFEST.is_file() else {}
    return Release(
        tag="phantom",
        date=str(manifest.get("build_date", ""))[:10],
        urls=(str(PHANTOM_ZIP),),
        contrasts=tuple(manifest.get("contrasts", ("T2w",))),
        levels=_C2_T1,
        rootlets="dorsal+ventral",
        description=manifest.get("description", "Tiny nnU-Net trained on the synthetic phantom; demo and tests only, "
                                 "it does not segment real MRI."),
        sha256=manifest.get("sha256"),
        size=manifest.get("size_bytes"),
        bundled=True,
    )


RELEASES: dict[str, Release] = {r.tag: r for r in (
    Release(
        tag="r20250318",
        date="2025-03-18",
        urls=(f"{_GITHUB}/r20250318/model-spinal-rootlets-multicon-r20250318.zip",),
        contrasts=("T2w", "UNIT1", "T1w-INV1", "T1w-INV2"),
        levels=_C2_T1,
        rootlets="dorsal+ventral",
        description="RootletSeg: C2-T1 dorsal and ventral rootlets, T2w and 7T MP2RAGE (INV1, INV2, UNIT1); "
                    "nnU-Net 3d_fullres trained on 76 images. The model of `sct_deepseg rootlets`.",
        sct_task="rootlets",
        sct_versions="7.0+",
    ),
    Release(
        tag="r20240730",
        date="2024-07-30",
        urls=(f"{_GITHUB}/r20240730/model-spinal-rootlets_M5_r20240129-2.zip",),
        contrasts=("T2w",),
        levels=_C2_T1[:-1],
        rootlets="dorsal",
        description="Model M5 (Valosek et al. 2024): C2-C8 dorsal rootlets on T2w, repackaged with the "
                    "nnUNetTrainer folder layout.",
        sct_task="seg_spinal_rootlets_t2w",
        sct_versions="6.4-6.5",
    ),
    Release(
        tag="r20240523",
        date="2024-05-23",
        urls=(f"{_GITHUB}/r20240523/model-spinal-rootlets_ventral_D106_r20240523.zip",),
        contrasts=("T2w",),
        levels=_C2_T1,
        rootlets="dorsal+ventral",
        description="Dataset D106 'ventral' model: dorsal and ventral rootlets on T2w (the method RootletSeg was "
                    "compared against).",
    ),
    Release(
        tag="r20240129",
        date="2024-01-29",
        urls=(f"{_GITHUB}/r20240129/model-spinal-rootlets_M5_r20240129.zip",),
        contrasts=("T2w",),
        levels=_C2_T1[:-1],
        rootlets="dorsal",
        description="Model M5 (Valosek et al. 2024): C2-C8 dorsal rootlets on T2w, first packaging.",
        sct_task="seg_spinal_rootlets_t2w",
        sct_versions="6.2-6.3",
    ),
    _phantom(),
)}


def get_release(tag: str | None = None) -> Release:
    """The release for ``tag`` (default ``r20250318``); unknown tag -> RootletsError listing the known ones."""
    tag = DEFAULT_TAG if tag is None else tag
    try:
        return RELEASES[tag]
    except KeyError:
        raise RootletsError(f"unknown model release {tag!r}; known releases: {', '.join(RELEASES)} "
                            "(see `rootlets releases`)") from None


def release_urls(release: Release) -> list[str]:
    """Mirrors of a release; ``$ROOTLETS_TASK_MIRROR`` (whitespace-separated URLs or folders) replaces the registry's."""
    mirrors = os.environ.get(ENV_MIRROR, "").split()
    if release.bundled or not mirrors:
        return list(release.urls)
    return [m.rstrip("/") + "/" + release.asset if is_url(m) else str(Path(m) / release.asset) for m in mirrors]
