"""
The twisted.web internals kezchat relies on (L{kezchat.compat.twistedprivate})
still behave as it assumes. If one of these fails after a Twisted upgrade,
fix C{kezchat/compat/twistedprivate.py}: the body caps or the error shape of
malformed requests are broken.
"""

from __future__ import annotations

import socket

from twisted.internet import tcp
from twisted.internet.abstract import FileDescriptor
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import HTTPChannel
from twisted.web.server import Request, Site

from kezchat.compat.twistedprivate import (
    BAD_REQUEST_HOOK,
    BadRequestHook,
    direct_socket,
    nothing_queued,
    request_gone,
    request_line_path,
)
from kezchat.http.framewriter import frame_writer


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


class Connection(tcp.Connection):
    """
    A C{tcp.Connection} made from an accepted socket, which (unlike
    C{tcp.Server}) has no addresses of its own to give.
    """

    def getPeer(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 1)

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 2)


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """
    Both ends of a loopback TCP connection.
    """
    with socket.create_server(("127.0.0.1", 0)) as listener:
        theirs = socket.create_connection(listener.getsockname())
        ours, _ = listener.accept()
    return ours, theirs


def tcp_request() -> tuple[Request, tcp.Connection, socket.socket]:
    """
    A started chunked HTTP/1.1 response over a real TCP transport
    (C{tcp.Connection} over one end of a loopback connection, on a
    L{MemoryReactor}: nothing runs but what the test calls), with the
    other end to read what went out.
    """
    ours, theirs = tcp_pair()
    channel = HTTPChannel()
    channel.site = Site(None)  # type: ignore[arg-type]
    conn = Connection(ours, channel, MemoryReactor())  # type: ignore[arg-type]
    conn.connected = True
    channel.makeConnection(conn)
    request = Request(channel)
    request.method = b"GET"
    request.uri = request.path = b"/v1/events"
    request.clientproto = b"HTTP/1.1"
    request.setHeader(b"content-type", b"text/event-stream")
    request.write(b": preamble\n\n")
    conn.doWrite()
    return request, conn, theirs


def received(sock: socket.socket) -> bytes:
    sock.setblocking(False)
    out = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except BlockingIOError:
            return out
        if not chunk:
            return out
        out += chunk


class FrameWriterCanaryTests(SynchronousTestCase):
    """
    The fast frame writer (L{kezchat.http.framewriter}) puts on the wire
    exactly what C{Request.write} would: if a Twisted upgrade changes the
    chunk framing or the state it reads, the bytes differ here.
    """

    def events(self) -> list[bytes]:
        event = b"id: 7\ndata: {}\n\n"
        return [event, event, b"id: 8\ndata: " + b"x" * 5000 + b"\n\n"]

    def test_same_bytes_as_request_write(self) -> None:
        slow, slow_conn, slow_peer = tcp_request()
        fast, fast_conn, fast_peer = tcp_request()
        self.addCleanup(lambda: [s.close() for s in (slow_peer, fast_peer)])
        self.addCleanup(lambda: [c.socket.close() for c in (slow_conn, fast_conn)])
        write = frame_writer(fast)
        self.assertIsNot(write, fast.write)
        for event in self.events():
            slow.write(event)
            write(event)
        # the fast path wrote straight into the socket: nothing queued
        self.assertTrue(nothing_queued(fast_conn))
        slow_conn.doWrite()
        slow_bytes, fast_bytes = received(slow_peer), received(fast_peer)
        self.assertIn(b"id: 8", fast_bytes)
        self.assertEqual(fast_bytes, slow_bytes)
        self.assertEqual(fast.sentLength, slow.sentLength)

    def test_direct_socket_only_for_started_chunked_tcp(self) -> None:
        request, conn, peer = tcp_request()
        self.addCleanup(peer.close)
        self.addCleanup(conn.socket.close)
        self.assertEqual(direct_socket(request), (conn.socket, conn))
        channel = HTTPChannel()
        connected(channel)
        self.assertIsNone(direct_socket(Request(channel)))
