"""The command-line reference, rendered from the argparse parsers themselves, so the docs cannot drift from the code.

:func:`page` gives ``docs/cli.md``: Markdown for ``rootlets -i ...`` (the segmentation parser), every sub-command
of :data:`rootlets_task.cli.rootlets.COMMANDS` and ``rootlets-bids`` (the BIDS App).
``python -m rootlets_task.cli.clidoc docs/cli.md`` (``make cli-doc``) rewrites the file; ``--check`` only says whether
it is current (tests/test_docs.py fails when it is not).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import cast

WIDTH = 120  # usage lines wrap here whatever the terminal, so the page is the same on every machine
HEADER = """# Command line

Every flag of every command, generated from the program's own argument parsers (`make cli-doc` regenerates this
page; the tests fail when it is out of date). On the terminal, `rootlets -h`, `rootlets COMMAND -h` and
`rootlets-bids -h` (the BIDS App, see [containers and clusters](container.md)) print the same, with defaults.

"""


def parsers() -> dict[str, argparse.ArgumentParser]:
    """Every parser of the ``rootlets`` command, by the command line that reaches it, and the BIDS App's."""
    from rootlets_task.cli import bids_app
    from rootlets_task.cli import rootlets as cli

    return {"rootlets": cli._segment_parser(), **{f"rootlets {name}": make() for name, (make, _) in cli.COMMANDS.items()},
            "rootlets-bids": bids_app.parser()}


def flags(parser: argparse.ArgumentParser) -> list[str]:
    """Every option string (``-i``, ``-o`` ...) and positional name of a parser, but hidden ones (SCT 6.x's ``-task``)."""
    found: list[str] = []
    for action in parser._actions:
        if action.help is argparse.SUPPRESS:
            continue
        found += action.option_strings or [cast(str, action.metavar or action.dest)]  # our metavars are strings
    return found


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _help(action: argparse.Action, prog: str) -> str:
    """The help text as argparse expands it (``%(default)s``, ``%(choices)s`` ...)."""
    params = {k: v for k, v in vars(action).items() if v is not argparse.SUPPRESS}
    if params.get("choices") is not None:
        params["choices"] = ", ".join(map(str, params["choices"]))
    return (action.help or "") % {**params, "prog": prog}


def _default(action: argparse.Action) -> str:
    if action.required:
        return "required"
    if isinstance(action, argparse._StoreTrueAction):
        return "off"
    if action.default in (None, argparse.SUPPRESS):
        return ""
    value = action.default
    return " ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


def _usage(action: argparse.Action) -> str:
    """``-o OUT``, ``-device {auto,cpu}``, ``FILE [FILE ...]``: the option as one writes it."""
    formatter = argparse.HelpFormatter("rootlets")
    if not action.option_strings:
        return formatter._format_args(action, cast(str, action.metavar or action.dest))
    if action.nargs == 0:
        return ", ".join(action.option_strings)
    args = formatter._format_args(action, formatter._get_default_metavar_for_optional(action))
    return ", ".join(f"{o} {args}" for o in action.option_strings)


def render_parser(name: str, parser: argparse.ArgumentParser) -> str:
    """One command: its description, usage and a table of its options per argument group."""
    formatter = parser.formatter_class(prog=parser.prog, width=WIDTH)  # type: ignore[call-arg]  # argparse's formatters take it
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    lines = [f"## `{name}`", "", parser.description or "", "", "```text", formatter.format_help().strip(), "```", ""]
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if a.help is not argparse.SUPPRESS]
        if not actions:
            continue
        title = group.title or "options"
        lines += [f"**{title[0].upper()}{title[1:]}**", "", "| option | default | what it does |", "|---|---|---|"]
        lines += [f"| `{_cell(_usage(a))}` | {_cell(_default(a))} | {_cell(_help(a, parser.prog))} |" for a in actions]
        lines.append("")
    return "\n".join(lines)


def render() -> str:
    """The whole reference: every parser, in the order ``rootlets -h`` lists them."""
    return "\n".join(render_parser(name, parser) for name, parser in parsers().items())


def page() -> str:
    """The whole of ``docs/cli.md``."""
    return HEADER + render().rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m rootlets_task.cli.clidoc [--check] [PATH]``: write the reference to PATH (default: print it)."""
    parser = argparse.ArgumentParser(prog="python -m rootlets_task.cli.clidoc", description=main.__doc__)
    parser.add_argument("path", nargs="?", help="the page to write (docs/cli.md); default: print it")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if PATH is not current")
    args = parser.parse_args(argv)
    text = page()
    if not args.path:
        sys.stdout.write(text)
        return 0
    path = Path(args.path)
    current = path.is_file() and path.read_text(encoding="utf-8") == text
    if args.check:
        if not current:
            sys.stderr.write(f"{path} is out of date: run `make cli-doc`\n")
        return 0 if current else 1
    if not current:
        path.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
