"""Tools a test needs from the machine (a browser, a local SLURM, the BIDS validator, podman): a skip with the reason
where one is missing, or a failure where CI installed it.

``ROOTLETS_REQUIRE`` lists the tools whose absence is a failure, comma-separated (``chromium``, ``slurm``,
``bids-validator``, ``podman``: podman, runc and debootstrap) or ``all``. ``.ci/run`` sets it to ``all`` when it runs
as root: it has just installed them (or failed, which already fails CI), so a test that cannot find one must not pass
as a quiet skip. ``ROOTLETS_REQUIRE_SLURM=1`` is the older spelling of ``slurm``.
"""

from __future__ import annotations

import os

import pytest

TOOLS = ("chromium", "slurm", "bids-validator", "podman")


def required(tool: str) -> bool:
    """Whether a missing ``tool`` fails the test (instead of skipping it)."""
    assert tool in TOOLS, tool
    wanted = {t.strip() for t in os.environ.get("ROOTLETS_REQUIRE", "").split(",") if t.strip()}
    return "all" in wanted or tool in wanted or (tool == "slurm" and os.environ.get("ROOTLETS_REQUIRE_SLURM") == "1")


def needs(tool: str, present: object, reason: str):
    """Decorator of a test that needs ``tool``: unchanged when ``present``; else skipped with ``reason`` (before its
    fixtures run), or replaced by a failure where ``tool`` is required."""
    def decorate(test):
        if present:
            return test
        if not required(tool):
            return pytest.mark.skipif(True, reason=reason)(test)

        def missing():
            pytest.fail(f"{tool} required (ROOTLETS_REQUIRE) but {reason}", pytrace=False)

        missing.__name__, missing.__qualname__, missing.__doc__ = test.__name__, test.__qualname__, test.__doc__
        return missing
    return decorate


def need(tool: str, present: object, reason: str) -> None:
    """Go on when ``present`` is true; else skip with ``reason``, or fail where ``tool`` is required."""
    if present:
        return
    if required(tool):
        pytest.fail(f"{tool} required (ROOTLETS_REQUIRE) but {reason}", pytrace=False)
    pytest.skip(reason)
