"""
A real C{twistd -r asyncio -n kezchat} process for tests that kill it or
starve it: spawn, wait until it answers, kill on clean-up.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from typing import Any

from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.support import deferred_sleep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def twistd() -> str:
    return os.path.join(os.path.dirname(sys.executable), "twistd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Run(ProcessProtocol):
    """
    Collects a process's output; C{ended} fires with (exit status or
    C{None} for a signal, output, seconds it ran).
    """

    def __init__(self) -> None:
        self.output = b""
        self.ended: Deferred[tuple[int | None, bytes, float]] = Deferred()
        self.started = time.monotonic()

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(
            (reason.value.exitCode, self.output, time.monotonic() - self.started)
        )


def spawn_twistd(
    case: TestCase, args: list[str], cwd: str, wrapper: list[str] | None = None
) -> tuple[Any, Run]:
    """
    C{twistd -r asyncio -n kezchat ARGS} (limits off), optionally run by
    C{wrapper} (a command that ends by running its arguments); killed with
    SIGKILL when the test ends.
    """
    proto = Run()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("KEZ_")}
    environ["PYTHONPATH"] = ROOT
    command = [twistd(), "-r", "asyncio", "-n", "--pidfile=", "kezchat",
               "--register-limit", "0", "--send-limit", "0", *args]
    command = [*(wrapper or []), *command]
    process = reactor.spawnProcess(proto, command[0], command, env=environ, path=cwd)

    async def stop() -> None:
        if process.pid is not None:
            process.signalProcess("KILL")
        await proto.ended

    case.addCleanup(lambda: Deferred.fromCoroutine(stop()))
    return process, proto


async def until_up(case: TestCase, client: HTTPClient, url: str, proto: Run) -> None:
    for _ in range(300):
        try:
            response = await client.get(f"{url}/v1/healthz")
            await response.content()
            if response.code == 200:
                return
        except Exception:
            pass
        await deferred_sleep(0.05)
    case.fail(proto.output.decode()[-2000:])
