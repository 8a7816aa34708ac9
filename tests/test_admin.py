"""
C{kezchat-admin nats-keys}.
"""

from __future__ import annotations

import io
import os
import stat
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from twisted.trial import unittest

from kezchat.protocol.natskeys import ACCOUNT, USER, SeedError, read_seed_file
from kezchat.tools.admin import main


class NatsKeysTests(unittest.TestCase):
    def run_admin(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = main(list(argv))
        return code, out.getvalue(), err.getvalue()

    def test_writes_seeds_and_prints_publics(self) -> None:
        directory = Path(self.mktemp()) / "keys"
        code, out, _ = self.run_admin("nats-keys", "--out", str(directory))
        self.assertEqual(code, 0)
        issuer = read_seed_file(directory / "issuer.seed", ACCOUNT)
        callout = read_seed_file(directory / "callout.seed", USER)
        self.assertEqual(
            out.splitlines(),
            [f"KEZ_CALLOUT_ISSUER={issuer.public}", f"KEZ_CALLOUT_USER={callout.public}"],
        )
        self.assertTrue(issuer.public.startswith("A"))
        self.assertTrue(callout.public.startswith("U"))
        for name in ("issuer.seed", "callout.seed"):
            mode = stat.S_IMODE(os.stat(directory / name).st_mode)
            self.assertEqual(mode, 0o600, name)

    def test_fresh_keys_each_time(self) -> None:
        first, second = Path(self.mktemp()), Path(self.mktemp())
        self.run_admin("nats-keys", "--out", str(first))
        self.run_admin("nats-keys", "--out", str(second))
        self.assertNotEqual(
            (first / "issuer.seed").read_text(), (second / "issuer.seed").read_text()
        )

    def test_never_overwrites(self) -> None:
        directory = Path(self.mktemp())
        self.run_admin("nats-keys", "--out", str(directory))
        before = (directory / "issuer.seed").read_text()
        (directory / "callout.seed").unlink()
        code, out, err = self.run_admin("nats-keys", "--out", str(directory))
        self.assertEqual(code, 1)
        self.assertEqual(out, "")
        self.assertIn("already exists", err)
        self.assertEqual((directory / "issuer.seed").read_text(), before)
        self.assertFalse((directory / "callout.seed").exists())

    def test_out_required(self) -> None:
        code, _, err = self.run_admin("nats-keys")
        self.assertEqual(code, 2)
        self.assertIn("--out", err)

    def test_version_is_kezchats(self) -> None:
        from kezchat import __version__

        with self.assertRaises(SystemExit) as exit:
            self.run_admin("--version")
        self.assertEqual(exit.exception.code, 0)
        out = io.StringIO()
        with redirect_stdout(out), self.assertRaises(SystemExit):
            main(["--version"])
        self.assertEqual(out.getvalue(), f"kezchat-admin {__version__}\n")

    def test_no_command(self) -> None:
        code, _, _err = self.run_admin()
        self.assertEqual(code, 2)

    def test_seed_roles_checked(self) -> None:
        directory = Path(self.mktemp())
        self.run_admin("nats-keys", "--out", str(directory))
        self.assertRaises(SeedError, read_seed_file, directory / "issuer.seed", USER)
        self.assertRaises(SeedError, read_seed_file, directory / "missing.seed", USER)
