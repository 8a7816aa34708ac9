"""
The relay over real HTTP and real SSE connections (SPEC §3.2, §3.3).
"""

from __future__ import annotations

import json
import time

from twisted.internet.defer import DeferredSemaphore, ensureDeferred, gatherResults
from twisted.trial.unittest import TestCase
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from kezchat.protocol.auth import body_digest, sign_request
from kezchat.storage.interfaces import NewMessage
from tests.backends import on_postgresql
from tests.relaysupport import (
    inbox,
    inbox_auth,
    message_request,
    now,
    open_stream,
    send,
    stream_auth,
)
from tests.support import deferred_sleep, http_client, json_of, register, start_server


class RelayTestCase(TestCase):
    timeout = 60

    async def setUp(self) -> None:
        self.server = await start_server(self, sse_ping_seconds=0.2)
        self.url = self.server.url
        self.client = http_client(self)
        self.alice, _ = await register(self.client, self.url, "alice")
        self.bob, _ = await register(self.client, self.url, "bob")
        self.carol, _ = await register(self.client, self.url, "carol")

    async def error_code(self, response) -> tuple[int, str]:
        body = await json_of(response)
        return response.code, body["error"]["code"]


class SendAndReadTests(RelayTestCase):
    async def test_exchange(self) -> None:
        envelope = {"v": 1, "ct": "opaque", "nested": {"x": [1, 2, "ü"]}}
        code, body = await send(self.client, self.url, self.alice, "alice", "bob", envelope)
        self.assertEqual(code, 201)
        self.assertEqual(body["seq"], 1)
        # alice's inbox holds her own copy at 1, so bob's reply is her 2
        code, body = await send(self.client, self.url, self.bob, "bob@kez.lat", "ALICE", {"r": 1})
        self.assertEqual((code, body["seq"]), (201, 2))
        code, page = await inbox(self.client, self.url, self.bob, "bob")
        self.assertEqual(code, 200)
        item, copy = page["messages"]
        self.assertEqual(item["seq"], 1)
        self.assertEqual(item["from"], "alice@kez.lat")
        self.assertEqual(item["from_primary"], self.alice.primary)
        self.assertEqual(item["direction"], "in")
        self.assertEqual(item["envelope"], envelope)
        self.assertEqual((copy["seq"], copy["direction"], copy["to"]), (2, "out", "alice@kez.lat"))
        self.assertEqual(page["next"], 2)
        code, page = await inbox(self.client, self.url, self.alice, "alice")
        self.assertEqual(
            [(m["from"], m["direction"]) for m in page["messages"]],
            [("alice@kez.lat", "out"), ("bob@kez.lat", "in")],
        )

    async def test_idempotency_key(self) -> None:
        first = await send(self.client, self.url, self.alice, "alice", "bob", idempotency_key="k1")
        again = await send(self.client, self.url, self.alice, "alice", "bob", idempotency_key="k1")
        self.assertEqual(first[0], 201)
        self.assertEqual(again, (200, first[1]))
        other = await send(self.client, self.url, self.carol, "carol", "bob", idempotency_key="k1")
        self.assertEqual(other[0], 201)
        _, page = await inbox(self.client, self.url, self.bob, "bob")
        self.assertEqual([m["seq"] for m in page["messages"]], [1, 2])

    async def test_unknown_recipient(self) -> None:
        raw, headers = message_request(self.alice, "alice", "nobody", {"x": 1})
        response = await self.client.post(f"{self.url}/v1/messages", data=raw, headers=headers)
        self.assertEqual(await self.error_code(response), (404, "unknown_recipient"))

    async def test_paging_and_acknowledge(self) -> None:
        for i in range(7):
            await send(self.client, self.url, self.alice, "alice", "bob", {"i": i})
        _, page = await inbox(self.client, self.url, self.bob, "bob", since=2, limit=3)
        self.assertEqual([m["seq"] for m in page["messages"]], [3, 4, 5])
        self.assertEqual(page["next"], 5)
        # "last": how far the inbox goes, so a restore can say "5 of 7"
        self.assertEqual(page["last"], 7)
        _, page = await inbox(self.client, self.url, self.bob, "bob", since=7)
        self.assertEqual(page, {"messages": [], "next": 7, "last": 7})
        auth = sign_request(self.bob, "DELETE", "/v1/inbox/bob", ["upto=4"], now())
        response = await self.client.delete(
            f"{self.url}/v1/inbox/bob", params={"upto": "4"}, headers={"X-KEZ-Auth": auth}
        )
        self.assertEqual((response.code, await json_of(response)), (200, {"deleted": 4}))
        _, page = await inbox(self.client, self.url, self.bob, "bob")
        self.assertEqual([m["seq"] for m in page["messages"]], [5, 6, 7])
        # seqs never go back, even after deletions
        _, body = await send(self.client, self.url, self.alice, "alice", "bob")
        self.assertEqual(body["seq"], 8)

    async def test_absurd_query_values(self) -> None:
        for params in (
            {"since": "-1"},
            {"since": "abc"},
            {"since": "1" * 30},
            {"since": "9223372036854775808"},
            {"limit": "0"},
            {"limit": "501"},
            {"limit": "x"},
            {"since": ["1", "2"]},
        ):
            since = params.get("since", "0")
            auth = (
                inbox_auth(self.bob, "bob", 0)
                if not isinstance(since, str)
                else (sign_request(self.bob, "GET", "/v1/inbox/bob", [f"since={since}"], now()))
            )
            response = await self.client.get(
                f"{self.url}/v1/inbox/bob", params=params, headers={"X-KEZ-Auth": auth}
            )
            self.assertEqual(await self.error_code(response), (400, "bad_request"), params)
        response = await self.client.delete(
            f"{self.url}/v1/inbox/bob",
            headers={"X-KEZ-Auth": sign_request(self.bob, "DELETE", "/v1/inbox/bob", [], now())},
        )
        self.assertEqual(await self.error_code(response), (400, "bad_request"))

    async def test_send_rate_limit(self) -> None:
        server = await start_server(self, send_limit=3)
        client = http_client(self)
        key, _ = await register(client, server.url, "dave")
        await register(client, server.url, "erin")
        # distinct messages: the same signed request again would be a replay
        codes = [
            (await send(client, server.url, key, "dave", "erin", {"n": i}))[0] for i in range(4)
        ]
        self.assertEqual(codes, [201, 201, 201, 429])
        raw, headers = message_request(key, "dave", "erin", {"x": 1})
        response = await client.post(f"{server.url}/v1/messages", data=raw, headers=headers)
        self.assertEqual(response.code, 429)
        self.assertTrue(int(response.headers.getRawHeaders("retry-after")[0]) >= 1)
        await response.content()


