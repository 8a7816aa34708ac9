"""
Hypothesis-generated garbage at every endpoint of the chat-server (SPEC §9).

Every request here must get a 4xx with the SPEC error shape
C{{"error": {"code", "message"}}} whose code maps to that status — never a
500, never a hang — and nothing already stored may change.

How hypothesis meets an asynchronous server under trial: the server runs
in-process on the reactor as usual, and each property is an ordinary
synchronous C{@given} function run in a worker thread
(C{deferToThread}) while the test method awaits it. Each example sends one
request over a blocking loopback socket and parses the reply with
L{http.client.HTTPResponse}; the reactor thread serves it meanwhile. So
hypothesis drives generation, the example database and shrinking exactly
as in a synchronous test (a failure is reported as the minimal request
that breaks the server), and the requests are raw bytes, so they can carry
what no well-behaved HTTP client would send (bad UTF-8 in the path,
malformed headers, arbitrary methods).

Each test registers a few handles first and compares a snapshot of every
table of the SQLite file before and after its barrage.
"""

from __future__ import annotations

import http.client
import json
import socket
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from kezchat.errors import STATUS_BY_CODE
from kezchat.identity.handles import RESERVED_HANDLES
from kezchat.identity.keys import KeyPair
from kezchat.protocol.registration import REGISTRATION_TAG, REGISTRATION_TYPE
from kezchat.timeutil import format_rfc3339
from tests.support import http_client, register, start_server
from tests.test_identity import GRAMMAR, near_handles

#: seconds a single request may take before it counts as a hang
REQUEST_TIMEOUT = 10.0

