"""
Request signatures name their server: a request signed for one server is
refused by another where the same key holds the same handle; the older
form that names no server is accepted (and counted) until the operator
turns it off with C{--legacy-auth off}.
"""

from __future__ import annotations

import json
import time
from typing import Any

from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.http_headers import Headers

from kezchat.client.http import ChatClient
from kezchat.errors import KezError
from kezchat.identity.keys import KeyPair
from kezchat.manifests import build_manifest, manifest_bytes
from kezchat.protocol.auth import Authenticator, body_digest, handle_server, sign_request
from kezchat.server.config import ChatOptions
from tests.clisupport import CliTestCase
from tests.relaysupport import open_stream
from tests.sigsupport import examples
from tests.support import RunningServer, http_client, json_of, register, start_server

NOW = 1_800_000_000


class AuthenticatorTests(SynchronousTestCase):
    """
    The check itself, on a fixed clock.
    """

    def setUp(self) -> None:
        self.key = KeyPair(bytes(range(32)))
        self.legacy_seen: list[str] = []

    def authenticator(self, legacy: bool = True) -> Authenticator:
        return Authenticator(
            lambda: NOW, "a.test", legacy=legacy, on_legacy=self.legacy_seen.append
        )

    def check(self, auth: str, legacy: bool = True) -> None:
        self.authenticator(legacy).verify(
            self.key.primary, auth, "DELETE", "/v1/inbox/alice", ["upto=9"]
        )

    def sign(self, server: str | None) -> str:
        return sign_request(self.key, "DELETE", "/v1/inbox/alice", ["upto=9"], NOW, server)

    def code(self, auth: str, legacy: bool = True) -> str:
        try:
            self.check(auth, legacy)
        except KezError as e:
            return e.code
        return "accepted"

    def test_new_form_for_this_server(self) -> None:
        self.assertEqual(self.code(self.sign("a.test")), "accepted")
        self.assertEqual(self.code(self.sign("a.test"), legacy=False), "accepted")
        self.assertEqual(self.legacy_seen, [])

    def test_new_form_for_another_server(self) -> None:
        self.assertEqual(self.code(self.sign("b.test")), "bad_signature")
        self.assertEqual(self.code(self.sign("b.test"), legacy=False), "bad_signature")

    def test_old_form_while_allowed_and_after(self) -> None:
        self.assertEqual(self.code(self.sign(None)), "accepted")
        self.assertEqual(self.legacy_seen, ["DELETE"])
        self.assertEqual(self.code(self.sign(None), legacy=False), "bad_signature")
        self.assertEqual(self.legacy_seen, ["DELETE"])

    def test_signed_text(self) -> None:
        from kezchat.protocol.auth import signed_text

        self.assertEqual(
            signed_text("POST", "/v1/messages", ["ab"], 5, "kez.lat"),
            b"POST\n@kez.lat\n/v1/messages\nab\n5",
        )
        self.assertEqual(
            signed_text("POST", "/v1/messages", ["ab"], 5), b"POST\n/v1/messages\nab\n5"
        )

    def test_handle_server(self) -> None:
        self.assertEqual(handle_server("alice@Kez.Lat"), "kez.lat")
        self.assertIsNone(handle_server("alice"))


class OptionTests(SynchronousTestCase):
    def config(self, argv: list[str], environ: dict[str, str] | None = None) -> Any:
        options = ChatOptions(environ=environ or {})
        options.parseOptions(argv)
        return options.config

    def test_default_on(self) -> None:
        self.assertTrue(self.config([]).legacy_auth)

    def test_flag_and_variable(self) -> None:
        self.assertFalse(self.config(["--legacy-auth", "off"]).legacy_auth)
        self.assertFalse(self.config([], {"KEZ_CHAT_LEGACY_AUTH": "off"}).legacy_auth)
        self.assertTrue(
            self.config(["--legacy-auth", "on"], {"KEZ_CHAT_LEGACY_AUTH": "off"}).legacy_auth
        )

    def test_bad_value(self) -> None:
        options = ChatOptions(environ={})
        self.assertRaises(UsageError, options.parseOptions, ["--legacy-auth", "maybe"])


