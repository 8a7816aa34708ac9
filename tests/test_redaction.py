"""
The SSE stream's C{auth} query parameter never reaches a log, however the
client spells its name: redaction goes by the arguments as the server
parses them, not by the raw text.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http import parse_qs
from twisted.web.http_headers import Headers

from kezchat.http.request import redact_uri
from tests.relaysupport import stream_auth
from tests.support import deferred_sleep, http_client, register, start_server


# every way to write one character of a query parameter's name
def spellings(char: str) -> st.SearchStrategy[bytes]:
    return st.sampled_from(
        [char.encode(), char.upper().encode(), b"%%%02x" % ord(char), b"%%%02X" % ord(char)]
    )


auth_names = st.tuples(*(spellings(c) for c in "auth")).map(b"".join)
other = st.binary(max_size=12).map(lambda b: b.replace(b"&", b"").replace(b";", b""))


class RedactUriTests(SynchronousTestCase):
    @settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        name=auth_names,
        secret=st.integers(10**8, 10**12).map(lambda n: b"%d:%x" % (n, n * 7919)),
        before=st.lists(st.tuples(other, other), max_size=3),
        separator=st.sampled_from([b"&", b";"]),
    )
    def test_every_spelling_redacted(
        self, name: bytes, secret: bytes, before: list[tuple[bytes, bytes]], separator: bytes
    ) -> None:
        """
        Whatever name the server reads as C{auth}, its value is gone.
        """
        pairs = [k + b"=" + v for k, v in before] + [name + b"=" + secret]
        query = separator.join(pairs)
        key = unquote_to_bytes(name)  # the argument's name as the server reads it
        self.assertIn(secret, parse_qs(query, 1)[key])
        redacted = redact_uri(b"/v1/inbox/bob/stream?" + query)
        args = parse_qs(redacted.split(b"?", 1)[1], 1)
        self.assertEqual(set(args[key]), {b"REDACTED"})
        self.assertNotIn(secret, redacted)

    def test_other_parameters_kept(self) -> None:
        self.assertEqual(
            redact_uri(b"/x?author=4&a=auth=5&since=3"), b"/x?author=4&a=auth=5&since=3"
        )
        self.assertEqual(redact_uri(b"/x"), b"/x")


class AccessLogTests(TestCase):
    timeout = 30

    async def test_escaped_auth_name_not_logged(self) -> None:
        """
        A stream opened with C{a%75th=}, which the route accepts as
        C{auth=}, is logged with the credential redacted.
        """
        lines: list[str] = []

        def observe(event: dict) -> None:  # type: ignore[type-arg]
            lines.append(formatEvent(event) or "")

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        server = await start_server(self, access_log=True)
        client = http_client(self)
        bob, _ = await register(client, server.url, "bob")
        credential = stream_auth(bob, "bob")
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(pool.closeCachedConnections)
        response = await Agent(reactor, pool=pool).request(
            b"GET",
            f"{server.url}/v1/inbox/bob/stream?a%75th={credential}".encode(),
            Headers({"Accept": ["text/event-stream"]}),
        )
        self.assertEqual(response.code, 200)
        response.deliverBody(_Discard())
        await deferred_sleep(0.1)
        server.service.stopService()  # ends the stream: its access-log line is written
        await deferred_sleep(0.3)
        logged = "\n".join(lines)
        self.assertIn("a%75th=REDACTED", logged)
        self.assertNotIn(credential.split(":")[-1], logged)


class _Discard:
    def makeConnection(self, transport: object) -> None:
        pass

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: object) -> None:
        pass
