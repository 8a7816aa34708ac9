"""
The chat-server's manifest mirror (SPEC §3.4) over real HTTP.
"""

from __future__ import annotations

import json
import time
from urllib.parse import quote

from hypothesis import strategies as st
from twisted.trial.unittest import TestCase

from kezchat.identity.keys import KeyPair
from kezchat.manifests import (
    build_manifest,
    manifest_blake3,
    manifest_bytes,
    new_content_key,
    private_entry,
    public_entry,
)
from kezchat.protocol.auth import body_digest, sign_request
from tests.backends import on_postgresql
from tests.sigsupport import examples, json_values
from tests.support import http_client, json_of, register, start_server

FILE = {"size": 10, "mime": "text/plain", "blake3": "cd" * 32, "added_at": "2026-05-25T03:00:00Z"}


def blob_of(owner: KeyPair, *names: str) -> bytes:
    entries = [public_entry(id=name, name=name, **FILE) for name in names]
    return manifest_bytes(build_manifest(owner, entries))


def auth(key: KeyPair, handle: str, body: bytes, ts: float | None = None) -> str:
    ts = int(time.time() if ts is None else ts)
    return sign_request(key, "PUT", f"/v1/manifests/{handle}", [body_digest(body)], ts)


class MirrorTests(TestCase):
    timeout = 60

    async def setUp(self) -> None:
        self.server = await start_server(self)
        self.client = http_client(self)
        self.key, _ = await register(self.client, self.server.url, "alice")
        self.url = f"{self.server.url}/v1/manifests/alice"

    async def put(self, body: bytes, header: str | None = None, url: str | None = None):
        headers = {"content-type": "application/json"}
        if header is not None:
            headers["x-kez-auth"] = header
        response = await self.client.put(url or self.url, data=body, headers=headers)
        return response.code, await json_of(response)

    async def current(self) -> tuple[int, bytes]:
        response = await self.client.get(self.url)
        return response.code, await response.content()

    async def assertRefused(
        self, body: bytes, header: str | None, status: int, code: str, url: str | None = None
    ) -> None:
        before = await self.current()
        got_status, answer = await self.put(body, header, url)
        self.assertEqual((got_status, answer["error"]["code"]), (status, code), answer)
        self.assertEqual(await self.current(), before)

    async def test_put_and_get_byte_exact(self) -> None:
        self.assertEqual((await self.current())[0], 404)
        first = blob_of(self.key, "a.txt")
        status, answer = await self.put(first, auth(self.key, "alice", first))
        self.assertEqual((status, answer), (201, {"blake3": manifest_blake3(first)}))
        self.assertEqual(await self.current(), (200, first))
        second = blob_of(self.key, "a.txt", "b.txt")
        await self.put(second, auth(self.key, "alice", second))
        response = await self.client.get(f"{self.server.url}/v1/manifests/ALICE@kez.lat")
        self.assertEqual(await response.content(), second)
        self.assertEqual(response.headers.getRawHeaders("etag"), [f'"{manifest_blake3(second)}"'])

    async def test_private_entries_stored_as_is(self) -> None:
        reader = KeyPair.generate()
        entry = private_entry(
            id="p", name="p.bin", **FILE, content_key=new_content_key(), recipients=[reader.primary]
        )
        blob = manifest_bytes(build_manifest(self.key, [entry]))
        await self.put(blob, auth(self.key, "alice", blob))
        self.assertEqual(await self.current(), (200, blob))

    async def test_authentication(self) -> None:
        blob = blob_of(self.key, "a.txt")
        other = KeyPair.generate()
        await self.assertRefused(blob, None, 401, "unauthorized")
        await self.assertRefused(blob, "garbage", 401, "unauthorized")
        await self.assertRefused(blob, auth(other, "alice", blob), 401, "bad_signature")
        await self.assertRefused(blob, auth(self.key, "alice", b"other body"), 401, "bad_signature")
        await self.assertRefused(blob, auth(self.key, "bob", blob), 401, "bad_signature")
        await self.assertRefused(
            blob, auth(self.key, "alice", blob, time.time() - 120), 401, "stale_timestamp"
        )

    async def test_blob_checks(self) -> None:
        stranger = KeyPair.generate()
        foreign = blob_of(stranger, "x")
        await self.assertRefused(foreign, auth(self.key, "alice", foreign), 401, "bad_signature")
        damaged = blob_of(self.key, "x").replace(b'"x"', b'"y"')
        await self.assertRefused(damaged, auth(self.key, "alice", damaged), 401, "bad_signature")
        junk = b'{"type": "kez.chat.shared_files"}'
        await self.assertRefused(junk, auth(self.key, "alice", junk), 400, "bad_request")

    async def test_unknown_handle(self) -> None:
        blob = blob_of(self.key, "a.txt")
        url = f"{self.server.url}/v1/manifests/nobody"
        await self.assertRefused(blob, auth(self.key, "nobody", blob), 404, "not_found", url)
        response = await self.client.get(url)
        self.assertEqual(response.code, 404)
        await response.content()

    async def test_oversize(self) -> None:
        body = b" " * (64 * 1024 + 1)
        await self.assertRefused(body, auth(self.key, "alice", body), 413, "payload_too_large")

    async def test_garbage(self) -> None:
        """
        Hypothesis-drawn bodies with valid authentication: always a 4xx,
        and the stored manifest never changes.
        """
        good = blob_of(self.key, "keep.txt")
        await self.put(good, auth(self.key, "alice", good))
        template = json.loads(good)
        mutated = st.builds(
            lambda key, value: {**template, key: value},
            st.sampled_from(sorted(template)),
            json_values,
        ).map(lambda m: json.dumps(m).encode())
        garbage = st.one_of(
            st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode()), mutated
        )
        for body in examples(garbage, 120):
            status, answer = await self.put(body, auth(self.key, "alice", body))
            self.assertTrue(400 <= status < 500, (status, answer))
        for handle in examples(st.text(min_size=1, max_size=40), 40):
            response = await self.client.get(
                f"{self.server.url}/v1/manifests/{quote(handle, safe='')}"
            )
            body = await response.content()
            if response.code != 200:
                self.assertTrue(400 <= response.code < 500, (response.code, body))
        self.assertEqual(await self.current(), (200, good))


# the same tests on PostgreSQL
on_postgresql(globals(), MirrorTests)