class Account:
    """
    One key holding C{alice} on a server, and a sender C{bob} there.
    """

    def __init__(self, case: TestCase, server: RunningServer, domain: str) -> None:
        self.case, self.server, self.domain = case, server, domain
        self.client = http_client(case)

    async def setup(self, alice: KeyPair) -> None:
        self.alice = alice
        await register(self.client, self.server.url, "alice", alice, server=self.domain)
        self.bob, _ = await register(self.client, self.server.url, "bob", server=self.domain)

    async def post(self, envelope: dict[str, Any], server: str | None) -> int:
        body = json.dumps({"to": "alice", "envelope": envelope}).encode()
        auth = sign_request(
            self.bob, "POST", "/v1/messages", [body_digest(body)], int(time.time()), server
        )
        response = await self.client.post(
            f"{self.server.url}/v1/messages",
            data=body,
            headers={"X-KEZ-Sender": "bob", "X-KEZ-Auth": auth},
        )
        await response.content()
        return int(response.code)

    async def inbox(self, server: str | None) -> tuple[int, Any]:
        auth = sign_request(
            self.alice, "GET", "/v1/inbox/alice", ["since=0"], int(time.time()), server
        )
        response = await self.client.get(
            f"{self.server.url}/v1/inbox/alice", headers={"X-KEZ-Auth": auth}
        )
        return response.code, await json_of(response)

    async def delete(self, auth: str, upto: int = 1000) -> tuple[int, Any]:
        response = await self.client.delete(
            f"{self.server.url}/v1/inbox/alice?upto={upto}", headers={"X-KEZ-Auth": auth}
        )
        return response.code, await json_of(response)

    async def put_manifest(self, server: str | None) -> int:
        blob = manifest_bytes(build_manifest(self.alice, []))
        auth = sign_request(
            self.alice, "PUT", "/v1/manifests/alice", [body_digest(blob)], int(time.time()), server
        )
        response = await self.client.put(
            f"{self.server.url}/v1/manifests/alice", data=blob, headers={"X-KEZ-Auth": auth}
        )
        await response.content()
        return int(response.code)

    async def stream_code(self, server: str | None) -> int:
        auth = sign_request(
            self.alice, "GET", "/v1/inbox/alice/stream", [], int(time.time()), server
        )
        stream = await open_stream(self.case, self.server.url, self.alice, "alice", auth=auth)
        if stream.response.code == 200:
            await stream.close()
        return int(stream.response.code)

    def legacy_count(self, method: str) -> float:
        counter = self.server.parts.metrics.legacy_auth.labels(method)
        return float(counter._value.get())


def delete_auth(key: KeyPair, server: str | None) -> str:
    return sign_request(key, "DELETE", "/v1/inbox/alice", ["upto=1000"], int(time.time()), server)


class ReplayAcrossServersTests(TestCase):
    """
    The attack: one key holds C{alice} on two servers; a C{DELETE
    /v1/inbox/alice} signed for server A is replayed within its 60 s to
    server B.
    """

    timeout = 60

    async def two_servers(self, legacy_on_b: bool = True) -> tuple[Account, Account]:
        key = KeyPair.generate()
        a = Account(self, await start_server(self, server="a.test"), "a.test")
        b = Account(
            self, await start_server(self, server="b.test", legacy_auth=legacy_on_b), "b.test"
        )
        await a.setup(key)
        await b.setup(key)
        self.assertEqual(await b.post({"n": 1}, "b.test"), 201)
        return a, b

    async def test_new_form_replayed_to_another_server_is_refused(self) -> None:
        a, b = await self.two_servers()
        signed_for_a = delete_auth(a.alice, "a.test")
        self.assertEqual((await a.delete(signed_for_a))[0], 200)
        status, body = await b.delete(signed_for_a)
        self.assertEqual((status, body["error"]["code"]), (401, "bad_signature"))
        status, page = await b.inbox("b.test")
        self.assertEqual((status, len(page["messages"])), (200, 1))

    async def test_old_form_replays_until_legacy_auth_is_off(self) -> None:
        # with the old form allowed, the replay still works: why it must go
        a, b = await self.two_servers()
        old = delete_auth(a.alice, None)
        self.assertEqual((await a.delete(old))[0], 200)
        self.assertEqual(await b.delete(old), (200, {"deleted": 1}))
        self.assertEqual(b.legacy_count("DELETE"), 1)
        # with --legacy-auth off on B, neither form signed for A works there
        a, b = await self.two_servers(legacy_on_b=False)
        old, new = delete_auth(a.alice, None), delete_auth(a.alice, "a.test")
        for auth in (old, new):
            self.assertEqual((await a.delete(auth))[0], 200)
            status, body = await b.delete(auth)
            self.assertEqual((status, body["error"]["code"]), (401, "bad_signature"))
        status, page = await b.inbox("b.test")
        self.assertEqual((status, len(page["messages"])), (200, 1))
        self.assertEqual(b.legacy_count("DELETE"), 0)
        # and B's own clients, signing for B, go on working
        self.assertEqual(await b.delete(delete_auth(b.alice, "b.test")), (200, {"deleted": 1}))


