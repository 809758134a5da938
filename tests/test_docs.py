"""The documentation is tested: every shell and Python block of README.md and docs/*.md runs, the site builds in
strict mode, and the generated command-line reference (docs/cli.md, `make cli-doc`) is current and holds every flag
of every parser.

Each ```bash / ```python block must follow a directive comment (blank lines between are allowed):

* ``<!-- run -->``: the block runs as written;
* ``<!-- run: "OLD" -> "NEW"; "OLD2" -> "NEW2" -->``: it runs with these literal substitutions (e.g. the bundled
  ``phantom`` release instead of the default one, which would be downloaded);
* ``<!-- not run: reason -->``: it cannot run here (it needs SCT, real weights, a cluster ...), and says why.

The blocks of one page run in order, in one workspace of their own: a folder holding ``sub-01_T2w.nii.gz`` with its
labels (``sub-01_T2w_label-SC_seg.nii.gz``, ``_label-discs_dlabel``, ``_label-PMJ_dlabel``, ``_label-rootlets_dseg``:
a phantom and its truth) and ``BIDS/`` (sub-01 and sub-02 phantoms, their labels in ``BIDS/derivatives/labels``),
a private ``ROOTLETS_TASK_HOME`` with the bundled phantom release installed, and a PATH with the package's
environment but no SCT. ``ROOTLETS_TASK_BACKEND=torch`` spares each page the OpenVINO conversion of the phantom model
(the OpenVINO path has its own tests). Shell blocks run with ``bash -euo pipefail``; Python blocks as scripts in the workspace.
MOCK: ``fsleyes``, ``xdg-open`` and ``open`` (GUI programs that cannot run here) are stand-ins on PATH that only
check that every file named on their command line exists, and for ``fsleyes`` that each label file is followed by
``-ot label -l LUT``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNABLE = {"bash", "sh", "shell", "python", "py"}
FENCE = re.compile(r"^```(\w*)\s*$")
DIRECTIVE = re.compile(r"^<!--\s*(run|not run)\s*(?::(.*?))?\s*-->\s*$")
SUBSTITUTION = re.compile(r'"((?:[^"\\]|\\.)*)"\s*->\s*"((?:[^"\\]|\\.)*)"')
BLOCK_TIMEOUT_S = 300
REPO_FILES = "https://github.com/ivadomed/rootlets_task/blob/main/"  # the README's links (it is also the package page)

FAKE_VIEWER = r'''#!/usr/bin/env python3
"""MOCK of a GUI viewer (see tests/test_docs.py): checks its file arguments, opens nothing."""
import os, sys
args, name = sys.argv[1:], os.path.basename(sys.argv[0])
files = [a for a in args if not a.startswith("-") and a not in ("label",)]
missing = [f for f in files if not os.path.exists(f)]
if missing:
    sys.exit(f"{name}: no such file: {', '.join(missing)}")
if name == "fsleyes":
    for i, a in enumerate(args[1:], 1):
        if a == "-ot" and (args[i + 1:i + 2] != ["label"] or args[i + 2:i + 3] != ["-l"] or len(args) < i + 4):
            sys.exit("fsleyes: -ot label must be followed by -l LUT")
print(name, *args)
'''


@dataclass
class Block:
    page: Path
    line: int
    language: str
    code: str
    directive: str | None  # "run" | "not run" | None (missing)
    argument: str

    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    def script(self) -> str:
        code = self.code
        for old, new in SUBSTITUTION.findall(self.argument if self.directive == "run" else ""):
            old, new = (s.replace('\\"', '"') for s in (old, new))
            assert old in code, f"{self.where()}: substitution {old!r} matches nothing in the block"
            code = code.replace(old, new)
        return code


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a page with the directive comment before each."""
    found, lines = [], page.read_text(encoding="utf-8").splitlines()
    i, last_directive = 0, None
    while i < len(lines):
        match = DIRECTIVE.match(lines[i].strip())
        fence = FENCE.match(lines[i].strip())
        if match:
            last_directive = (match[1], match[2] or "", i)
        elif fence:
            start, body = i, []
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            indent = min((len(b) - len(b.lstrip()) for b in body if b.strip()), default=0)
            directive = last_directive if last_directive and _only_blank(lines, last_directive[2] + 1, start) else None
            found.append(Block(page, start + 1, fence[1], "\n".join(b[indent:] for b in body) + "\n",
                               directive[0] if directive else None, directive[1] if directive else ""))
            last_directive = None
        i += 1
    return found


