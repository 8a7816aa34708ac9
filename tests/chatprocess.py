"""
A real C{twistd -r asyncio -n kezchat} process for tests, started from
this checkout, that a test can kill -9 like a crash would.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Any

from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.support import deferred_sleep

ROOT = Path(__file__).resolve().parent.parent
LAUNCHER = (
    "import sys\n"
    "from twisted.scripts.twistd import run\n"
    "sys.argv = ['twistd'] + sys.argv[1:]\n"
    "run()\n"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Output(ProcessProtocol):
    def __init__(self) -> None:
        self.output = b""
        self.reason: Failure | None = None
        self._ended = False
        self._waiters: list[Deferred[None]] = []

    def outReceived(self, data: bytes) -> None:
        self.output = (self.output + data)[-65536:]

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        self.reason, self._ended = reason, True
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)

    def ended(self) -> Deferred[None]:
        """
        Fires (with None, however it ended) once the process is gone.
        """
        d: Deferred[None] = Deferred()
        if self._ended:
            d.callback(None)
        else:
            self._waiters.append(d)
        return d


class ChatProcess:
    """
    One chat-server process on a free loopback port.

    @ivar url: its base URL.
    """

    def __init__(self, args: list[str], workdir: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [
            "-r", "asyncio", "-n", "--pidfile=", "kezchat",
            "--listen", f"tcp:{self.port}:interface=127.0.0.1",
            "--register-limit", "0", "--send-limit", "0",
            *args,
        ]
        self.workdir = workdir
        self._protocol = _Output()
        self._process: Any = None

    @property
    def output(self) -> str:
        return self._protocol.output.decode(errors="replace")

    @property
    def running(self) -> bool:
        return self._process is not None and not self._protocol._ended

    def start(self) -> None:
        self._process = reactor.spawnProcess(
            self._protocol,
            sys.executable,
            [sys.executable, "-c", LAUNCHER, *self.args],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            path=self.workdir,
        )

    def kill(self) -> Deferred[None]:
        """
        SIGKILL: no shutdown, no flushing, as a crash.
        """
        if self.running:
            self._process.signalProcess("KILL")
        return self._protocol.ended()

    def stop(self) -> Deferred[None]:
        """
        SIGTERM, then SIGKILL if it is still there after 10 s.
        """
        if not self.running:
            return self._protocol.ended()
        self._process.signalProcess("TERM")
        timer = reactor.callLater(10, self.kill)
        ended = self._protocol.ended()

        def cancel(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            return result

        return ended.addBoth(cancel)


def domain_process(case: TestCase, domain: str, *args: str) -> ChatProcess:
    """
    A (not yet started) process serving C{domain}, with its own database
    in a fresh directory of C{case}: the federation tests run several of
    these side by side.
    """
    workdir = os.path.abspath(case.mktemp())
    os.makedirs(workdir)
    return ChatProcess(["--server", domain, "--db", os.path.join(workdir, "chat.db"), *args],
                       workdir)


def resolve_each_other(processes: dict[str, ChatProcess]) -> None:
    """
    Tell each of C{processes} (by domain) where every other one is, with
    C{--resolve}, as an operator wiring servers on loopback would.
    """
    for domain, process in processes.items():
        process.args += [
            arg for other, peer in processes.items() if other != domain
            for arg in ("--resolve", f"{other}={peer.url}")
        ]


async def until_ready(client: HTTPClient, process: ChatProcess, path: str = "/v1/healthz",
                      tries: int = 600) -> None:
    """
    Poll C{path} every 0.1 s until it answers 200; fail with the process's
    output if it exits first or never answers.
    """
    for _ in range(tries):
        if not process.running:
            break
        try:
            response = await client.get(f"{process.url}{path}")
            await response.content()
            if response.code == 200:
                return
        except Exception:
            pass
        await deferred_sleep(0.1)
    raise AssertionError(f"server did not come up:\n{process.output[-4000:]}")
