"""
The auth-callout responder and the permissions it grants, against a real
nats-server started from C{deploy/nats.conf}, with real nats-py clients,
over TCP and over the WebSocket listener.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import nats.errors
from nats.js.api import AckPolicy, ConsumerConfig

from kezchat.compat.aio import deferred_from_coroutine
from kezchat.identity.keys import KeyPair
from kezchat.identity.nkeys import primary_to_user_nkey
from kezchat.natsbridge import jwt
from kezchat.natsbridge.callout import (
    CALLOUT_SUBJECT,
    CalloutResponder,
    CalloutSubscription,
    FunctionLookup,
)
from kezchat.natsbridge.flush import flush
from kezchat.natsbridge.stream import ensure_inbox_stream
from kezchat.protocol.natskeys import ACCOUNT, SERVER, USER, NKey
from kezchat.protocol.subjects import (
    STREAM,
    consumer_filter,
    consumer_name,
    inbox_subject,
    user_permissions,
)
from kezchat.testing.requirements import missing
from tests.natssupport import NatsTestCase, asyncio_test


class Registry:
    """
    The callout's whole view of the registry (a L{callout.Lookup}):
    primary → record or None, from a cache (empty unless a test fills it)
    or fetched.
    """

    def __init__(self, *keypairs: KeyPair) -> None:
        self.records = {
            kp.primary: {"fqhn": f"user{i}@kez.test", "primary": kp.primary}
            for i, kp in enumerate(keypairs)
        }
        self.cache: dict[str, dict[str, str]] = {}
        self.calls: list[str] = []

    def cached(self, primary: str) -> dict[str, str] | None:
        return self.cache.get(primary)

    async def fetch(self, primary: str) -> dict[str, str] | None:
        self.calls.append(primary)
        return self.records.get(primary)


class CalloutTestCase(NatsTestCase):
    """
    A nats-server plus the responder on the chat-server's connection.
    """

    url: str | None = None  # None: the TCP listener

    def setUp(self) -> Any:
        if self.url == "ws":
            try:
                import aiohttp  # noqa: F401
            except ImportError:
                raise missing(
                    "nats-py speaks ws:// through aiohttp: pip install 'nats-py[aiohttp]'"
                ) from None
        return super().setUp()

    @property
    def client_url(self) -> str:
        return self.nats.ws_url if self.url == "ws" else self.nats.url

    async def start_callout(self, *keypairs: KeyPair, **kwargs: Any) -> Registry:
        registry = Registry(*keypairs)
        self.responder = CalloutResponder(self.nats.issuer, registry, **kwargs)
        self.service = await self.connect_service()
        self.callout = CalloutSubscription(self.responder)
        await self.callout.start(self.service)
        self.addCleanup(lambda: deferred_from_coroutine(self.callout.stop()))
        await self.service.flush()
        return registry

    async def user(self, keypair: KeyPair, **kwargs: Any) -> Any:
        return await self.connect_user(keypair, url=self.client_url, **kwargs)

    async def raw_connect(self, nkey: str, sign: Any) -> str:
        """
        Speak the NATS protocol by hand: read INFO, send CONNECT with the
        given nkey and C{sign(nonce)}, and return the server's verdict line.
        """
        reader, writer = await asyncio.open_connection("127.0.0.1", self.nats.port)
        try:
            info = json.loads((await reader.readline()).split(b" ", 1)[1])
            connect = {
                "verbose": False,
                "pedantic": False,
                "protocol": 1,
                "nkey": nkey,
                "sig": sign(info["nonce"].encode()),
            }
            writer.write(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
            await writer.drain()
            return (await asyncio.wait_for(reader.readline(), 5)).decode().strip()
        finally:
            writer.close()


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


class CalloutTests(CalloutTestCase):
    @asyncio_test
    async def test_registered_user_admitted(self) -> None:
        """
        A registered key logs in through the callout; the registry was asked.
        """
        alice = KeyPair.generate()
        registry = await self.start_callout(alice)
        nc = await self.user(alice)
        self.assertTrue(nc.is_connected)
        self.assertEqual(registry.calls, [alice.primary])

    @asyncio_test
    async def test_lookup_answered_at_once(self) -> None:
        """
        A cached record is used at once, without a fetch: admitted; an
        uncached key is fetched (and refused as unknown); a cache that
        fails refuses as "registry unavailable" with the failure logged;
        the responder keeps serving.
        """
        alice, mallory = KeyPair.generate(), KeyPair.generate()
        registry = await self.start_callout(alice)
        registry.cache = dict(registry.records)
        nc = await self.user(alice)
        self.assertTrue(nc.is_connected)
        self.assertEqual(registry.calls, [])
        with self.assertRaises(nats.errors.Error):
            await self.user(mallory)
        self.assertEqual(registry.calls, [mallory.primary])

        def broken(primary: str) -> None:
            raise OSError("database is locked")

        self.responder.lookup = FunctionLookup(broken, registry.fetch)
        with self.assertRaises(nats.errors.Error):
            await self.user(alice)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.responder.lookup = registry
        self.assertTrue((await self.user(alice)).is_connected)

    @asyncio_test
    async def test_rendered_claims_match_encoded_ones(self) -> None:
        """
        The responder renders its JWTs from parts; they carry exactly the
        claims L{jwt.encode} would make from a dict.
        """
        alice = KeyPair.generate()
        await self.start_callout(alice)
        responder = self.responder
        user_nkey = NKey.generate(USER).public
        server = NKey.generate(SERVER).public
        name = 'alice "the first" ü@kez.test'
        token = responder._user_jwt(user_nkey, alice.primary, name, 1_700_000_000.5)
        rendered = jwt.decode(token, [ACCOUNT], "user", now=1_700_000_000)
        expected = jwt.decode(
            jwt.encode(
                {
                    "sub": user_nkey,
                    "aud": "KEZ",
                    "exp": 1_700_000_000 + responder.ttl,
                    "nats": {
                        "type": "user", "subs": -1, "data": -1, "payload": -1,
                        **user_permissions(alice.primary.removeprefix("ed25519:")),
                    },
                    "name": name,
                },
                self.nats.issuer,
                now=1_700_000_000,
            ),
            [ACCOUNT],
            "user",
            now=1_700_000_000,
        )
        self.assertEqual(rendered, expected)
        reply = responder._response(user_nkey, server, '"error":"no \\"way\\""', 1_700_000_000)
        claims = jwt.decode(reply, [ACCOUNT], "authorization_response", now=1_700_000_000)
        self.assertEqual(claims["nats"]["error"], 'no "way"')
        self.assertEqual((claims["sub"], claims["aud"]), (user_nkey, server))

    @asyncio_test
    async def test_unknown_key_refused(self) -> None:
        await self.start_callout(KeyPair.generate())
        with self.assertRaises(nats.errors.Error) as caught:
            await self.user(KeyPair.generate())
        self.assertIn("authorization violation", str(caught.exception).lower())

    @asyncio_test
    async def test_lookup_failure_refuses(self) -> None:
        """
        A registry that fails refuses the client; the responder survives.
        """
        alice = KeyPair.generate()
        registry = await self.start_callout(alice)

        async def broken(primary: str) -> None:
            raise OSError("database is locked")

        self.responder.lookup = FunctionLookup(registry.cached, broken)
        with self.assertRaises(nats.errors.Error):
            await self.user(alice)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.responder.lookup = registry
        nc = await self.user(alice)
        self.assertTrue(nc.is_connected)

    @asyncio_test
    async def test_cached_and_fetched_lookups(self) -> None:
        """
        A record may come from the cache (never fetched then) or from the
        fetch.
        """
        alice = KeyPair.generate()
        await self.start_callout()
        record = {"fqhn": "alice@kez.test"}

        async def never(primary: str) -> None:
            raise AssertionError("a cached record was fetched")

        async def fetched(primary: str) -> dict[str, str]:
            return record

        self.responder.lookup = FunctionLookup(lambda p: record, never)
        self.assertTrue((await self.user(alice)).is_connected)
        self.responder.lookup = FunctionLookup(lambda p: None, fetched)
        self.assertTrue((await self.user(alice)).is_connected)

    @asyncio_test
    async def test_only_the_server_asks(self) -> None:
        """
        nats-server refuses client publications on the callout subject, even
        from the chat-server's own user: nobody can feed the responder
        forged requests through the broker.
        """
        await self.start_callout()
        errors: list[Exception] = []

        async def on_error(e: Exception) -> None:
            errors.append(e)

        forger = await self.connect_service(error_cb=on_error)
        await forger.publish(CALLOUT_SUBJECT, b"forged")
        for _ in range(250):
            if errors:
                break
            await asyncio.sleep(0.02)
        self.assertIn("permissions violation", str(errors).lower())

    @asyncio_test
    async def test_malformed_requests_answered(self) -> None:
        """
        Whatever the responder is handed, it answers: an empty payload (a
        refusal nats-server understands) when the request cannot even be
        addressed, an error JWT when it can. It keeps serving afterwards.
        """
        alice = KeyPair.generate()
        await self.start_callout(alice)
        server = NKey.generate(SERVER)
        bogus = [
            b"",
            b"not a jwt",
            b"a.b.c",
            b"\xff" * 10,
            jwt.encode({"sub": "x", "nats": {"type": "user"}}, server).encode(),
            jwt.encode(
                {
                    "sub": "x",
                    "aud": "nats-authorization-request",
                    "nats": {"type": "authorization_request", "user_nkey": "nope"},
                },
                server,
            ).encode(),
        ]
        for payload in bogus:
            self.assertEqual(await self.responder.respond(payload), b"")
        # A well-formed request for a client without a key: an error JWT.
        user_nkey = NKey.generate(USER).public
        request = jwt.encode(
            {
                "sub": self.nats.issuer.public,
                "aud": "nats-authorization-request",
                "nats": {
                    "type": "authorization_request",
                    "user_nkey": user_nkey,
                    "server_id": {"id": server.public, "name": "x", "host": "x"},
                    "client_info": {},
                    "connect_opts": {"user": "bob", "pass": "secret"},
                },
            },
            server,
        )
        reply = await self.responder.respond(request.encode())
        claims = jwt.decode(reply, [ACCOUNT], "authorization_response")
        self.assertEqual(claims["sub"], user_nkey)
        self.assertEqual(claims["aud"], server.public)
        self.assertEqual(claims["iss"], self.nats.issuer.public)
        self.assertIn("error", claims["nats"])
        self.assertNotIn("jwt", claims["nats"])
        # Sections of the wrong type: still an error JWT.
        for opts, info in [([1], {}), ({}, "x"), (None, None)]:
            odd = jwt.decode(request, [SERVER], "authorization_request")
            odd["nats"].update(connect_opts=opts, client_info=info)
            reply = await self.responder.respond(jwt.encode(odd, server).encode())
            claims = jwt.decode(reply, [ACCOUNT], "authorization_response")
            self.assertEqual(claims["nats"]["error"], "malformed request")
        self.assertTrue((await self.user(alice)).is_connected)

    @asyncio_test
    async def test_user_jwt_expiry(self) -> None:
        """
        The user JWT carries an expiry; at expiry nats-server drops the
        client (which would come back through the callout).
        """
        alice = KeyPair.generate()
        await self.start_callout(alice, ttl=2)
        disconnected = asyncio.Event()

        async def on_disconnect() -> None:
            disconnected.set()

        await self.user(alice, disconnected_cb=on_disconnect)
        await asyncio.wait_for(disconnected.wait(), 5)


class ForgeryTests(CalloutTestCase):
    """
    Forged logins, spoken at the protocol level: nats-py would not sign
    wrongly if asked to.
    """

    @asyncio_test
    async def test_refusal_is_immediate(self) -> None:
        """
        A refused client hears so at once, not after the auth timeout.
        """
        await self.start_callout()
        mallory = KeyPair.generate()
        loop = asyncio.get_running_loop()
        started = loop.time()
        verdict = await self.raw_connect(
            primary_to_user_nkey(mallory.primary), lambda n: b64(NKey(0, mallory.seed).sign(n))
        )
        self.assertIn("Authorization Violation", verdict)
        self.assertLess(loop.time() - started, 1.5)  # nats-server's auth timeout is 2 s

    @asyncio_test
    async def test_registered_raw_connect(self) -> None:
        """
        The raw-protocol helper admits a correctly signed registered key, so
        the refusals below are about the forgery and nothing else.
        """
        alice = KeyPair.generate()
        await self.start_callout(alice)
        verdict = await self.raw_connect(
            primary_to_user_nkey(alice.primary), lambda n: b64(NKey(0, alice.seed).sign(n))
        )
        self.assertEqual(verdict, "PONG")

    @asyncio_test
    async def test_tampered_signature_refused(self) -> None:
        alice = KeyPair.generate()
        await self.start_callout(alice)

        def tampered(nonce: bytes) -> str:
            sig = bytearray(NKey(0, alice.seed).sign(nonce))
            sig[0] ^= 1
            return b64(bytes(sig))

        verdict = await self.raw_connect(primary_to_user_nkey(alice.primary), tampered)
        self.assertIn("Authorization Violation", verdict)

    @asyncio_test
    async def test_seed_not_matching_nkey_refused(self) -> None:
        """
        Claiming a registered key while holding another is refused.
        """
        alice, mallory = KeyPair.generate(), KeyPair.generate()
        await self.start_callout(alice)
        verdict = await self.raw_connect(
            primary_to_user_nkey(alice.primary), lambda n: b64(NKey(0, mallory.seed).sign(n))
        )
        self.assertIn("Authorization Violation", verdict)

    @asyncio_test
    async def test_garbage_signature_refused(self) -> None:
        alice = KeyPair.generate()
        await self.start_callout(alice)
        verdict = await self.raw_connect(primary_to_user_nkey(alice.primary), lambda n: "!!")
        self.assertIn("Authorization Violation", verdict)


class PermissionTests(CalloutTestCase):
    """
    The broker, not the chat-server, enforces who may publish and read what.
    """

    async def setup_users(self) -> None:
        self.alice, self.bob, self.carol = (KeyPair.generate() for _ in range(3))
        await self.start_callout(self.alice, self.bob, self.carol)
        self.a = await self.user(self.alice)
        self.b = await self.user(self.bob)

    async def inbox_of(self, nc: Any, keypair: KeyPair) -> asyncio.Queue[Any]:
        """
        Subscribe C{nc} to C{keypair}'s inbox, and return once nats-server
        has the subscription (nats-py's own flush can return before the
        SUB has even left: see L{kezchat.natsbridge.flush}).
        """
        queue: asyncio.Queue[Any] = asyncio.Queue()
        await nc.subscribe(consumer_filter(keypair.public_hex), cb=queue.put)
        await flush(nc)
        return queue

    async def assert_violation(self, nc: Any, what: str) -> None:
        """
        Wait for the server's permissions error for C{what} on C{nc}.
        """
        for _ in range(250):
            if any(what.lower() in str(e).lower() for e in nc.kez_errors):
                return
            await asyncio.sleep(0.02)
        self.fail(f"no permissions violation for {what!r}; errors: {nc.kez_errors!r}")

    @asyncio_test
    async def test_publish_as_self_delivered(self) -> None:
        await self.setup_users()
        inbox = await self.inbox_of(self.b, self.bob)
        subject = inbox_subject(self.bob.public_hex, self.alice.public_hex)
        await self.a.publish(subject, b'{"v":1}')
        await self.a.flush()
        try:
            msg = await asyncio.wait_for(inbox.get(), 10)
        except TimeoutError:
            self.fail(
                f"not delivered; alice's errors: {self.a.kez_errors!r},"
                f" bob's: {self.b.kez_errors!r}"
            )
        self.assertEqual((msg.subject, msg.data), (subject, b'{"v":1}'))

    @asyncio_test
    async def test_cannot_publish_as_someone_else(self) -> None:
        await self.setup_users()
        inbox = await self.inbox_of(self.b, self.bob)
        forged = inbox_subject(self.bob.public_hex, self.carol.public_hex)
        await self.a.publish(forged, b"{}")
        await self.a.flush()
        await self.assert_violation(self.a, "Permissions Violation for Publish")
        # A permitted message from the same connection after the forged one:
        # nats-server delivers one publisher's messages in order, so once it
        # is here the forged one would have been here first (no sleep).
        marker = inbox_subject(self.bob.public_hex, self.alice.public_hex)
        await self.a.publish(marker, b'{"marker":1}')
        await self.a.flush()
        first = await asyncio.wait_for(inbox.get(), 10)
        self.assertEqual((first.subject, first.data), (marker, b'{"marker":1}'))
        self.assertTrue(inbox.empty())

    @asyncio_test
    async def test_cannot_subscribe_to_another_inbox(self) -> None:
        await self.setup_users()
        spy = await self.inbox_of(self.a, self.bob)
        await self.assert_violation(self.a, "Permissions Violation for Subscription")
        own = await self.inbox_of(self.a, self.alice)
        carol = await self.user(self.carol)
        await carol.publish(inbox_subject(self.bob.public_hex, self.carol.public_hex), b"{}")
        # then one alice may read, on the same connections: in order, so
        # once it is here the one for bob would have reached the spy first
        marker = inbox_subject(self.alice.public_hex, self.carol.public_hex)
        await carol.publish(marker, b'{"marker":1}')
        await carol.flush()
        first = await asyncio.wait_for(own.get(), 10)
        self.assertEqual(first.subject, marker)
        self.assertTrue(spy.empty())

    @asyncio_test
    async def test_cannot_subscribe_to_shared_reply_inbox(self) -> None:
        await self.setup_users()
        await self.a.subscribe("_INBOX.>")
        await self.assert_violation(self.a, "Permissions Violation for Subscription")

    @asyncio_test
    async def test_cannot_subscribe_to_callout(self) -> None:
        await self.setup_users()
        await self.a.subscribe(CALLOUT_SUBJECT)
        await self.assert_violation(self.a, "Permissions Violation for Subscription")

    @asyncio_test
    async def test_offline_delivery_through_own_consumer(self) -> None:
        """
        Bob is offline while alice sends; he logs in later and reads the
        message from his durable consumer, created with his own rights.
        """
        alice, bob = KeyPair.generate(), KeyPair.generate()
        await self.start_callout(alice, bob)
        await ensure_inbox_stream(self.service.jetstream())
        a = await self.user(alice)
        subject = inbox_subject(bob.public_hex, alice.public_hex)
        ack = await a.jetstream().publish(subject, b'{"n":1}')
        self.assertEqual(ack.stream, STREAM)

        b = await self.user(bob)
        sub = await b.jetstream().pull_subscribe(
            consumer_filter(bob.public_hex),
            durable=consumer_name(bob.public_hex),
            stream=STREAM,
            config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT),
        )
        [msg] = await sub.fetch(1, timeout=3)
        self.assertEqual((msg.subject, msg.data), (subject, b'{"n":1}'))
        await msg.ack_sync()
        info = await b.jetstream().consumer_info(STREAM, consumer_name(bob.public_hex))
        self.assertEqual(info.num_ack_pending, 0)
        self.assertTrue(await b.jetstream().delete_consumer(STREAM, consumer_name(bob.public_hex)))

    @asyncio_test
    async def test_cannot_touch_other_consumers(self) -> None:
        """
        Alice can neither create, read, fetch from nor delete bob's
        consumer, nor point her own at bob's messages.
        """
        await self.setup_users()
        await ensure_inbox_stream(self.service.jetstream())
        bob_consumer = consumer_name(self.bob.public_hex)
        await self.b.jetstream().add_consumer(
            STREAM,
            ConsumerConfig(
                name=bob_consumer,
                durable_name=bob_consumer,
                filter_subject=consumer_filter(self.bob.public_hex),
                ack_policy=AckPolicy.EXPLICIT,
            ),
        )
        js = self.a.jetstream(timeout=0.5)
        attempts = [
            js.consumer_info(STREAM, bob_consumer),
            js.delete_consumer(STREAM, bob_consumer),
            js.add_consumer(
                STREAM,
                ConsumerConfig(
                    name=bob_consumer,
                    durable_name=bob_consumer,
                    filter_subject=consumer_filter(self.bob.public_hex),
                ),
            ),
            self.a.request(f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{bob_consumer}", b"1", timeout=0.5),
            self.a.request(f"$JS.API.CONSUMER.DURABLE.CREATE.{STREAM}.x", b"{}", timeout=0.5),
            self.a.request(f"$JS.API.STREAM.DELETE.{STREAM}", b"", timeout=0.5),
        ]
        for attempt in attempts:
            with self.assertRaises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
                await attempt
        await self.assert_violation(self.a, "Permissions Violation for Publish")

        # Her own consumer name, but bob's messages in the body: the server
        # checks the body's filter against the one in the subject.
        mine = consumer_name(self.alice.public_hex)
        create = f"$JS.API.CONSUMER.CREATE.{STREAM}.{mine}.{consumer_filter(self.alice.public_hex)}"
        body = {
            "stream_name": STREAM,
            "config": {
                "name": mine,
                "durable_name": mine,
                "filter_subject": consumer_filter(self.bob.public_hex),
                "ack_policy": "explicit",
            },
        }
        reply = await self.a.request(create, json.dumps(body).encode(), timeout=2)
        self.assertIn("error", json.loads(reply.data))

        info = await self.b.jetstream().consumer_info(STREAM, bob_consumer)
        self.assertEqual(info.name, bob_consumer)


class WebSocketCalloutTests(CalloutTests):
    """
    The same callout over the WebSocket listener browsers use.
    """

    url = "ws"


class WebSocketPermissionTests(PermissionTests):
    url = "ws"
