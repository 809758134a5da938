"""Running the ``rootlets`` command in-process from a test, and what a refusal must look like."""

from __future__ import annotations

from rootlets_task.cli.rootlets import main


def run_cli(argv: list, capsys) -> tuple[int, str, str]:
    """``rootlets ARGV`` in this process: (exit code, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str) -> str:
    """The one ``rootlets: error:`` line of a refusal (exit 1, nothing else on stderr)."""
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("rootlets: error: "), (code, err)
    return lines[0]
