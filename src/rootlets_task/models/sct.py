"""Bridge to the Spinal Cord Toolbox: install a release where ``sct_deepseg rootlets`` finds it, reuse SCT's model.

SCT keeps the rootlets model in ``$SCT_DIR/data/deepseg_models/model_seg_spinal_rootlets_nnunet/`` as one
``nnUNetTrainer*`` folder plus ``source.json`` (``model_name``, ``model_urls``, ``custom``; indent 4). At run time
``sct_deepseg`` accepts the installed model without downloading when ``custom`` is true or ``model_urls`` is one of
the URLs its ``MODELS`` table lists; anything else is deleted and re-downloaded. So a release SCT lists is recorded
exactly as SCT records it, any other (older tag, custom URL, the phantom) as custom, like ``sct_deepseg -custom-url``.

SCT versions: 7.x task ``rootlets``; 6.4-6.5 task ``seg_spinal_rootlets_t2w`` (6.4 has no ``custom`` flag, so it only
takes the release it lists); 6.2-6.3 stored the model without the ``nnUNetTrainer*`` folder and are refused.
The download, zip checks, lock and atomic rename are :mod:`rootlets_task.models.archive`'s, as for our own store.

SCT's own model is never deleted: the folder an install replaces is renamed beside it,
``model_seg_spinal_rootlets_nnunet.before-rootlets_task-<UTC time>`` (same filesystem: no copy, no space), and
:func:`restore_sct` (``rootlets -install -sct -restore``) puts the newest one back, offline.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from rootlets_task.core.errors import RootletsError
from rootlets_task.core.files import load_json
from rootlets_task.core.urls import redact
from rootlets_task.models import archive
from rootlets_task.models.releases import DEFAULT_TAG, RELEASES, SCT_MODEL, Release, get_release, release_urls

log = logging.getLogger(__name__)

ENV_SCT_DIR = "SCT_DIR"
SOURCE_JSON = "source.json"
MIN_VERSION = (6, 4)      # first SCT with the nnUNetTrainer* folder layout and source.json
CUSTOM_VERSION = (6, 5)   # first SCT whose source.json has the ``custom`` flag
KEPT = ".before-rootlets_task-"  # <model folder><KEPT><UTC time>: an SCT model folder an install replaced
# What SCT's MODELS / TASKS tables say for the rootlets model, by version; used when models.py cannot be read.
_SCT_TABLE = (((7, 0), "rootlets", "r20250318"), ((6, 4), "seg_spinal_rootlets_t2w", "r20240730"))
_CONTRASTS = {"T2w": "t2"}  # our contrast names -> SCT's (the MP2RAGE ones are spelled the same)
_CITATION = """```bibtex
@misc{krejci2025rootletsegdeeplearningmethod,
      title={RootletSeg: Deep learning method for spinal rootlets segmentation across MRI contrasts},
      author={Katerina Krejci and Jiri Chmelik and Sandrine B\\'edard and Falk Eippert and Ulrike Horn and Virginie Callot and Julien Cohen-Adad and Jan Valosek},
      year={2025}, eprint={2509.16255}, archivePrefix={arXiv}, url={https://arxiv.org/abs/2509.16255},
}
```"""  # noqa: E501


# ------------------------------------------------------------------------------------------------ SCT's schema
def sct_model_entry(tag: str | None = None) -> dict:
    """Release ``tag`` as an entry of SCT's ``MODELS`` dict: ``MODELS[key] = sct_model_entry("r20250318")``."""
    release = get_release(tag)
    return {
        "url": list(release.urls),
        "description": f"{release.description} (rootlets_task release {release.tag})",
        "contrasts": [_CONTRASTS.get(c, c) for c in release.contrasts],
        "framework": "nnunetv2",
        "thr": None,  # multiclass: voxel value = spinal level, no thresholding
        "default": False,
    }


