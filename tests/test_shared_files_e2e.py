"""
The whole shared-files story (SPEC §3.4, §7) against the two real services,
both started in-process on port 0: a user publishes, another resolves,
verifies and reads.
"""

from __future__ import annotations

import time

from twisted.trial.unittest import TestCase

from kezchat.identity.jcs import canonical_json
from kezchat.identity.keys import KeyPair
from kezchat.manifests import (
    build_manifest,
    manifest_bytes,
    new_content_key,
    private_entry,
    public_entry,
    read_manifest,
    shared_files_body,
)
from kezchat.protocol.auth import body_digest, sign_request
from kezchat.sigchain import bodies, next_event, read_document
from tests.sigsupport import start_sig_server
from tests.support import http_client, json_of, register, start_server

FILE = {"mime": "application/pdf", "added_at": "2026-05-25T03:00:00Z"}


class SharedFilesScenarioTests(TestCase):
    timeout = 60

    async def test_publish_resolve_verify_read(self) -> None:
        sig = await start_sig_server(self)
        chat = await start_server(self, sig_server_url=sig.url)
        client = http_client(self)

        # tudisco registers, starts a sigchain, publishes a manifest
        tudisco, record = await register(client, chat.url, "tudisco")
        chris = KeyPair.generate()
        await register(client, chat.url, "chris", key=chris)
        chain: list[dict] = []

        async def append(kind: str, body: dict) -> None:
            event = next_event(tudisco, chain, kind, body)
            response = await client.post(
                record["sigchain_url"] + "/events", data=canonical_json(event)
            )
            self.assertEqual(response.code, 201, await response.content())
            chain.append(event)

        await append("add_endpoint", bodies.add_endpoint("nats", "nats", url="wss://kez.lat/nats"))
        await append("add_endpoint", bodies.add_endpoint("laptop", "iroh", node_id="ab" * 32))

        content_key = new_content_key()
        manifest = build_manifest(
            tudisco,
            [
                public_entry(id="cv", name="cv.pdf", size=1000, blake3="11" * 32, **FILE),
                private_entry(
                    id="tax",
                    name="tax.pdf",
                    size=2000,
                    blake3="22" * 32,
                    **FILE,
                    content_key=content_key,
                    recipients=[chris.primary],
                ),
            ],
        )
        blob = manifest_bytes(manifest)
        mirror_url = f"{chat.url}/v1/manifests/tudisco"
        stamp = sign_request(
            tudisco, "PUT", "/v1/manifests/tudisco", [body_digest(blob)], int(time.time())
        )
        response = await client.put(mirror_url, data=blob, headers={"x-kez-auth": stamp})
        self.assertEqual(response.code, 201)
        published = (await json_of(response))["blake3"]
        await append("set_shared_files", shared_files_body(blob, mirror_url))

        # chris resolves the handle, verifies the chain, reads the manifest
        response = await client.get(f"{chat.url}/v1/u/tudisco")
        resolved = await json_of(response)
        self.assertEqual(
            resolved["sigchain_url"], f"{sig.url}/v1/sigchains/ed25519/{tudisco.public_hex}"
        )
        response = await client.get(resolved["sigchain_url"])
        state = read_document(await response.content(), primary=resolved["primary"])
        self.assertEqual([e.protocol for e in state.endpoints], ["nats", "iroh"])
        pointer = state.shared_files
        self.assertEqual(pointer.manifest_blake3, published)

        response = await client.get(pointer.url)
        fetched = await response.content()
        view = read_manifest(
            fetched, chris, owner=resolved["primary"], expected_blake3=pointer.manifest_blake3
        )
        self.assertEqual(len(fetched), pointer.size)
        self.assertEqual([v.entry["name"] for v in view.public], ["cv.pdf"])
        self.assertEqual(
            [(v.entry["name"], v.content_key) for v in view.private], [("tax.pdf", content_key)]
        )
        # a third user sees the public entry only
        self.assertEqual(read_manifest(fetched, KeyPair.generate()).private, ())
