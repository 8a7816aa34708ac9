"""
One way for a test to say "a tool this test needs is missing".

A skip for a missing tool (nats-server, PostgreSQL, Chromium, node, podman,
the asyncio reactor, root, ...) silently drops coverage: a plain
C{trial tests} on a machine without nats-server would pass while testing
no NATS at all.  Every such skip goes through L{missing}, which returns a
L{SkipTest} normally and a failure when C{KEZ_TEST_NO_SKIP=1} is set (CI
sets it in C{.ci/run}), so a run that is meant to be complete cannot be
quietly partial.

Skips that are structural (a test body that only runs inside the namespace
it re-executes itself in, a vectors file that does not have that section by
design) raise L{SkipTest} directly, with a comment saying why.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import FailTest, SkipTest

NO_SKIP_ENV = "KEZ_TEST_NO_SKIP"


class MissingRequirement(FailTest):
    """
    A tool the test needs is missing, in a run that forbids skipping.
    """


def strict() -> bool:
    """
    Whether this run turns missing tools into failures.
    """
    return os.environ.get(NO_SKIP_ENV, "") not in ("", "0")


def missing(reason: str) -> Exception:
    """
    The exception to raise when a tool the test needs is missing: a skip,
    or (under C{KEZ_TEST_NO_SKIP=1}) a failure carrying the same reason.
    """
    if strict():
        return MissingRequirement(f"{reason} [{NO_SKIP_ENV}=1 forbids skipping]")
    return SkipTest(reason)