def sct_task_entry(tag: str | None = None, model_key: str = SCT_MODEL) -> dict:
    """Release ``tag`` as an entry of SCT's ``TASKS`` dict, running the ``MODELS[model_key]`` model."""
    release = get_release(tag)
    return {
        "description": f"Segmentation of spinal nerve rootlets ({', '.join(release.levels)}, {release.rootlets}; "
                       f"{', '.join(release.contrasts)})",
        "long_description": f"{release.description} nnU-Net v2 3d_fullres; output voxel value = spinal level "
                            f"(2=C2 ... 9=T1). Release {release.tag}, registered by rootlets_task.",
        "url": "https://github.com/ivadomed/model-spinal-rootlets",
        "models": [model_key],
        "citation": _CITATION,
    }


# ---------------------------------------------------------------------------------------------- finding SCT
@dataclass(frozen=True)
class SCT:
    """An SCT installation: its root (``__sct_dir__``), version, rootlets task name and the URLs it accepts."""

    root: Path
    version: str
    found_by: str                   # "SCT_DIR" or the sct_deepseg path it was found from
    task: str | None                # rootlets task name in this version (None when too old)
    urls: tuple[str, ...]           # MODELS["model_seg_spinal_rootlets_nnunet"]["url"] of this version

    @property
    def version_tuple(self) -> tuple[int, int]:
        return _version_tuple(self.version)

    @property
    def supported(self) -> bool:
        return self.version_tuple >= MIN_VERSION and self.task is not None

    @property
    def has_custom(self) -> bool:
        """Whether this SCT honours ``"custom": true`` in source.json (6.5+)."""
        return self.version_tuple >= CUSTOM_VERSION

    @property
    def deepseg_dir(self) -> Path:
        return self.root / "data" / "deepseg_models"

    @property
    def model_dir(self) -> Path:
        return self.deepseg_dir / SCT_MODEL

    @property
    def listed_tags(self) -> list[str]:
        """Our releases whose URL this SCT lists (SCT accepts them as its own)."""
        return [r.tag for r in RELEASES.values() if set(r.urls) & set(self.urls)]


def _version_tuple(version: str) -> tuple[int, int]:
    match = re.match(r"\s*v?(\d+)\.(\d+)", version)
    return (int(match[1]), int(match[2])) if match else (0, 0)


def _is_sct_root(path: Path) -> bool:
    return (path / "spinalcordtoolbox" / "version.txt").is_file()


def _root_from_launcher(launcher: Path) -> Path | None:
    """SCT root from an ``sct_deepseg`` launcher: an ancestor holding ``spinalcordtoolbox/version.txt`` (the installer's
    ``$SCT_DIR/bin`` copy or ``$SCT_DIR/python/envs/venv_sct/bin``), else ask the launcher's Python where the package is
    (``pip install -e`` into another environment); ``__sct_dir__`` is the folder above the package."""
    for start in (launcher.absolute(), launcher.resolve()):
        for parent in start.parents:
            if _is_sct_root(parent):
                return parent
    try:
        first = launcher.open("rb").readline(512).decode(errors="replace")
    except OSError:
        return None
    interpreter = first[2:].strip().split()[0] if first.startswith("#!") and first[2:].strip() else ""
    if not interpreter or not Path(interpreter).is_file():
        return None
    code = "import importlib.util as u; s = u.find_spec('spinalcordtoolbox'); print(s.origin if s and s.origin else '')"
    try:
        out = subprocess.run([interpreter, "-c", code], capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    root = Path(out).parent.parent if out else None
    return root if root is not None and _is_sct_root(root) else None


def _entries(node: ast.Dict) -> dict:
    """String keys of a dict literal -> their value nodes."""
    return {k.value: v for k, v in zip(node.keys, node.values, strict=True) if isinstance(k, ast.Constant)}


def _read_registry(root: Path) -> tuple[str | None, tuple[str, ...] | None]:
    """(task name, URL list) of the rootlets model from SCT's own ``deepseg/models.py``, read without importing SCT."""
    path = root / "spinalcordtoolbox" / "deepseg" / "models.py"
    try:
        if path.stat().st_size > 4 << 20:  # SCT's is about 40 KB
            return None, None
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError, RecursionError, MemoryError):
        return None, None
    tables = {target.id: _entries(node.value) for node in tree.body
              if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
              for target in node.targets if isinstance(target, ast.Name) and target.id in ("MODELS", "TASKS")}

    def field(entry: ast.AST | None, name: str):
        try:
            return ast.literal_eval(_entries(entry)[name]) if isinstance(entry, ast.Dict) and name in _entries(entry) else None
        except ValueError:  # a value computed at import time
            return None

    url = field(tables.get("MODELS", {}).get(SCT_MODEL), "url")
    urls = tuple(url) if isinstance(url, list | tuple) and all(isinstance(u, str) for u in url) else None
    task = next((name for name, entry in tables.get("TASKS", {}).items()
                 if isinstance(field(entry, "models"), list) and SCT_MODEL in field(entry, "models")), None)
    return task, urls


