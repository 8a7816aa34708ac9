"""
Request integrity on the relay: replayed sends, reused idempotency keys,
handles with trailing junk, credentials in logs, envelopes relayed as sent.
"""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from kezchat import strictjson
from kezchat.protocol.auth import body_digest, sign_request
from tests.backends import on_postgresql
from tests.relaysupport import (
    inbox,
    message_request,
    now,
    open_stream,
    send,
    stream_auth,
)
from tests.support import deferred_sleep, http_client, json_of, register, start_server

_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


class IntegrityTestCase(TestCase):
    timeout = 30

    async def setUp(self) -> None:
        self.server = await start_server(self, sse_ping_seconds=0.2, access_log=True)
        self.url = self.server.url
        self.client = http_client(self)
        self.alice, _ = await register(self.client, self.url, "alice")
        self.bob, _ = await register(self.client, self.url, "bob")
        self.carol, _ = await register(self.client, self.url, "carol")

    async def post(self, raw: bytes, headers: dict[str, str]) -> tuple[int, dict]:
        response = await self.client.post(f"{self.url}/v1/messages", data=raw, headers=headers)
        return response.code, await json_of(response)

    async def stored(self, handle: str = "bob") -> list[dict]:
        key = {"bob": self.bob, "carol": self.carol}[handle]
        _, page = await inbox(self.client, self.url, key, handle)
        return page["messages"]


class ReplayTests(IntegrityTestCase):
    async def test_replayed_send_is_not_stored_again(self) -> None:
        """
        The same signed request sent again within its window gets the first
        outcome (200, same seq) and stores nothing; so do concurrent copies.
        """
        raw, headers = message_request(self.alice, "alice", "bob", {"ct": "once"})
        first = await self.post(raw, headers)
        self.assertEqual(first[0], 201)
        again = await self.post(raw, headers)
        self.assertEqual(again, (200, first[1]))
        raw2, headers2 = message_request(self.alice, "alice", "bob", {"ct": "twice"})
        results = await gatherResults(
            [ensureDeferred(self.post(raw2, headers2)) for _ in range(5)]
        )
        self.assertEqual(sorted(code for code, _ in results), [200, 200, 200, 200, 201])
        self.assertEqual(len({body["seq"] for _, body in results}), 1)
        self.assertEqual([m["envelope"]["ct"] for m in await self.stored()], ["once", "twice"])

    async def test_a_failed_send_can_be_retried_with_the_same_signature(self) -> None:
        raw, headers = message_request(self.alice, "alice", "nobody", {"x": 1})
        self.assertEqual((await self.post(raw, headers))[0], 404)
        self.assertEqual((await self.post(raw, headers))[0], 404)


class IdempotencyConflictTests(IntegrityTestCase):
    async def test_same_key_other_request_is_a_conflict(self) -> None:
        first = await send(
            self.client, self.url, self.alice, "alice", "bob", {"ct": "a"}, idempotency_key="k"
        )
        self.assertEqual(first[0], 201)
        retry = await send(
            self.client, self.url, self.alice, "alice", "bob@kez.lat", {"ct": "a"},
            idempotency_key="k",
        )
        self.assertEqual(retry, (200, first[1]))
        for to, envelope in (("bob", {"ct": "b"}), ("carol", {"ct": "a"})):
            code, body = await send(
                self.client, self.url, self.alice, "alice", to, envelope, idempotency_key="k"
            )
            self.assertEqual((code, body["error"]["code"]), (409, "idempotency_conflict"))
        self.assertEqual([m["envelope"] for m in await self.stored()], [{"ct": "a"}])
        self.assertEqual(await self.stored("carol"), [])


class HandleGrammarTests(IntegrityTestCase):
    async def test_trailing_newline_is_not_bob(self) -> None:
        for to in ("bob\n", "bob\r\n", " bob", "bob ", "bob@kez.lat\n", "bob\t"):
            raw, headers = message_request(self.alice, "alice", to, {"x": 1})
            code, body = await self.post(raw, headers)
            self.assertEqual((code, body["error"]["code"]), (404, "unknown_recipient"), repr(to))
        self.assertEqual(await self.stored(), [])


