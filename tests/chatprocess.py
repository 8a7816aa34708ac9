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

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

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