def find_sct(sct_dir: str | os.PathLike | None = None) -> SCT:
    """The SCT installation: ``sct_dir``, else ``$SCT_DIR``, else the one ``sct_deepseg`` on PATH belongs to."""
    root: Path | None
    if sct_dir is not None or os.environ.get(ENV_SCT_DIR):
        how = "argument" if sct_dir is not None else ENV_SCT_DIR
        root = Path(sct_dir if sct_dir is not None else os.environ[ENV_SCT_DIR]).expanduser().absolute()
        if not _is_sct_root(root):
            raise RootletsError(f"{how} {root} is not an SCT installation (no spinalcordtoolbox/version.txt); "
                                f"set {ENV_SCT_DIR} to the folder SCT was installed in")
    else:
        launcher = shutil.which("sct_deepseg")
        if launcher is None:
            raise RootletsError(f"SCT not found: set {ENV_SCT_DIR} to the SCT installation folder or put sct_deepseg on "
                                "PATH (install SCT: https://spinalcordtoolbox.com)")
        how = launcher
        root = _root_from_launcher(Path(launcher))
        if root is None:
            raise RootletsError(f"SCT not found: cannot tell which SCT installation {launcher} belongs to; "
                                f"set {ENV_SCT_DIR} to its installation folder")
    version = (root / "spinalcordtoolbox" / "version.txt").read_text(errors="replace").strip() or "unknown"
    task, urls = _read_registry(root)
    if task is None or urls is None:  # models.py unreadable: SCT's tables as shipped by each version
        major_minor = _version_tuple(version)
        row = next((row for row in _SCT_TABLE if major_minor >= row[0]), None)
        task, urls = (row[1], RELEASES[row[2]].urls) if row else (None, ())
    return SCT(root, version, how, task, tuple(urls))


def require_supported(sct: SCT) -> SCT:
    """``sct`` if it can hold our rootlets models, else a RootletsError saying why and what to do."""
    if sct.version_tuple < MIN_VERSION or sct.task is None:
        why = ("stores the rootlets model without its nnUNetTrainer* folder" if sct.version_tuple >= (6, 2)
               else "has no rootlets model")
        raise RootletsError(f"SCT {sct.version} at {sct.root} is too old: it {why}; SCT >= "
                            f"{'.'.join(map(str, MIN_VERSION))} is needed (7.x recommended), upgrade SCT")
    return sct


# ------------------------------------------------------------------------------------------- SCT's model folder
@dataclass(frozen=True)
class SCTModel:
    """The rootlets model in SCT's folder: trainer folder, ``source.json`` (None if absent) and our matching tag."""

    folder: Path
    trainer_folder: Path
    source: dict | None
    release: str | None        # our release tag it is (matched on URL, then file name), None if unknown
    problem: str | None        # why the trainer folder is unusable, None when complete

    @property
    def url(self) -> str | None:
        return self.source.get("model_urls") if self.source else None

    @property
    def custom(self) -> bool:
        return bool(self.source and self.source.get("custom") is True)


def match_release(url: str | None) -> str | None:
    """Our release tag whose URL (or, for moved copies and mirrors, zip file name) is ``url``."""
    if not url:
        return None
    for release in RELEASES.values():
        if url in release.urls:
            return release.tag
    name = Path(unquote(urlparse(url).path)).name
    return next((r.tag for r in RELEASES.values() if r.asset == name), None)


def _unknown_layout(folder: Path, what: str) -> RootletsError:
    return RootletsError(f"SCT model folder {folder} has an unknown layout ({what}); expected one nnUNetTrainer* folder "
                         f"and {SOURCE_JSON}; move it away (it was left untouched) and install again")


