"""The CPU install stays CPU: `make demo`/`make test` and the README install torch alone from PyTorch's CPU wheel
index, and constraints.txt pins its +cpu build on Linux, so the resolution cannot pull PyPI's CUDA build and its
``nvidia-*`` packages.

The resolution check asks the real package indexes (PyPI and https://download.pytorch.org/whl/cpu) with this
machine's pip configuration off: it is the one test here that reaches beyond loopback, so it runs only when asked
(``ROOTLETS_CHECK_INDEXES=1``, which .ci/run sets) and skips with the reason when an index cannot be reached.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
ASK = "ROOTLETS_CHECK_INDEXES"


def _constraints() -> dict[str, str]:
    """{environment marker: torch pin} of constraints.txt."""
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("torch"):
            pin, _, marker = line.partition(";")
            pins[marker.strip()] = pin.strip()
    return pins


def test_constraints_pin_the_cpu_build_of_torch_on_linux():
    pins = _constraints()
    linux, other = pins['sys_platform == "linux"'], pins['sys_platform != "linux"']
    assert re.fullmatch(r"torch==\d+\.\d+\.\d+\+cpu", linux) and linux == other + "+cpu", pins


def test_makefile_readme_and_install_page_take_torch_alone_from_the_cpu_index():
    makefile = (ROOT / "Makefile").read_text()
    assert f"TORCH_INDEX ?= {CPU_INDEX}" in makefile
    steps = [line.strip() for line in makefile.splitlines() if "pip install" in line]
    assert steps[0].endswith("--no-deps -c constraints.txt --extra-index-url $(TORCH_INDEX) torch"), steps
    assert "-c constraints.txt" in steps[1] and "TORCH_INDEX" not in steps[1], "the rest from PyPI only"
    for page in ("README.md", "docs/install.md"):
        text = (ROOT / page).read_text()
        assert f"--extra-index-url {CPU_INDEX} torch" in text and "-c constraints.txt" in text, page
        assert "GPU" in text, f"{page} says how GPU machines install"


def _clean_env() -> dict[str, str]:
    """This process's environment without pip's settings, and pip's configuration files off."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    return {**env, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def _unreachable(urls: list[str]) -> str | None:
    """Why one of ``urls`` cannot be fetched (in a child process: this one may reach loopback only), or None."""
    probe = ("import sys, urllib.request\nfor u in sys.argv[1:]:\n"
             "    try: urllib.request.urlopen(u, timeout=15).close()\n"
             "    except Exception as e: print(u, type(e).__name__, e); break\n")
    done = subprocess.run([sys.executable, "-c", probe, *urls], capture_output=True, text=True, timeout=120)
    return done.stdout.strip() or None


@pytest.mark.skipif(not os.environ.get(ASK), reason=f"asks PyPI and {CPU_INDEX}: set {ASK}=1 (.ci/run does)")
def test_cpu_path_resolves_without_any_nvidia_package(tmp_path):
    """A dry run of the CPU path (torch from the CPU index, the package and its test extra from PyPI) in one
    resolution, from an empty environment (--ignore-installed), pip's machine configuration off."""
    why = _unreachable(["https://pypi.org/simple/pip/", f"{CPU_INDEX}/torch/"])
    if why:
        pytest.skip(f"an index is not reachable from here: {why}")
    report = tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                           "--report", str(report), "-c", "constraints.txt", "--extra-index-url", CPU_INDEX, ".[test]"],
                          cwd=ROOT, env=_clean_env(), capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    installed = {item["metadata"]["name"].lower(): item["metadata"]["version"]
                 for item in json.loads(report.read_text())["install"]}
    nvidia = sorted(name for name in installed if name.startswith(("nvidia-", "nvidia_")) or name == "triton")
    print(f"CPU path: {len(installed)} packages, torch {installed.get('torch')}")
    assert installed["torch"].endswith("+cpu") and nvidia == [], nvidia
