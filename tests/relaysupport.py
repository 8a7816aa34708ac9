"""
Clients of the relay for tests: signed requests and SSE streams over real
TCP connections.
"""

from __future__ import annotations

import json
import time
from typing import Any

from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone
from twisted.web.http_headers import Headers

from kezchat.client.sse import Event, SSEParser
from kezchat.identity.keys import KeyPair
from kezchat.protocol.auth import body_digest, sign_request


def now() -> int:
    return int(time.time())


def message_request(
    key: KeyPair,
    sender: str,
    to: str,
    envelope: Any,
    idempotency_key: str | None = None,
    ts: int | None = None,
) -> tuple[bytes, dict[str, str]]:
    """
    The body and headers of a signed C{POST /v1/messages}.
    """
    body: dict[str, Any] = {"to": to, "envelope": envelope}
    if idempotency_key is not None:
        body["idempotency_key"] = idempotency_key
    raw = json.dumps(body).encode()
    auth = sign_request(key, "POST", "/v1/messages", [body_digest(raw)], ts or now())
    return raw, {"X-KEZ-Sender": sender, "X-KEZ-Auth": auth, "Content-Type": "application/json"}


async def send(
    client: HTTPClient,
    url: str,
    key: KeyPair,
    sender: str,
    to: str,
    envelope: Any = None,
    **kw: Any,
) -> tuple[int, Any]:
    raw, headers = message_request(key, sender, to, envelope or {"n": 0}, **kw)
    response = await client.post(f"{url}/v1/messages", data=raw, headers=headers)
    return response.code, json.loads(await response.content())


def inbox_auth(key: KeyPair, handle: str, since: int = 0, ts: int | None = None) -> str:
    return sign_request(key, "GET", f"/v1/inbox/{handle}", [f"since={since}"], ts or now())


def stream_auth(key: KeyPair, handle: str, ts: int | None = None) -> str:
    return sign_request(key, "GET", f"/v1/inbox/{handle}/stream", [], ts or now())


async def inbox(
    client: HTTPClient, url: str, key: KeyPair, handle: str, since: int = 0, limit: int = 500
) -> tuple[int, Any]:
    response = await client.get(
        f"{url}/v1/inbox/{handle}",
        params={"since": str(since), "limit": str(limit)},
        headers={"X-KEZ-Auth": inbox_auth(key, handle, since)},
    )
    return response.code, json.loads(await response.content())


class _EventReceiver(Protocol):
    def __init__(self, stream: SSEStream) -> None:
        self.stream = stream

    def dataReceived(self, data: bytes) -> None:
        self.stream.raw += data
        for event in self.stream.parser.feed(data):
            self.stream._got(event)

    def connectionLost(self, reason: Any) -> None:
        self.stream.closed = True
        self.stream.close_reason = reason
        self.stream._wake()
        if not self.stream.ended.called:
            self.stream.ended.callback(reason.check(ResponseDone) is not None)


class SSEStream:
    """
    An open event stream, parsed as it arrives.
    """

    def __init__(self) -> None:
        self.parser = SSEParser()
        self.events: list[Event] = []
        self.raw = b""
        self.response: Any = None
        self.closed = False
        self.close_reason: Any = None
        self.ended: Deferred[bool] = Deferred()
        self._waiters: list[tuple[int, Deferred[None]]] = []
        self._receiver: _EventReceiver | None = None

    @property
    def seqs(self) -> list[int]:
        return [int(e.id) for e in self.events if e.event == "message"]

    def items(self) -> list[dict[str, Any]]:
        return [json.loads(e.data) for e in self.events if e.event == "message"]

    def _got(self, event: Event) -> None:
        self.events.append(event)
        self._wake()

    def _wake(self) -> None:
        still = []
        for count, d in self._waiters:
            if len(self.events) >= count or self.closed:
                d.callback(None)
            else:
                still.append((count, d))
        self._waiters = still

    def wait_for(self, count: int, timeout: float = 10.0) -> Deferred[None]:
        """
        Fires once C{count} events have arrived (or the stream closed);
        fails after C{timeout}.
        """
        d: Deferred[None] = Deferred()
        if len(self.events) >= count or self.closed:
            d.callback(None)
            return d
        self._waiters.append((count, d))
        d.addTimeout(timeout, reactor)
        return d

    def close(self) -> Deferred[bool]:
        if self._receiver is not None and self._receiver.transport is not None:
            self._receiver.transport.stopProducing()
        return self.ended


async def open_stream(
    case: Any,
    url: str,
    key: KeyPair,
    handle: str,
    last_event_id: int | None = None,
    since: int | None = None,
    auth: str | None = None,
) -> SSEStream:
    """
    Open C{GET /v1/inbox/<handle>/stream} on its own TCP connection.
    """
    pool = HTTPConnectionPool(reactor, persistent=False)
    agent = Agent(reactor, pool=pool)
    query = f"auth={auth or stream_auth(key, handle)}"
    if since is not None:
        query += f"&since={since}"
    headers = Headers({"Accept": ["text/event-stream"]})
    if last_event_id is not None:
        headers.addRawHeader("Last-Event-ID", str(last_event_id))
    response = await agent.request(
        b"GET", f"{url}/v1/inbox/{handle}/stream?{query}".encode(), headers
    )
    stream = SSEStream()
    stream.response = response
    if response.code != 200:
        stream.body = await _read_all(response)
        return stream
    stream._receiver = _EventReceiver(stream)
    response.deliverBody(stream._receiver)

    async def cleanup() -> None:
        stream.close()
        await stream.ended
        await pool.closeCachedConnections()

    case.addCleanup(cleanup)
    return stream


async def _read_all(response: Any) -> bytes:
    import treq

    return await treq.content(response)