def read_model(sct: SCT) -> SCTModel | None:
    """SCT's installed rootlets model; None when absent (or an empty folder left by a failed SCT download).

    Anything but one ``nnUNetTrainer*`` folder, a valid ``source.json`` for this model and SCT HEAD's optional
    ``crop_metadata.json`` is an unknown layout:
    RootletsError, so nothing replaces or uses files we do not understand.
    """
    folder = sct.model_dir
    if not folder.exists() and not folder.is_symlink():
        return None
    if not folder.is_dir():
        raise _unknown_layout(folder, "not a folder")
    entries = sorted(folder.iterdir())
    if not entries:
        return None
    trainers = [e for e in entries if e.name.startswith("nnUNetTrainer") and e.is_dir() and not e.is_symlink()]
    others = [e.name for e in entries if e not in trainers and e.name not in (SOURCE_JSON, *archive.BESIDE_TRAINER)]
    if len(trainers) != 1 or others:
        found = ", ".join(e.name for e in entries[:6]) + (", ..." if len(entries) > 6 else "")
        raise _unknown_layout(folder, f"found {found}")
    source = None
    if (folder / SOURCE_JSON).exists():
        try:
            source = load_json(folder / SOURCE_JSON, SOURCE_JSON, limit=1 << 20)
        except RootletsError as exc:
            raise _unknown_layout(folder, f"unreadable {SOURCE_JSON}: {exc}") from None
        if not (isinstance(source, dict) and source.get("model_name") == SCT_MODEL
                and isinstance(source.get("model_urls"), str)):
            raise _unknown_layout(folder, f"{SOURCE_JSON} is not SCT's record of {SCT_MODEL}")
    trainer = trainers[0]
    return SCTModel(folder, trainer, source, match_release(source and source["model_urls"]),
                    archive.trainer_folder_problem(trainer))


def sct_accepts(sct: SCT, model: SCTModel) -> bool:
    """Whether ``sct_deepseg`` runs this model as is (no "out of date, re-installing"), per SCT's ``is_up_to_date``."""
    if model.problem or model.source is None:
        return False
    return (model.custom and sct.has_custom) or model.url in sct.urls


# ------------------------------------------------------------------------------------------------------ install
def source_json(url: str, custom: bool, sct: SCT) -> str:
    """``source.json`` exactly as SCT's ``install_model`` writes it (``json.dump(..., indent=4)``, no final newline)."""
    record: dict[str, str | bool] = {"model_name": SCT_MODEL, "model_urls": url}
    if sct.has_custom:
        record["custom"] = custom
    return json.dumps(record, indent=4)


def _check_writable(sct: SCT) -> None:
    """The model folder (when present) and the deepseg folder, or the nearest parent it will be created in, must be
    writable: the install renames the one and creates temp folders and a lock in the other."""
    parent = sct.deepseg_dir
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    for path in ([sct.model_dir] if sct.model_dir.exists() else []) + [parent]:
        if not os.access(path, os.W_OK | os.X_OK):
            raise RootletsError(f"SCT folder {path} is not writable; run as the user who installed SCT ({sct.root}) "
                                "or give yourself write access to it")


