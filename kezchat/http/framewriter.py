"""
Writing events to a long-lived response straight into its socket.

C{Request.write} hands bytes to the transport, which only queues them and
asks the reactor to watch the socket for writability; on the asyncio
reactor that is an C{epoll_ctl} to start watching, a turn of the event
loop to find the socket writable, the C{send}, and another C{epoll_ctl}
to stop. For one message fanned out to thousands of streams that
bookkeeping, not the C{send}, was most of the cost per stream (about
60 %, measured). When nothing is queued ahead of it, an event can go out
with a single C{send} right away, in order, and only what the kernel
does not take is left to the transport as usual (which also keeps its
flow control: a full buffer still pauses the stream).

Only plain TCP transports of chunked HTTP/1.1 responses qualify; anything
else (TLS, HTTP/1.0, a response not yet started) is written with
C{Request.write}, unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.web.server import Request

from kezchat.compat.twistedprivate import (
    count_written,
    direct_socket,
    nothing_queued,
    request_gone,
)

Write = Callable[[bytes], None]


class _Framed:
    """
    The chunk framing of the last event written: a message fanned out to
    many streams is one bytes object (L{kezchat.relay.items.sse_event}),
    so it is framed once, not once per stream.
    """

    __slots__ = ("frame", "source")

    def __init__(self) -> None:
        self.source: bytes | None = None
        self.frame = b""

    def __call__(self, data: bytes) -> bytes:
        if data is not self.source:
            self.frame = b"%x\r\n%b\r\n" % (len(data), data)
            self.source = data
        return self.frame


_framed = _Framed()


def frame_writer(request: Request) -> Write:
    """
    A function writing response body bytes for C{request}, which must
    have written its headers already (a stream writes its preamble
    first): straight to the socket when it can, else C{request.write}.
    """
    direct = direct_socket(request)
    if direct is None:
        return request.write
    sock, transport = direct

    def write(data: bytes) -> None:
        if request.finished or request_gone(request) or not nothing_queued(transport) or not data:
            # whatever is queued must go first; Request.write also knows
            # what to do with a finished or vanished request
            request.write(data)
            return
        frame = _framed(data)
        try:
            sent = sock.send(frame)
        except BlockingIOError:
            sent = 0
        except OSError:
            # let the transport find out about the connection the usual way
            request.write(data)
            return
        count_written(request, len(data))
        if sent < len(frame):
            transport.write(frame[sent:])

    return write
