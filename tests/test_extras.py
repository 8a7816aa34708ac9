"""
The split of kezchat's dependencies: a plain install (the servers', the
image's) carries no client-only package, the C{cli}, C{p2p} and C{test}
extras bring them, and C{kez-chat} says in one line which extra to install
when a command needs a package that is missing.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from setuptools.config.setupcfg import read_configuration
from twisted.trial.unittest import TestCase

from tests.clisupport import ROOT, CliTestCase, assert_one_line_error

#: the client-only packages and the extras that must bring each
CLIENT_ONLY = {"iroh": {"cli", "p2p"}, "tqdm": {"cli", "p2p"}, "keyring": {"cli"}}


def _names(requirements: list[str]) -> set[str]:
    return {r.split(";")[0].split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip()
            for r in requirements}


class ExtrasTests(TestCase):
    def setUp(self) -> None:
        self.options = read_configuration(os.path.join(ROOT, "setup.cfg"))["options"]

    def test_server_install_has_no_client_package(self) -> None:
        """
        install_requires (what the image installs) names none of the
        client-only packages.
        """
        self.assertFalse(_names(self.options["install_requires"]) & set(CLIENT_ONLY))

    def test_extras_bring_them(self) -> None:
        """
        Each client-only package is in the extras that need it, and in
        C{test}, so the suite's install has everything.
        """
        extras = self.options["extras_require"]
        for package, wanted in CLIENT_ONLY.items():
            for extra in wanted | {"test"}:
                self.assertIn(package, _names(extras[extra]), f"{package} missing from [{extra}]")
        # the same pin everywhere (kezchat/p2p/uniffi_patch.py needs exactly it)
        pins = {
            r for extra in ("cli", "p2p", "test") for r in extras[extra] if r.startswith("iroh")
        }
        self.assertEqual(len(pins), 1, pins)


class MissingExtraTests(CliTestCase):
    async def test_share_without_p2p(self) -> None:
        """
        C{kez-chat share} where iroh is not installed: exit 1 and one line
        naming the extra, no traceback; what needs no extra still works.
        """
        await self.start_servers()
        alice, _bob = await self.registered("alice", "bob")
        hidden = tempfile.mkdtemp(prefix="kezchat-no-iroh-")
        self.addCleanup(shutil.rmtree, hidden, True)
        # what Python raises for a package that is not installed
        os.mkdir(os.path.join(hidden, "iroh"))
        with open(os.path.join(hidden, "iroh", "__init__.py"), "w") as f:
            f.write("raise ModuleNotFoundError(\"No module named 'iroh'\", name='iroh')\n")
        without = {"PYTHONPATH": os.pathsep.join([hidden, str(ROOT)])}
        path = os.path.join(alice.home, "hello.txt")
        with open(path, "w") as f:
            f.write("hello")

        result = await alice.run("share", "bob", path, "--timeout", "5", env=without)
        assert_one_line_error(self, result, 1, "kezchat[p2p]", "pip install")
        await alice.ok("send", "bob", "no extra needed for this", env=without)
