"""
The shipped deployment files: systemd units that systemd accepts, and a
chat-server that really serves on a socket systemd hands it.

These use Debian's systemd tools (C{systemd-analyze},
C{systemd-socket-activate}), which work without systemd as PID 1; where
the package is not installed the tests say so and skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile

from twisted.internet import reactor
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest, TestCase

from tests.support import deferred_sleep, http_client, json_of

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNITS = os.path.join(ROOT, "deploy", "systemd")


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise SkipTest(f"{tool} not found (Debian package systemd)")
    return path


def twistd() -> str:
    return os.path.join(os.path.dirname(sys.executable), "twistd")


class UnitTests(TestCase):
    timeout = 60

    async def test_units_verify(self) -> None:
        analyze = need("systemd-analyze")
        scratch = tempfile.mkdtemp(prefix="kezchat-units-")
        self.addCleanup(shutil.rmtree, scratch, True)
        names = sorted(os.listdir(UNITS))
        self.assertEqual(names, ["kezchat.service", "kezchat.socket", "kezsig.service"])
        for name in names:
            with open(os.path.join(UNITS, name)) as f:
                text = f.read()
            # the units name the install location; point them at this one
            with open(os.path.join(scratch, name), "w") as f:
                f.write(text.replace("/opt/kezchat/bin/twistd", twistd()))
        for name in names:
            _out, err, code = await getProcessOutputAndValue(
                analyze, ["verify", "--man=no", os.path.join(scratch, name)], env=os.environ
            )
            self.assertEqual(code, 0, err.decode())
            problems = [
                line for line in err.decode().splitlines()
                if line.strip() and "Failed to" not in line and "system bus" not in line
            ]
            self.assertEqual(problems, [], name)

    def test_service_runs_asyncio_reactor_from_the_socket(self) -> None:
        with open(os.path.join(UNITS, "kezchat.service")) as f:
            unit = f.read()
        self.assertIn("-r asyncio", unit)
        self.assertIn("KEZ_CHAT_LISTEN=systemd:", unit)
        with open(os.path.join(UNITS, "kezchat.socket")) as f:
            self.assertIn("FileDescriptorName=kezchat-http", f.read())


class _Quiet(ProcessProtocol):
    def __init__(self) -> None:
        from twisted.internet.defer import Deferred

        self.ended: Deferred = Deferred()
        self.output = b""

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        self.ended.callback(reason.check(ProcessDone, ProcessTerminated))


class SocketActivationTests(TestCase):
    timeout = 60

    async def test_serves_on_the_socket_systemd_passes(self) -> None:
        activate = need("systemd-socket-activate")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        scratch = tempfile.mkdtemp(prefix="kezchat-activate-")
        self.addCleanup(shutil.rmtree, scratch, True)
        settings = {
            "PYTHONPATH": ROOT,
            "KEZ_CHAT_DB": os.path.join(scratch, "kez-chat.db"),
            "KEZ_CHAT_LISTEN": "systemd:domain=INET:index=0",
        }
        # like systemd, systemd-socket-activate gives the service only the
        # environment it is told to (-E), as the unit's Environment= does
        passed = [f"-E{name}={value}" for name, value in settings.items()]
        proto = _Quiet()
        process = reactor.spawnProcess(
            proto, activate,
            [activate, "-l", f"127.0.0.1:{port}", "--fdname=kezchat-http", *passed,
             twistd(), "-n", "--pidfile=", "-r", "asyncio", "kezchat"],
            env=os.environ, path=scratch,
        )

        async def stop() -> None:
            if process.pid is not None:
                process.signalProcess("TERM")
            await proto.ended

        self.addCleanup(stop)
        client = http_client(self)
        for _ in range(100):
            try:
                response = await client.get(f"http://127.0.0.1:{port}/v1/healthz")
                break
            except Exception:
                await deferred_sleep(0.1)
        else:
            self.fail(proto.output.decode()[-2000:])
        self.assertEqual((await json_of(response))["status"], "ok")