class AuthMatrixTests(RelayTestCase):
    """
    Every way a request can be mis-signed is refused with a 401, and a
    signature made for one endpoint is never accepted by another.
    """

    async def post(self, raw: bytes, headers: dict[str, str]) -> tuple[int, str]:
        response = await self.client.post(f"{self.url}/v1/messages", data=raw, headers=headers)
        return await self.error_code(response)

    async def test_send(self) -> None:
        raw, good = message_request(self.alice, "alice", "bob", {"x": 1})
        digest = body_digest(raw)
        def auth(key, fields=(digest,), offset=0, method="POST", path="/v1/messages"):
            return {**good, "X-KEZ-Auth": sign_request(key, method, path, list(fields),
                                                       now() + offset)}

        # each case is signed just before it is sent: a "61 s in the future"
        # signed early would drift back inside the window on a slow run
        cases = {
            "no sender": lambda: {k: v for k, v in good.items() if k != "X-KEZ-Sender"},
            "no auth": lambda: {k: v for k, v in good.items() if k != "X-KEZ-Auth"},
            "garbled auth": lambda: {**good, "X-KEZ-Auth": "yesterday:ff"},
            "wrong signer": lambda: auth(self.carol),
            "claims another sender": lambda: {**good, "X-KEZ-Sender": "carol"},
            "unknown sender": lambda: {**good, "X-KEZ-Sender": "nobody"},
            "stale": lambda: auth(self.alice, offset=-61),
            "future": lambda: auth(self.alice, offset=61),
            "other body": lambda: auth(self.alice, fields=[body_digest(b"{}")]),
            "inbox signature": lambda: {**good, "X-KEZ-Auth": inbox_auth(self.alice, "alice")},
            "manifest signature": lambda: auth(self.alice, method="PUT",
                                               path="/v1/manifests/alice"),
        }
        for name, headers in cases.items():
            status, _code = await self.post(raw, headers())
            self.assertEqual(status, 401, name)
        self.assertEqual(await self.post(raw, cases["stale"]()), (401, "stale_timestamp"))
        self.assertEqual(await self.post(raw, cases["wrong signer"]()), (401, "bad_signature"))
        _, page = await inbox(self.client, self.url, self.bob, "bob")
        self.assertEqual(page["messages"], [])

    async def test_inbox(self) -> None:
        async def get(handle: str, auth: str | None, since: int = 0) -> tuple[int, str]:
            headers = {} if auth is None else {"X-KEZ-Auth": auth}
            response = await self.client.get(
                f"{self.url}/v1/inbox/{handle}", params={"since": str(since)}, headers=headers
            )
            return await self.error_code(response)

        self.assertEqual(await get("bob", None), (401, "unauthorized"))
        self.assertEqual((await get("bob", inbox_auth(self.carol, "bob")))[0], 401)
        self.assertEqual((await get("bob", inbox_auth(self.bob, "bob", since=0), since=5))[0], 401)
        self.assertEqual((await get("carol", inbox_auth(self.bob, "bob")))[0], 401)
        self.assertEqual(
            await get("bob", inbox_auth(self.bob, "bob", ts=now() - 120)), (401, "stale_timestamp")
        )
        self.assertEqual((await get("bob", stream_auth(self.bob, "bob")))[0], 401)
        self.assertEqual((await get("nobody", inbox_auth(self.bob, "nobody")))[0], 404)
        delete_sig = sign_request(self.bob, "DELETE", "/v1/inbox/bob", ["upto=0"], now())
        self.assertEqual((await get("bob", delete_sig))[0], 401)

    async def test_acknowledge(self) -> None:
        await send(self.client, self.url, self.alice, "alice", "bob")

        async def delete(upto: str, auth: str) -> int:
            response = await self.client.delete(
                f"{self.url}/v1/inbox/bob", params={"upto": upto}, headers={"X-KEZ-Auth": auth}
            )
            await response.content()
            return response.code

        signed_for_0 = sign_request(self.bob, "DELETE", "/v1/inbox/bob", ["upto=0"], now())
        self.assertEqual(await delete("5", signed_for_0), 401)
        self.assertEqual(await delete("5", inbox_auth(self.bob, "bob")), 401)
        carol = sign_request(self.carol, "DELETE", "/v1/inbox/bob", ["upto=5"], now())
        self.assertEqual(await delete("5", carol), 401)
        _, page = await inbox(self.client, self.url, self.bob, "bob")
        self.assertEqual(len(page["messages"]), 1)

    async def test_stream(self) -> None:
        async def status(auth: str | None, handle: str = "bob") -> tuple[int, str]:
            query = "" if auth is None else f"?auth={auth}"
            response = await self.client.get(f"{self.url}/v1/inbox/{handle}/stream{query}")
            return await self.error_code(response)

        self.assertEqual(await status(None), (400, "bad_request"))
        self.assertEqual((await status("nonsense"))[0], 401)
        self.assertEqual((await status(stream_auth(self.carol, "bob")))[0], 401)
        self.assertEqual((await status(inbox_auth(self.bob, "bob")))[0], 401)
        self.assertEqual((await status(stream_auth(self.bob, "bob", ts=now() - 61)))[0], 401)
        self.assertEqual((await status(stream_auth(self.bob, "carol"), "carol"))[0], 401)


