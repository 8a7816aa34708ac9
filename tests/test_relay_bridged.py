"""
L{Relay.accept_bridged}: messages native clients publish on NATS, read by
the ingest into L{SendRequest}s (L{from_published}, whose own refusals
C{test_sendrequest} covers), go through the relay's own rules, the ones
C{POST /v1/messages} obeys. The NATS wire itself is covered by
C{test_nats_ingest} and C{test_nats_bridge}.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from kezchat.errors import KezError
from kezchat.relay.broker import Origin
from kezchat.relay.sendrequest import SendRequest, from_body, from_published
from kezchat.storage.interfaces import Accepted, StoredMessage
from tests.support import http_client, register, start_server


class AcceptBridgedTests(TestCase):
    timeout = 30

    async def setUp(self) -> None:
        self.server = await start_server(self, send_limit=3)
        client = http_client(self)
        self.alice, _ = await register(client, self.server.url, "alice")
        self.bob, _ = await register(client, self.server.url, "bob")
        self.relay = self.server.parts.relay
        self.published: list[tuple[StoredMessage, Origin]] = []
        broker = self.relay.broker
        publish = broker.publish

        def spy(message: StoredMessage, *, origin: Origin = Origin.HTTP) -> None:
            self.published.append((message, origin))
            publish(message, origin=origin)

        broker.publish = spy  # type: ignore[method-assign]

    def bridged(
        self, payload: bytes, key: str, sender: str | None = None, to: str | None = None
    ) -> SendRequest:
        return from_published(
            to or self.bob.primary, sender or self.alice.primary, payload, key
        )

    async def test_same_rules_one_by_one(self) -> None:
        """
        In one batch: good messages are stored and announced as from NATS;
        each bad one is refused with the code HTTP would give, alone.
        """
        nobody = "ed25519:" + "0" * 64
        outcomes = await self.relay.accept_bridged([
            self.bridged(b'{"n": 1E15}', "k1"),
            self.bridged(b"{}", "k5", sender=nobody),
            self.bridged(b"{}", "k6", to=nobody),
            self.bridged(b'{"n": 2}', "k7"),
        ])
        codes = [o.code if isinstance(o, KezError) else None for o in outcomes]
        self.assertEqual(codes, [None, "unknown_recipient", "unknown_recipient", None])
        stored = [o for o in outcomes if isinstance(o, Accepted)]
        self.assertEqual([a.seq for a in stored], [1, 2])
        # each with the sender's copy, announced right after it
        self.assertEqual(
            [(m.envelope, m.direction, origin) for m, origin in self.published],
            [
                ('{"n": 1E15}', "in", Origin.NATS),
                ('{"n": 1E15}', "out", Origin.NATS),
                ('{"n": 2}', "in", Origin.NATS),
                ('{"n": 2}', "out", Origin.NATS),
            ],
        )

    async def test_redelivery_is_stored_once(self) -> None:
        [first] = await self.relay.accept_bridged([self.bridged(b"{}", "nats:e:7")])
        [again] = await self.relay.accept_bridged([self.bridged(b"{}", "nats:e:7")])
        assert isinstance(first, Accepted) and isinstance(again, Accepted)
        self.assertEqual((again.seq, again.duplicate), (first.seq, True))
        # the message and the sender's copy, once each
        self.assertEqual([m.direction for m, _ in self.published], ["in", "out"])

    async def test_send_limit_shared_with_http(self) -> None:
        outcomes = await self.relay.accept_bridged(
            [self.bridged(b"{}", f"k{i}") for i in range(4)]
        )
        codes = [o.code if isinstance(o, KezError) else None for o in outcomes]
        self.assertEqual(codes, [None, None, None, "rate_limited"])

    async def test_sender_named_by_the_transport(self) -> None:
        """
        A request whose sender the relay has not authenticated and no
        transport vouched for (one read off an HTTP body) is no bridged
        message: the batch is refused whole, nothing stored.
        """
        unvouched = from_body(b'{"to": "bob", "envelope": {}}')
        with self.assertRaises(ValueError):
            await self.relay.accept_bridged([self.bridged(b"{}", "k1"), unvouched])
        self.assertEqual(self.published, [])
