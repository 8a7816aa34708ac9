"""
Stopping the server: a kept-alive connection is closed with the
listeners, so a client's next request on it is never served by a stopped
server against its closed database; a request in progress is answered
first.
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.support import start_server


class _Client(Protocol):
    def __init__(self) -> None:
        self.received = b""
        self.got_response: Deferred[bytes] = Deferred()
        self.lost: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if b"\r\n\r\n" in self.received and not self.got_response.called:
            self.got_response.callback(self.received)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lost.callback(None)


class ShutdownTests(TestCase):
    timeout = 30

    async def test_kept_alive_connections_close_on_stop(self) -> None:
        server = await start_server(self)
        client = await connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", server.port), _Client()
        )
        client.transport.write(b"GET /v1/healthz HTTP/1.1\r\nHost: kez\r\n\r\n")
        response = await client.got_response
        self.assertIn(b"200 OK", response)
        self.assertFalse(client.lost.called)
        await server.service.stopService()
        client.lost.addTimeout(5, reactor)
        await client.lost
