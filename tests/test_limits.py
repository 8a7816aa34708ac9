"""
Limits at the HTTP edge (SPEC §3.1, §9): body caps enforced while reading,
slow clients cut off, registrations rate-limited per client IP.

The body-cap and slowloris tests speak raw TCP through a Twisted protocol:
an HTTP client library would refuse to send a lying C{Content-Length} or
to dribble a request, which is exactly what these tests need to do.
"""

from __future__ import annotations

import json

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from kezchat.identity.keys import KeyPair
from tests.support import http_client, json_of, register, registration, start_server

#: how long an early answer may take to arrive; generous for a loaded CI
#: machine, tiny next to the time a 10 MB upload would take to be read
PROMPT = 2.0


class RawClient(Protocol):
    """
    A TCP client that records what it receives and when.

    @ivar first_data: fires with the reactor time of the first bytes.
    @ivar closed: fires with everything received once the server closes.
    """

    def __init__(self) -> None:
        self.received = b""
        self.first_data: Deferred[float] = Deferred()
        self.closed: Deferred[bytes] = Deferred()
        self.connected_at = reactor.seconds()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if not self.first_data.called:
            self.first_data.callback(reactor.seconds())

    def connectionLost(self, reason: Failure) -> None:
        if not self.first_data.called:
            self.first_data.callback(None)
        if not self.closed.called:  # not cancelled by a timed-out test
            self.closed.callback(self.received)

    def send(self, data: bytes) -> None:
        if self.transport.connected:
            self.transport.write(data)


async def connect(case: TestCase, port: int) -> RawClient:
    client = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), RawClient())

    def close() -> Deferred[bytes] | None:
        if client.closed.called:
            return None
        client.transport.abortConnection()
        return client.closed

    case.addCleanup(close)
    return client


def parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


