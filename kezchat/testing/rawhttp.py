"""
A minimal HTTP/1.1 load client over raw sockets, for the benchmarks.

treq costs more CPU per request than the server does to answer it; on a
2-core machine that would measure the client. These protocols write
pre-built request bytes and parse just enough of the response.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure


class Connection(Protocol):
    """
    One keep-alive connection answering requests in order.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._waiting: deque[Deferred[tuple[int, bytes]]] = deque()

    def request(self, raw: bytes) -> Deferred[tuple[int, bytes]]:
        d: Deferred[tuple[int, bytes]] = Deferred()
        self._waiting.append(d)
        assert self.transport is not None
        self.transport.write(raw)
        return d

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while True:
            head_end = self._buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self._buffer[:head_end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            if len(self._buffer) < head_end + 4 + length:
                return
            body = self._buffer[head_end + 4 : head_end + 4 + length]
            self._buffer = self._buffer[head_end + 4 + length :]
            status = int(head.split(" ", 2)[1])
            self._waiting.popleft().callback((status, body))


class Pool:
    def __init__(self, connections: list[Connection]) -> None:
        self.connections = connections
        self._next = 0

    def request(
        self, raw: bytes, stamp: Any = None, on_send: Callable[[Any], object] | None = None
    ) -> Deferred[tuple[int, bytes]]:
        conn = self.connections[self._next % len(self.connections)]
        self._next += 1
        if on_send is not None:
            on_send(stamp)
        return conn.request(raw)

    async def blast(
        self, bodies: list[bytes], on_send: Callable[[Any], object]
    ) -> list[int]:
        """
        Send every body as fast as responses come back, one in flight per
        connection.
        """
        queue = deque(enumerate(bodies))
        results: list[int] = [0] * len(bodies)

        async def worker(conn: Connection) -> None:
            while queue:
                i, raw = queue.popleft()
                on_send(i)
                status, _ = await conn.request(raw)
                results[i] = status

        from twisted.internet.defer import ensureDeferred

        await gatherResults([ensureDeferred(worker(c)) for c in self.connections])
        return results

    async def close(self) -> None:
        for conn in self.connections:
            if conn.transport is not None:
                conn.transport.loseConnection()


async def connect_many(reactor: Any, host: str, port: int, count: int) -> Pool:
    endpoint = TCP4ClientEndpoint(reactor, host, port)
    connections = [await connectProtocol(endpoint, Connection()) for _ in range(count)]
    return Pool(connections)


async def wait_until(reactor: Any, host: str, port: int, timeout: float = 30.0) -> None:
    from twisted.internet.task import deferLater

    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = await connectProtocol(TCP4ClientEndpoint(reactor, host, port), Protocol())
            if conn.transport is not None:
                conn.transport.loseConnection()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await deferLater(reactor, 0.1, lambda: None)


class Stream(Protocol):
    """
    An SSE stream that records each message's latency from the moment the
    load generator wrote its POST (C{mark_sent}, keyed by the envelope's
    C{i}).
    """

    def __init__(self, raw: bytes) -> None:
        self._raw = raw
        self._buffer = b""
        self.open = False
        self.ready: Deferred[Stream] = Deferred()
        self.latencies: list[float] = []
        self.delivered = 0
        #: send time by stamp (the envelope's C{i})
        self.sent_at: dict[Any, float] = {}

    def mark_sent(self, stamp: Any) -> None:
        self.sent_at[stamp] = time.perf_counter()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self._raw)

    def dataReceived(self, data: bytes) -> None:
        now = time.perf_counter()
        self._buffer += data
        if not self.open:
            if b"retry: 3000" not in self._buffer:
                return
            self.open = True
            self.ready.callback(self)
        while True:
            end = self._buffer.find(b"\n\n")
            if end < 0:
                return
            event, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
            for line in event.split(b"\n"):
                if line.startswith(b"data: "):
                    item = json.loads(line[6:])
                    self.delivered += 1
                    sent = self.sent_at.pop(item["envelope"]["i"], None)
                    if sent is not None:
                        self.latencies.append(now - sent)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.open = False
        if not self.ready.called:
            self.ready.errback(reason)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.loseConnection()


async def open_streams(reactor: Any, host: str, port: int, requests: list[bytes],
                       batch: int = 100) -> list[Stream]:
    endpoint = TCP4ClientEndpoint(reactor, host, port)
    streams: list[Stream] = []
    for start in range(0, len(requests), batch):
        chunk = [Stream(raw) for raw in requests[start : start + batch]]
        for stream in chunk:
            await connectProtocol(endpoint, stream)
        await gatherResults([s.ready for s in chunk])
        streams.extend(chunk)
    return streams
