"""
The places where kezchat relies on Twisted's private internals, kept here
and nowhere else. Twisted has no public API for any of them:

 - the request line's path is not known to a C{Request} until its body is
   complete, but the body cap must be chosen before the first body byte;
   C{HTTPChannel} keeps it in C{_path} from the request line on;
 - a malformed request line, header or chunk is answered by
   C{HTTPChannel._respondToBadRequestAndDisconnect} with a bare 400 and no
   body; overriding it is the only way to give that answer the error shape
   of every other one;
 - whether a TCP transport still has bytes queued for writing
   (C{FileDescriptor.dataBuffer}, C{offset}, C{_tempDataLen}) and whether
   a request's client has gone (C{Request._disconnected}): an SSE event may
   go straight into the socket (L{kezchat.http.framewriter}) only when
   nothing is queued ahead of it;
 - the undocumented state the frame writer reads and keeps up to date
   around such a write: a request's C{chunked}, C{startedWriting} and
   C{sentLength}, its channel's C{transport}, and a C{tcp.Connection}'s
   C{socket} (L{direct_socket}, L{count_written}).

C{tests/test_twisted_private.py} checks them against the installed
Twisted, so an upgrade that changes them fails loudly there rather than
silently in production.
"""

from __future__ import annotations

import socket

from twisted.internet import tcp
from twisted.web.http import HTTPChannel

#: the hook L{BadRequestHook} overrides
BAD_REQUEST_HOOK = "_respondToBadRequestAndDisconnect"


def request_line_path(channel: object) -> bytes:
    """
    The path of the request line C{channel} is receiving (C{b""} before one).
    """
    path = getattr(channel, "_path", b"")
    return path if isinstance(path, bytes) else b""


class BadRequestHook(HTTPChannel):
    """
    An C{HTTPChannel} whose answer to a malformed request is
    L{bad_request}.
    """

    def bad_request(self) -> None:
        """
        Answer a request the HTTP parser could not read, and disconnect.
        """
        HTTPChannel._respondToBadRequestAndDisconnect(self)

    def _respondToBadRequestAndDisconnect(self) -> None:
        self.bad_request()


def nothing_queued(transport: object) -> bool:
    """
    Whether C{transport} (a C{FileDescriptor}) is connected, writable and
    has no bytes waiting to be written.
    """
    # plain attribute reads (a missing one answers "no"): this runs once
    # per stream for every event a fan-out writes
    try:
        data = transport.dataBuffer  # type: ignore[attr-defined]
        return bool(
            transport.connected  # type: ignore[attr-defined]
            and not transport.disconnecting  # type: ignore[attr-defined]
            and not transport._writeDisconnected  # type: ignore[attr-defined]
            and transport._tempDataLen == 0  # type: ignore[attr-defined]
            and isinstance(data, bytes)
            and len(data) == transport.offset  # type: ignore[attr-defined]
        )
    except AttributeError:
        return False


def request_gone(request: object) -> bool:
    """
    Whether the client of C{request} has disconnected.
    """
    return bool(getattr(request, "_disconnected", True))


def direct_socket(request: object) -> tuple[socket.socket, tcp.Connection] | None:
    """
    The socket and TCP transport under C{request} when an event may be
    written straight into that socket as a chunk of its response: a plain
    TCP connection (not TLS), a chunked (HTTP/1.1) response whose headers
    are written. C{None} otherwise.
    """
    transport = getattr(getattr(request, "channel", None), "transport", None)
    if (
        not isinstance(transport, tcp.Connection)
        or not getattr(request, "chunked", False)
        or not getattr(request, "startedWriting", False)
    ):
        return None
    return transport.socket, transport


def count_written(request: object, length: int) -> None:
    """
    Account C{length} body bytes written past C{Request.write}, as
    C{Request.write} itself would (C{Request.sentLength}, which the access
    log reports).
    """
    request.sentLength += length  # type: ignore[attr-defined]
