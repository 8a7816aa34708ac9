"""
L{kezchat.relay.sendrequest}: what each transport hands the relay, parsed
once.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from kezchat.errors import KezError
from kezchat.protocol.auth import AuthValue
from kezchat.relay.replay import implicit_key
from kezchat.relay.sendrequest import (
    MAX_MESSAGE_BYTES,
    SendRequest,
    from_body,
    from_published,
)

KEY = "ed25519:" + "b" * 64
SENDER = "ed25519:" + "a" * 64


class FromBodyTests(SynchronousTestCase):
    def test_envelope_kept_as_written_on_one_line(self) -> None:
        raw = b'{"to": "bob", "envelope": {\n "z": 1.0, "a": "\\u00e9"\n}, "idempotency_key": "k"}'
        self.assertEqual(
            from_body(raw), SendRequest("bob", '{"z":1.0,"a":"\\u00e9"}', "k", None)
        )

    def test_signature_is_the_key_when_none_is_given(self) -> None:
        auth = AuthValue(1, "f" * 128)
        request = from_body(b'{"to": "bob", "envelope": {"to": "%s"}}' % KEY.encode(), auth)
        self.assertEqual(request.idempotency_key, implicit_key(auth))
        self.assertEqual(request.envelope_to, KEY)
        self.assertFalse(request.to_key)
        self.assertIsNone(request.sender_key)  # the relay authenticates it

    def test_bad_bodies(self) -> None:
        for raw in [
            b"[]", b"{", b'{"to": 1, "envelope": {}}', b'{"to": "bob", "envelope": []}',
            b'{"to": "bob", "envelope": {}, "idempotency_key": ""}',
            b'{"to": "bob", "envelope": {}, "idempotency_key": "' + b"k" * 65 + b'"}',
            b'{"to": "bob", "to": "carol", "envelope": {}}',
        ]:
            with self.assertRaises(KezError) as caught:
                from_body(raw)
            self.assertEqual(caught.exception.code, "bad_request", raw)


class FromPublishedTests(SynchronousTestCase):
    def test_recipient_by_key(self) -> None:
        request = from_published(KEY, SENDER, b' {"v": 1}\r\n', "nats:e:1")
        self.assertEqual(
            request, SendRequest(KEY, '{"v": 1}', "nats:e:1", to_key=True, sender_key=SENDER)
        )

    def test_refused(self) -> None:
        for payload, code in [
            (b"[1]", "bad_request"),
            (b'{"a": NaN}', "bad_request"),
            (b"\xff", "bad_request"),
            (b'{"x": "' + b"y" * MAX_MESSAGE_BYTES + b'"}', "payload_too_large"),
        ]:
            with self.assertRaises(KezError) as caught:
                from_published(KEY, SENDER, payload, "k")
            self.assertEqual(caught.exception.code, code)