def install_sct(tag: str | None = None, custom_url: str | list[str] | None = None,
                sct_dir: str | os.PathLike | None = None, progress: bool = True,
                allow_code: bool = False) -> tuple[SCTModel, str]:
    """Install release ``tag`` (default r20250318) into SCT's rootlets model folder so ``sct_deepseg`` uses it.

    A release SCT lists is recorded as SCT records it (``custom: false``); any other release or ``custom_url`` as
    custom, like ``sct_deepseg -custom-url``. Same download, checks, lock and atomic rename as our own store: the
    previous SCT model stays until the new one is complete. A no-op when the same source is already installed.
    Returns the installed model and what to tell the user.
    """
    release: Release = get_release(tag)
    sct = require_supported(find_sct(sct_dir))
    read_model(sct)  # unknown layout -> error before anything is fetched or touched
    _check_writable(sct)
    listed = [u for u in release.urls if u in sct.urls]
    custom = bool(custom_url) or not listed
    if custom and not sct.has_custom:
        raise RootletsError(f"SCT {sct.version} re-downloads any rootlets model whose URL it does not list (custom models "
                            f"need SCT >= {'.'.join(map(str, CUSTOM_VERSION))}); install release "
                            f"{' or '.join(sct.listed_tags) or 'it lists'} or upgrade SCT")
    if custom_url:
        urls = [custom_url] if isinstance(custom_url, str) else list(custom_url)
    else:
        urls = release_urls(release)
        if release.bundled and not Path(urls[0]).is_file():
            raise RootletsError(f"the bundled {release.tag} release is missing ({urls[0]}); reinstall rootlets_task")

    def make_record(fetched: archive.Fetched, layout: archive.ReleaseZip) -> str:
        # SCT records the URL it downloaded from, always one of its own list; a mirror of ours gives the same zip.
        return source_json(fetched.url if custom else listed[0], custom, sct)

    def current() -> bool:
        if custom_url:
            return False
        model = read_model(sct)
        return bool(model and not model.problem and model.release == release.tag and model.custom == custom
                    and sct_accepts(sct, model))

    kept = _kept_name(sct)
    try:
        checks = archive.Checks(sha256=None if custom_url else release.sha256,
                                known_size=None if custom_url else release.size, allow_code=allow_code)
        trainer = archive.install_from(urls, sct.model_dir, make_record, SOURCE_JSON, checks, skip=current, progress=progress,
                                       keep_previous=kept)
    except RootletsError as exc:
        what = f"custom model {' '.join(redact(u) for u in urls)}" if custom_url else f"model release {release.tag}"
        raise RootletsError(f"cannot install {what} into SCT ({sct.model_dir}): {exc}; SCT's previous model is "
                            "unchanged") from None
    model = read_model(sct)
    assert model is not None  # just installed
    what = f"custom model {model.url}" if custom_url else f"release {release.tag}" + (" (custom)" if custom else "")
    if trainer is None:
        return model, f"{what} is already installed in SCT {sct.version}: {model.folder}"
    return model, (f"installed {what} into SCT {sct.version}: {model.folder}; `sct_deepseg {sct.task} -i IMG` uses it "
                   f"without downloading" + (" (SCT will warn that it is a custom model)" if custom else "")
                   + (f"; SCT's previous model is kept in {kept} (`rootlets -install -sct -restore` puts it back)"
                      if kept.exists() else ""))