barrage_settings = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def exchange(port: int, request: bytes, method: str = "GET") -> Reply:
    """
    Send raw request bytes and read the whole response. Blocking: only
    for the worker thread.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=REQUEST_TIMEOUT) as sock:
        try:
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            # the server may answer and close before taking all of it
            pass
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        body = response.read()
        headers = {k.lower(): v for k, v in response.getheaders()}
        return Reply(response.status, headers, body)


def build_request(
    method: bytes,
    target: bytes,
    body: bytes = b"",
    headers: list[tuple[bytes, bytes]] = (),
) -> bytes:
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    if body or method == b"POST":
        lines.append(b"Content-Length: %d" % len(body))
    lines += [name + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def assert_spec_error(reply: Reply, context: object) -> dict[str, Any]:
    """
    C{reply} is a 4xx whose body is exactly the SPEC error shape, with a
    code that belongs to that status.
    """
    where = f"{context!r} → {reply.status} {reply.body[:300]!r}"
    assert 400 <= reply.status < 500, where
    assert reply.headers.get("content-type", "").startswith("application/json"), where
    try:
        value = json.loads(reply.body)
    except ValueError:
        raise AssertionError(f"body is not JSON: {where}") from None
    assert isinstance(value, dict) and set(value) == {"error"}, where
    error = value["error"]
    assert isinstance(error, dict) and set(error) == {"code", "message"}, where
    assert isinstance(error["message"], str) and error["message"], where
    assert STATUS_BY_CODE.get(error["code"]) == reply.status, where
    if error["code"] == "rate_limited":
        assert reply.headers.get("retry-after", "").isdigit(), where
    return error


def snapshot(db_path: str) -> dict[str, list[tuple]]:
    """
    Every row of every table, sorted: what "nothing stored changed" means.
    """
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        return {
            table: sorted(conn.execute(f'SELECT * FROM "{table}"'), key=repr)
            for table in tables
        }
    finally:
        conn.close()


# -- strategies -------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**20, max_value=10**4000)
    | st.floats()
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)


def dumps(value: Any) -> bytes:
    """
    JSON text as a sloppy client writes it: Python's dumps emits NaN and
    Infinity, and lone surrogates as escapes.
    """
    return json.dumps(value).encode()


#: nesting far past Python's recursion limit, yet under the 64 KiB cap
nested = st.builds(
    lambda depth, opener, closer: opener * depth + closer * depth,
    st.integers(1, 4_000),
    st.sampled_from([b"[", b'{"a":[', b'{"kez":']),
    st.sampled_from([b"]", b"}]", b"}"]),
)
raw_texts = st.sampled_from(
    [
        b"",
        b"null",
        b"NaN",
        b'{"kez": NaN}',
        b'{"kez": -Infinity}',
        b'{"kez": "handle_registration", "payload": {"version": 1e999999}}',
        b'{"kez": "\xff\xfe"}',
        b'{"kez": "\\ud800"}',
        b"\xef\xbb\xbf{}",
        b'{"kez": "handle_registration"',
        b'{"kez": "handle_registration"}}',
        b"1" * 5000,
        b'{"a":1,"a":2}',
        b"\x00" * 10,
    ]
)
register_bodies = (
    st.binary(max_size=300)
    | json_values.map(dumps)
    | nested
    | raw_texts
    | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass"))
)
content_types = st.sampled_from(
    [
        None,
        b"application/json",
        b"text/plain",
        b"application/x-www-form-urlencoded",
        b"multipart/form-data; boundary=xyz",
        b"application/json; charset=latin-1",
    ]
)

#: where in a registration a mutation lands: (section, key); section None
#: is the top level
REGISTRATION_PATHS = [
    (None, "kez"),
    (None, "payload"),
    (None, "signature"),
    ("payload", "type"),
    ("payload", "version"),
    ("payload", "handle"),
    ("payload", "primary"),
    ("payload", "server"),
    ("payload", "created_at"),
    ("signature", "alg"),
    ("signature", "key"),
    ("signature", "sig"),
]


@st.composite
def mutations(draw: Callable) -> tuple:
    path = draw(st.sampled_from(REGISTRATION_PATHS))
    action = draw(st.sampled_from(["replace", "delete", "extra"]))
    value = draw(json_values | near_handles)
    return path, action, value


def apply_mutation(body: dict, mutation: tuple) -> None:
    (section, key), action, value = mutation
    target = body if section is None else body.get(section)
    if not isinstance(target, dict):
        return
    if action == "replace":
        target[key] = value
    elif action == "delete":
        target.pop(key, None)
    else:
        target[f"x-{key}"] = value


def sign(key: KeyPair, body: dict) -> None:
    payload = body.get("payload")
    signature = body.get("signature")
    if not isinstance(payload, dict) or not isinstance(signature, dict):
        return
    try:
        signature["sig"] = key.sign_jcs(payload)
    except ValueError:
        pass


def fresh_registration(key: KeyPair, handle: Any, changes: dict | None = None) -> dict:
    body = {
        "kez": REGISTRATION_TAG,
        "payload": {
            "type": REGISTRATION_TYPE,
            "version": 1,
            "handle": handle,
            "primary": key.primary,
            "server": "kez.lat",
            "created_at": format_rfc3339(time.time()),
            **(changes or {}),
        },
        "signature": {"alg": "ed25519-sha512-jcs", "key": key.primary, "sig": ""},
    }
    sign(key, body)
    return body


def is_free_valid_handle(value: object, taken: set[str]) -> bool:
    return (
        isinstance(value, str)
        and GRAMMAR.match(value) is not None
        and value not in RESERVED_HANDLES
        and value not in taken
    )


segment_text = st.text(max_size=20) | near_handles
path_segments = st.lists(
    st.one_of(
        segment_text.map(lambda s: quote(s.encode("utf-8", "surrogatepass"), safe="")),
        st.binary(max_size=12).map(lambda b: quote(b, safe="")),
        st.sampled_from(["..", ".", "", "%2e%2e", "%2F", "v1", "u", "register", "%00", "*"]),
    ),
    max_size=5,
).map(lambda parts: "/".join(parts).encode("ascii"))

# -- the tests --------------------------------------------------------------


class BadInputTestCase(TestCase):
    """
    A server with a few registered handles; a snapshot of its database is
    compared after each test.
    """

    timeout = 120

    async def setUp(self) -> None:
        self.server = await start_server(self)
        self.port = self.server.port
        self.db_path = self.server.service.config.db
        client = http_client(self)
        self.keys: dict[str, KeyPair] = {}
        self.records: dict[str, dict] = {}
        for handle in ("alice", "bob-1", "carol_c"):
            key, record = await register(client, self.server.url, handle)
            self.keys[handle] = key
            self.records[handle] = record
        self.before = snapshot(self.db_path)

    async def barrage(self, prop: Callable[[], None]) -> None:
        """
        Run a hypothesis property in a worker thread, then check that the
        database did not change.
        """
        await deferToThread(prop)
        self.assertEqual(snapshot(self.db_path), self.before)
        self.assertEqual(len(self.before["handles"]), 3)

    def send(self, method: bytes, target: bytes, body: bytes = b"", headers=()) -> Reply:
        return exchange(
            self.port, build_request(method, target, body, list(headers)), method.decode("latin-1")
        )

    def assert_refused_or_known(self, reply: Reply, context: object) -> None:
        """
        Either a SPEC error, or (a lookup that happened to be valid) one of
        the records we registered, unchanged.
        """
        if reply.status == 200:
            value = json.loads(reply.body)
            known = list(self.records.values())
            if "subject" in value:
                fqhns = [record["fqhn"] for record in known]
                assert value["subject"].removeprefix("acct:") in fqhns, (context, value)
            else:
                assert value in known, (context, value)
            return
        assert_spec_error(reply, context)


class RegisterGarbageTests(BadInputTestCase):
    async def test_garbage_bodies(self) -> None:
        """
        Bytes that are not a registration at all: bad JSON, bad UTF-8,
        NaN, numbers with thousands of digits, nesting far past any
        parser's recursion limit, wrong top-level types.
        """

        @barrage_settings
        @given(register_bodies, content_types)
        def prop(body: bytes, content_type: bytes | None) -> None:
            headers = [] if content_type is None else [(b"Content-Type", content_type)]
            reply = self.send(b"POST", b"/v1/register", body, headers)
            error = assert_spec_error(reply, (body[:200], content_type))
            assert error["code"] in ("bad_request", "bad_signature"), (body[:200], error)

        await self.barrage(prop)

    async def test_mutated_registrations(self) -> None:
        """
        Registration-shaped bodies with fields replaced by arbitrary JSON,
        deleted, or joined by extra fields, sometimes re-signed so the
        signature is right and only the values are wrong.

        The base is signed by an already-registered key, so even a mutation
        that happens to produce a well-formed registration can only be
        refused (C{handle_taken} or C{primary_taken}): nothing may be
        stored.
        """

        @barrage_settings
        @given(
            st.sampled_from(["alice", "bob-1", "carol_c"]),
            st.sampled_from(["alice", "bob-1", "dave", "admin", "Eve", "x"]),
            st.lists(mutations(), min_size=1, max_size=3),
            st.booleans(),
        )
        def prop(signer: str, handle: str, changes: list, resign: bool) -> None:
            key = self.keys[signer]
            body = fresh_registration(key, handle)
            for change in changes:
                apply_mutation(body, change)
            if resign:
                sign(key, body)
            reply = self.send(b"POST", b"/v1/register", json.dumps(body).encode())
            assert_spec_error(reply, body)

        await self.barrage(prop)

    async def test_one_wrong_value_fresh_key(self) -> None:
        """
        Correctly signed registrations by a fresh key where exactly one
        value is wrong: each must be refused with a 4xx and store nothing.
        """
        taken = set(self.keys)
        wrong_fields = st.one_of(
            st.tuples(
                st.just("handle"),
                (near_handles | json_values).filter(lambda v: not is_free_valid_handle(v, taken)),
            ),
            st.tuples(
                st.just("server"),
                (st.text(max_size=20) | json_values).filter(lambda v: v != "kez.lat"),
            ),
            st.tuples(
                st.just("version"),
                json_values.filter(lambda v: not (v == 1 and not isinstance(v, bool))),
            ),
            st.tuples(
                st.just("type"),
                (st.text(max_size=30) | json_values).filter(lambda v: v != REGISTRATION_TYPE),
            ),
            st.tuples(
                st.just("created_at"),
                st.one_of(
                    json_values,
                    st.integers(301, 10**9).map(lambda s: format_rfc3339(time.time() + s)),
                    st.integers(301, 10**9).map(lambda s: format_rfc3339(time.time() - s)),
                    st.text(alphabet="0123456789-:TZ.+ ", max_size=30),
                ),
            ),
            st.tuples(st.just("primary"), (st.text(max_size=70) | json_values)),
        )

        @barrage_settings
        @given(
            st.binary(min_size=32, max_size=32),
            wrong_fields,
            st.sampled_from(["dave", "erin-2", "f00"]),
        )
        def prop(seed: bytes, field: tuple, handle: str) -> None:
            name, value = field
            key = KeyPair(seed)
            if name == "primary" and value == key.primary:
                return
            body = fresh_registration(key, handle, {name: value})
            reply = self.send(b"POST", b"/v1/register", json.dumps(body).encode())
            assert_spec_error(reply, body)

        await self.barrage(prop)


class LookupGarbageTests(BadInputTestCase):
    async def test_handle_lookups(self) -> None:
        @barrage_settings
        @given(
            st.one_of(
                st.binary(max_size=60).map(lambda b: quote(b, safe="").encode()),
                (near_handles | st.text(max_size=40)).map(
                    lambda t: quote(t.encode("utf-8", "surrogatepass"), safe="/@").encode()
                ),
                path_segments,
            )
        )
        def prop(garbage: bytes) -> None:
            reply = self.send(b"GET", b"/v1/u/" + garbage)
            self.assert_refused_or_known(reply, garbage)

        await self.barrage(prop)

    async def test_primary_lookups(self) -> None:
        @barrage_settings
        @given(
            st.one_of(
                st.binary(max_size=80).map(lambda b: quote(b, safe="").encode()),
                st.builds(
                    lambda prefix, h: quote(prefix + h, safe=":").encode(),
                    st.sampled_from(["ed25519:", "ED25519:", "", "ed25519%3A", "x25519:"]),
                    st.text("0123456789abcdefABCDEFg ", min_size=60, max_size=68),
                ),
                path_segments,
            )
        )
        def prop(garbage: bytes) -> None:
            reply = self.send(b"GET", b"/v1/by-primary/" + garbage)
            self.assert_refused_or_known(reply, garbage)

        await self.barrage(prop)

    async def test_webfinger(self) -> None:
        resources = st.one_of(
            st.binary(max_size=60),
            (near_handles | st.text(max_size=40)).map(lambda t: t.encode("utf-8", "surrogatepass")),
            st.builds(
                lambda scheme, local, server: (scheme + local + server).encode(
                    "utf-8", "surrogatepass"
                ),
                st.sampled_from(["acct:", "ACCT:", "mailto:", "", ":", "acct::"]),
                near_handles,
                st.sampled_from(["@kez.lat", "@KEZ.LAT", "@evil.org", "@", "", "@kez.lat@x"]),
            ),
        )

        @barrage_settings
        @given(st.lists(resources, max_size=3), st.booleans())
        def prop(values: list[bytes], raw_key: bool) -> None:
            key = b"resource" if not raw_key else b"Resource"
            query = b"&".join(key + b"=" + quote(v, safe="").encode() for v in values)
            reply = self.send(b"GET", b"/.well-known/webfinger?" + query)
            self.assert_refused_or_known(reply, query)
            assert reply.headers.get("access-control-allow-origin") in ("*", None), reply

        await self.barrage(prop)


class RandomRequestTests(BadInputTestCase):
    async def test_random_methods_and_paths(self) -> None:
        """
        Any method on any path: a 4xx, or a 200 for a read that happens to
        be valid. Nothing but C{POST /v1/register} ever writes, and no
        request here is a valid registration.
        """
        methods = st.one_of(
            st.sampled_from(
                [
                    b"GET",
                    b"HEAD",
                    b"POST",
                    b"PUT",
                    b"DELETE",
                    b"PATCH",
                    b"OPTIONS",
                    b"TRACE",
                    b"CONNECT",
                    b"get",
                ]
            ),
            st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ!#$%&'*+-.^_`|~", min_size=1, max_size=12).map(
                str.encode
            ),
        )
        prefixes = st.sampled_from(
            [
                b"/",
                b"/v1/",
                b"/v1/u/",
                b"/v1/by-primary/",
                b"/.well-known/",
                b"/metrics/",
                b"/v1/register/",
                b"//",
            ]
        )

        @barrage_settings
        @given(
            methods,
            prefixes,
            path_segments,
            st.binary(max_size=100),
            st.binary(max_size=40).map(lambda b: quote(b, safe="=&").encode()),
        )
        def prop(method: bytes, prefix: bytes, path: bytes, body: bytes, query: bytes) -> None:
            target = prefix + path + (b"?" + query if query else b"")
            reply = self.send(method, target, body)
            context = (method, target, body)
            assert reply.status < 500, (context, reply)
            if reply.status < 400:
                assert reply.status == 200 and method in (b"GET", b"HEAD"), (context, reply)
                return
            if method == b"HEAD":
                return
            if reply.status == 405:
                error = json.loads(reply.body)["error"]
                assert error["code"] == "method_not_allowed", (context, reply)
                assert reply.headers.get("allow"), (context, reply)
                return
            assert_spec_error(reply, context)

        await self.barrage(prop)

    async def test_malformed_http(self) -> None:
        """
        Broken request lines, header lines and framing are refused by the
        HTTP parser before any resource runs; the answer still has the
        SPEC shape.
        """
        header_names = st.binary(min_size=0, max_size=12).filter(
            lambda b: b"\r" not in b and b"\n" not in b
        )
        broken = st.one_of(
            # a request line that is not METHOD SP TARGET SP VERSION
            st.binary(min_size=1, max_size=60)
            .filter(lambda b: b"\n" not in b and b"\r" not in b and b.count(b" ") != 2)
            .map(lambda line: line + b"\r\nConnection: close\r\n\r\n"),
            # a header line without a colon, or a bad header name
            header_names.filter(lambda b: b":" not in b and b.strip()).map(
                lambda h: b"GET /v1/healthz HTTP/1.1\r\n" + h + b"\r\nConnection: close\r\n\r\n"
            ),
            st.sampled_from([b"HTTP/9.9", b"HTTP/1", b"http/1.1", b"HTTP/1.1 x"]).map(
                lambda v: b"GET /v1/healthz " + v + b"\r\nConnection: close\r\n\r\n"
            ),
            # bad framing of a body
            st.sampled_from([b"abc", b"-1", b"1 2", b"0x10", b"+5", b""]).map(
                lambda n: (
                    b"POST /v1/register HTTP/1.1\r\nContent-Length: "
                    + n
                    + b"\r\nConnection: close\r\n\r\n{}"
                )
            ),
            st.binary(max_size=20)
            .filter(lambda b: b"\r" not in b and b"\n" not in b)
            .map(
                lambda chunk: (
                    b"POST /v1/register HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
                    b"Connection: close\r\n\r\nzz" + chunk + b"\r\n"
                )
            ),
            st.binary(max_size=60).map(
                lambda body: (
                    b"POST /v1/register HTTP/1.1\r\nContent-Type: multipart/form-data; "
                    b"boundary=xyz\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                    % len(body)
                    + body
                )
            ),
        )

        @barrage_settings
        @given(broken)
        def prop(request: bytes) -> None:
            try:
                reply = exchange(self.port, request)
            except http.client.RemoteDisconnected:
                # closing without a word is an acceptable answer to noise
                return
            assert_spec_error(reply, request)

        await self.barrage(prop)
