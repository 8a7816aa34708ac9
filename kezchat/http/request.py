"""
A C{Site} that refuses oversize bodies without buffering them and cuts off
clients that dribble in their requests.

Twisted reads a request body whole before any resource runs (SPEC §9 wants
"413, read no further"), so the limit has to live in the request object:
C{gotLength} runs after the headers, before any body byte or
C{100 Continue}; C{handleContentChunk} sees every byte, chunked or not.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import unquote_to_bytes

from twisted.internet.interfaces import IDelayedCall, IReactorTime, ITCPTransport
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.http import combinedLogFormatter
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

from kezchat.compat.twistedprivate import BadRequestHook, request_line_path
from kezchat.errors import KezError

DEFAULT_BODY_CAP = 64 * 1024
TOO_SLOW = KezError("request_timeout", "the request took too long to arrive")


_REASONS = {400: b"Bad Request", 408: b"Request Timeout", 413: b"Payload Too Large"}


def raw_json_response(error: KezError, headers: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
    """
    A complete HTTP/1.1 response with C{error}'s body, for answering
    before the request reaches a resource.
    """
    status, body = error.status, error.body()
    extra = b"".join(b"%s: %s\r\n" % (name, value) for name, value in headers)
    return (
        b"HTTP/1.1 %d %s\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: %d\r\n"
        b"%s"
        b"Connection: close\r\n\r\n" % (status, _REASONS[status], len(body), extra)
    ) + body


_QUERY_SEPARATORS = re.compile(rb"([&;])")


def redact_uri(uri: bytes) -> bytes:
    """
    C{uri} without the value of its C{auth} query parameter: the SSE
    route's C{auth=} is a bearer credential for its whole time window and
    must never reach a log.

    The query is split and the names decoded exactly as Twisted does when
    it fills C{request.args} (C{&} and C{;} separate, C{+} is a space,
    percent-escapes decoded), so every spelling the route accepts as
    C{auth} (C{a%75th=}, C{AUTH=} …) is redacted, not only the literal one.
    """
    path, sep, query = uri.partition(b"?")
    if not sep:
        return uri
    parts = _QUERY_SEPARATORS.split(query)
    for i in range(0, len(parts), 2):
        name, eq, _value = parts[i].partition(b"=")
        if eq and unquote_to_bytes(name.replace(b"+", b" ")).lower() == b"auth":
            parts[i] = name + b"=REDACTED"
    return path + sep + b"".join(parts)


class _RedactedRequest:
    """
    A view of a request whose C{uri} is redacted, for log formatters.
    """

    def __init__(self, request: Request) -> None:
        self._request = request
        self.uri = redact_uri(request.uri)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._request, name)


def redacting_log_formatter(timestamp: str, request: Request) -> str:
    """
    Twisted's combined log format, with credentials taken out of the URI.
    """
    # combinedLogFormatter is unannotated upstream; it returns the log line
    line: str = combinedLogFormatter(timestamp, _RedactedRequest(request))
    return line


class KezChannel(BadRequestHook):
    """
    An HTTP channel that can answer a request early and then drain the
    rest of what the client sends without keeping it.
    """

    #: seconds to keep reading (and dropping) after an early answer, so the
    #: client reads our response instead of a connection reset
    refuse_linger = 2.0
    #: bytes dropped after an early answer before we stop being polite
    refuse_drain = 4 * 1024 * 1024

    _refusing = False
    _drained = 0
    _refuse_abort: IDelayedCall | None = None
    #: runs from the first byte of a request until its request line is
    #: complete; the request's own deadline takes over from there
    _line_deadline: IDelayedCall | None = None

    @property
    def _tcp(self) -> ITCPTransport:
        # a connected channel's transport: TCP, or TLS over TCP
        return cast(ITCPTransport, self.transport)

    def refuse(self, response: bytes) -> None:
        if self._refusing:
            return
        self._refusing = True
        self.persistent = False
        self.setTimeout(None)
        self._tcp.write(response)
        # not every transport can half-close (TLS may not)
        lose_write = getattr(self._tcp, "loseWriteConnection", None)
        if lose_write is not None:
            lose_write()
        self._refuse_abort = self.callLater(self.refuse_linger, self._tcp.abortConnection)

    def refuse_early(self, error: KezError) -> None:
        """
        Answer the request being received with C{error}, before any
        resource sees it; count it, and drain the rest of the connection.
        """
        self._count_refusal(error)
        self.refuse(raw_json_response(error, self._refusal_headers()))

    def _count_refusal(self, error: KezError) -> None:
        on_refused = getattr(getattr(self, "site", None), "on_refused", None)
        if on_refused is not None:
            on_refused(error.code)

    def _refusal_headers(self) -> tuple[tuple[bytes, bytes], ...]:
        return getattr(getattr(self, "site", None), "refusal_headers", ())

    def bad_request(self) -> None:
        """
        Twisted's answer to a malformed request line, header or chunk is a
        bare C{400} with no body; give it the SPEC error shape instead.
        """
        error = KezError("bad_request", "malformed HTTP request")
        self._count_refusal(error)
        self._tcp.write(raw_json_response(error, self._refusal_headers()))
        self.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        if self._refusing:
            self._drained += len(data)
            if self._drained > self.refuse_drain:
                self._tcp.abortConnection()
            return
        if not self.requests and self._line_deadline is None:
            # Every byte resets Twisted's idle timeout, so a client sending
            # its request line a byte at a time would never be cut off.
            timeout = getattr(getattr(self, "site", None), "request_deadline", None)
            if timeout:
                self._line_deadline = self.callLater(timeout, self._line_too_slow)
        super().dataReceived(data)

    def request_started(self) -> None:
        """
        A request line arrived (called by L{KezRequest}).
        """
        if self._line_deadline is not None and self._line_deadline.active():
            self._line_deadline.cancel()
        self._line_deadline = None

    def _line_too_slow(self) -> None:
        self._line_deadline = None
        self.refuse_early(TOO_SLOW)

    def connectionMade(self) -> None:
        super().connectionMade()
        track = getattr(getattr(self, "site", None), "track_channel", None)
        if track is not None:
            track(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.request_started()
        if self._refuse_abort is not None and self._refuse_abort.active():
            self._refuse_abort.cancel()
        forget = getattr(getattr(self, "site", None), "forget_channel", None)
        if forget is not None:
            forget(self)
        super().connectionLost(reason)

    def close_when_idle(self) -> None:
        """
        The server is stopping: close now if no request is in progress,
        else right after the response to the one in progress.
        """
        self.persistent = False
        if not self.requests and self.transport is not None:
            self.loseConnection()


class KezRequest(Request):
    """
    A request whose body is capped by path and whose head and body must
    arrive within the site's deadline.
    """

    _refused = False
    _received = 0
    _cap = DEFAULT_BODY_CAP
    _deadline: IDelayedCall | None = None

    def __init__(self, channel: KezChannel, *args: object, **kw: object) -> None:
        super().__init__(channel, *args, **kw)
        request_started = getattr(channel, "request_started", None)
        if request_started is not None:
            request_started()
        site = getattr(channel, "site", None)
        timeout = getattr(site, "request_deadline", None)
        if timeout:
            self._deadline = channel.callLater(timeout, self._too_slow)

    def _site_cap(self) -> int:
        site = getattr(self.channel, "site", None)
        cap_for = getattr(site, "body_cap_for", None)
        path = request_line_path(self.channel)
        return cap_for(path) if cap_for is not None else DEFAULT_BODY_CAP

    def gotLength(self, length: int | None) -> None:
        self._cap = self._site_cap()
        # capped bodies are small: keep them in memory, never in a temp file
        self.content = io.BytesIO()
        if length is not None and length > self._cap:
            self._refuse_body()

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        self._received += len(data)
        if self._received > self._cap:
            self._refuse_body()
            return
        cast(io.BytesIO, self.content).write(data)

    def _refuse_body(self) -> None:
        self._refused = True
        # no "100 Continue" after a 413
        self.requestHeaders.removeHeader(b"expect")
        self._cancel_deadline()
        cast(KezChannel, self.channel).refuse_early(
            KezError("payload_too_large", f"the request body is larger than {self._cap} bytes")
        )

    def _too_slow(self) -> None:
        self._deadline = None
        cast(KezChannel, self.channel).refuse_early(TOO_SLOW)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        self._cancel_deadline()
        if self._refused:
            return
        super().requestReceived(command, path, version)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_deadline()
        super().connectionLost(reason)

    def __repr__(self) -> str:
        # Twisted's repr shows the URI; error logs may print it
        return (
            f"<{type(self).__name__} at 0x{id(self):x} method={getattr(self, 'method', b'')!r}"
            f" uri={redact_uri(getattr(self, 'uri', None) or b'')!r}>"
        )


class KezSite(Site):
    """
    A C{Site} of L{KezRequest}s.

    @ivar body_cap_for: maps a request path to its body cap in bytes.
    @ivar request_deadline: seconds from the request line to the last body
        byte; slower clients get a 408.
    """

    # Twisted types it as a factory of HTTPChannel; a subclass is one
    protocol = KezChannel  # type: ignore[assignment]
    requestFactory = KezRequest

    def __init__(
        self,
        resource: IResource,
        *,
        body_cap_for: Callable[[bytes], int] | None = None,
        request_deadline: float = 30.0,
        on_refused: Callable[[str], None] | None = None,
        refusal_headers: tuple[tuple[bytes, bytes], ...] = (),
        access_log: bool = False,
        reactor: IReactorTime | None = None,
        **kw: object,
    ) -> None:
        # The API speaks JSON only. Twisted would otherwise parse the
        # Content-Type of every POST (with the slow email header parser) to
        # look for form submissions, and parse multipart bodies nobody wants.
        kw.setdefault("parsePOSTFormSubmission", False)
        kw.setdefault("logFormatter", redacting_log_formatter)
        super().__init__(resource, reactor=reactor, **kw)
        self.body_cap_for = body_cap_for or (lambda path: DEFAULT_BODY_CAP)
        self.request_deadline = request_deadline
        self.on_refused = on_refused
        #: headers every early refusal carries (CORS, for a browser to read it)
        self.refusal_headers = refusal_headers
        self.access_log = access_log
        self._channels: set[KezChannel] = set()

    def track_channel(self, channel: KezChannel) -> None:
        self._channels.add(channel)

    def forget_channel(self, channel: KezChannel) -> None:
        self._channels.discard(channel)

    def close_connections(self) -> None:
        """
        Close every connection once its request in progress, if any, is
        answered: a stopped server must not go on serving kept-alive
        connections against parts that have stopped (its database).
        """
        for channel in tuple(self._channels):
            channel.close_when_idle()

    def log(self, request: http.Request) -> None:
        if self.access_log:
            super().log(request)
