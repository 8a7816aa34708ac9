"""
C{twistd kezsig}'s options: flags, C{KEZ_SIG_*} variables, and a plugin
that imports nothing that would install a reactor.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from kezchat.sigserver.config import SigConfig, SigOptions


def parse(argv: list[str], environ: dict[str, str] | None = None) -> SigConfig:
    options = SigOptions(environ or {})
    options.parseOptions(argv)
    return options.config


class OptionsTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        self.assertEqual(parse([]), SigConfig(("tcp:7878",), "kez-sig.db", None))

    def test_environment(self) -> None:
        config = parse(
            [],
            {
                "KEZ_SIG_LISTEN": "tcp:1 tcp:2",
                "KEZ_SIG_DB": "/tmp/x.db",
                "KEZ_SIG_PUBLIC_URL": "https://sig.kez.lat/",
            },
        )
        self.assertEqual(config.listen, ("tcp:1", "tcp:2"))
        self.assertEqual(config.db, "/tmp/x.db")
        self.assertEqual(config.base_url, "https://sig.kez.lat")

    def test_flags_win(self) -> None:
        config = parse(
            ["--listen", "tcp:3", "--listen", "unix:/s", "--db", "a.db"],
            {"KEZ_SIG_LISTEN": "tcp:1", "KEZ_SIG_DB": "b.db"},
        )
        self.assertEqual((config.listen, config.db), (("tcp:3", "unix:/s"), "a.db"))

    def test_access_log_off_by_default(self) -> None:
        """
        As for kezchat: a log line per request only when asked for.
        """
        self.assertFalse(parse([]).access_log)
        self.assertTrue(parse(["--access-log", "on"]).access_log)
        self.assertTrue(parse([], {"KEZ_SIG_ACCESS_LOG": "on"}).access_log)
        self.assertFalse(parse(["--access-log", "off"], {"KEZ_SIG_ACCESS_LOG": "on"}).access_log)
        self.assertRaises(usage.UsageError, parse, ["--access-log", "yes"])

    def test_bad_public_url(self) -> None:
        self.assertRaises(usage.UsageError, parse, ["--public-url", "sig.kez.lat"])

    def test_help_names_every_option(self) -> None:
        text = str(SigOptions({}))
        for name in (
            "--listen",
            "--db",
            "--public-url",
            "KEZ_SIG_LISTEN",
            "KEZ_SIG_DB",
            "KEZ_SIG_PUBLIC_URL",
            "--access-log",
            "KEZ_SIG_ACCESS_LOG",
        ):
            self.assertIn(name, text)


class PluginTests(SynchronousTestCase):
    def test_plugin_is_found(self) -> None:
        from twisted.application.service import IServiceMaker
        from twisted.plugin import getPlugins

        makers = {p.tapname: p for p in getPlugins(IServiceMaker)}
        self.assertEqual(makers["kezsig"].module, "kezchat.sigserver.tap")

    def test_options_do_not_install_a_reactor(self) -> None:
        """
        twistd loads the plugin and the options before choosing a reactor.
        """
        code = (
            "import sys, twisted.plugins.kezsig, kezchat.sigserver.tap;"
            "assert 'klein' not in sys.modules, 'klein';"
            "assert 'twisted.internet.reactor' not in sys.modules, 'reactor'"
        )
        subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent)
