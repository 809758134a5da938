"""The container: the Containerfile is built with podman (the phantom release baked in) and the BIDS App runs inside it
on a phantom BIDS dataset with networking off, as Apptainer runs it on a cluster: a read-only image, a user that is not
root, the dataset mounted read-only.

The base image is made here from the Debian archive (container/debian-base.sh: debootstrap, then `podman import`),
since no container registry can be reached; it is kept in podman's storage and made again only when missing. This
machine's pip configuration (its local CPU torch wheel and package index, its CA certificates) is passed into the build
with `--volume`, as the only change from a user's build (TORCH_INDEX empty instead of PyTorch's CPU index).

Podman runs here as root with runc (crun refuses this machine's hybrid cgroup layout) and ulimits no higher than this
process's own (the sandbox cannot raise them). Skipped, with the reason, where podman, runc or debootstrap is missing,
unless ROOTLETS_REQUIRE names podman (CI as root: .ci/install_tools installs them there, so a missing one fails). Where
podman is installed but cannot run a container at all (no namespaces, no overlay ...), the test skips with podman's own
message.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from support.required import need

ROOT = Path(__file__).resolve().parents[1]
BASE = "localhost/rootlets-base:bookworm"
IMAGE = "localhost/rootlets_task:ci-test"
TOOLS = ("podman", "runc", "debootstrap")
BUILD_TIMEOUT_S = 1800


def _podman() -> list[str]:
    """podman with runc and ulimits this process may set (a container's default ones are higher than the sandbox's)."""
    return ["podman", "--runtime", shutil.which("runc") or "runc"]


def _ulimits() -> list[str]:
    flags = []
    for name, limit in (("nofile", resource.RLIMIT_NOFILE), ("nproc", resource.RLIMIT_NPROC)):
        soft = resource.getrlimit(limit)[0]
        value = 4096 if soft == resource.RLIM_INFINITY else min(soft, 32768)
        flags += ["--ulimit", f"{name}={value}:{value}"]
    return flags


def _run(args: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)


@pytest.fixture(scope="module")
def engine():
    """Skip (or, in CI as root, fail) when a tool is missing; skip with podman's message where it cannot run at all."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    need("podman", not missing, f"{', '.join(missing)} not installed (apt-get install {' '.join(TOOLS)}; "
         ".ci/install_tools installs them as root)")
    if os.geteuid() != 0:
        pytest.skip("the container test builds as root (podman's rootful storage; debootstrap needs root)")
    if _run(["podman", "image", "exists", BASE], 60).returncode != 0:
        made = _run([str(ROOT / "container" / "debian-base.sh"), BASE], 1200)
        if made.returncode != 0:
            pytest.fail(f"container/debian-base.sh failed:\n{made.stderr[-3000:]}")
    probe = _run([*_podman(), "run", "--rm", "--network=none", *_ulimits(), BASE, "true"], 120)
    if probe.returncode != 0:
        pytest.skip(f"podman cannot run a container on this machine: {probe.stderr.strip()[-500:]}")
    return _podman()


PIP_KEYS = ("index-url", "extra-index-url", "find-links", "cert")


def _machine_pip(tmp: Path) -> list[str]:
    """``--volume`` flags giving the build this machine's pip configuration (``pip config list``, PIP_* variables
    included): its local wheel folders, ``file://`` indexes and CA bundle, mounted read-only at their own paths, and a
    pip.conf naming them. Nothing where pip is configured with none of these."""
    listed = _run([sys.executable, "-m", "pip", "config", "list"], 60).stdout
    settings = {}
    for line in listed.splitlines():  # global.find-links='/opt/wheels', :env:.cert='...'
        key, _, value = line.partition("=")
        if key.rsplit(".", 1)[-1] in PIP_KEYS:
            settings[key.rsplit(".", 1)[-1]] = value.strip().strip("'\"")
    mounts, conf = set(), ["[global]"]
    for key, value in settings.items():
        kept = []
        for item in value.split():
            local = Path(item.removeprefix("file://"))
            if item.startswith(("http://", "https://")):
                kept.append(item)
            elif local.exists():  # an index's pages link to ../../files: mount the folder above simple/
                mounts.add(local.parent if item.startswith("file://") else local)
                kept.append(item)
        if kept:
            conf.append(f"{key} = {' '.join(kept)}")
    if not mounts:
        return []
    (tmp / "pip.conf").write_text("\n".join(conf) + "\n")
    return [f for m in sorted(mounts) for f in ("--volume", f"{m}:{m}:ro")] + ["--volume", f"{tmp / 'pip.conf'}:/etc/pip.conf:ro"]