class StreamTests(RelayTestCase):
    async def test_framing(self) -> None:
        stream = await open_stream(self, self.url, self.bob, "bob")
        self.assertEqual(stream.response.code, 200)
        headers = stream.response.headers
        self.assertEqual(headers.getRawHeaders("content-type"), ["text/event-stream"])
        self.assertEqual(headers.getRawHeaders("cache-control"), ["no-cache"])
        await send(self.client, self.url, self.alice, "alice", "bob", {"hi": "there\nfriend"})
        await stream.wait_for(1)
        self.assertTrue(stream.raw.startswith(b"retry: 3000\n\n"))
        self.assertEqual(stream.parser.retry, 3000)
        [event] = stream.events
        self.assertEqual((event.id, event.event), ("1", "message"))
        self.assertNotIn("\n", event.data)
        item = json.loads(event.data)
        self.assertEqual(item["envelope"], {"hi": "there\nfriend"})
        self.assertEqual(item["from"], "alice@kez.lat")
        self.assertIn(b"id: 1\nevent: message\ndata: {", stream.raw)
        # pings: test_clocked.StreamClockTests

    async def test_resume_gets_exactly_what_was_missed(self) -> None:
        stream = await open_stream(self, self.url, self.bob, "bob")
        for i in range(3):
            await send(self.client, self.url, self.alice, "alice", "bob", {"i": i})
        await stream.wait_for(3)
        await stream.close()
        for i in range(3, 6):
            await send(self.client, self.url, self.alice, "alice", "bob", {"i": i})
        resumed = await open_stream(self, self.url, self.bob, "bob", last_event_id=3)
        await resumed.wait_for(3)
        await send(self.client, self.url, self.alice, "alice", "bob", {"i": 6})
        await resumed.wait_for(4)
        await deferred_sleep(0.1)
        self.assertEqual(resumed.seqs, [4, 5, 6, 7])
        self.assertEqual([i["envelope"]["i"] for i in resumed.items()], [3, 4, 5, 6])
        since = await open_stream(self, self.url, self.bob, "bob", since=5)
        await since.wait_for(2)
        self.assertEqual(since.seqs, [6, 7])

    async def test_resume_during_traffic_has_no_gap_and_no_duplicate(self) -> None:
        """
        Messages keep arriving while a resumed stream replays its backlog.
        """
        for i in range(50):
            await send(self.client, self.url, self.alice, "alice", "bob", {"i": i})
        sending = gatherResults(
            [
                ensureDeferred(send(self.client, self.url, self.carol, "carol", "bob", {"j": j}))
                for j in range(150)
            ]
        )
        streams = []
        for last in (0, 10, 49):
            streams.append(
                (last, await open_stream(self, self.url, self.bob, "bob", last_event_id=last))
            )
        await sending
        # a last message after the others: each stream writes in seq order,
        # so a duplicate or a stray would arrive before it (no sleep)
        await send(self.client, self.url, self.alice, "alice", "bob", {"last": True})
        for last, stream in streams:
            await stream.wait_for(201 - last)
        for last, stream in streams:
            self.assertEqual(stream.seqs, list(range(last + 1, 202)), f"from {last}")

    async def test_several_streams_and_isolation(self) -> None:
        tabs = [await open_stream(self, self.url, self.bob, "bob") for _ in range(3)]
        other = await open_stream(self, self.url, self.carol, "carol")
        for i in range(5):
            await send(self.client, self.url, self.alice, "alice", "bob", {"i": i})
        for tab in tabs:
            await tab.wait_for(5)
            self.assertEqual(tab.seqs, [1, 2, 3, 4, 5])
        # carol's own message, sent after bob's: had one of bob's reached
        # her stream, it would have arrived before this one (no sleep)
        await send(self.client, self.url, self.alice, "alice", "carol", {"for": "carol"})
        await other.wait_for(1)
        self.assertEqual([i["envelope"] for i in other.items()], [{"for": "carol"}])

    async def test_a_lost_announcement_arrives_within_a_tick(self) -> None:
        stream = await open_stream(self, self.url, self.bob, "bob")
        code, _ = await send(self.client, self.url, self.alice, "alice", "bob", {"n": 1})
        self.assertEqual(code, 201)
        # stored, never announced: as by an instance that died in between
        await self.server.parts.relay.store.add_message(NewMessage(
            "bob@kez.lat", "alice@kez.lat", self.alice.primary, '{"lost":true}', time.time()
        ))
        for _ in range(100):
            if len(stream.seqs) == 2:
                break
            await deferred_sleep(0.05)
        self.assertEqual(stream.seqs, [1, 2])
        self.assertEqual(stream.items()[1]["envelope"], {"lost": True})

    async def test_burst_of_a_thousand(self) -> None:
        stream = await open_stream(self, self.url, self.bob, "bob")
        # 50 in flight: a thousand sockets at once would exceed the test
        # process's own file-descriptor limit, not the server's
        gate = DeferredSemaphore(50)
        results = await gatherResults(
            [
                gate.run(
                    lambda i=i: ensureDeferred(
                        send(self.client, self.url, self.alice, "alice", "bob", {"i": i})
                    )
                )
                for i in range(1000)
            ]
        )
        self.assertEqual(sorted(body["seq"] for _, body in results), list(range(1, 1001)))
        await stream.wait_for(1000, timeout=30)
        self.assertEqual(stream.seqs, list(range(1, 1001)))
        seen = []
        since = 0
        while True:
            _, page = await inbox(self.client, self.url, self.bob, "bob", since=since)
            if not page["messages"]:
                break
            seen += [m["seq"] for m in page["messages"]]
            since = page["next"]
        self.assertEqual(seen, list(range(1, 1001)))
        # group commit: the burst shared transactions
        if getattr(self, "db_backend", "sqlite") == "sqlite":
            db = self.server.parts.db
            self.assertLess(db.commits, db.batched_writes)
        else:
            group = self.server.parts.relay.store.group
            self.assertLess(group.calls, group.batched)

    async def test_slow_consumer_is_disconnected_and_loses_nothing(self) -> None:
        hub = self.server.parts.hub
        hub.max_queued_bytes = 256 * 1024
        stream = await open_stream(self, self.url, self.bob, "bob")
        # stop reading: the kernel buffers fill, then Twisted pauses us
        stream._receiver.transport.pauseProducing()
        blob = "x" * 200_000
        for i in range(120):
            await send(self.client, self.url, self.alice, "alice", "bob", {"i": i, "pad": blob})
            if stream.closed:
                break
        stream._receiver.transport.resumeProducing()
        await stream.ended
        self.assertTrue(stream.closed)
        metrics = self.server.parts.metrics
        self.assertGreaterEqual(metrics.slow_consumer_disconnects._value.get(), 1)
        self.assertEqual(len(hub), 0)
        received = stream.seqs
        self.assertEqual(received, list(range(1, len(received) + 1)))
        resumed = await open_stream(
            self, self.url, self.bob, "bob", last_event_id=received[-1] if received else 0
        )
        sent = i + 1
        await resumed.wait_for(sent - len(received), timeout=30)
        self.assertEqual(received + resumed.seqs, list(range(1, sent + 1)))

    async def test_streams_end_cleanly_when_the_server_stops(self) -> None:
        stream = await open_stream(self, self.url, self.bob, "bob")
        await self.server.service.stopService()
        clean = await stream.ended
        self.assertTrue(clean)