def _only_blank(lines: list[str], start: int, end: int) -> bool:
    return all(not line.strip() for line in lines[start:end])


# ---------------------------------------------------------------------------------------------------- the workspace


@pytest.fixture(scope="session")
def template(tmp_path_factory) -> Path:
    """The workspace every page starts from (copied per page)."""
    from rootlets_task.io.phantom import write_phantom
    from rootlets_task.models import install

    root = tmp_path_factory.mktemp("docs_template")
    work = root / "work"
    work.mkdir()
    names = {"cord": "label-SC_seg", "discs": "label-discs_dlabel", "pmj": "label-PMJ_dlabel",
             "rootlets": "label-rootlets_dseg"}
    write_phantom(work, "LPI", seed=0, prefix="sub-01_T2w")
    for subject, seed in (("sub-01", 1), ("sub-02", 2)):
        anat, labels = work / "BIDS" / subject / "anat", work / "BIDS" / "derivatives" / "labels" / subject / "anat"
        files = write_phantom(root / "phantoms" / subject, "RPI", seed=seed, prefix=f"{subject}_T2w")
        anat.mkdir(parents=True)
        labels.mkdir(parents=True)
        shutil.copy(files["image"], anat / f"{subject}_T2w.nii.gz")
        for kind in ("cord", "discs", "pmj"):
            shutil.copy(files[kind], labels / f"{subject}_T2w_{names[kind]}.nii.gz")
    (work / "BIDS" / "dataset_description.json").write_text('{"Name": "phantoms", "BIDSVersion": "1.10.0"}\n')
    for stray in work.glob("phantom_truth.json"):
        stray.rename(work / "sub-01_T2w_truth.json")
    bin_dir = root / "bin"
    bin_dir.mkdir()
    for name in ("fsleyes", "xdg-open", "open"):
        (bin_dir / name).write_text(FAKE_VIEWER)
        (bin_dir / name).chmod(0o755)
    home = root / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ROOTLETS_TASK_HOME", str(home))
        install.install_release("phantom", progress=False)
    return root


def _environment(space: Path) -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)
    # PYTHONPATH: a checkout run from a shared environment (its package first on the path) runs its own code
    keep = {k: v for k, v in os.environ.items() if k in ("HOME", "LANG", "LC_ALL", "TMPDIR", "USER", "PYTHONPATH")}
    return {**keep, "PATH": os.pathsep.join([str(space / "bin"), venv_bin, "/usr/bin", "/bin"]),
            "ROOTLETS_TASK_HOME": str(space / "home"), "ROOTLETS_TASK_CACHE": str(space / "cache"),
            "MPLBACKEND": "Agg", "PYTHONDONTWRITEBYTECODE": "1", "ROOTLETS_TASK_BACKEND": "torch"}


def _run(block: Block, space: Path, n: int) -> subprocess.CompletedProcess:
    work = space / "work"
    if block.language == "python" or block.language == "py":
        script = work / f"_docs_block_{n}.py"
        script.write_text(block.script())
        command = [sys.executable, script.name]
    else:
        command = ["bash", "-euo", "pipefail", "-c", block.script()]
    return subprocess.run(command, cwd=work, env=_environment(space), capture_output=True, text=True,
                          timeout=BLOCK_TIMEOUT_S, stdin=subprocess.DEVNULL)


ALL_BLOCKS = [b for page in PAGES for b in blocks(page) if b.language in RUNNABLE]


def test_every_block_is_run_or_says_why_not():
    missing = [b.where() for b in ALL_BLOCKS if b.directive is None]
    assert not missing, f"blocks without <!-- run --> or <!-- not run: reason -->: {missing}"
    unexplained = [b.where() for b in ALL_BLOCKS if b.directive == "not run" and len(b.argument.strip()) < 8]
    assert not unexplained, f"<!-- not run --> needs a reason: {unexplained}"
    assert sum(b.directive == "run" for b in ALL_BLOCKS) >= 20  # most examples do run