class BothFormsTests(TestCase):
    """
    Every signed endpoint takes both forms by default, counts the old one,
    and takes only the new one with C{--legacy-auth off}.
    """

    timeout = 60

    async def account(self, **overrides: Any) -> Account:
        account = Account(self, await start_server(self, **overrides), "kez.lat")
        await account.setup(KeyPair.generate())
        return account

    async def test_both_forms_accepted_by_default(self) -> None:
        account = await self.account()
        for server in ("kez.lat", None):
            self.assertEqual(await account.post({"n": 1}, server), 201)
            self.assertEqual((await account.inbox(server))[0], 200)
            self.assertIn(await account.put_manifest(server), (200, 201))
            self.assertEqual(await account.stream_code(server), 200)
            self.assertEqual((await account.delete(delete_auth(account.alice, server)))[0], 200)
        self.assertEqual(
            {m: account.legacy_count(m) for m in ("POST", "GET", "PUT", "DELETE")},
            {"POST": 1, "GET": 2, "PUT": 1, "DELETE": 1},
        )
        text = (await (await account.client.get(f"{account.server.url}/metrics")).content())
        self.assertIn(b'kezchat_legacy_auth_requests_total{method="DELETE"} 1.0', text)

    async def test_only_the_new_form_with_legacy_auth_off(self) -> None:
        account = await self.account(legacy_auth=False)
        self.assertEqual(await account.post({"n": 1}, None), 401)
        self.assertEqual((await account.inbox(None))[0], 401)
        self.assertEqual(await account.put_manifest(None), 401)
        self.assertEqual(await account.stream_code(None), 401)
        self.assertEqual((await account.delete(delete_auth(account.alice, None)))[0], 401)
        # signed for another server: refused as well
        self.assertEqual(await account.post({"n": 1}, "other.test"), 401)
        self.assertEqual(await account.stream_code("other.test"), 401)
        self.assertEqual(await account.post({"n": 1}, "kez.lat"), 201)
        self.assertEqual((await account.inbox("kez.lat"))[0], 200)
        self.assertEqual(await account.put_manifest("kez.lat"), 201)
        self.assertEqual(await account.stream_code("kez.lat"), 200)
        self.assertEqual((await account.delete(delete_auth(account.alice, "kez.lat")))[0], 200)

    async def test_python_client_signs_the_new_form(self) -> None:
        """
        L{ChatClient} with qualified handles works against a server that
        takes only the new form.
        """
        account = await self.account(legacy_auth=False)
        chat = ChatClient(account.server.url, reactor)
        self.addCleanup(chat.close)
        sent = await chat.send(account.bob, "bob@kez.lat", "alice", {"n": 2})
        page = await chat.inbox(account.alice, "alice@kez.lat")
        self.assertEqual([m["seq"] for m in page["messages"]], [sent["seq"]])
        blob = manifest_bytes(build_manifest(account.alice, []))
        await chat.put_manifest(account.alice, "alice@kez.lat", blob)
        stream = await open_stream(
            self, account.server.url, account.alice, "alice",
            auth=chat.stream_url(account.alice, "alice@kez.lat").split("auth=")[1],
        )
        self.assertEqual(stream.response.code, 200)
        self.assertEqual(await chat.acknowledge(account.alice, "alice@kez.lat", sent["seq"]), 1)


