"""
HTTP helpers for the chat-server and the sig-server, as SPEC clients.

Each method is one request of the public API: it builds the signed body
or C{X-KEZ-Auth} header, sends it with treq, and returns the parsed JSON
or raises L{ServerError} / L{Unreachable}. Nothing here knows about the
CLI, so tests and other clients speak the protocol through the same code.

A server is not trusted to be well-behaved either: every exchange has an
overall deadline (connecting, the headers and the whole body: a server
trickling one byte every few seconds cannot hold a command forever), and
every body read has a size bound that fits what the endpoint can
legitimately answer (a 400 MB "handle record" is refused after the first
megabyte, or at once when its C{Content-Length} says so).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import quote

from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.error import ConnectError, DNSLookupError, TimeoutError
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    PotentialDataLoss,
    ResponseDone,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.iweb import UNKNOWN_LENGTH

from kezchat.client.answers import (
    CHAIN_BODY,
    DEFAULT_TIMEOUT,
    INBOX_PAGE,
    SMALL_BODY,
    origin,
    server_error,
    too_large,
)
from kezchat.client.errors import ServerError, Unreachable
from kezchat.identity.keys import KeyPair
from kezchat.protocol.auth import body_digest, handle_server, sign_request
from kezchat.protocol.registration import signed_registration
from kezchat.sigchain import ChainState, Event, read_document

_TRANSPORT_ERRORS = (
    ConnectError,
    DNSLookupError,
    TimeoutError,
    ResponseFailed,
    ResponseNeverReceived,
    CancelledError,
    OSError,
)


def local_part(handle: str) -> str:
    """
    The bare local part, as it appears in request paths.
    """
    return handle.partition("@")[0]


def describe_failure(error: BaseException) -> str:
    """
    A short human reason for a transport failure.
    """
    if isinstance(error, ConnectError | DNSLookupError) or type(error).__name__.startswith(
        "Connection"
    ):
        text = str(error).strip().rstrip(".")
        return text or "connection failed"
    if isinstance(error, CancelledError | TimeoutError):
        return "no answer in time"
    if isinstance(error, ResponseNeverReceived | ResponseFailed):
        reasons = getattr(error, "reasons", None) or []
        inner = ", ".join(r.getErrorMessage() for r in reasons) if reasons else ""
        return f"connection lost ({inner})" if inner else "connection lost"
    return str(error) or type(error).__name__


class _Base:
    """
    A treq client over its own connection pool, closed by L{close}.
    """

    def __init__(self, reactor: Any, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.reactor = reactor
        self.timeout = timeout
        # One connection per request: a client of this kind makes few, and
        # a kept-alive connection can outlive the server process behind it.
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.agent = Agent(reactor, pool=self.pool)
        self.http = HTTPClient(self.agent)

    async def close(self) -> None:
        await self.pool.closeCachedConnections()

    async def _request(
        self,
        method: str,
        url: str,
        *,
        expect: tuple[int, ...] = (200,),
        max_body: int = SMALL_BODY,
        **kwargs: Any,
    ) -> tuple[int, bytes, Any]:
        """
        Send one request; return (status, body, response) for a status in
        C{expect} or 404 when 404 is expected, raise otherwise.

        @param max_body: the most bytes of body read; a larger answer is a
            L{ServerError} (C{too_large}), read no further.
        @raise Unreachable: also when the whole exchange took longer than
            the client's timeout.
        """

        async def exchange() -> tuple[Any, bytes]:
            response = await self.http.request(method, url, **kwargs)
            return response, await read_body(response, max_body)

        d = Deferred.fromCoroutine(exchange())
        d.addTimeout(self.timeout, self.reactor)
        try:
            response, body = await d
        except DeferredTimeout:
            raise Unreachable(
                _origin(url), f"no complete answer within {self.timeout:g} s"
            ) from None
        except _TRANSPORT_ERRORS as e:
            if isinstance(e, CancelledError | TimeoutError):
                raise Unreachable(
                    _origin(url), f"no complete answer within {self.timeout:g} s"
                ) from None
            raise Unreachable(_origin(url), describe_failure(e)) from None
        if response.code in expect:
            return response.code, body, response
        raise _server_error(response, body)

    async def _json(self, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
        # The answer is parsed JSON, so Any; each caller declares its body
        # (``body: dict[str, Any]``) as the shape the API documents for it.
        status, body, _ = await self._request(method, url, **kwargs)
        if status == 404 and 404 in kwargs.get("expect", ()):
            return status, None
        try:
            return status, json.loads(body)
        except ValueError:
            raise ServerError(status, f"http_{status}", "the answer is not JSON") from None


class ChatClient(_Base):
    """
    The chat-server API (registry, relay, manifests mirror) at C{base_url}.
    """

    def __init__(
        self,
        base_url: str,
        reactor: Any,
        timeout: float = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(reactor, timeout)
        self.base_url = base_url.rstrip("/")
        self.clock = clock
        #: the agent for SSE streams (see L{kezchat.client.stream})
        self.stream_agent = self.agent

    def url(self, path: str) -> str:
        return self.base_url + path

    def _ts(self) -> int:
        return int(self.clock())

    # -- registry -------------------------------------------------------

    async def healthz(self) -> dict[str, Any]:
        body: dict[str, Any]
        _, body = await self._json("GET", self.url("/v1/healthz"))
        return body

    async def lookup(self, handle: str) -> dict[str, Any] | None:
        """
        The record of C{handle} (bare or qualified), or C{None} if unknown.
        """
        body: dict[str, Any] | None
        _, body = await self._json(
            "GET", self.url(f"/v1/u/{quote(handle, safe='@')}"), expect=(200, 404)
        )
        return body

    async def by_primary(self, primary: str, server: str | None = None) -> dict[str, Any] | None:
        """
        @param server: another domain that binds the key (federation: the
            home server asks it).
        """
        body: dict[str, Any] | None
        _, body = await self._json(
            "GET", self.url(f"/v1/by-primary/{quote(primary, safe=':')}"), expect=(200, 404),
            params={"server": server} if server else None,
        )
        return body

    async def register(self, key: KeyPair, handle: str, server: str) -> dict[str, Any]:
        """
        Register the bare C{handle} on this server (domain C{server}).
        """
        body: dict[str, Any]
        _, body = await self._json(
            "POST",
            self.url("/v1/register"),
            json=signed_registration(key, handle, server),
            expect=(201,),
        )
        return body

    # -- key directory --------------------------------------------------

    async def log_head(self) -> Any:
        _, body = await self._json("GET", self.url("/v1/log/head"))
        return body

    async def log_inclusion(self, handle: str, size: int) -> Any:
        _, body = await self._json(
            "GET", self.url("/v1/log/inclusion"), params={"handle": handle, "size": str(size)}
        )
        return body

    async def log_consistency(self, first: int, second: int, server: str | None = None) -> Any:
        """
        @param server: another domain whose log is meant (federation: the
            home server asks it).
        """
        params = {"from": str(first), "to": str(second)}
        if server is not None:
            params["server"] = server
        _, body = await self._json("GET", self.url("/v1/log/consistency"), params=params)
        return body

    async def log_entries(self, start: int, count: int) -> Any:
        _, body = await self._json(
            "GET", self.url("/v1/log/entries"), params={"start": str(start), "count": str(count)}
        )
        return body

    # -- relay ----------------------------------------------------------

    async def send(
        self,
        key: KeyPair,
        sender: str,
        to: str,
        envelope: dict[str, Any],
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """
        C{POST /v1/messages} as C{sender}; returns C{{"seq", "created_at"}},
        or C{{"queued", "created_at"}} (202) for a handle of another server.
        """
        message: dict[str, Any] = {"to": to, "envelope": envelope}
        if idempotency_key is not None:
            message["idempotency_key"] = idempotency_key
        raw = json.dumps(message, separators=(",", ":")).encode("utf-8")
        auth = sign_request(
            key, "POST", "/v1/messages", [body_digest(raw)], self._ts(), handle_server(sender)
        )
        body: dict[str, Any]
        _, body = await self._json(
            "POST",
            self.url("/v1/messages"),
            data=raw,
            headers={
                "Content-Type": "application/json",
                "X-KEZ-Sender": sender,
                "X-KEZ-Auth": auth,
            },
            expect=(200, 201, 202),
        )
        return body

    async def inbox(
        self, key: KeyPair, handle: str, since: int = 0, limit: int = INBOX_PAGE
    ) -> dict[str, Any]:
        """
        One page of stored messages after C{since}: C{{"messages", "next"}}.
        """
        h = local_part(handle)
        auth = sign_request(
            key, "GET", f"/v1/inbox/{h}", [f"since={since}"], self._ts(), handle_server(handle)
        )
        body: dict[str, Any]
        _, body = await self._json(
            "GET",
            self.url(f"/v1/inbox/{h}"),
            params={"since": str(since), "limit": str(limit)},
            headers={"X-KEZ-Auth": auth},
            max_body=max(1, min(limit, 500)) * 300 * 1024,
        )
        return body

    async def acknowledge(self, key: KeyPair, handle: str, upto: int) -> int:
        """
        Delete the stored messages with seq ≤ C{upto}; returns how many.
        """
        h = local_part(handle)
        auth = sign_request(
            key, "DELETE", f"/v1/inbox/{h}", [f"upto={upto}"], self._ts(), handle_server(handle)
        )
        _, body = await self._json(
            "DELETE",
            self.url(f"/v1/inbox/{h}"),
            params={"upto": str(upto)},
            headers={"X-KEZ-Auth": auth},
        )
        return int(body["deleted"])

    def stream_url(self, key: KeyPair, handle: str, expires: int | None = None) -> str:
        """
        The SSE URL with a fresh C{?auth=}: valid for about a minute, or
        with C{expires} (a unix time at most 24 h away) until then, so a
        standard EventSource can reconnect with it by itself.
        """
        h = local_part(handle)
        ts = self._ts()
        fields, query = ([], "") if expires is None else ([f"exp={expires}"], f"&exp={expires}")
        auth = sign_request(key, "GET", f"/v1/inbox/{h}/stream", fields, ts, handle_server(handle))
        return self.url(f"/v1/inbox/{h}/stream?auth={auth}{query}")

    # -- manifests mirror -------------------------------------------------

    async def put_manifest(self, key: KeyPair, handle: str, blob: bytes) -> dict[str, Any]:
        h = local_part(handle)
        auth = sign_request(
            key, "PUT", f"/v1/manifests/{h}", [body_digest(blob)], self._ts(), handle_server(handle)
        )
        body: dict[str, Any]
        _, body = await self._json(
            "PUT",
            self.url(f"/v1/manifests/{h}"),
            data=blob,
            headers={"X-KEZ-Auth": auth, "Content-Type": "application/json"},
            expect=(200, 201),
        )
        return body

    async def get_manifest(self, handle: str) -> bytes | None:
        status, body, _ = await self._request(
            "GET", self.url(f"/v1/manifests/{local_part(handle)}"), expect=(200, 404)
        )
        return None if status == 404 else body


class SigClient(_Base):
    """
    The sig-server API, addressed by the chain URLs handle records carry.
    """

    async def chain(self, chain_url: str) -> tuple[list[Event], bytes]:
        """
        The raw events at C{chain_url} (unverified) and the document bytes.
        """
        _, body, _ = await self._request(
            "GET", chain_url, headers={"Accept": "application/json"}, max_body=CHAIN_BODY
        )
        try:
            events = json.loads(body)["events"]
        except (ValueError, KeyError, TypeError):
            raise ServerError(200, "malformed_chain", "the sig-server sent no chain") from None
        return events, body

    async def verified_chain(self, chain_url: str, primary: str) -> tuple[ChainState, list[Event]]:
        """
        Fetch and verify the chain of C{primary}.

        @raise kezchat.sigchain.ChainError: if it does not verify.
        """
        events, body = await self.chain(chain_url)
        return read_document(body, primary), events

    async def append(self, chain_url: str, event: Event) -> dict[str, Any]:
        """
        Append one signed event (201, or 200 when it is already there).
        """
        body: dict[str, Any]
        _, body = await self._json(
            "POST", chain_url.rstrip("/") + "/events", json=event, expect=(200, 201)
        )
        return body


class BodyTooLarge(Exception):
    """
    A response body is larger than the reader accepts.
    """


class _Capped(Protocol):
    """
    Collects a response body up to C{limit} bytes, and stops reading (the
    connection is dropped) past it or when cancelled.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.chunks: list[bytes] = []
        self.size = 0
        self.done: Deferred[bytes] = Deferred(lambda _: self._stop())

    def _stop(self) -> None:
        if self.transport is not None:
            cast(IPushProducer, self.transport).stopProducing()

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return
        self.size += len(data)
        if self.size > self.limit:
            self.done.errback(BodyTooLarge(self.limit))
            self._stop()
            return
        self.chunks.append(data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self.done.called:
            return
        if reason is None or reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self.chunks))
        else:
            self.done.errback(reason)


async def read_body(response: Any, limit: int) -> bytes:
    """
    The body of C{response}, at most C{limit} bytes.

    @raise ServerError: C{too_large} when the body (or its announced
        length) is over C{limit}; nothing past the limit is read.
    """
    refused = too_large(response.code, limit)
    reader = _Capped(limit)
    response.deliverBody(reader)
    if response.length is not UNKNOWN_LENGTH and response.length > limit:
        reader.done.addErrback(lambda _: None)  # nothing waits for it: drop the body
        reader.done.cancel()
        raise refused
    try:
        return await reader.done
    except BodyTooLarge:
        raise refused from None


_origin = origin


def _server_error(response: Any, body: bytes) -> ServerError:
    retry = response.headers.getRawHeaders(b"retry-after")
    retry_after = retry[0].decode("ascii", "replace") if retry else None
    return server_error(response.code, body, retry_after)
