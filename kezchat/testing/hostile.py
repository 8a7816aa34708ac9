"""
A chat-server in a process of its own, and raw signed HTTP clients against
it: what the hostile-load benchmark (C{bench/hostile.py}) and the memory
bound tests (C{tests/test_memory_bounds.py}) both drive.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

from kezchat.identity.keys import KeyPair
from kezchat.testing.natsserver import free_port

P = TypeVar("P", bound=Protocol)


class ChatServer:
    """
    `twistd -r asyncio -n kezchat` in a process of its own, on a fresh
    database, with the fd limit raised.
    """

    def __init__(self, reactor: Any, source: str, env: dict[str, str] | None = None) -> None:
        self.reactor = reactor
        self.env = env or {}
        self.source = os.path.abspath(source)
        self.workdir = tempfile.mkdtemp(prefix="kezchat-hostile-")
        self.port = free_port()
        self.process: Any = None
        self.output = b""

    async def start(self) -> None:
        from twisted.internet.protocol import ProcessProtocol

        from kezchat.testing.processes import spawn_twistd
        from kezchat.testing.rawhttp import wait_until

        server = self

        class Output(ProcessProtocol):
            def outReceived(self, data: bytes) -> None:
                server.output = (server.output + data)[-65536:]

            errReceived = outReceived

            def processEnded(self, reason: Failure) -> None:
                server.process = None

        self.process = spawn_twistd(
            self.reactor, Output(),
            ["-r", "asyncio", "-n", "--pidfile=", "kezchat",
             "--listen", f"tcp:{self.port}:interface=127.0.0.1:backlog=4096",
             "--db", os.path.join(self.workdir, "bench.db"),
             "--send-limit", "0", "--register-limit", "0"],
            env={**os.environ, **self.env, "PYTHONPATH": self.source},
            path=self.workdir,
        )
        self.pid = self.process.pid
        await wait_until(self.reactor, "127.0.0.1", self.port)

    async def stop(self) -> None:
        from twisted.internet.task import deferLater

        if self.process is not None:
            self.process.signalProcess("TERM")
            for _ in range(100):
                if self.process is None:
                    break
                await deferLater(self.reactor, 0.1, lambda: None)
            if self.process is not None:
                self.process.signalProcess("KILL")
        shutil.rmtree(self.workdir, ignore_errors=True)

    def status(self, field: str) -> int:
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def rss_kib(self) -> int:
        return self.status("VmRSS")

    def reset_peak(self) -> None:
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass


# -- signing ---------------------------------------------------------------------------


class Client:
    """
    Registered users and their signed requests, as raw HTTP bytes.
    """

    def __init__(self, reactor: Any, server: ChatServer) -> None:
        self.reactor = reactor
        self.server = server

    async def register(self, pool: Any, handle: str) -> KeyPair:
        from kezchat.identity.keys import KeyPair
        from kezchat.protocol.registration import REGISTRATION_TAG, REGISTRATION_TYPE
        from kezchat.timeutil import format_rfc3339

        key = KeyPair.generate()
        payload = {"type": REGISTRATION_TYPE, "version": 1, "handle": handle,
                   "primary": key.primary, "server": "kez.lat",
                   "created_at": format_rfc3339(time.time())}
        body = json.dumps({"kez": REGISTRATION_TAG, "payload": payload,
                           "signature": {"alg": "ed25519-sha512-jcs", "key": key.primary,
                                         "sig": key.sign_jcs(payload)}}).encode()
        status, answer = await pool.request(post(b"/v1/register", body, {}))
        if status != 201:
            raise RuntimeError(f"registering {handle}: {status} {answer[:200]!r}")
        return key

    @staticmethod
    def message(key: KeyPair, sender: str, to: str, i: int, size: int) -> bytes:
        from kezchat.protocol.auth import body_digest, sign_request

        body = json.dumps({"to": to, "envelope": {"i": i, "ct": "x" * size}}).encode()
        auth = sign_request(key, "POST", "/v1/messages", [body_digest(body)], int(time.time()))
        return post(b"/v1/messages", body, {"X-KEZ-Sender": sender, "X-KEZ-Auth": auth})

    @staticmethod
    def stream(key: KeyPair, handle: str, last_event_id: int | None = None) -> bytes:
        from kezchat.protocol.auth import sign_request

        auth = sign_request(key, "GET", f"/v1/inbox/{handle}/stream", [], int(time.time()))
        extra = f"Last-Event-ID: {last_event_id}\r\n" if last_event_id is not None else ""
        return (f"GET /v1/inbox/{handle}/stream?auth={auth} HTTP/1.1\r\nHost: bench\r\n"
                f"Accept: text/event-stream\r\n{extra}\r\n").encode()

    @staticmethod
    def inbox(key: KeyPair, handle: str, since: int, limit: int) -> bytes:
        from kezchat.protocol.auth import sign_request

        auth = sign_request(key, "GET", f"/v1/inbox/{handle}", [f"since={since}"],
                            int(time.time()))
        return (f"GET /v1/inbox/{handle}?since={since}&limit={limit} HTTP/1.1\r\n"
                f"Host: bench\r\nX-KEZ-Auth: {auth}\r\n\r\n").encode()


def post(path: bytes, body: bytes, headers: dict[str, str]) -> bytes:
    head = b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items())
    return (b"POST " + path + b" HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json"
            b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n" + head + b"\r\n" + body)


# -- raw connections the attacks hold --------------------------------------------------


class Holder(Protocol):
    """
    Sends a request, then reads nothing (C{read=False}) or reads and
    counts what comes; C{done} fires when a response with a
    Content-Length is complete or the connection ends.
    """

    def __init__(self, raw: bytes, read: bool = True) -> None:
        self.raw = raw
        self.read = read
        self.received = 0
        self.head = b""
        self.expected: int | None = None
        self.closed = False
        self.first: Deferred[Holder] = Deferred()
        self.done: Deferred[Holder] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.raw)
        if not self.read:
            self.transport.pauseProducing()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        if self.expected is None and len(self.head) < 16384:
            self.head += data[:16384]
            end = self.head.find(b"\r\n\r\n")
            if end >= 0:
                self.expected = -1
                for line in self.head[:end].split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        self.expected = end + 4 + int(value)
        if not self.first.called:
            self.first.callback(self)
        if self.expected is not None and 0 <= self.expected <= self.received:
            self._finish()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed = True
        if not self.first.called:
            self.first.callback(self)
        self._finish()

    def _finish(self) -> None:
        if not self.done.called:
            self.done.callback(self)

    def status(self) -> int:
        try:
            return int(self.head.split(b" ", 2)[1])
        except (IndexError, ValueError):
            return 0


async def connect(reactor: Any, port: int, protocol: P) -> P:
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    # connectProtocol is unannotated upstream; it fires with the protocol given
    connected: P = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), protocol)
    return connected


