"""
Start-up failures end the process, loudly: real C{twistd -n} processes
(the command the systemd units run) given a database they cannot open, a
port already taken, an endpoint that does not exist, or a database of
another server domain each exit with a non-zero status within seconds,
with one line saying what is wrong and what to do.

The database failure used to race the reactor's start: about one run in
seven stayed up forever, with no listener, deaf to SIGTERM. Each case runs
several times, in parallel, to catch such a race.
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
from dataclasses import replace

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.trial.unittest import TestCase

from kezchat.server.config import ChatConfig
from kezchat.server.service import makeService
from kezchat.startup import StartupError
from kezchat.storage.errors import DatabaseUnavailable
from kezchat.testing.requirements import missing
from tests.crashsupport import ROOT, Run, twistd
from tests.support import deferred_sleep, temp_dir

#: runs of each failing start-up, all at once
RUNS = 8

#: seconds a failing start-up may take (2 shared cores, several at once)
DEADLINE = 45.0


async def run_twistd(plugin: str, args: list[str], cwd: str, **env: str) -> tuple:
    """
    C{twistd -n PLUGIN ARGS} as systemd runs it; killed (and reported as
    status C{None}) if it outlives L{DEADLINE}.
    """
    proto = Run()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("KEZ_")}
    environ.update(PYTHONPATH=ROOT, **env)
    process = reactor.spawnProcess(
        proto, twistd(),
        [twistd(), "--nodaemon", "--pidfile=", "-r", "asyncio", plugin, *args],
        env=environ, path=cwd,
    )
    killer = reactor.callLater(DEADLINE, process.signalProcess, "KILL")
    code, output, seconds = await proto.ended
    if killer.active():
        killer.cancel()
        return code, output.decode(errors="replace"), seconds
    return None, output.decode(errors="replace"), seconds


class FailingStartTests(TestCase):
    timeout = 180

    def setUp(self) -> None:
        self.scratch = temp_dir(self)

    async def assertEachFails(
        self, plugin: str, args: list[str], expected: list[str], runs: int = RUNS
    ) -> None:
        """
        C{runs} processes at once, each with its own scratch directory
        (C{{dir}} in C{args}).
        """
        dirs = [os.path.join(self.scratch, str(i)) for i in range(runs)]
        for path in dirs:
            os.mkdir(path)
        results = await gatherResults([
            Deferred.fromCoroutine(
                run_twistd(plugin, [a.replace("{dir}", path) for a in args], path)
            )
            for path in dirs
        ])
        for code, output, seconds in results:
            self.assertNotIn(code, (None, 0), f"status {code} after {seconds:.1f}s:\n{output}")
            lines = [line for line in output.splitlines() if expected[0] in line]
            self.assertEqual(len(lines), 1, output)
            for words in expected[1:]:
                self.assertIn(words, lines[0])
            self.assertNotIn("Traceback", output)

    async def test_database_in_a_missing_directory(self) -> None:
        await self.assertEachFails(
            "kezchat",
            ["--db", "/nonexistent/dir/x.db", "--listen", "tcp:0:interface=127.0.0.1"],
            ["cannot open the database /nonexistent/dir/x.db", "--db"],
        )

    async def test_port_in_use(self) -> None:
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        await self.assertEachFails(
            "kezchat",
            ["--db", "{dir}/chat.db", "--listen", f"tcp:{port}:interface=127.0.0.1"],
            [f"cannot listen on tcp:{port}", "--listen"],
        )

    async def test_unknown_endpoint(self) -> None:
        await self.assertEachFails(
            "kezchat",
            ["--db", "{dir}/chat.db", "--listen", "bogus:1"],
            ["--listen 'bogus:1' cannot be used", "tcp:6969"],
            runs=3,
        )

    async def test_kezsig_database_in_a_missing_directory(self) -> None:
        await self.assertEachFails(
            "kezsig",
            ["--db", "/nonexistent/dir/x.db", "--listen", "tcp:0:interface=127.0.0.1"],
            ["cannot open the database /nonexistent/dir/x.db", "--db"],
            runs=3,
        )

    async def test_systemd_socket_that_was_not_passed(self) -> None:
        await self.assertEachFails(
            "kezchat",
            ["--db", "{dir}/chat.db", "--listen", "systemd:domain=INET:index=0"],
            ["systemd passed no such socket", "--listen"],
            runs=2,
        )

    async def test_socket_activated_start_with_a_bad_database(self) -> None:
        """
        The same failure under C{systemd-socket-activate}, which passes the
        socket the way systemd does: the process still ends, non-zero.
        """
        activate = shutil.which("systemd-socket-activate")
        if activate is None:
            raise missing("systemd-socket-activate not found (Debian package systemd)")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proto = Run()
        passed = [f"-E{k}={v}" for k, v in {
            "PYTHONPATH": ROOT, "KEZ_CHAT_DB": "/nonexistent/dir/x.db",
            "KEZ_CHAT_LISTEN": "systemd:domain=INET:index=0",
        }.items()]
        process = reactor.spawnProcess(
            proto, activate,
            [activate, "-l", f"127.0.0.1:{port}", "--fdname=kezchat-http", *passed,
             twistd(), "--nodaemon", "--pidfile=", "-r", "asyncio", "kezchat"],
            env=os.environ, path=self.scratch,
        )
        killer = reactor.callLater(DEADLINE, process.signalProcess, "KILL")
        # socket activation starts the service on the first connection
        for _ in range(100):
            try:
                client = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except ConnectionRefusedError:
                await deferred_sleep(0.1)
        else:
            self.fail(proto.output.decode())
        with client:
            code, output, _seconds = await proto.ended
        self.assertTrue(killer.active(), output)
        killer.cancel()
        self.assertNotIn(code, (None, 0), output)
        self.assertIn("cannot open the database /nonexistent/dir/x.db", output.decode())


class DatabaseRefusalTests(TestCase):
    timeout = 30

    async def start(self, config: ChatConfig) -> list[str]:
        fatal: list[str] = []
        service = makeService(config, reactor, on_fatal=fatal.append)
        service.startService()
        try:
            await service.parts.db.when_ready()
        except (StartupError, DatabaseUnavailable):
            pass
        await service.stopService()
        return fatal

    async def test_another_server_domain_is_refused(self) -> None:
        config = ChatConfig(
            listen=("tcp:0:interface=127.0.0.1",),
            db=os.path.join(temp_dir(self), "chat.db"),
            server="first.example",
        )
        self.assertEqual(await self.start(config), [])
        self.assertEqual(await self.start(config), [])
        fatal = await self.start(replace(config, server="second.example"))
        self.assertEqual(len(fatal), 1)
        self.assertIn("'first.example'", fatal[0])
        self.assertIn("--allow-server-change", fatal[0])
        # the operator says so: the database now belongs to the new domain
        self.assertEqual(
            await self.start(replace(config, server="second.example", allow_server_change=True)),
            [],
        )
        self.assertEqual(await self.start(replace(config, server="second.example")), [])
        self.assertEqual(len(await self.start(config)), 1)

    async def test_a_file_that_is_not_a_database(self) -> None:
        db = os.path.join(temp_dir(self), "chat.db")
        with open(db, "wb") as f:
            f.write(b"this is not SQLite" * 1000)
        fatal = await self.start(ChatConfig(db=db, listen=()))
        self.assertEqual(len(fatal), 1)
        self.assertIn("not a SQLite database or it is damaged", fatal[0])
        self.assertIn("--db", fatal[0])

    async def test_a_database_newer_than_the_code(self) -> None:
        db = os.path.join(temp_dir(self), "chat.db")
        self.assertEqual(await self.start(ChatConfig(db=db, listen=())), [])
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("INSERT INTO schema_version VALUES (999, '999_future.sql', 0)")
        conn.close()
        fatal = await self.start(ChatConfig(db=db, listen=()))
        self.assertEqual(len(fatal), 1)
        self.assertIn("schema version 999", fatal[0])
        self.assertIn("upgrade kezchat", fatal[0])

    async def test_twistd_refuses_another_server_domain(self) -> None:
        scratch = temp_dir(self)
        db = os.path.join(scratch, "chat.db")
        self.assertEqual(await self.start(ChatConfig(db=db, listen=(), server="first.example")), [])
        code, output, _seconds = await run_twistd(
            "kezchat",
            ["--db", db, "--server", "second.example", "--listen", "tcp:0:interface=127.0.0.1"],
            scratch,
        )
        self.assertNotIn(code, (None, 0), output)
        self.assertIn("--allow-server-change", output)
