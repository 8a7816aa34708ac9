"""
The auth-callout responder and the permissions it grants, against a real
nats-server started from C{deploy/nats.conf}, over TCP and WebSocket.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import nats
import nats.errors
from nats.js.api import ConsumerConfig

from kezchat.identity.keys import KeyPair
from kezchat.natsbridge import jwt
from kezchat.natsbridge.callout import CALLOUT_SUBJECT, CalloutResponder, CalloutSubscription
from kezchat.natsbridge.keys import ACCOUNT, SERVER, USER, NKey
from kezchat.natsbridge.subjects import (
    STREAM,
    consumer_filter,
    consumer_name,
    inbox_subject,
)
from tests.natssupport import NatsTestCase, asyncio_test, user_seed


class Registry:
    """
    The callout's whole view of the registry: primary → record or None.
    """

    def __init__(self, *keypairs: KeyPair) -> None:
        self.records = {
            kp.primary: {"fqhn": f"user{i}@kez.test", "primary": kp.primary}
            for i, kp in enumerate(keypairs)
        }
        self.calls: list[str] = []

    async def lookup(self, primary: str) -> dict[str, str] | None:
        self.calls.append(primary)
        return self.records.get(primary)


class CalloutMixin:
    """
    Start the responder on the chat-server's connection.
    """

    async def start_callout(self, *keypairs: KeyPair, **kwargs: Any) -> Registry:
        registry = Registry(*keypairs)
        self.responder = CalloutResponder(self.nats.issuer, registry.lookup, **kwargs)
        self.service = await self.connect_service()
        self.callout = CalloutSubscription(self.responder)
        await self.callout.start(self.service)
        await self.service.flush()
        return registry


class CalloutTests(CalloutMixin, NatsTestCase):
    @asyncio_test
    async def test_registered_user_admitted(self) -> None:
        alice = KeyPair.generate()
        registry = await self.start_callout(alice)
        nc = await self.connect_user(alice)
        self.assertTrue(nc.is_connected)
        self.assertEqual(registry.calls, [alice.primary])

    @asyncio_test
    async def test_unknown_key_refused(self) -> None:
        await self.start_callout(KeyPair.generate())
        with self.assertRaises(nats.errors.Error):
            await self.connect_user(KeyPair.generate())

    @asyncio_test
    async def test_seed_not_matching_nkey_refused(self) -> None:
        alice, mallory = KeyPair.generate(), KeyPair.generate()
        await self.start_callout(alice)

        # Claim alice's nkey but sign the nonce with mallory's key.
        async def forge(nonce: str) -> bytes:
            raise AssertionError

        nc_kwargs = {
            "signature_cb": lambda nonce: __import__("base64").b64encode(
                NKey(USER, mallory.seed).sign(nonce.encode())
            ),
            "user_jwt_cb": None,
        }
        del forge, nc_kwargs