class EnvelopeTextTests(IntegrityTestCase):
    async def test_envelope_is_relayed_as_written(self) -> None:
        """
        Numbers, escapes and key order come back exactly as sent, over the
        inbox and over SSE; a pretty-printed envelope loses only the white
        space between its tokens.
        """
        stream = await open_stream(self, self.url, self.bob, "bob")
        written = '{"z":1E15,"a":-0.0,"big":123456789012345678901234567890,"s":"\\u00e9\\/"}'
        pretty = '{\n  "n": 1.50,\n  "s": "a b"\n}'
        for text in (written, pretty):
            raw = b'{"to":"bob","envelope":' + text.encode() + b"}"
            auth = sign_request(self.alice, "POST", "/v1/messages", [body_digest(raw)], now())
            code, _ = await self.post(raw, {"X-KEZ-Sender": "alice", "X-KEZ-Auth": auth})
            self.assertEqual(code, 201)
        response = await self.client.get(
            f"{self.url}/v1/inbox/bob",
            params={"since": "0"},
            headers={"X-KEZ-Auth": _inbox_auth(self.bob)},
        )
        body = (await response.content()).decode()
        self.assertIn('"envelope":' + written, body)
        self.assertIn('"envelope":{"n":1.50,"s":"a b"}', body)
        await stream.wait_for(2)
        self.assertIn(b"data: " + b'{"seq":1,', stream.raw)
        self.assertIn(b'"envelope":' + written.encode() + b",", stream.raw)
        self.assertEqual(json.loads(stream.events[-1].data)["envelope"], {"n": 1.5, "s": "a b"})


class AuthNotLoggedTests(IntegrityTestCase):
    async def test_sse_auth_never_reaches_a_log(self) -> None:
        lines: list[str] = []

        def observe(event: dict) -> None:
            lines.append(formatEvent(event) or "")
            lines.append(repr(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        good = stream_auth(self.bob, "bob")
        stream = await open_stream(self, self.url, self.bob, "bob", auth=good)
        self.assertEqual(stream.response.code, 200)
        await deferred_sleep(0.3)
        await stream.close()
        bad = stream_auth(self.alice, "bob")
        refused = await open_stream(self, self.url, self.bob, "bob", auth=bad)
        self.assertEqual(refused.response.code, 401)
        await deferred_sleep(0.3)
        text = "\n".join(lines)
        self.assertIn("/v1/inbox/bob/stream?auth=REDACTED", text)
        for auth in (good, bad):
            signature = auth.split(":")[1]
            self.assertNotIn(signature, text)


def _inbox_auth(key) -> str:
    return sign_request(key, "GET", "/v1/inbox/bob", ["since=0"], now())


class EnvelopeTextPropertyTests(SynchronousTestCase):
    """
    The text relayed for an envelope is the text written, whatever the
    layout, and always parses to the same value.
    """

    @settings(max_examples=200, deadline=None)
    @given(
        st.dictionaries(st.text(max_size=8), _json_values, max_size=5),
        st.sampled_from([None, 0, 2]),
        st.sampled_from([(",", ":"), (", ", ": ")]),
        st.booleans(),
    )
    def test_member_text_round_trip(self, envelope, indent, separators, ascii_only) -> None:
        written = json.dumps(
            envelope, indent=indent, separators=separators, ensure_ascii=ascii_only
        )
        body = '{"to": "bob", "envelope": ' + written + ', "idempotency_key": "k"}'
        strictjson.loads(body.encode())
        texts = strictjson.member_texts(body)
        self.assertEqual(texts["envelope"], written)
        self.assertEqual(texts["to"], '"bob"')
        relayed = strictjson.one_line(texts["envelope"])
        self.assertNotIn("\n", relayed)
        self.assertEqual(json.loads(relayed), envelope)
        if "\n" not in written:
            self.assertEqual(relayed, written)


class RedactionTests(SynchronousTestCase):
    def test_request_repr_hides_auth(self) -> None:
        """
        Error logs may print a request; its repr shows no credential.
        """
        from twisted.web.test.requesthelper import DummyChannel

        from kezchat.http.request import KezRequest, redact_uri

        request = KezRequest(DummyChannel())
        request.method = b"GET"
        request.uri = b"/v1/inbox/bob/stream?since=3&auth=1700000000:" + b"ab" * 64
        self.assertNotIn("abab", repr(request))
        self.assertIn("auth=REDACTED", repr(request))
        self.assertEqual(
            redact_uri(b"/x?auth=1:2&AUTH=3&author=4&a=auth=5"),
            b"/x?auth=REDACTED&AUTH=REDACTED&author=4&a=auth=5",
        )


# what the store decides (idempotency conflicts, envelopes kept as written) on PostgreSQL too
on_postgresql(globals(), IdempotencyConflictTests, EnvelopeTextTests)