#: X-KEZ-Auth values that are not a signature of this request: garbage,
#: near-misses of the grammar, and well-formed ones with absurd times
bad_auth_values = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300).map(lambda t: t.encode("utf-8")),
    st.tuples(
        st.one_of(st.integers(), st.text(alphabet="-0123456789 +e.", max_size=25)),
        st.one_of(
            st.text(alphabet="0123456789abcdefABCDEF", min_size=0, max_size=200),
            st.just("0" * 128),
        ),
        st.sampled_from([":", "::", " : ", ""]),
    ).map(lambda t: f"{t[0]}{t[2]}{t[1]}".encode("ascii", "replace")),
)


def header_safe(value: bytes) -> bytes:
    # a header value cannot hold CR, LF or NUL on the wire at all
    return value.replace(b"\r", b"").replace(b"\n", b"").replace(b"\0", b"")


class MalformedAuthTests(TestCase):
    """
    Whatever stands in C{X-KEZ-Auth} (or the stream's C{auth}/C{exp}),
    the answer is a 4xx with a JSON error, never a 500 or a hang.
    """

    timeout = 120

    async def test_malformed_auth_values(self) -> None:
        account = Account(self, await start_server(self), "kez.lat")
        await account.setup(KeyPair.generate())
        url = account.server.url
        agent = account.client
        for value in examples(bad_auth_values, 60):
            value = header_safe(value)
            headers = Headers({b"X-KEZ-Auth": [value], b"X-KEZ-Sender": [b"bob"]})
            for method, path in (
                (b"GET", "/v1/inbox/alice?since=0"),
                (b"DELETE", "/v1/inbox/alice?upto=3"),
                (b"POST", "/v1/messages"),
            ):
                response = await agent.request(
                    method.decode(), url + path, headers=headers, data=b'{"to":"alice"}'
                )
                body = await json_of(response)
                self.assertTrue(400 <= response.code < 500, (value, path, response.code))
                self.assertIn("error", body)

    async def test_malformed_stream_auth_and_exp(self) -> None:
        from urllib.parse import quote

        account = Account(self, await start_server(self), "kez.lat")
        await account.setup(KeyPair.generate())
        now = int(time.time())
        good = sign_request(
            account.alice, "GET", "/v1/inbox/alice/stream", [f"exp={now + 600}"], now, "kez.lat"
        )
        pairs = examples(
            st.tuples(
                st.one_of(bad_auth_values, st.just(good.encode())),
                st.one_of(
                    st.none(),
                    st.binary(max_size=40),
                    st.integers(min_value=-(10**20), max_value=10**20).map(
                        lambda n: str(n).encode()
                    ),
                ),
            ),
            60,
        )
        for auth, exp in pairs:
            query = "auth=" + quote(auth, safe="")
            if exp is not None:
                query += "&exp=" + quote(exp, safe="")
            response = await account.client.get(
                f"{account.server.url}/v1/inbox/alice/stream?{query}"
            )
            body = await json_of(response)
            self.assertTrue(400 <= response.code < 500, (auth, exp, response.code))
            self.assertIn("error", body)


class CliNewFormTests(CliTestCase):
    """
    The real C{kez-chat} program works against a server that takes only
    the new form: it signs every request for its account's server.
    """

    async def test_send_and_listen_with_legacy_auth_off(self) -> None:
        await self.start_servers(legacy_auth=False)
        alice, bob = await self.registered("alice", "bob")
        await alice.ok("add", "bob")
        await alice.ok("send", "bob", "signed for kez.lat", "--json")
        listened = await bob.ok("listen", "--json", "--count", "1", "--timeout", "20")
        self.assertEqual([m["text"] for m in listened.lines], ["signed for kez.lat"])
