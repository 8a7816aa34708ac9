"""
NATS ingest held to the rules of HTTP, against a real nats-server: strict
JSON, one bad message never stalls the rest, no trust in a client's
C{Kez-Stored} header, the per-sender send limit, and the broker's own
bounds (stream bytes, max_payload).
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Any

import nats.errors

from kezchat.protocol.subjects import STREAM, inbox_subject
from tests.relaysupport import inbox_auth
from tests.support import deferred_sleep, http_client, register, start_server
from tests.test_nats_bridge import BridgeTestCase, eventually, nats_


class IngestTests(BridgeTestCase):
    async def setup_chat(self, **overrides: Any) -> None:
        self.server = await start_server(self, replace(self.config(), **overrides))
        await eventually(lambda: self.server.parts.http.nats_status() == "connected")
        self.client = http_client(self)
        self.alice, _ = await register(self.client, self.server.url, "alice")
        self.bob, _ = await register(self.client, self.server.url, "bob")
        self.carol, _ = await register(self.client, self.server.url, "carol")

    async def bob_inbox(self) -> tuple[list[dict], bytes]:
        response = await self.client.get(
            f"{self.server.url}/v1/inbox/bob",
            params={"since": "0", "limit": "500"},
            headers={"X-KEZ-Auth": inbox_auth(self.bob, "bob", 0)},
        )
        raw = await response.content()
        # strict: a stored NaN would make the page invalid JSON
        page = json.loads(raw, parse_constant=lambda name: self.fail(f"{name} served"))
        return page["messages"], raw

    def dropped(self, reason: str) -> float:
        counter = self.server.parts.metrics.nats_ingest_dropped.labels(reason)
        return counter._value.get()

    async def test_poison_among_good_messages(self) -> None:
        """
        NaN, a lone surrogate and a duplicate key, published in one burst
        between good messages: each bad one is refused on its own, every
        good one is stored (numbers as written), and a client's own
        C{Kez-Stored} header does not keep its message from being stored.
        """
        await self.setup_chat()
        nc = await nats_(self.connect_user(self.alice))
        js = nc.jetstream()
        subject = inbox_subject(self.bob.public_hex, self.alice.public_hex)
        payloads = [
            (b'{"n":1E15,"good":1}', None),
            (b'{"x": NaN}', None),
            (b'{"s": "\\ud800"}', None),
            (b'{"a": 1, "a": 2}', None),
            (b'{"good":2}', {"Kez-Stored": "1"}),
            (b'{"good":3}', {"Kez-Stored": "2", "Kez-Stored-Mac": "00" * 32}),
            (b'{"good":4}', None),
        ]
        for data, headers in payloads:
            await nats_(js.publish(subject, data, headers=headers))

        async def settled() -> bool:
            messages, _ = await self.bob_inbox()
            return len(messages) >= 4

        for _ in range(200):
            if await settled():
                break
            await deferred_sleep(0.05)
        messages, raw = await self.bob_inbox()
        self.assertEqual([m["envelope"].get("good") for m in messages], [1, 2, 3, 4])
        self.assertIn(b'"envelope":{"n":1E15,"good":1}', raw)
        self.assertTrue(all(m["from"] == "alice@kez.lat" for m in messages))
        self.assertEqual(self.dropped("bad_json"), 3)
        self.assertFalse(any(isinstance(v, float) and math.isnan(v) for m in messages
                             for v in m["envelope"].values()))

    async def test_flood_from_one_client_stops_at_the_send_limit(self) -> None:
        """
        A native client publishing far past the per-sender limit gets only
        the limit stored; another client's messages still flow.
        """
        await self.setup_chat(send_limit=5)
        flooder = await nats_(self.connect_user(self.alice))
        other = await nats_(self.connect_user(self.carol))
        to_bob_from_alice = inbox_subject(self.bob.public_hex, self.alice.public_hex)
        to_bob_from_carol = inbox_subject(self.bob.public_hex, self.carol.public_hex)
        for i in range(40):
            await nats_(flooder.publish(to_bob_from_alice, b'{"flood":%d}' % i))
            if i % 10 == 0:
                await nats_(other.publish(to_bob_from_carol, b'{"other":%d}' % i))
        await nats_(flooder.flush())
        await nats_(other.flush())
        await eventually(lambda: self.dropped("limited") >= 35, timeout=20)
        messages, _ = await self.bob_inbox()
        senders = [m["from"] for m in messages]
        self.assertEqual(senders.count("alice@kez.lat"), 5)
        self.assertEqual(senders.count("carol@kez.lat"), 4)
        self.assertEqual(self.dropped("limited"), 35)

    async def test_broker_bounds(self) -> None:
        """
        KEZ_INBOX is created with a total byte bound, and nats-server
        refuses a payload past max_payload (256 KiB + room for headers).
        """
        await self.setup_chat(nats_stream_max_bytes=64 * 1024 * 1024)
        nc = await nats_(self.connect_user(self.alice))
        service = await nats_(self.connect_service())
        info = await nats_(service.jetstream().stream_info(STREAM))
        self.assertEqual(info.config.max_bytes, 64 * 1024 * 1024)
        self.assertEqual(nc.max_payload, 270336)
        subject = inbox_subject(self.bob.public_hex, self.alice.public_hex)
        with self.assertRaises(nats.errors.MaxPayloadError):
            await nats_(nc.publish(subject, b"x" * 300_000))