class BodyCapTests(TestCase):
    timeout = 30

    async def setUp(self) -> None:
        self.server = await start_server(self)

    def assert_413(self, raw: bytes) -> None:
        status, headers, body = parse_response(raw)
        self.assertEqual(status, 413, raw[:300])
        self.assertEqual(headers.get("content-type"), "application/json")
        self.assertEqual(json.loads(body)["error"]["code"], "payload_too_large")
        # the same compact JSON as every other error body
        self.assertNotIn(b'": ', body)
        self.assertNotIn(b'", ', body)

    async def test_oversize_content_length_is_refused_before_the_body(self) -> None:
        """
        A declared 10 MB body gets its 413 after a few KB: the server
        answered from the headers instead of reading (and buffering) the
        rest, then closed the connection.
        """
        client = await connect(self, self.server.port)
        client.send(
            b"POST /v1/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10000000\r\n\r\n" + b"x" * 4096
        )
        answered = await client.first_data
        self.assertIsNotNone(answered)
        self.assertLess(answered - client.connected_at, PROMPT)
        raw = await client.closed
        self.assert_413(raw)
        # the server hung up well before the 10 MB could have arrived
        self.assertLess(reactor.seconds() - client.connected_at, PROMPT + 3)

    async def test_chunked_body_over_the_cap(self) -> None:
        """
        A chunked body has no length to check up front: the count of bytes
        read is what trips the cap.
        """
        client = await connect(self, self.server.port)
        client.send(
            b"POST /v1/register HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: application/json\r\n\r\n"
        )
        chunk = b"x" * 16384
        for _ in range(5):  # 80 KiB > 64 KiB
            client.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        self.assert_413(await client.closed)

    async def test_chunked_body_under_the_cap_is_read(self) -> None:
        """
        The cap counts bytes, not chunks: a valid registration sent in
        small chunks goes through.
        """
        body = json.dumps(registration(KeyPair.generate(), "chunky")).encode()
        client = await connect(self, self.server.port)
        message = (
            b"POST /v1/register HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\nContent-Type: application/json\r\n\r\n"
        )
        for i in range(0, len(body), 50):
            piece = body[i : i + 50]
            message += b"%x\r\n%s\r\n" % (len(piece), piece)
        client.send(message + b"0\r\n\r\n")
        status, _, _ = parse_response(await client.closed)
        self.assertEqual(status, 201)

    async def test_expect_100_continue_with_oversize_length(self) -> None:
        """
        With C{Expect: 100-continue} the client waits before sending the
        body; the server must answer 413 straight away and never invite
        the body with a C{100 Continue}.
        """
        client = await connect(self, self.server.port)
        client.send(
            b"POST /v1/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Expect: 100-continue\r\nContent-Length: 10000000\r\n\r\n"
        )
        answered = await client.first_data
        self.assertLess(answered - client.connected_at, PROMPT)
        raw = await client.closed
        self.assertNotIn(b"100 Continue", raw)
        self.assert_413(raw)

    async def test_expect_100_continue_within_the_cap(self) -> None:
        """
        The control: an acceptable length is invited with C{100 Continue}.
        """
        body = json.dumps(registration(KeyPair.generate(), "patient")).encode()
        client = await connect(self, self.server.port)
        client.send(
            b"POST /v1/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        await client.first_data
        self.assertTrue(client.received.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"))
        client.send(body)
        raw = await client.closed
        self.assertEqual(parse_response(raw.split(b"\r\n\r\n", 1)[1])[0], 201)


class SlowClientTests(TestCase):
    """
    Slowloris: a client that holds a connection open by sending its
    request a byte at a time. The site's deadline is shortened so the test
    takes about a second. On the wire once; the request line, headers and
    body deadlines each are in C{test_clocked}, on a C{Clock}.
    """

    timeout = 30
    deadline = 1.0

    async def setUp(self) -> None:
        self.server = await start_server(self)
        site = self.server.service.listeners[0].factory
        site.request_deadline = self.deadline

    async def dribble(self, head: bytes, drip: bytes) -> tuple[RawClient, float]:
        """
        Send C{head}, then one byte of C{drip} every 0.2 s (each byte
        resets an idle timeout, so only a deadline can end this); returns
        when the server closes the connection.
        """
        client = await connect(self, self.server.port)
        client.send(head)
        remaining = iter(drip)

        def one_byte() -> None:
            byte = next(remaining, None)
            if byte is not None:
                client.send(bytes([byte]))

        dripping = LoopingCall(one_byte)
        dripping.clock = reactor
        dripping.start(0.2)
        try:
            await client.closed
        finally:
            dripping.stop()
        return client, reactor.seconds() - client.connected_at

    def assert_cut_off(self, client: RawClient, elapsed: float) -> None:
        self.assertLess(elapsed, self.deadline + PROMPT + 2.0)
        if client.received:
            status, _, body = parse_response(client.received)
            self.assertEqual(status, 408)
            self.assertIn("error", json.loads(body))

    async def test_headers_a_byte_at_a_time(self) -> None:
        client, elapsed = await self.dribble(
            b"GET /v1/healthz HTTP/1.1\r\n", b"X-Slow: " + b"a" * 200 + b"\r\n\r\n"
        )
        self.assertTrue(client.received, "the server closed without an answer")
        self.assert_cut_off(client, elapsed)

    async def test_fast_requests_are_not_affected(self) -> None:
        """
        The deadline is per request, not per connection: a persistent
        connection that makes quick requests for longer than the deadline
        is served throughout.
        """
        client = http_client(self)
        started = reactor.seconds()
        while reactor.seconds() - started < self.deadline * 1.5:
            response = await client.get(f"{self.server.url}/v1/healthz")
            self.assertEqual(response.code, 200)
            await response.content()


class RateLimitTests(TestCase):
    timeout = 30

    async def register_from(
        self, url: str, handle: str, forwarded_for: str | None = None
    ) -> tuple[int, dict, object]:
        headers = {} if forwarded_for is None else {"X-Forwarded-For": forwarded_for}
        response = await self.client.post(
            f"{url}/v1/register",
            json=registration(KeyPair.generate(), handle),
            headers=headers,
        )
        return response.code, await json_of(response), response.headers

    async def test_third_registration_from_one_ip(self) -> None:
        server = await start_server(self, register_limit=2)
        self.client = http_client(self)
        await register(self.client, server.url, "first")
        await register(self.client, server.url, "second")
        status, body, headers = await self.register_from(server.url, "third")
        self.assertEqual((status, body["error"]["code"]), (429, "rate_limited"))
        retry_after = headers.getRawHeaders("retry-after")
        self.assertIsNotNone(retry_after)
        # 2 per hour: the next token is about half an hour away
        self.assertTrue(0 < int(retry_after[0]) <= 1800, retry_after)
        response = await self.client.get(f"{server.url}/v1/u/third")
        self.assertEqual(response.code, 404)
        await response.content()

    async def test_trusted_proxy_forwarded_for_gets_separate_budgets(self) -> None:
        server = await start_server(self, register_limit=2, trusted_proxies=("127.0.0.1",))
        self.client = http_client(self)
        for handle in ("ann", "amy"):
            status, body, _ = await self.register_from(server.url, handle, "198.51.100.1")
            self.assertEqual(status, 201, body)
        status, body, _ = await self.register_from(server.url, "abe", "198.51.100.1")
        self.assertEqual(status, 429, body)
        # another client behind the same proxy has its own budget
        status, body, _ = await self.register_from(server.url, "bea", "198.51.100.2")
        self.assertEqual(status, 201, body)
        # a client cannot escape its budget by prepending a made-up hop:
        # the proxy appends the real address, which is what counts
        status, body, _ = await self.register_from(server.url, "bob", "203.0.113.9, 198.51.100.1")
        self.assertEqual(status, 429, body)

    async def test_forwarded_for_ignored_without_trusted_proxies(self) -> None:
        server = await start_server(self, register_limit=2)
        self.client = http_client(self)
        results = [
            await self.register_from(server.url, handle, forwarded)
            for handle, forwarded in [
                ("cat", "198.51.100.1"),
                ("cob", "198.51.100.2"),
                ("cid", "198.51.100.3"),
            ]
        ]
        self.assertEqual([status for status, _, _ in results], [201, 201, 429])
