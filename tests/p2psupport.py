"""
Running C{kez-chat} processes in tests, and the network-namespace guard
for everything that starts an Iroh endpoint.

Every Iroh endpoint sends a UPnP SSDP multicast when it starts, so such
tests run only in a network namespace whose one interface is loopback
(L{loopback_only}); C{tests.test_p2p_cli} re-runs them inside one.
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass, field

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PASSPHRASE = "correct horse battery staple"


def loopback_only() -> bool:
    """
    Whether this process's network namespace has no interface but C{lo}.
    """
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def cli_env(server_url: str, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("KEZ_CHAT_") and key not in ("PYTHONPATH",)
    }
    env.update(
        KEZ_CHAT_SERVER_URL=server_url,
        KEZ_CHAT_PASSPHRASE=PASSPHRASE,
        KEZ_CHAT_KEYRING="off",
        PYTHONPATH=REPO_ROOT,
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


@dataclass
class Result:
    code: int | None
    out: str
    err: str

    def lines(self) -> list[str]:
        return [line for line in self.out.splitlines() if line]


@dataclass
class CliProcess(ProcessProtocol):
    """
    One running C{kez-chat}: its output so far, and Deferreds for a first
    stdout line, a text on stderr, and the end.
    """

    out: bytes = b""
    err: bytes = b""
    ended: Deferred[Result] = field(default_factory=Deferred)
    _waiters: list[tuple[str, str, Deferred[None]]] = field(default_factory=list)

    def outReceived(self, data: bytes) -> None:
        self.out += data
        self._check()

    def errReceived(self, data: bytes) -> None:
        self.err += data
        self._check()

    def _check(self) -> None:
        for waiter in list(self._waiters):
            stream, text, d = waiter
            buffer = self.out if stream == "out" else self.err
            if text.encode("utf-8") in buffer:
                self._waiters.remove(waiter)
                d.callback(None)

    def wait_for(self, text: str, stream: str = "out") -> Deferred[None]:
        """
        Fires once C{text} has appeared on stdout (or C{stream="err"}).
        """
        d: Deferred[None] = Deferred()
        self._waiters.append((stream, text, d))
        self._check()
        return d

    def processEnded(self, reason: Failure) -> None:
        code = getattr(reason.value, "exitCode", None)
        result = Result(
            code, self.out.decode("utf-8", "replace"), self.err.decode("utf-8", "replace")
        )
        for _, text, d in self._waiters:
            d.errback(AssertionError(f"ended (exit {code}) before {text!r} appeared: {result}"))
        self._waiters.clear()
        self.ended.callback(result)

    def kill(self) -> None:
        if not self.ended.called:
            self.transport.signalProcess("KILL")


def start_cli(home: str, env: dict[str, str], *args: str) -> CliProcess:
    """
    Start C{kez-chat --home HOME ARGS...} from this checkout's sources.
    """
    process = CliProcess()
    argv = [sys.executable, "-m", "kezchat.cli", "--home", home, *args]
    reactor.spawnProcess(process, sys.executable, argv, env=env, path=REPO_ROOT)
    return process


async def run_cli(home: str, env: dict[str, str], *args: str) -> Result:
    return await start_cli(home, env, *args).ended
