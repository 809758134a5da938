"""What ships: the sdist holds what its README, tests and Makefile need; CITATION.cff names the package at its version
and the papers by their DOIs."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import yaml

import rootlets_task

ROOT = Path(__file__).resolve().parents[1]


def test_sdist_holds_constraints_docs_and_tests(tmp_path):
    """Built offline with setuptools from this checkout (no network: no build isolation)."""
    done = subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (sdist,) = tmp_path.glob("rootlets_task-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    for needed in ("constraints.txt", "CITATION.cff", "Makefile", "mkdocs.yml", "README.md", "docs/install.md",
                   "docs/cli.md", "tests/conftest.py", "tests/test_docs.py", "tests/support/chromium.py",
                   "src/rootlets_task/data/model-spinal-rootlets-phantom.zip", "src/rootlets_task/data/qc_index.html"):
        assert needed in names, needed
    assert not any("__pycache__" in name for name in names)


def test_citation_names_the_package_and_the_papers():
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert citation["cff-version"] == "1.2.0" and citation["version"] == rootlets_task.__version__
    assert citation["repository-code"] == rootlets_task._version.__url__
    papers = [citation["preferred-citation"], *citation["references"]]
    assert [p["doi"] for p in papers[:2]] == ["10.1038/s41598-026-49164-0", "10.1162/imag_a_00218"]
    assert papers[0]["journal"] == "Scientific Reports" and "2509.16255" in papers[0]["notes"]
