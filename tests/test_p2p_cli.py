"""
Runs the peer-to-peer CLI tests (C{tests.p2p_netns}) inside a fresh
network namespace whose only interface is loopback.

Iroh endpoints multicast a UPnP discovery packet when they start, which a
test must never send on the host's network; C{unshare --net} gives the
whole run — servers, both CLIs and the hostile sender — a namespace of
its own, and C{ip link set lo up} is all the network there is.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from kezchat.testing.requirements import missing
from tests.clisupport import ROOT, CliTestCase, assert_one_line_error
from tests.support import temp_dir

INNER = "tests.p2p_netns"


async def _run(*argv: str) -> tuple[bytes, bytes, int]:
    # the inner tests mount a tmpfs only in a mount namespace not this one
    env = {**os.environ, "KEZ_TEST_OUTER_MOUNT_NS": os.readlink("/proc/self/ns/mnt")}
    return await getProcessOutputAndValue(argv[0], argv[1:], env=env, path=str(ROOT))


class LoopbackNamespaceTests(TestCase):
    timeout = 170

    async def test_p2p_cli(self) -> None:
        unshare, ip = shutil.which("unshare"), shutil.which("ip")
        if unshare is None or ip is None:
            raise missing("needs unshare(1) and ip(8) (util-linux, iproute2)")
        out, err, code = await _run(unshare, "--net", "--mount", "true")
        if code != 0:
            raise missing(f"unshare --net --mount is not permitted: {err.decode().strip()}")
        scratch = tempfile.mkdtemp(prefix="kezchat-p2p-trial-")
        self.addCleanup(shutil.rmtree, scratch, True)
        command = (
            f"{ip} link set lo up && exec {sys.executable} -m twisted.trial --reactor=asyncio"
            f" --temp-directory={scratch}/_trial_temp {INNER}"
        )
        out, err, code = await _run(unshare, "--net", "--mount", "sh", "-c", command)
        report = (out + err).decode("utf-8", "replace")
        self.assertEqual(code, 0, report)
        summary = report.strip().splitlines()[-1]
        self.assertTrue(summary.startswith("PASSED"), report)
        self.assertNotIn("skips", summary, report)


class FileCommandMistakesTests(CliTestCase):
    """
    Mistakes with C{share} and C{fetch} that are refused before any Iroh
    endpoint starts (so these run on the host's network): one line on
    stderr, exit 1, or 2 for a command line that does not parse.
    """

    timeout = 90

    async def test_mistakes(self) -> None:
        await self.start_servers()
        alice, bob = await self.registered("alice", "bob")
        scratch = temp_dir(self)
        existing = os.path.join(scratch, "there.txt")
        with open(existing, "w") as f:
            f.write("already here")
        digest = "ab" * 32
        cases = [
            (alice, ("share", "bob", os.path.join(scratch, "missing")), 1, "cannot read"),
            (alice, ("share", "bob", scratch), 1, "not a regular file"),
            (alice, ("share", "nobody", existing), 1, "not registered"),
            (bob, ("fetch", "xyz", "--out", "o"), 2, "64 hex digits"),
            (bob, ("fetch", digest, "--out", existing), 1, "already exists"),
            (bob, ("fetch", digest, "--out", "/nonexistent/dir/f"), 1, "does not exist"),
            (bob, ("fetch", digest, "--out", os.path.join(scratch, "f")), 1, "no offer of"),
            (bob, ("fetch", digest, "--out", "f", "--timeout", "0"), 2, "positive"),
        ]
        for user, args, code, needle in cases:
            result = await user.run(*args, "--json")
            if code == 1:
                assert_one_line_error(self, result, 1, needle)
            else:
                self.assertEqual(result.code, 2, str(result))
                self.assertIn(needle, result.err)
        with open(existing) as f:
            self.assertEqual(f.read(), "already here")
