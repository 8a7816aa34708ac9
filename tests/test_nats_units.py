"""
The NATS pieces that need no broker: subjects and permissions, the lookup
cache, the stored-message announcement format, the broker without NATS.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from twisted.trial import unittest

from kezchat.natsbridge.bridge import NatsBroker, StoredMarker, decode_stored, encode_stored
from kezchat.protocol.subjects import (
    consumer_filter,
    consumer_name,
    inbox_subject,
    parse_inbox_subject,
    reply_prefix,
    user_permissions,
)
from kezchat.storage.interfaces import StoredMessage

A, B = "a" * 64, "b" * 64


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    """
    Drive a coroutine that never suspends (its awaitables are plain values).
    """
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    raise AssertionError("the coroutine suspended")


class SubjectTests(unittest.TestCase):
    def test_inbox_round_trip(self) -> None:
        self.assertEqual(inbox_subject(B, A), f"kez.inbox.{B}.{A}")
        self.assertEqual(parse_inbox_subject(inbox_subject(B, A)), (B, A))

    def test_parse_rejects(self) -> None:
        for subject in [
            f"kez.inbox.{B}",
            f"kez.inbox.{B}.{A}.x",
            f"kez.inbox.{B.upper()}.{A}",
            f"kez.inboxx.{B}.{A}",
            "kez.inbox.*.>",
        ]:
            self.assertIsNone(parse_inbox_subject(subject), subject)

    def test_names_need_hex(self) -> None:
        for bad in ["", "A" * 64, "a" * 63, "a.b", "*", ">"]:
            self.assertRaises(ValueError, inbox_subject, bad, A)
            self.assertRaises(ValueError, consumer_name, bad)
            self.assertRaises(ValueError, reply_prefix, bad)

    def test_permissions(self) -> None:
        """
        Exactly SPEC §5: nothing shared, nothing of anyone else's.
        """
        perms = user_permissions(A)
        self.assertEqual(perms["sub"]["allow"], [consumer_filter(A), f"_INBOX_{A}.>"])
        publish = perms["pub"]["allow"]
        self.assertIn(f"kez.inbox.*.{A}", publish)
        self.assertIn(f"$JS.API.CONSUMER.CREATE.KEZ_INBOX.inbox_{A}.kez.inbox.{A}.>", publish)
        for subject in publish[1:]:
            self.assertIn(f"inbox_{A}", subject)
        self.assertFalse(any("DURABLE" in s or s.startswith("_INBOX.") for s in publish))
        self.assertEqual(set(perms), {"pub", "sub"})


class BrokerTests(unittest.TestCase):
    message = StoredMessage(
        recipient="bob@kez.lat",
        seq=7,
        sender="alice@kez.lat",
        sender_primary="ed25519:" + A,
        envelope='{"v":1,"t":"é"}',
        created_at=1.5,
    )

    def test_announcement_round_trip(self) -> None:
        self.assertEqual(decode_stored(encode_stored(self.message)), self.message)

    def test_announcement_garbage(self) -> None:
        for data in [b"", b"{}", b"[]", b'{"seq": "x"}']:
            self.assertRaises((ValueError, KeyError, TypeError), decode_stored, data)

    def test_local_delivery_without_nats(self) -> None:
        """
        Before (or without) a NATS connection the broker is the local one.
        """
        broker = NatsBroker(lambda fqhn: "ed25519:" + A, StoredMarker(b"seed"))
        got: list[StoredMessage] = []
        sub = broker.subscribe("bob@kez.lat", got.append)
        broker.publish(self.message)
        broker.publish(StoredMessage(**{**self.message.__dict__, "recipient": "carol@kez.lat"}))
        self.assertEqual(got, [self.message])
        sub.cancel()
        broker.publish(self.message)
        self.assertEqual(len(got), 1)
        self.assertEqual(broker.subscriber_count(), 0)
