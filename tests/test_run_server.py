"""
C{scripts/run-server}: the reactor it picks and the line it prints.

The real script runs in a copy of the project whose C{.venv} holds stand-in
C{python} and C{twistd} programs (the stand-in C{twistd} records its
arguments), so nothing is installed and no server starts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from twisted.trial.unittest import TestCase

ROOT = Path(__file__).resolve().parent.parent

STAND_IN_PYTHON = "#!/bin/sh\nexit 0\n"
STAND_IN_TWISTD = '#!/bin/sh\nprintf "%s\\n" "$@" > "$(dirname "$0")/../twistd-args"\n'


class RunServerTests(TestCase):
    def setUp(self) -> None:
        self.project = Path(self.mktemp())
        (self.project / "scripts").mkdir(parents=True)
        shutil.copy(ROOT / "scripts" / "run-server", self.project / "scripts")
        shutil.copytree(ROOT / "scripts" / "lib", self.project / "scripts" / "lib")
        for name in ("setup.cfg", "pyproject.toml"):
            shutil.copy(ROOT / name, self.project)
        for package in ("kezchat", "twisted"):
            (self.project / package).mkdir()
        bin_dir = self.project / ".venv" / "bin"
        bin_dir.mkdir(parents=True)
        for name, text in (("python", STAND_IN_PYTHON), ("twistd", STAND_IN_TWISTD)):
            (bin_dir / name).write_text(text)
            (bin_dir / name).chmod(0o755)

    def run_server(self, *args: str, **env: str) -> tuple[list[str], str]:
        environ = {k: v for k, v in os.environ.items()
                   if k not in ("NATS_URL", "KEZ_CHAT_DB", "KEZ_CHAT_LISTEN")}
        done = subprocess.run(
            ["bash", str(self.project / "scripts" / "run-server"), *args],
            env={**environ, **env}, capture_output=True, text=True, timeout=60,
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        twistd = (self.project / ".venv" / "twistd-args").read_text().splitlines()
        return twistd, done.stderr

    def reactor(self, twistd_args: list[str]) -> str:
        return twistd_args[twistd_args.index("-r") + 1]

    def test_postgresql_gets_asyncio_and_its_password_is_hidden(self) -> None:
        url = "postgresql://kez:s3cret@db.internal:5432/kezchat?pool_max_size=4"
        for args, env in [
            (("--db", url), {}),
            ((f"--db={url}",), {}),
            ((), {"KEZ_CHAT_DB": url}),
        ]:
            twistd, printed = self.run_server(*args, **env)
            self.assertEqual(self.reactor(twistd), "asyncio", (args, env))
            self.assertNotIn("s3cret", printed)
            if args:
                self.assertTrue(any(url in a for a in twistd))  # twistd gets the real URL
                self.assertIn("postgresql://kez:***@db.internal:5432/kezchat", printed)

    def test_password_parameter_hidden(self) -> None:
        _, printed = self.run_server("--db", "postgres://kez@db/x?password=s3cret")
        self.assertNotIn("s3cret", printed)
        self.assertIn("password=***", printed)

    def test_sqlite_keeps_epoll_and_nats_gets_asyncio(self) -> None:
        twistd, printed = self.run_server("--db", "kez-chat.db")
        self.assertEqual(self.reactor(twistd), "epoll")
        self.assertIn("starting: twistd -r epoll -n kezchat", printed)
        twistd, _ = self.run_server("--nats-url", "nats://127.0.0.1:4222")
        self.assertEqual(self.reactor(twistd), "asyncio")
        twistd, _ = self.run_server(NATS_URL="nats://127.0.0.1:4222")
        self.assertEqual(self.reactor(twistd), "asyncio")


class NoNatsWarningTests(TestCase):
    """
    Instances sharing PostgreSQL without NATS deliver each other's messages
    only at the keep-alive tick; each says so when it starts.
    """

    timeout = 60

    def warnings(self) -> list[str]:
        from twisted.logger import LogLevel, formatEvent, globalLogPublisher

        seen: list[str] = []

        def observe(event: dict) -> None:  # type: ignore[type-arg]
            if event.get("log_level") == LogLevel.warn:
                seen.append(formatEvent(event) or "")

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        return seen

    async def test_postgresql_without_nats_warns(self) -> None:
        from tests.pgsupport import fresh_database
        from tests.support import start_server

        db = await fresh_database(self)
        seen = self.warnings()
        await start_server(self, db=db)
        [warning] = [w for w in seen if "without NATS" in w]
        self.assertIn("every 15 s", warning)
        self.assertIn("--nats-url", warning)

    async def test_sqlite_does_not_warn(self) -> None:
        from tests.support import start_server

        seen = self.warnings()
        await start_server(self)
        self.assertEqual([w for w in seen if "without NATS" in w], [])
