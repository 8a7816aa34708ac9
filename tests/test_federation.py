"""
Federation between real servers on loopback: server keys, remote lookups
with the other server's key directory proof, the operator's policy
(off, allow and deny lists), TLS verification, and server-to-server
signatures checked against the key the sending domain publishes.

Each server is a real in-process chat-server of its own domain and
database, wired to the others with C{--resolve}.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote

from twisted.internet import reactor
from twisted.internet.ssl import Certificate
from twisted.python import usage
from twisted.trial.unittest import TestCase
from twisted.web.client import BrowserLikePolicyForHTTPS

from kezchat.client.keydir import KeyDirectory
from kezchat.errors import KezError
from kezchat.federation import s2s
from kezchat.federation.remote import RemoteServers, _Answers, _NoHeads
from kezchat.federation.resolve import Resolver
from kezchat.identity.handles import Handle
from kezchat.identity.keys import KeyPair, verify_bytes
from kezchat.keylog.wire import parse_head
from kezchat.server.config import ChatConfig, ChatOptions
from tests.backends import on_postgresql
from tests.support import (
    RunningServer,
    fresh_database,
    http_client,
    json_of,
    register,
    start_server,
    temp_dir,
)
from tests.test_tls import make_ca, make_server_cert, pem


async def start_domain(case: TestCase, domain: str, **overrides: Any) -> RunningServer:
    overrides.setdefault("federation", True)
    return await start_server(case, server=domain, **overrides)


def resolving(**servers: RunningServer) -> tuple[str, ...]:
    """C{--resolve} values: keyword C{b_example} → C{b.example=<url>}."""
    return tuple(f"{name.replace('_', '.')}={s.url}" for name, s in servers.items())


def remote_client(case: TestCase, own: str, resolve: tuple[str, ...], **kw: Any) -> RemoteServers:
    return RemoteServers(
        Resolver.from_settings(own, resolve), reactor, reactor.seconds, **kw
    )


class ServerKeyTests(TestCase):
    timeout = 60

    async def test_published_and_kept_across_restarts(self) -> None:
        """
        C{GET /v1/server} names the domain and a key that is not the log
        key, and the same key comes back after a restart on the database.
        """
        db = await fresh_database(self)
        first = await start_domain(self, "a.example", db=db)
        client = http_client(self)
        answer = await json_of(await client.get(f"{first.url}/v1/server"))
        self.assertEqual(set(answer), {"server", "key"})
        self.assertEqual(answer["server"], "a.example")
        self.assertRegex(answer["key"], r"^ed25519:[0-9a-f]{64}$")
        head = await json_of(await client.get(f"{first.url}/v1/log/head"))
        self.assertNotEqual(answer["key"], head["key"])
        await first.service.stopService()
        again = await start_domain(self, "a.example", db=db)
        self.assertEqual(await json_of(await client.get(f"{again.url}/v1/server")), answer)


class RemoteLookupTests(TestCase):
    timeout = 60

    async def setUp(self) -> None:
        self.b = await start_domain(self, "b.example")
        self.client = http_client(self)
        self.bob_key, self.bob = await register(
            self.client, self.b.url, "bob", server="b.example"
        )

    async def lookup(self, server: RunningServer, handle: str) -> tuple[int, Any]:
        response = await self.client.get(f"{server.url}/v1/u/{quote(handle)}")
        return response.code, await json_of(response)

    async def test_answered_from_the_other_server_with_a_verifiable_proof(self) -> None:
        a = await start_domain(self, "a.example", resolve=resolving(b_example=self.b))
        code, answer = await self.lookup(a, "bob@b.example")
        self.assertEqual(code, 200, answer)
        directory = answer.pop("directory")
        self.assertEqual(answer, self.bob)
        # the head is b.example's own, signed with its log key
        b_head = await json_of(await self.client.get(f"{self.b.url}/v1/log/head"))
        self.assertEqual(parse_head(directory["head"]).key, b_head["key"])
        # a client checks it as for a local key: head signature, the
        # inclusion of exactly this handle and key under it
        check = KeyDirectory(
            "b.example", _Answers(directory["head"], directory["inclusion"]), _NoHeads()
        )
        await check.vouch(answer)
        # local lookups are untouched
        _, alice = await register(self.client, a.url, "alice", server="a.example")
        code, local = await self.lookup(a, "alice")
        self.assertEqual((code, local), (200, alice))

    async def test_unknown_remote_handle_is_not_found(self) -> None:
        a = await start_domain(self, "a.example", resolve=resolving(b_example=self.b))
        for _ in range(2):  # the second from the negative cache
            code, answer = await self.lookup(a, "nobody@b.example")
            self.assertEqual((code, answer["error"]["code"]), (404, "not_found"))

    async def test_federation_off(self) -> None:
        a = await start_domain(
            self, "a.example", resolve=resolving(b_example=self.b), federation=False
        )
        code, answer = await self.lookup(a, "bob@b.example")
        self.assertEqual((code, answer["error"]["code"]), (400, "federation_disabled"))

    async def test_deny_and_allow_lists(self) -> None:
        resolve = resolving(b_example=self.b)
        for policy in (
            {"federation_deny": ("b.example",)},
            {"federation_allow": ("c.example",)},
        ):
            a = await start_domain(self, "a.example", resolve=resolve, **policy)
            code, answer = await self.lookup(a, "bob@b.example")
            self.assertEqual((code, answer["error"]["code"]), (403, "federation_refused"))
        a = await start_domain(
            self, "a.example", resolve=resolve, federation_allow=("b.example",)
        )
        self.assertEqual((await self.lookup(a, "bob@b.example"))[0], 200)

    async def test_unreachable_server(self) -> None:
        gone = await start_domain(self, "c.example")
        await gone.service.stopService()
        a = await start_domain(self, "a.example", resolve=(f"c.example={gone.url}",))
        code, answer = await self.lookup(a, "carol@c.example")
        self.assertEqual((code, answer["error"]["code"]), (502, "remote_failed"))

    async def test_a_server_answering_for_another_domain_is_refused(self) -> None:
        """
        c.example resolved to b.example's server: the record it gives is
        for bob@b.example, not bob@c.example, and is refused.
        """
        a = await start_domain(self, "a.example", resolve=(f"c.example={self.b.url}",))
        code, answer = await self.lookup(a, "bob@c.example")
        self.assertEqual((code, answer["error"]["code"]), (502, "remote_failed"))

    async def by_primary(self, server: RunningServer, primary: str, domain: str) -> Any:
        response = await self.client.get(
            f"{server.url}/v1/by-primary/{quote(primary)}?server={domain}"
        )
        return response.code, await json_of(response)

    async def test_by_primary_answered_from_the_other_server(self) -> None:
        """
        C{GET /v1/by-primary/<key>?server=b.example} on a.example answers
        from b.example with the same checkable proof as C{/v1/u}; an
        unknown key is C{not_found} (twice: the second from the negative
        cache); C{server=} naming a.example itself is the local lookup.
        """
        a = await start_domain(self, "a.example", resolve=resolving(b_example=self.b))
        code, answer = await self.by_primary(a, self.bob_key.primary, "b.example")
        self.assertEqual(code, 200, answer)
        directory = answer.pop("directory")
        self.assertEqual(answer, self.bob)
        await KeyDirectory(
            "b.example", _Answers(directory["head"], directory["inclusion"]), _NoHeads()
        ).vouch(answer)
        stranger = KeyPair.generate().primary
        for _ in range(2):
            code, answer = await self.by_primary(a, stranger, "b.example")
            self.assertEqual((code, answer["error"]["code"]), (404, "not_found"))
        _, alice = await register(self.client, a.url, "alice", server="a.example")
        code, local = await self.by_primary(a, alice["primary"], "a.example")
        self.assertEqual((code, local), (200, alice))
        code, answer = await self.by_primary(a, self.bob_key.primary, "not a domain")
        self.assertEqual((code, answer["error"]["code"]), (400, "bad_request"))

    async def test_by_primary_of_a_domain_serving_another_is_refused(self) -> None:
        a = await start_domain(self, "a.example", resolve=(f"c.example={self.b.url}",))
        code, answer = await self.by_primary(a, self.bob_key.primary, "c.example")
        self.assertEqual((code, answer["error"]["code"]), (502, "remote_failed"))

    async def test_by_primary_with_federation_off(self) -> None:
        a = await start_domain(
            self, "a.example", resolve=resolving(b_example=self.b), federation=False
        )
        code, answer = await self.by_primary(a, self.bob_key.primary, "b.example")
        self.assertEqual((code, answer["error"]["code"]), (400, "federation_disabled"))

    async def test_consistency_of_the_other_servers_log(self) -> None:
        """
        A client that kept an older head of b.example checks a newer one
        with a consistency proof asked of a.example
        (C{/v1/log/consistency?server=b.example}), which is b.example's.
        """
        a = await start_domain(self, "a.example", resolve=resolving(b_example=self.b))
        old = await json_of(await self.client.get(f"{self.b.url}/v1/log/head"))
        await register(self.client, self.b.url, "carol", server="b.example")
        new = await json_of(await self.client.get(f"{self.b.url}/v1/log/head"))
        path = f"/v1/log/consistency?from={old['size']}&to={new['size']}"
        via_a = await json_of(await self.client.get(f"{a.url}{path}&server=b.example"))
        direct = await json_of(await self.client.get(f"{self.b.url}{path}"))
        self.assertEqual(via_a, direct)
        from kezchat.keylog import merkle
        from kezchat.keylog.wire import path_from_json

        merkle.verify_consistency(
            old["size"], new["size"], path_from_json(via_a["path"]),
            parse_head(old).root, parse_head(new).root,
        )

    async def test_tls_is_verified(self) -> None:
        """
        An HTTPS server whose certificate the platform does not trust is
        refused; trusting its CA, the same lookup works.
        """
        directory = temp_dir(self)
        ca_key, ca_cert = make_ca()
        key_pem, cert_pem = make_server_cert(ca_key, ca_cert)
        key_path = os.path.join(directory, "server.key")
        cert_path = os.path.join(directory, "server.pem")
        with open(key_path, "wb") as f:
            f.write(key_pem)
        with open(cert_path, "wb") as f:
            f.write(cert_pem)
        secure = await start_domain(
            self, "d.example",
            listen=(f"ssl:0:interface=127.0.0.1:privateKey={key_path}:certKey={cert_path}",),
        )
        await register(
            self.client_trusting(pem(ca_cert)), f"https://127.0.0.1:{secure.port}", "dave",
            server="d.example",
        )
        resolve = (f"d.example=https://127.0.0.1:{secure.port}",)
        a = await start_domain(self, "a.example", resolve=resolve)
        code, answer = await self.lookup(a, "dave@d.example")
        self.assertEqual((code, answer["error"]["code"]), (502, "remote_failed"))
        self.assertIn("certificate verify failed", answer["error"]["message"])
        trusting = remote_client(
            self, "a.example", resolve,
            tls_policy=BrowserLikePolicyForHTTPS(trustRoot=Certificate.loadPEM(pem(ca_cert))),
        )
        record = await trusting.lookup(Handle("dave", "d.example"))
        self.assertEqual(record["fqhn"], "dave@d.example")

    def client_trusting(self, ca_pem: bytes) -> Any:
        from treq.client import HTTPClient
        from twisted.web.client import Agent, HTTPConnectionPool

        pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(pool.closeCachedConnections)
        policy = BrowserLikePolicyForHTTPS(trustRoot=Certificate.loadPEM(ca_pem))
        return HTTPClient(Agent(reactor, contextFactory=policy, pool=pool))


class ServerSignatureTests(TestCase):
    """
    C{X-KEZ-Server-Auth} as the receiving server checks it, with the
    sender's key fetched from the sender's real C{GET /v1/server}.
    """

    timeout = 60

    async def setUp(self) -> None:
        self.a = await start_domain(self, "a.example")
        self.a_key = await self.a.parts.identity.key()
        self.now = int(reactor.seconds())
        self.body = b'{"hello": "b"}'

    def verifier(self, own: str, a_url: str | None = None) -> s2s.ServerVerifier:
        remote = remote_client(self, own, (f"a.example={a_url or self.a.url}",))
        return s2s.ServerVerifier(own, remote.server_key, reactor.seconds)

    def signed(self, target: str = "b.example", ts: int | None = None) -> str:
        return s2s.sign(
            self.a_key, "a.example", target, "POST", "/v1/federation/messages", self.body,
            self.now if ts is None else ts,
        )

    async def refused(self, code: str, verifier: s2s.ServerVerifier, header: str | None,
                      body: bytes | None = None, path: str = "/v1/federation/messages") -> None:
        with self.assertRaises(KezError) as caught:
            await verifier.verify(header, "POST", path, self.body if body is None else body)
        self.assertEqual(caught.exception.code, code)

    async def test_accepted_for_the_named_server(self) -> None:
        sender = await self.verifier("b.example").verify(
            self.signed(), "POST", "/v1/federation/messages", self.body
        )
        self.assertEqual(sender, "a.example")

    async def test_signed_for_another_server_is_refused(self) -> None:
        await self.refused("bad_signature", self.verifier("c.example"), self.signed("b.example"))

    async def test_other_body_path_or_time_is_refused(self) -> None:
        verifier = self.verifier("b.example")
        await self.refused("bad_signature", verifier, self.signed(), body=b"{}")
        await self.refused("bad_signature", verifier, self.signed(), path="/v1/messages")
        await self.refused("stale_timestamp", verifier, self.signed(ts=self.now - 3600))
        for garbled in (None, "", "a.example:1:zz", "a.example", "x" * 300):
            await self.refused("unauthorized", verifier, garbled)

    async def test_a_fake_server_without_the_key_is_refused(self) -> None:
        """
        Another real server that says it is a.example (its own database,
        so its own key): a.example resolved to it, a.example's real
        signature does not verify; and a server resolved for a.example
        that names another domain gives no key at all.
        """
        fake = await start_domain(self, "a.example")
        await self.refused("bad_signature", self.verifier("b.example", fake.url), self.signed())
        fake_key = await fake.parts.identity.key()
        self.assertNotEqual(fake_key.primary, self.a_key.primary)
        other = await start_domain(self, "c.example")
        await self.refused("remote_failed", self.verifier("b.example", other.url), self.signed())

    def test_signed_text(self) -> None:
        text = s2s.signed_text("a.example", "b.example", "POST", "/v1/x", b"", 1700000000)
        self.assertEqual(
            text,
            b"KEZ-S2S\n@a.example\n@b.example\nPOST\n/v1/x\n"
            b"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n1700000000",
        )
        key = KeyPair(bytes(32))
        header = s2s.sign(key, "a.example", "b.example", "POST", "/v1/x", b"", 1700000000)
        sender, ts, sig = header.split(":")
        self.assertEqual((sender, ts), ("a.example", "1700000000"))
        self.assertTrue(verify_bytes(key.primary, text, sig))


class FederationOptionsTests(TestCase):
    def parse(self, argv: list[str], environ: dict[str, str] | None = None) -> ChatConfig:
        options = ChatOptions(environ or {})
        options.parseOptions(argv)
        return options.config

    def test_defaults(self) -> None:
        config = self.parse([])
        self.assertEqual(
            (config.resolve, config.federation, config.federation_allow, config.federation_deny),
            ((), True, (), ()),
        )

    def test_flags_and_environment(self) -> None:
        config = self.parse([
            "--resolve", "b.example=http://127.0.0.1:1", "--resolve", "c.example=https://c:8443/",
            "--federation", "off", "--federation-allow", "B.example",
            "--federation-deny", "d.example",
        ])
        self.assertEqual(
            config.resolve, ("b.example=http://127.0.0.1:1", "c.example=https://c:8443/")
        )
        self.assertFalse(config.federation)
        self.assertEqual((config.federation_allow, config.federation_deny),
                         (("b.example",), ("d.example",)))
        config = self.parse([], {
            "KEZ_CHAT_RESOLVE": "b.example=http://127.0.0.1:1 c.example=http://127.0.0.1:2",
            "KEZ_CHAT_FEDERATION": "off",
            "KEZ_CHAT_FEDERATION_DENY": "x.example y.example",
        })
        self.assertEqual(len(config.resolve), 2)
        self.assertFalse(config.federation)
        self.assertEqual(config.federation_deny, ("x.example", "y.example"))

    def test_bad_values_refused(self) -> None:
        for argv in (
            ["--resolve", "b.example"],
            ["--resolve", "b.example=ftp://x"],
            ["--resolve", "not a domain=http://x"],
            ["--resolve", "b.example=http://"],
            ["--federation", "maybe"],
            ["--federation-allow", "not a domain"],
        ):
            with self.assertRaises(usage.UsageError, msg=argv):
                self.parse(argv)
        with self.assertRaises(ValueError):
            ChatConfig(resolve=("nonsense",))

    def test_base_urls(self) -> None:
        resolver = Resolver.from_settings("a.example", ["b.example=http://127.0.0.1:9/"])
        self.assertEqual(resolver.base_url("b.example"), "http://127.0.0.1:9")
        self.assertEqual(resolver.base_url("B.Example"), "http://127.0.0.1:9")
        self.assertEqual(resolver.base_url("c.example"), "https://c.example")


on_postgresql(globals(), ServerKeyTests)