class RetentionTests(RelayTestCase):
    async def test_age_and_quota(self) -> None:
        relay = self.server.parts.relay
        for i in range(4):
            await send(
                self.client, self.url, self.alice, "alice", "bob", {"i": i, "pad": "y" * 100}
            )
        await send(self.client, self.url, self.alice, "alice", "carol", {"pad": "z" * 1000})
        # carol's one message is over the cap by itself; bob keeps his newest
        # two; alice's copies of all five count against her own cap, and
        # the last (carol's large one) makes the whole of it over
        one = len(json.dumps({"i": 0, "pad": "y" * 100}, separators=(",", ":")))
        await relay.apply_retention(max_age=3600, max_bytes=2 * one + 10)
        _, page = await inbox(self.client, self.url, self.alice, "alice")
        self.assertEqual(page["messages"], [])
        _, page = await inbox(self.client, self.url, self.bob, "bob")
        self.assertEqual([m["seq"] for m in page["messages"]], [3, 4])
        _, page = await inbox(self.client, self.url, self.carol, "carol")
        self.assertEqual(page["messages"], [])
        await relay.apply_retention(max_age=-1, max_bytes=10**9)
        _, page = await inbox(self.client, self.url, self.bob, "bob")
        self.assertEqual(page["messages"], [])
        text = (await (await self.client.get(f"{self.url}/metrics")).content()).decode()
        self.assertIn('kezchat_retention_dropped_messages_total{reason="quota"} 8.0', text)
        self.assertIn('kezchat_retention_dropped_messages_total{reason="age"} 2.0', text)


