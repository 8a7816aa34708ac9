"""
The twisted.web internals kezchat relies on (L{kezchat.compat.twistedprivate})
still behave as it assumes. If one of these fails after a Twisted upgrade,
fix C{kezchat/compat/twistedprivate.py}: the body caps or the error shape of
malformed requests are broken.
"""

from __future__ import annotations

from twisted.internet.abstract import FileDescriptor
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import HTTPChannel
from twisted.web.server import Request, Site

from kezchat.compat.twistedprivate import (
    BAD_REQUEST_HOOK,
    BadRequestHook,
    nothing_queued,
    request_gone,
    request_line_path,
)


class Channel(BadRequestHook):
    refused = 0

    def bad_request(self) -> None:
        self.refused += 1
        super().bad_request()


def connected(channel: HTTPChannel) -> StringTransport:
    channel.site = Site(None)  # type: ignore[arg-type]
    transport = StringTransport()
    channel.makeConnection(transport)
    return transport


class TwistedPrivateTests(SynchronousTestCase):
    def test_channel_keeps_the_request_line_path(self) -> None:
        """
        After the request line and headers, before any body byte, the
        channel knows the path.
        """
        channel = HTTPChannel()
        connected(channel)
        self.assertEqual(request_line_path(channel), b"")
        channel.dataReceived(
            b"POST /v1/messages?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"
        )
        self.assertEqual(request_line_path(channel), b"/v1/messages?x=1")
        channel.connectionLost(None)  # type: ignore[arg-type]

    def test_malformed_request_goes_through_the_hook(self) -> None:
        self.assertTrue(callable(getattr(HTTPChannel, BAD_REQUEST_HOOK, None)))
        channel = Channel()
        transport = connected(channel)
        channel.dataReceived(b"GET /v1/healthz HTTP/9.9\r\n\r\n")
        self.assertEqual(channel.refused, 1)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 400"))
        self.assertTrue(transport.disconnecting)

    def test_transport_queue_is_seen(self) -> None:
        """
        A file descriptor's write queue, as L{nothing_queued} reads it:
        empty when connected and idle, not after a write until it is
        flushed, never once it is disconnecting.
        """

        class Sink(FileDescriptor):
            sent = b""

            def writeSomeData(self, data: bytes) -> int:
                self.sent += bytes(data)
                return len(data)

        fd = Sink(reactor=MemoryReactor())
        self.assertFalse(nothing_queued(fd))
        fd.connected = True
        self.assertTrue(nothing_queued(fd))
        fd.write(b"event")
        self.assertFalse(nothing_queued(fd))
        fd.doWrite()
        self.assertEqual(fd.sent, b"event")
        self.assertTrue(nothing_queued(fd))
        fd.loseConnection()
        self.assertFalse(nothing_queued(fd))

    def test_request_gone_is_seen(self) -> None:
        channel = HTTPChannel()
        connected(channel)
        request = Request(channel)
        self.assertFalse(request_gone(request))
        request.connectionLost(None)  # type: ignore[arg-type]
        self.assertTrue(request_gone(request))