@pytest.mark.parametrize("page", [p for p in PAGES if any(b.directive == "run" for b in blocks(p))],
                         ids=lambda p: p.name)
def test_page_examples_run(page, template, tmp_path):
    space = tmp_path / "space"
    shutil.copytree(template, space, symlinks=True)
    if page.name == "README.md":  # the README makes its example files itself (rootlets phantom -subject 01)
        for made in (space / "work").glob("sub-01_T2w*"):
            made.unlink()
    for n, block in enumerate(b for b in blocks(page) if b.language in RUNNABLE and b.directive == "run"):
        done = _run(block, space, n)
        assert done.returncode == 0, (f"{block.where()} failed (exit {done.returncode}):\n{block.script()}\n"
                                      f"--- stdout ---\n{done.stdout[-3000:]}\n--- stderr ---\n{done.stderr[-3000:]}")
        assert "Traceback" not in done.stderr, f"{block.where()}: a traceback on stderr:\n{done.stderr[-3000:]}"


def test_substitutions_parse_with_quotes():
    block = Block(ROOT / "README.md", 1, "python", 'm = ModelOptions(release="r20250318")\n', "run",
                  r'"release=\"r20250318\"" -> "release=\"phantom\""')
    assert block.script() == 'm = ModelOptions(release="phantom")\n'
    with pytest.raises(AssertionError, match="matches nothing"):
        Block(ROOT / "README.md", 1, "bash", "rootlets -h\n", "run", '"nothing" -> "x"').script()


# ---------------------------------------------------------------------------------------------------- the site


def test_readme_is_short_and_its_links_resolve():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.encode()) <= 12 * 1024
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        assert re.match(r"[a-z]+://", target), f"README links to {target}: relative links break on a package index page"
        if target.startswith(REPO_FILES):
            assert (ROOT / target.removeprefix(REPO_FILES)).exists(), f"README links to {target}, which does not exist"
    for wording in ("the issue", "Target (issue)", "this 2-core machine", "research notes"):
        assert wording not in text


def test_docs_have_no_internal_wording():
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for wording in ("the issue's", "Target (issue)", "this 2-core machine", "research notes"):
            assert wording not in text, f"{page.name}: {wording!r}"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The documentation site, built as `make docs` builds it (strict: any warning fails)."""
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def test_site_builds_with_every_page(site):
    for page in (ROOT / "docs").glob("*.md"):
        name = "index.html" if page.stem == "index" else f"{page.stem}/index.html"
        assert (site / name).is_file(), name


def test_cli_reference_holds_every_flag_of_every_parser(site):
    import html

    from rootlets_task.cli import clidoc

    page = html.unescape((site / "cli" / "index.html").read_text(encoding="utf-8"))
    parsers = clidoc.parsers()
    assert set(parsers) >= {"rootlets", "rootlets batch", "rootlets levels", "rootlets qc", "rootlets demo"}
    for name, parser in parsers.items():
        assert name in page, name
        for flag in clidoc.flags(parser):
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", page), f"{name}: {flag} missing"


def test_cli_reference_is_current(tmp_path):
    """docs/cli.md is what `make cli-doc` writes now: a flag added, removed or reworded without regenerating fails."""
    from rootlets_task.cli import clidoc

    assert (ROOT / "docs" / "cli.md").read_text(encoding="utf-8") == clidoc.page(), "docs/cli.md is stale: make cli-doc"
    stale = tmp_path / "cli.md"
    stale.write_text(clidoc.page().replace("-allow-release-code", "-allow-code"), encoding="utf-8")
    assert clidoc.main(["--check", str(stale)]) == 1
    assert clidoc.main([str(stale)]) == 0 and clidoc.main(["--check", str(stale)]) == 0
    assert stale.read_text(encoding="utf-8") == clidoc.page()


def test_cli_reference_renders_defaults_and_choices():
    from rootlets_task.cli import clidoc

    text = clidoc.render_parser("rootlets batch", clidoc.parsers()["rootlets batch"])
    row = next(line for line in text.splitlines() if line.startswith("| `-device"))
    assert "{auto,cpu,cuda,mps}" in row and "| auto |" in row
    assert "| `-levels` | off |" in text and "| `-o DERIVATIVES` | required |" in text
