"""
The quick start (C{bash scripts/run-server}): its supervisor runs kezsig
beside kezchat, stops both together, checks arguments before starting
anything and never prints a database password. The supervisor is run
for real, with the two real servers it starts.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.chatprocess import free_port
from tests.clisupport import Cli, base_env
from tests.support import http_client, temp_dir

ROOT = Path(__file__).resolve().parent.parent
SUPERVISOR = str(ROOT / "scripts" / "lib" / "run_server.py")

sys.path.insert(0, str(ROOT / "scripts" / "lib"))
import run_server  # noqa: E402


class _Supervised(ProcessProtocol):
    def __init__(self) -> None:
        self.err = b""
        self.code: int | None = None
        self.ended: Deferred[None] = Deferred()
        self._serving: list[Deferred[None]] = []

    def errReceived(self, data: bytes) -> None:
        self.err += data
        if b"run-server: serving on" in self.err:
            waiters, self._serving = self._serving, []
            for d in waiters:
                d.callback(None)

    outReceived = errReceived

    def processEnded(self, reason: Failure) -> None:
        self.code = getattr(reason.value, "exitCode", None)
        self.ended.callback(None)
        waiters, self._serving = self._serving, []
        for d in waiters:
            d.errback(AssertionError(f"ended before serving:\n{self.text}"))

    @property
    def text(self) -> str:
        return self.err.decode(errors="replace")

    def serving(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if b"run-server: serving on" in self.err:
            d.callback(None)
        else:
            self._serving.append(d)
        return d


class RunServerTests(TestCase):
    timeout = 120

    def launch(self, *args: str, **env: str) -> tuple[_Supervised, Any]:
        protocol = _Supervised()
        environ = {**os.environ, "PYTHONPATH": str(ROOT), **env}
        process = reactor.spawnProcess(
            protocol,
            sys.executable,
            [sys.executable, SUPERVISOR, *args],
            env=environ,
            path=temp_dir(self),
        )

        def stop() -> Deferred[None]:
            if protocol.code is None and not protocol.ended.called:
                process.signalProcess("TERM")
            return protocol.ended

        self.addCleanup(stop)
        return protocol, process

    async def get_json(self, url: str) -> tuple[int, Any]:
        response = await http_client(self).get(url)
        return response.code, json.loads(await response.content())

    async def refused(self, url: str) -> bool:
        try:
            response = await http_client(self).get(url)
            await response.content()
        except ConnectionRefusedError:
            return True
        return False

    async def test_runs_kezsig_beside_kezchat(self) -> None:
        """
        By default a kezsig is started and the chat-server's records point
        at it: a registered account gets its sigchain there. SIGTERM stops
        both servers.
        """
        chat_port, sig_port = free_port(), free_port()
        chat_url = f"http://127.0.0.1:{chat_port}"
        sig_url = f"http://127.0.0.1:{sig_port}"
        protocol, process = self.launch(
            "--listen",
            f"tcp:{chat_port}:interface=127.0.0.1",
            KEZ_SIG_LISTEN=f"tcp:{sig_port}:interface=127.0.0.1",
        )
        await protocol.serving()
        self.assertIn(f"serving on {chat_url} (sigchains: {sig_url})", protocol.text)

        user = Cli(os.path.join(temp_dir(self), "alice"), base_env(chat_url))
        result = await user.run("register", "alice", "--yes", "--json")
        self.assertEqual(result.code, 0, str(result))
        self.assertEqual(result.err.strip(), "", "register warns: " + result.err)
        primary = result.json["primary"]

        code, record = await self.get_json(f"{chat_url}/v1/u/alice")
        self.assertEqual(code, 200)
        self.assertEqual(
            record["sigchain_url"], f"{sig_url}/v1/sigchains/ed25519/{primary.split(':')[1]}"
        )
        code, chain = await self.get_json(record["sigchain_url"])
        self.assertEqual(code, 200)
        self.assertGreaterEqual(len(chain["events"]), 1)

        process.signalProcess("TERM")
        await protocol.ended
        self.assertEqual(protocol.code, 0, protocol.text)
        self.assertTrue(await self.refused(chat_url + "/v1/healthz"))
        self.assertTrue(await self.refused(sig_url + "/v1/healthz"))

    async def test_no_sig_server(self) -> None:
        """
        C{--no-sig-server}: the chat-server alone, records without a
        C{sigchain_url}.
        """
        chat_port = free_port()
        chat_url = f"http://127.0.0.1:{chat_port}"
        protocol, _ = self.launch(
            "--no-sig-server", "--listen", f"tcp:{chat_port}:interface=127.0.0.1"
        )
        await protocol.serving()
        self.assertNotIn("kezsig", protocol.text)
        self.assertNotIn("sigchains:", protocol.text)
        user = Cli(os.path.join(temp_dir(self), "bob"), base_env(chat_url))
        result = await user.run("register", "bob", "--yes", "--json")
        self.assertEqual(result.code, 0, str(result))
        _, record = await self.get_json(f"{chat_url}/v1/u/bob")
        self.assertNotIn("sigchain_url", record)

    async def test_kezsig_dying_stops_kezchat(self) -> None:
        """
        The two live and die together: kezsig killed, kezchat stopped and
        the supervisor exits 1 saying why.
        """
        chat_port, sig_port = free_port(), free_port()
        protocol, _ = self.launch(
            "--listen",
            f"tcp:{chat_port}:interface=127.0.0.1",
            KEZ_SIG_LISTEN=f"tcp:{sig_port}:interface=127.0.0.1",
        )
        await protocol.serving()
        pids = [
            int(p)
            for p in os.listdir("/proc")
            if p.isdigit()
            and _cmdline(int(p)).find(f"tcp:{sig_port}:") >= 0
            and "kezsig" in _cmdline(int(p))
        ]
        self.assertEqual(len(pids), 1, pids)
        os.kill(pids[0], 9)
        await protocol.ended
        self.assertEqual(protocol.code, 1, protocol.text)
        self.assertIn("kezsig stopped", protocol.text)
        self.assertTrue(await self.refused(f"http://127.0.0.1:{chat_port}/v1/healthz"))

    async def test_mistyped_flag(self) -> None:
        """
        A mistyped flag: exit 2 with one line naming the flag and the
        closest valid one; nothing started, no "serving on".
        """
        protocol, _ = self.launch("--lisen", "tcp:1")
        await protocol.ended
        self.assertEqual(protocol.code, 2)
        lines = protocol.text.strip().splitlines()
        self.assertEqual(len(lines), 1, protocol.text)
        self.assertIn("--lisen", lines[0])
        self.assertIn("did you mean --listen?", lines[0])
        self.assertNotIn("serving on", protocol.text)

    async def test_password_never_printed(self) -> None:
        """
        A PostgreSQL URL selects the asyncio reactor, and its password
        appears nowhere in what the quick start prints, even when the
        database can't be reached.
        """
        dead = free_port()
        protocol, _ = self.launch(
            "--no-sig-server",
            "--listen",
            f"tcp:{free_port()}:interface=127.0.0.1",
            "--db",
            f"postgresql://kez:hunter2secret@127.0.0.1:{dead}/kez",
        )
        await protocol.ended
        self.assertEqual(protocol.code, 1, protocol.text)
        self.assertIn("twistd -r asyncio -n kezchat", protocol.text)
        self.assertIn("kez:***@127.0.0.1", protocol.text)
        self.assertNotIn("hunter2secret", protocol.text)
        self.assertNotIn("serving on", protocol.text)


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class PlanTests(TestCase):
    """
    The decisions, without starting anything.
    """

    def test_defaults(self) -> None:
        chosen = run_server.plan([], {})
        self.assertEqual(chosen.reactor, "epoll")
        self.assertEqual(chosen.chat_url, "http://127.0.0.1:6969")
        self.assertEqual(chosen.sig_url, "http://127.0.0.1:7878")
        self.assertIn("--sig-server-url", chosen.chat_args)

    def test_nats_and_postgres_need_asyncio(self) -> None:
        self.assertEqual(
            run_server.plan(["--nats-url", "nats://127.0.0.1:4222"], {}).reactor, "asyncio"
        )
        self.assertEqual(
            run_server.plan([], {"KEZ_CHAT_DB": "postgresql://a:b@h/d"}).reactor, "asyncio"
        )
        for args, env in [
            (["--db=postgresql://kez:s3cret@db.internal:5432/kezchat?pool_max_size=4"], {}),
            (["--db", "postgres://kez:s3cret@db.internal/kezchat"], {}),
            ([], {"KEZ_CHAT_DB": "postgresql://kez:s3cret@db.internal/kezchat"}),
        ]:
            chosen = run_server.plan(args, env)
            self.assertEqual(chosen.reactor, "asyncio")
            self.assertNotIn("s3cret", chosen.shown)

    def test_given_sig_server_url_wins(self) -> None:
        chosen = run_server.plan([], {"KEZ_CHAT_SIG_SERVER_URL": "https://sig.example"})
        self.assertIsNone(chosen.sig_listen)
        chosen = run_server.plan([], {"KEZ_CHAT_RUN_SIG_SERVER": "no"})
        self.assertIsNone(chosen.sig_listen)

    def test_listen_from_environment(self) -> None:
        chosen = run_server.plan([], {"KEZ_CHAT_LISTEN": "tcp:8080"})
        self.assertEqual(chosen.chat_url, "http://127.0.0.1:8080")
        self.assertNotIn(run_server.DEFAULT_LISTEN, chosen.chat_args)

    def test_refusals(self) -> None:
        for args, needle in [
            (["--sever", "x.org"], "did you mean --server?"),
            (["--retention-days", "-1"], "retention"),
            (["--server", "not a domain"], "--server"),
        ]:
            with self.assertRaises(run_server.Refused) as caught:
                run_server.plan(args, {})
            self.assertIn(needle, str(caught.exception))
        with self.assertRaises(run_server.Refused):
            run_server.plan([], {"KEZ_SIG_LISTEN": "unix:/tmp/x"})
