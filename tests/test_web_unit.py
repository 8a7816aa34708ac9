"""
The web app's own unit tests (vitest): its crypto modules, and the
interop vectors in both directions (interop/python-vectors.json checked by
the TypeScript code; web-vectors.json is what that code writes).
"""

from __future__ import annotations

import os
import shutil
import tempfile

from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from kezchat.testing.requirements import missing
from tests.webdriver import REPO_ROOT

WEB = os.path.join(REPO_ROOT, "web")
VITEST = os.path.join(WEB, "node_modules", ".bin", "vitest")
SVELTE_CHECK = os.path.join(WEB, "node_modules", ".bin", "svelte-check")


class VitestTests(TestCase):
    timeout = 180

    async def run_node(self, script: str, *args: str) -> str:
        node = shutil.which("node")
        if node is None or not os.path.exists(script):
            raise missing("node or web/node_modules is missing (scripts/run-tests runs build-web)")
        scratch = tempfile.mkdtemp(prefix="kezchat-vitest-")
        self.addCleanup(shutil.rmtree, scratch, True)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": scratch,
            "TMPDIR": scratch,
            "XDG_CACHE_HOME": scratch,
            "CI": "1",
            "NO_COLOR": "1",
        }
        out, err, code = await getProcessOutputAndValue(
            node, [script, *args], env=env, path=WEB, reactor=reactor
        )
        report = (out + err).decode("utf-8", "replace")
        self.assertEqual(code, 0, report[-6000:])
        return report

    async def test_vitest(self) -> None:
        self.assertIn("passed", await self.run_node(VITEST, "run"))

    async def test_types(self) -> None:
        """
        svelte-check: the TypeScript and Svelte sources type-check (the
        build itself does not).
        """
        report = await self.run_node(
            SVELTE_CHECK, "--tsconfig", "./tsconfig.json", "--fail-on-warnings"
        )
        self.assertIn("0 errors and 0 warnings", report)
