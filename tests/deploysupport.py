"""
Helpers for the tests of the shipped deployment files: reading systemd
units the way systemd does (enough of it), and running a real server
process until its health check answers.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import sys
from collections.abc import Mapping, Sequence

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.trial.unittest import TestCase

from kezchat.testing.requirements import missing
from tests.support import deferred_sleep, http_client, json_of

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(ROOT, "deploy")
UNITS = os.path.join(DEPLOY, "systemd")

#: where the units, the Dockerfile and the operator guide install kezchat
INSTALLED_TWISTD = "/opt/kezchat/bin/twistd"

#: the server command line the tests run (after C{twistd}): the units'
#: C{ExecStart} and the image's entrypoint must say the same
SERVER_ARGS = ("--nodaemon", "--pidfile=", "-r", "asyncio")
#: kezchat.service runs without NATS by default, on the epoll reactor (its
#: NATS drop-in switches to SERVER_ARGS)
NO_NATS_SERVER_ARGS = ("--nodaemon", "--pidfile=", "-r", "epoll")


def need(tool: str, package: str) -> str:
    """
    The path of C{tool}, or skip the test saying which package provides it.
    """
    path = shutil.which(tool)
    if path is None:
        raise missing(f"{tool} not found (Debian package {package})")
    return path


def twistd() -> str:
    """
    The C{twistd} of the Python running the tests (the venv's).
    """
    return os.path.join(os.path.dirname(sys.executable), "twistd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_unit(path: str) -> dict[str, dict[str, list[str]]]:
    """
    The sections of a unit file: C{{section: {key: [values in order]}}}.

    Keys may repeat (C{Environment=}); comments start with C{#} or C{;}.
    Line continuations are not supported (the shipped units use none).
    """
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    with open(path) as f:
        for raw in f:
            line = raw.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("[") and line.endswith("]"):
                current = sections.setdefault(line[1:-1], {})
                continue
            assert not line.endswith("\\"), f"{path}: continuation lines are not handled"
            assert current is not None, f"{path}: {line!r} before any section"
            key, _, value = line.partition("=")
            current.setdefault(key.strip(), []).append(value.strip())
    return sections


def unit_environment(service: Mapping[str, list[str]]) -> dict[str, str]:
    """
    The variables a service's C{Environment=} lines set (systemd quoting).
    """
    env = {}
    for line in service.get("Environment", []):
        for assignment in shlex.split(line):
            name, _, value = assignment.partition("=")
            env[name] = value
    return env


class ServerProcess(ProcessProtocol):
    """
    A server child process: its output is kept for failure messages, and
    L{stop} sends SIGTERM and waits for it to exit.
    """

    def __init__(self) -> None:
        self.ended: Deferred[bool] = Deferred()
        self.output = b""
        self.exited = False

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        self.exited = True
        self.ended.callback(reason.check(ProcessDone, ProcessTerminated) is not None)

    def tail(self) -> str:
        return self.output.decode("utf-8", "replace")[-3000:]

    async def stop(self) -> None:
        if not self.exited:
            self.transport.signalProcess("TERM")
        await self.ended


def spawn(
    case: TestCase, argv: Sequence[str], env: Mapping[str, str], cwd: str
) -> ServerProcess:
    """
    Start C{argv}; it is stopped (SIGTERM) when the test ends.
    """
    proto = ServerProcess()
    reactor.spawnProcess(proto, argv[0], list(argv), env=dict(env), path=cwd)
    case.addCleanup(proto.stop)
    return proto


async def wait_healthy(case: TestCase, proto: ServerProcess, url: str) -> dict:
    """
    Poll C{url}/v1/healthz until it answers 200; fail with the process's
    output if it exits or does not answer within 15 s.
    """
    client = http_client(case)
    for _ in range(150):
        if proto.exited:
            break
        try:
            response = await client.get(f"{url}/v1/healthz")
        except Exception:
            await deferred_sleep(0.1)
            continue
        if response.code == 200:
            return await json_of(response)
        await deferred_sleep(0.1)
    case.fail(f"{url} never became healthy; output:\n{proto.tail()}")