def _kept_name(sct: SCT) -> Path:
    """A new, unused name beside SCT's model folder for the folder an install or a restore replaces."""
    while True:
        ns = time.time_ns()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(ns // 10**9)) + f".{ns // 1000 % 10**6:06d}Z"
        name = sct.model_dir.with_name(f"{sct.model_dir.name}{KEPT}{stamp}")
        if not (name.exists() or name.is_symlink()):
            return name


def kept_models(sct_dir: str | os.PathLike | None = None) -> list[Path]:
    """SCT model folders that installs replaced and kept, oldest first (their names sort by time)."""
    sct = find_sct(sct_dir)
    found = [p for p in sct.deepseg_dir.glob(f"{sct.model_dir.name}{KEPT}*") if p.is_dir() and not p.is_symlink()] \
        if sct.deepseg_dir.is_dir() else []
    return sorted(found)


def restore_sct(sct_dir: str | os.PathLike | None = None) -> tuple[SCTModel | None, str]:
    """Put back the SCT model that the last ``install_sct`` replaced (the newest kept folder), with no network.

    The model it replaces is kept in turn (nothing is deleted), so a restore can itself be undone. Returns SCT's model
    now and what to tell the user.
    """
    sct = require_supported(find_sct(sct_dir))
    kept = kept_models(sct.root)
    if not kept:
        raise RootletsError(f"no SCT model kept in {sct.deepseg_dir}: `rootlets -install -sct` has replaced none here, "
                            f"so there is nothing to restore; `sct_deepseg {sct.task} -install` installs SCT's own")
    _check_writable(sct)
    newest, aside = kept[-1], _kept_name(sct)
    with archive.install_lock(sct.model_dir):
        try:
            if sct.model_dir.exists() or sct.model_dir.is_symlink():
                os.rename(sct.model_dir, aside)
            try:
                os.rename(newest, sct.model_dir)
            except OSError:
                if aside.exists():
                    os.rename(aside, sct.model_dir)
                raise
        except OSError as exc:
            raise RootletsError(f"cannot restore {newest} into {sct.model_dir}: {exc.strerror or exc}; SCT's model is "
                                "unchanged") from None
    model = read_model(sct)
    what = f"release {model.release}" if model and model.release else f"the model from {model.url}" if model else "it"
    return model, (f"restored SCT's rootlets model from {newest.name} ({what}): {sct.model_dir}"
                   + (f"; the model it replaced is kept in {aside}" if aside.exists() else ""))


# ------------------------------------------------------------------------------------------------------ reverse
def model_folder(sct_dir: str | os.PathLike | None = None) -> tuple[Path, dict]:
    """(trainer folder, record) of the rootlets model SCT has installed, for ``rootlets -release sct``; no download."""
    sct = require_supported(find_sct(sct_dir))
    model = read_model(sct)
    if model is None:
        raise RootletsError(f"SCT {sct.version} at {sct.root} has no rootlets model installed; run "
                            f"`sct_deepseg {sct.task} -install` or `rootlets -install -sct`")
    if model.problem:
        raise RootletsError(f"SCT's rootlets model is incomplete ({model.problem}); run `sct_deepseg {sct.task} -install` "
                            "or `rootlets -install -sct`")
    label = f"release {model.release}" if model.release else f"an unknown release ({model.url or 'no source.json'})"
    log.info("using SCT %s's rootlets model, %s%s: %s", sct.version, label, " (custom)" if model.custom else "",
             model.trainer_folder)
    return model.trainer_folder, {
        "tag": "sct", "release": model.release, "url": model.url, "custom": model.custom,
        "sct_dir": str(sct.root), "sct_version": sct.version, "trainer_folder": model.trainer_folder.name,
    }


# ------------------------------------------------------------------------------------------------------- status
def sct_status(sct_dir: str | os.PathLike | None = None) -> dict:
    """What ``rootlets -sct-status`` shows: SCT found?, version, task, its rootlets model, ours?, current?"""
    try:
        sct = find_sct(sct_dir)
    except RootletsError as exc:
        return {"found": False, "error": str(exc)}
    info = {"found": True, "sct_dir": str(sct.root), "found_by": sct.found_by, "version": sct.version,
            "supported": sct.supported, "task": sct.task, "sct_urls": list(sct.urls), "sct_releases": sct.listed_tags,
            "model_dir": str(sct.model_dir), "model": None}
    try:
        model = read_model(require_supported(sct))
    except RootletsError as exc:
        info["error"] = str(exc)
        return info
    if model is not None:
        info["model"] = {"release": model.release, "url": model.url, "custom": model.custom,
                         "trainer_folder": model.trainer_folder.name, "problem": model.problem,
                         "ours": model.release is not None, "sct_accepts": sct_accepts(sct, model),
                         "newest": model.release == DEFAULT_TAG}
    return info


def format_status(info: dict) -> str:
    """Human-readable lines of :func:`sct_status`."""
    if not info["found"]:
        return f"SCT: not found ({info['error']})"
    lines = [f"SCT: {info['version']} at {info['sct_dir']} (found via {info['found_by']})"]
    if "error" in info:
        return "\n".join(lines + [f"problem: {info['error']}"])
    listed = ", ".join(info["sct_releases"]) or "none of ours"
    lines += [f"SCT task: {info['task']}; SCT's release: {listed}", f"model folder: {info['model_dir']}"]
    model = info["model"]
    if model is None:
        lines.append(f"rootlets model: not installed (run `rootlets -install -sct` or `sct_deepseg {info['task']} -install`)")
        return "\n".join(lines)
    name = f"release {model['release']}" if model["ours"] else "not one of our releases"
    source = model["url"] or f"unknown (no {SOURCE_JSON})"
    lines.append(f"rootlets model: {name}{' (custom)' if model['custom'] else ''}, from {source}")
    if model["problem"]:
        lines.append(f"problem: {model['problem']}")
    lines.append("SCT uses it as is: " + ("yes" if model["sct_accepts"] else "no, sct_deepseg will re-download its own"))
    lines.append(f"newest release ({DEFAULT_TAG}): " + ("yes" if model["newest"] else "no"))
    return "\n".join(lines)
