"""
One SSE connection to an inbox stream, parsed as it arrives.

A L{StreamConnection} is a single HTTP request: it delivers each event to
a callback and fires L{StreamConnection.ended} when the connection ends,
for whatever reason. Reconnecting with C{Last-Event-ID} is the caller's
policy (the CLI's C{listen} does it), so this piece stays small and
testable on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import Agent
from twisted.web.http_headers import Headers

from kezchat.client.answers import SMALL_BODY
from kezchat.client.errors import ServerError, Unreachable
from kezchat.client.http import (
    _TRANSPORT_ERRORS,
    _origin,
    _server_error,
    describe_failure,
    read_body,
)
from kezchat.client.sse import Event, LineTooLong, SSEParser


class _Receiver(Protocol):
    def __init__(self, connection: StreamConnection) -> None:
        self.connection = connection

    def dataReceived(self, data: bytes) -> None:
        self.connection._data(data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.connection._lost(reason)


def _producer(transport: object) -> IPushProducer:
    """
    A response body's transport, which treq's Agent gives as a push
    producer: pausing it stops reading from the socket.
    """
    return cast(IPushProducer, transport)


class StreamConnection:
    """
    An open C{text/event-stream} response.

    @ivar ended: fires with C{None} when the stream ends, whether the
        server closed it, the network failed, or L{close} was called.
    @ivar last_activity: reactor time of the last bytes received
        (pings included), for a caller watching for a dead peer.
    @ivar retry: the server's C{retry:} hint in seconds, if any.
    @ivar error: why this client dropped the stream itself (an oversized
        line), or C{None}.
    """

    def __init__(self, reactor: Any, on_event: Callable[[Event], None]) -> None:
        self.reactor = reactor
        self.on_event = on_event
        self.parser = SSEParser()
        self.ended: Deferred[None] = Deferred()
        self.last_activity = reactor.seconds()
        self._receiver: _Receiver | None = None
        self.error: str | None = None

    @property
    def retry(self) -> float | None:
        return None if self.parser.retry is None else self.parser.retry / 1000.0

    def _data(self, data: bytes) -> None:
        self.last_activity = self.reactor.seconds()
        if self.error is not None:
            return
        try:
            events = self.parser.feed(data)
        except LineTooLong as e:
            # not a stream this client reads: drop it (the caller decides
            # whether to reconnect) and say why
            self.error = f"the server sent {e} (more than {self.parser.max_line} bytes)"
            self.close()
            return
        for event in events:
            self.on_event(event)

    def _lost(self, reason: Failure | None) -> None:
        if not self.ended.called:
            self.ended.callback(None)

    def pause(self) -> None:
        """
        Stop reading (TCP pushes back on the server) until L{resume}.
        """
        if self._receiver is not None and self._receiver.transport is not None:
            _producer(self._receiver.transport).pauseProducing()

    def resume(self) -> None:
        if self._receiver is not None and self._receiver.transport is not None:
            _producer(self._receiver.transport).resumeProducing()

    def close(self) -> Deferred[None]:
        """
        Drop the connection; returns L{ended}.
        """
        receiver = self._receiver
        if receiver is not None and receiver.transport is not None:
            _producer(receiver.transport).stopProducing()
        elif not self.ended.called:
            self.ended.callback(None)
        return self.ended


async def open_stream(
    agent: Agent,
    url: str,
    on_event: Callable[[Event], None],
    last_event_id: int | None = None,
    timeout: float = 30.0,
) -> StreamConnection:
    """
    Open the SSE stream at C{url} (with its C{?auth=}).

    @raise Unreachable: no connection or no response headers in time.
    @raise ServerError: the server refused (401, 404, ...).
    """
    from twisted.internet import reactor

    headers = Headers({"Accept": ["text/event-stream"], "Cache-Control": ["no-cache"]})
    if last_event_id is not None:
        headers.addRawHeader("Last-Event-ID", str(last_event_id))
    d = agent.request(b"GET", url.encode("ascii"), headers)
    d.addTimeout(timeout, reactor)
    try:
        response = await d
    except _TRANSPORT_ERRORS as e:
        raise Unreachable(_origin(url), describe_failure(e)) from None
    if response.code != 200:
        reading = Deferred.fromCoroutine(read_body(response, SMALL_BODY))
        reading.addTimeout(timeout, reactor)
        try:
            body = await reading
        except (*_TRANSPORT_ERRORS, ServerError):
            body = b""
        raise _server_error(response, body)
    content_type = (response.headers.getRawHeaders(b"content-type") or [b""])[0]
    if not content_type.startswith(b"text/event-stream"):
        response.deliverBody(Protocol())
        raise ServerError(200, "not_a_stream", "the server did not answer with an event stream")
    connection = StreamConnection(reactor, on_event)
    connection._receiver = _Receiver(connection)
    response.deliverBody(connection._receiver)
    return connection
