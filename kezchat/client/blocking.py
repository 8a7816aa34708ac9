"""
The few requests a one-shot command makes (C{send}: look the recipient up;
if they are new, check the key directory vouches for their key and fetch
their sigchain; post the message. C{audit}: read the key directory) over
the standard library's C{http.client}: no event loop and no Twisted or
treq to import, so C{kez-chat send} starts in a fraction of the time. The
key directory is checked by the same code either way
(L{kezchat.client.keydir.KeyDirectory}, fed by this client or by treq's).

The contract is that of L{kezchat.client.http}: each exchange has one
overall deadline (connect, headers and the whole body: a watchdog shuts
the socket when it passes, so a server trickling a byte at a time cannot
stretch it), each answer a size bound (refused at once when its
C{Content-Length} says it is over, else after the bound), C{https} URLs
are verified against the system's certificate authorities with the host
name checked, and failures are the same L{Unreachable} / L{ServerError}.

The methods are C{async def} like those of L{kezchat.client.http.ChatClient},
so command code awaits either the same way; these never suspend (their I/O
blocks), which is what lets L{kezchat.cli.main.run_direct} drive a command
to its end without a loop.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urlsplit

from kezchat.client.answers import (
    CHAIN_BODY,
    DEFAULT_TIMEOUT,
    SMALL_BODY,
    origin,
    server_error,
    too_large,
)
from kezchat.client.errors import ServerError, Unreachable

if TYPE_CHECKING:
    from kezchat.identity.keys import KeyPair

_READ = 64 * 1024


def describe(error: BaseException) -> str:
    """
    A short human reason for a transport failure.
    """
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"its certificate is not trusted ({error.verify_message})"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, socket.gaierror):
        return f"cannot resolve the host name ({error.strerror})"
    if isinstance(error, http.client.HTTPException | ConnectionError):
        return f"connection lost ({error or type(error).__name__})"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


class _Exchange:
    """
    One request and its answer within C{timeout} seconds in all.
    """

    def __init__(self, url: str, timeout: float, context: ssl.SSLContext | None) -> None:
        self.url = url
        self.timeout = timeout
        self.context = context
        self.deadline = time.monotonic() + timeout
        self.expired = threading.Event()
        self.sock: socket.socket | None = None

    def left(self) -> float:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            self.expired.set()
            raise TimeoutError
        return remaining

    def late(self) -> Unreachable:
        return Unreachable(origin(self.url), f"no complete answer within {self.timeout:g} s")

    def run(
        self,
        method: str,
        body: bytes | None,
        headers: dict[str, str],
        max_body: int,
    ) -> tuple[int, bytes, str | None]:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise Unreachable(origin(self.url), "not an http:// or https:// URL")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection: http.client.HTTPConnection
        if parts.scheme == "https":
            connection = http.client.HTTPSConnection(
                parts.hostname,
                parts.port,
                timeout=self.left(),
                context=self.context or ssl.create_default_context(),
            )
        else:
            connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=self.left())
        watchdog = threading.Timer(self.left(), self._expire)
        watchdog.daemon = True
        watchdog.start()
        try:
            connection.connect()
            # a second handle on the socket for the watchdog: http.client
            # closes its own once the answer's headers are in
            raw = connection.sock
            self.sock = socket.fromfd(raw.fileno(), raw.family, raw.type)  # (a dup; TLS too)
            connection.request(method, path, body=body, headers={**headers, "Connection": "close"})
            connection.sock.settimeout(self.left())
            response = connection.getresponse()
            answer = self._read(response, max_body)
            return response.status, answer, response.getheader("retry-after")
        finally:
            watchdog.cancel()
            connection.close()
            if self.sock is not None:
                self.sock.close()

    def _expire(self) -> None:
        self.expired.set()
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _read(self, response: http.client.HTTPResponse, limit: int) -> bytes:
        announced = response.getheader("content-length")
        if announced is not None and announced.strip().isdigit() and int(announced) > limit:
            raise too_large(response.status, limit)
        chunks: list[bytes] = []
        size = 0
        while True:
            self.left()
            chunk = response.read(_READ)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > limit:
                raise too_large(response.status, limit)
            chunks.append(chunk)


class _Blocking:
    """
    @param context: the TLS settings for C{https} URLs; by default the
        system's trusted authorities, host name checked.
    """

    def __init__(
        self, timeout: float = DEFAULT_TIMEOUT, context: ssl.SSLContext | None = None
    ) -> None:
        self.timeout = timeout
        self.context = context

    async def close(self) -> None:
        """
        Nothing to close: every exchange has its own connection.
        """

    def _request(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        expect: tuple[int, ...] = (200,),
        max_body: int = SMALL_BODY,
    ) -> tuple[int, bytes]:
        exchange = _Exchange(url, self.timeout, self.context)
        try:
            status, answer, retry_after = exchange.run(method, body, headers or {}, max_body)
        except ServerError:
            raise
        except (OSError, http.client.HTTPException, ValueError) as e:
            if exchange.expired.is_set() or isinstance(e, TimeoutError):
                raise exchange.late() from None
            raise Unreachable(origin(url), describe(e)) from None
        if status in expect:
            return status, answer
        raise server_error(status, answer, retry_after)

    def _json(self, method: str, url: str, **kwargs: Any) -> Any:
        # The answer is parsed JSON, so Any; callers that promise a shape
        # declare it on a local (``answer: dict[str, Any]``), as the API documents.
        status, body = self._request(method, url, **kwargs)
        if status == 404 and 404 in kwargs.get("expect", ()):
            return None
        try:
            return json.loads(body)
        except ValueError:
            raise ServerError(status, f"http_{status}", "the answer is not JSON") from None


class BlockingChatClient(_Blocking):
    """
    The chat-server requests of C{send} and C{audit}, as
    L{kezchat.client.http.ChatClient} makes them.
    """

    def __init__(
        self,
        base_url: str,
        timeout: float = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.time,
        context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(timeout, context)
        self.base_url = base_url.rstrip("/")
        self.clock = clock

    def url(self, path: str) -> str:
        return self.base_url + path

    async def lookup(self, handle: str) -> dict[str, Any] | None:
        """
        The record of C{handle} (bare or qualified), or C{None} if unknown.
        """
        answer: dict[str, Any] | None = self._json(
            "GET", self.url(f"/v1/u/{quote(handle, safe='@')}"), expect=(200, 404)
        )
        return answer

    # -- key directory (a L{kezchat.client.keydir.LogSource}) ---------------

    async def log_head(self) -> Any:
        return self._json("GET", self.url("/v1/log/head"))

    async def log_inclusion(self, handle: str, size: int) -> Any:
        return self._json("GET", self._query("/v1/log/inclusion", handle=handle, size=size))

    async def log_consistency(self, first: int, second: int, server: str | None = None) -> Any:
        params: dict[str, object] = {"from": first, "to": second}
        if server is not None:
            params["server"] = server
        return self._json("GET", self._query("/v1/log/consistency", params))

    async def log_entries(self, start: int, count: int) -> Any:
        return self._json("GET", self._query("/v1/log/entries", start=start, count=count))

    def _query(self, path: str, params: dict[str, object] | None = None, **more: object) -> str:
        fields = {**(params or {}), **more}
        return self.url(path) + "?" + urlencode({k: str(v) for k, v in fields.items()})

    # -- relay -----------------------------------------------------------------

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
        from kezchat.protocol.auth import body_digest, handle_server, sign_request

        message: dict[str, Any] = {"to": to, "envelope": envelope}
        if idempotency_key is not None:
            message["idempotency_key"] = idempotency_key
        raw = json.dumps(message, separators=(",", ":")).encode("utf-8")
        digest, ts = body_digest(raw), int(self.clock())
        auth = sign_request(key, "POST", "/v1/messages", [digest], ts, handle_server(sender))
        answer: dict[str, Any] = self._json(
            "POST",
            self.url("/v1/messages"),
            body=raw,
            headers={
                "Content-Type": "application/json",
                "X-KEZ-Sender": sender,
                "X-KEZ-Auth": auth,
            },
            expect=(200, 201, 202),
        )
        return answer


class BlockingSigClient(_Blocking):
    """
    The sig-server request of C{send} (a new contact's chain).
    """

    async def chain(self, chain_url: str) -> tuple[list[Any], bytes]:
        """
        The raw events at C{chain_url} (unverified) and the document bytes.
        """
        _, body = self._request(
            "GET", chain_url, headers={"Accept": "application/json"}, max_body=CHAIN_BODY
        )
        try:
            events = json.loads(body)["events"]
        except (ValueError, KeyError, TypeError):
            raise ServerError(200, "malformed_chain", "the sig-server sent no chain") from None
        return events, body