class BadInputTests(RelayTestCase):
    async def test_bodies(self) -> None:
        bodies = [
            b"",
            b"{",
            b"[]",
            b"null",
            b'"x"',
            b"\xff\xfe",
            b'{"to": 5, "envelope": {}}',
            b'{"to": "bob"}',
            b'{"to": "bob", "envelope": []}',
            b'{"to": "bob", "envelope": "x"}',
            b'{"to": "bob", "envelope": {}, "idempotency_key": 5}',
            b'{"to": "bob", "envelope": {}, "idempotency_key": ""}',
            b'{"to": "bob", "envelope": {}, "idempotency_key": "' + b"k" * 65 + b'"}',
            b'{"to": "bob", "envelope": {"n": NaN}}',
            b"[" * 5000 + b"]" * 5000,
        ]
        for raw in bodies:
            auth = sign_request(self.alice, "POST", "/v1/messages", [body_digest(raw)], now())
            response = await self.client.post(
                f"{self.url}/v1/messages",
                data=raw,
                headers={"X-KEZ-Sender": "alice", "X-KEZ-Auth": auth},
            )
            self.assertEqual(await self.error_code(response), (400, "bad_request"), raw[:40])
        _, page = await inbox(self.client, self.url, self.bob, "bob")
        self.assertEqual(page["messages"], [])

    async def test_oversize(self) -> None:
        raw, headers = message_request(self.alice, "alice", "bob", {"pad": "p" * 262_200})
        self.assertGreater(len(raw), 256 * 1024)
        response = await self.client.post(f"{self.url}/v1/messages", data=raw, headers=headers)
        self.assertEqual(await self.error_code(response), (413, "payload_too_large"))
        raw, headers = message_request(self.alice, "alice", "bob", {"pad": "p" * 250_000})
        response = await self.client.post(f"{self.url}/v1/messages", data=raw, headers=headers)
        self.assertEqual(response.code, 201)
        await response.content()

    async def test_huge_chunked_body_is_refused_unbuffered(self) -> None:
        """
        A chunked upload without a length is cut off at the cap, not read
        to its end.
        """
        producer = EndlessBody(10_000_000)
        _raw, headers = message_request(self.alice, "alice", "bob", {})
        try:
            response = await self.client.post(
                f"{self.url}/v1/messages", data=producer, headers=headers
            )
        except Exception:
            # the server may close before the client has read the 413
            pass
        else:
            self.assertEqual(await self.error_code(response), (413, "payload_too_large"))
        self.assertLess(producer.sent, 10_000_000)


@implementer(IBodyProducer)
class EndlessBody:
    """
    A body of unknown length (sent chunked) that goes on for C{total} bytes.
    """

    length = UNKNOWN_LENGTH

    def __init__(self, total: int) -> None:
        self.total = total
        self.sent = 0
        self._stopped = False

    async def _produce(self, consumer) -> None:
        chunk = b"a" * 65536
        while self.sent < self.total and not self._stopped:
            consumer.write(chunk)
            self.sent += len(chunk)
            await deferred_sleep(0)

    def startProducing(self, consumer):
        return ensureDeferred(self._produce(consumer))

    def stopProducing(self) -> None:
        self._stopped = True

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass


# the same relay tests on PostgreSQL (auth and input checks do not touch
# the store, so they run once)
on_postgresql(globals(), SendAndReadTests, StreamTests, RetentionTests)