@pytest.fixture(scope="module")
def image(engine, tmp_path_factory):
    """The Containerfile built with the phantom release baked in (the build log is kept in the module's temp folder)."""
    tmp = tmp_path_factory.mktemp("container_build")
    before = _run(["podman", "image", "inspect", "--format", "{{.Id}}", IMAGE], 60).stdout.strip()
    t0 = time.perf_counter()
    built = _run([*engine, "build", "--network=host", *_ulimits(), "--file", str(ROOT / "Containerfile"),
                  "--build-arg", f"BASE={BASE}", "--build-arg", "TORCH_INDEX=", "--build-arg", "RELEASE=phantom",
                  *_machine_pip(tmp), "--tag", IMAGE, str(ROOT)], BUILD_TIMEOUT_S)
    (tmp / "build.log").write_text(built.stdout + built.stderr)
    assert built.returncode == 0, f"podman build failed:\n{(built.stdout + built.stderr)[-4000:]}"
    seconds = time.perf_counter() - t0
    if before and before != _run(["podman", "image", "inspect", "--format", "{{.Id}}", IMAGE], 60).stdout.strip():
        _run(["podman", "rmi", before], 120)  # the previous build's image: its layers are not shared with this one
    size = int(_run(["podman", "image", "inspect", "--format", "{{.Size}}", IMAGE], 60).stdout.strip())
    print(f"container image {IMAGE}: built in {seconds:.0f} s, {size / 1e9:.2f} GB")
    return IMAGE


def test_bids_app_in_the_container_offline_read_only_and_not_root(engine, image, bids, sequential, tmp_path):
    dataset, out = shutil.copytree(bids, tmp_path / "bids"), tmp_path / "out"
    out.mkdir()
    for path in [dataset, *dataset.rglob("*")]:  # readable by the container's user (pytest's folders are private)
        path.chmod(0o755 if path.is_dir() else 0o644)
    out.chmod(0o777)  # written by the container's user, as Apptainer writes with the caller's rights
    run = [*engine, "run", "--rm", "--network=none", "--read-only", "--user", "65534:65534", *_ulimits(),
           "--volume", f"{dataset}:/bids:ro", "--volume", f"{out}:/out", image]

    version = _run([*run, "--version"], 300)
    assert version.returncode == 0 and version.stdout.startswith("rootlets-bids (rootlets_task)"), version.stderr
    participant = _run([*run, "/bids", "/out/rootlets", "participant", "--participant_label", "sub-01", "--levels",
                        "--threads", "1"], 900)
    assert participant.returncode == 0, participant.stdout + participant.stderr
    assert "1 done, 0 skipped, 0 failed" in participant.stdout
    group = _run([*run, "/bids", "/out/rootlets", "group"], 300)
    assert group.returncode == 0, group.stdout + group.stderr

    derivative, reference = out / "rootlets", sequential[0]
    mine = nib.load(derivative / "sub-01" / "anat" / "sub-01_T2w_rootlets.nii.gz")
    theirs = nib.load(reference / "sub-01" / "anat" / "sub-01_T2w_rootlets.nii.gz")
    assert np.allclose(mine.affine, theirs.affine)
    # the container computes with torch (no OpenVINO inside), the reference run with this machine's backend: the
    # labels may differ at the float-rounding level only
    assert np.mean(np.asanyarray(mine.dataobj) == np.asanyarray(theirs.dataobj)) > 0.999
    assert set(pd.read_csv(derivative / "levels.csv")["subject"]) == {"sub-01"}
    assert (derivative / "group").is_dir() and any((derivative / "group").iterdir())

    failed = _run([*run, "/bids", "/out/rootlets", "participant", "--participant_label", "06"], 300)
    assert failed.returncode == 1 and "sub-06" in failed.stdout and "rootlets-bids: error:" in failed.stderr
