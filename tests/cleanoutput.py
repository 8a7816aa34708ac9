"""
A passing run prints nothing but trial's own lines.

Unclosed aiohttp sessions, futures whose exception nobody retrieved and
exceptions raised in C{__del__} do not fail a test by themselves: asyncio
and Python print them to stderr and carry on, so a green run could hide a
leak.  With C{KEZ_TEST_CLEAN_OUTPUT=1} (C{.ci/run} sets it) each of them is
also logged as an error through Twisted's log, which makes trial fail the
test that is running when it is reported (garbage collection may report a
leak a little after the test that made it: the failure names the object).
"""

from __future__ import annotations

import os
import sys
from typing import Any

CLEAN_OUTPUT_ENV = "KEZ_TEST_CLEAN_OUTPUT"


class UncleanOutput(Exception):
    """
    Something a passing run must not print was reported.
    """


def _report(text: str) -> None:
    from twisted.python import log

    log.err(UncleanOutput(text))


def install() -> None:
    """
    Route asyncio's exception handler and C{sys.unraisablehook} through
    Twisted's log as errors, when C{KEZ_TEST_CLEAN_OUTPUT=1}.
    """
    if os.environ.get(CLEAN_OUTPUT_ENV, "") in ("", "0"):
        return
    if "twisted.internet.reactor" not in sys.modules:
        return  # not under trial (a bench importing a fixture): choose no reactor
    from twisted.internet import reactor

    loop = getattr(reactor, "_asyncioEventloop", None)
    if loop is not None:

        def on_exception(loop: Any, context: dict[str, Any]) -> None:
            loop.default_exception_handler(context)
            message = context.get("message", "")
            source = context.get("client_session") or context.get("future") or ""
            _report(f"asyncio reported: {message} {source!r}")

        loop.set_exception_handler(on_exception)

    previous = sys.unraisablehook

    def on_unraisable(unraisable: Any) -> None:
        previous(unraisable)
        _report(f"exception ignored in {unraisable.object!r}: {unraisable.exc_value!r}")

    sys.unraisablehook = on_unraisable
