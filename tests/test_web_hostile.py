"""
The web app in real Chromium behind a hostile relay: a man-in-the-middle
(L{tests.hostilerelay}) between the real kezchat server and the browser
rewrites the inbox items it passes on, while hostile senders (registered
users, driven from Python) post what an honest client never would.

Every attack must be shown as a warning (with its reason) or hidden, none
as a normal message; a genuine message afterwards still shows normally,
with no false key-change warning and no second conversation for anyone:

  - C{from} rewritten to a pinned contact's handle (mallory's message
    labelled alice), and C{from} plus C{from_primary} both rewritten;
  - a stranger's first message relabelled as someone not yet pinned;
  - C{from} with a zero-width space, and with a trailing space;
  - an old envelope replayed under a new seq;
  - a signature forged (flipped) in transit;
  - a plaintext with a repeated key (signed by a real sender);
  - an envelope C{ts} in the year 9999 (it must not sort last forever);
  - hostile names and types: a bidi-override file name, an HTML and an
    SVG attachment (offered as opaque downloads), a reused C{file_id}
    from another sender (cannot replace the first sender's file).

The browser signs every request in the form that names the server (the
server's count of older-form requests stays at zero).

Screenshots go to C{_trial_temp/screenshots} (or $KEZ_SCREENSHOTS).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from twisted.trial.unittest import TestCase

from kezchat.e2e import chunked_file, seal_envelope, text_message
from kezchat.identity.keys import KeyPair
from kezchat.manifests.sealing import b64url_encode
from kezchat.protocol.auth import body_digest, sign_request
from tests.hostilerelay import HostileRelay, Item, corrupt_signature, relabel, seal_raw
from tests.support import http_client, json_of, register, temp_dir
from tests.test_web_e2e import DESKTOP, PASSPHRASE, SENT, WAIT, Person, png
from tests.webdriver import (
    ChatProcess,
    launch_chromium,
    on_asyncio,
    on_twisted,
    require_browser,
    scratch_env,
    watched_page,
)

ALICE = "alice@kez.lat"
MALLORY = "mallory@kez.lat"


def by_sig(envelope: dict[str, Any]) -> Any:
    """
    Selects the relay item carrying C{envelope}.
    """
    return lambda i: (
        isinstance(i.get("envelope"), dict) and i["envelope"].get("sig") == envelope["sig"]
    )


class Replace:
    """
    A rewriter (an extension to L{tests.hostilerelay}): the item carrying
    one envelope is delivered, under its own new seq, with an older
    envelope instead -- a replay of an old message under a new seq.
    """

    def __init__(self, carrier: dict[str, Any], old: Item) -> None:
        self.when = by_sig(carrier)
        self.old = old

    def __call__(self, i: Item) -> list[Item]:
        if self.when(i):
            i = {**self.old, "seq": i["seq"], "created_at": i["created_at"]}
        return [i]


class HostileRelayInChromiumTests(TestCase):
    timeout = 300

    async def test_every_attack_is_a_warning_or_hidden(self) -> None:
        require_browser()
        chat = ChatProcess(db=os.path.join(temp_dir(self), "chat.db"), sig_url=None)
        self.addCleanup(chat.kill)
        await chat.start()
        self.addCleanup(chat.stop)
        client = http_client(self)
        for _ in range(100):  # the app loads off the reactor thread at start
            response = await client.get(chat.url + "/")
            await response.content()
            if response.code == 200:
                break
        relay = await HostileRelay.start(self, upstream=chat.url)
        self.client = client
        self.chat = chat
        await on_asyncio(self.scenario(relay, scratch_env(self)))

    async def post(self, key: KeyPair, handle: str, envelope: dict[str, Any]) -> int:
        """
        Post C{envelope} to bob straight to the real server, as C{handle}.
        """
        data = json.dumps({"to": "bob", "envelope": envelope}).encode()
        auth = sign_request(
            key, "POST", "/v1/messages", [body_digest(data)], int(time.time()), "kez.lat"
        )
        response = await self.client.post(
            self.chat.url + "/v1/messages",
            data=data,
            headers={
                "content-type": "application/json",
                "x-kez-sender": handle,
                "x-kez-auth": auth,
            },
        )
        body = await json_of(response)
        self.assertEqual(response.code, 201, body)
        return int(body["seq"])

    async def scenario(self, relay: HostileRelay, env: dict[str, str]) -> None:
        from playwright.async_api import async_playwright

        client = self.client
        alice, _ = await on_twisted(register(client, self.chat.url, "alice"))
        mallory, _ = await on_twisted(register(client, self.chat.url, "mallory"))
        carol, _ = await on_twisted(register(client, self.chat.url, "carol"))
        await on_twisted(register(client, self.chat.url, "erin"))

        async with async_playwright() as p:
            browser = await launch_chromium(p, env)
            try:
                bob = Person("bob", *await watched_page(
                    browser, "bob", viewport=DESKTOP, accept_downloads=True
                ))
                bob.watch.allowed.append(lambda text: "404" in text and "/v1/u/bob" in text)
                await self.create_account(bob, relay.url)
                await bob.status("live")
                bob_primary = (await bob.tid("your-kez").inner_text()).strip()

                async def send(
                    key: KeyPair, handle: str, plaintext: dict[str, Any], **kw: Any
                ) -> dict[str, Any]:
                    envelope = seal_envelope(key, bob_primary, plaintext, **kw)
                    await on_twisted(self.post(key, handle, envelope))
                    return envelope

                async def warnings() -> int:
                    return int(await bob.tid("warning").count())

                # -- genuine first messages pin alice and mallory -----------
                hello = await send(alice, "alice", text_message("hello bob"))
                await send(mallory, "mallory", text_message("hi, mallory here"))
                await bob.open_chat(ALICE)
                await bob.expect_message("hello bob")
                hello_item = next(i for i in relay.delivered if i["envelope"] == hello)

                # -- mallory's message labelled alice (from only; both) --------
                for name, primary in (("from", None), ("from and from_primary", alice.primary)):
                    marker = f"ATTACK relabel {name}"
                    envelope = seal_envelope(mallory, bob_primary, text_message(marker))
                    relay.rewriters.append(relabel(ALICE, primary, when=by_sig(envelope)))
                    await on_twisted(self.post(mallory, "mallory", envelope))
                await bob.open_chat(MALLORY)
                await (
                    bob.tid("warning").filter(has_text='as "alice@kez.lat"').wait_for(timeout=WAIT)
                )
                await (
                    bob.tid("warning")
                    .filter(has_text="signed by mallory@kez.lat")
                    .wait_for(timeout=WAIT)
                )
                await bob.shot("hostile-relabel")

                # -- alice's messages with look-alike labels -------------------
                await bob.open_chat(ALICE)
                for label in ("alice\u200b@kez.lat", "alice@kez.lat "):
                    envelope = seal_envelope(alice, bob_primary, text_message("ATTACK look-alike"))
                    relay.rewriters.append(relabel(label, when=by_sig(envelope)))
                    await on_twisted(self.post(alice, "alice", envelope))
                await bob.page.wait_for_function(
                    "() => document.querySelectorAll('[data-testid=warning]').length >= 2",
                    timeout=WAIT,
                )
                self.assertIn("which is not a handle", await bob.tid("warning").first.inner_text())

                # -- a replay of "hello bob" under a new seq; a forged signature
                carrier = seal_envelope(alice, bob_primary, text_message("ATTACK carrier"))
                relay.rewriters.append(Replace(carrier, hello_item))
                await on_twisted(self.post(alice, "alice", carrier))
                await bob.tid("warning").filter(has_text="replay").wait_for(timeout=WAIT)
                forged = seal_envelope(alice, bob_primary, text_message("ATTACK forged"))
                relay.rewriters.append(corrupt_signature(when=by_sig(forged)))
                await on_twisted(self.post(alice, "alice", forged))
                await bob.tid("refused-link").wait_for(timeout=WAIT)

                # -- a plaintext with a repeated key, signed by alice ----------
                duplicate = seal_raw(
                    alice, bob_primary, b'{"type":"text","text":"hello","text":"ATTACK duplicate"}'
                )
                await on_twisted(self.post(alice, "alice", duplicate))
                await bob.tid("warning").filter(has_text="duplicate key").wait_for(timeout=WAIT)

                # -- a ts in the year 9999 sorts by the server's time ----------
                await send(
                    alice, "alice", text_message("from the year 9999"), ts="9999-12-31T23:59:59Z"
                )
                await send(alice, "alice", text_message("after the future"))
                await bob.expect_message("after the future")
                texts = await bob.tid("message").all_inner_texts()
                self.assertTrue(texts[-1].startswith("after the future"), texts)

                # -- hostile names and types -------------------------------------
                html = b"<script>indexedDB.deleteDatabase('kezchat')</script>"
                svg = b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>'
                for name, mime, data in (
                    ("invoice\u202efdp.exe", "application/pdf", b"%PDF-1.4 not really"),
                    ("page.html", "text/html", html),
                    ("drawing.svg", "image/svg+xml", svg),
                    ("real.png", "image/png", png(8, 8)),
                ):
                    await send(alice, "alice", self.inline(name, mime, data))
                await bob.tid("attachment-image").first.wait_for(timeout=WAIT)
                await bob.page.wait_for_function(
                    "() => document.querySelectorAll('[data-testid=download]').length >= 4",
                    timeout=WAIT,
                )
                names = await bob.tid("file-name").all_inner_texts()
                self.assertIn("invoice⟨U+202E⟩fdp.exe", names)
                self.assertNotIn("\u202e", "".join(names))
                mimes = {
                    await link.get_attribute("download"): await link.get_attribute("data-mime")
                    for link in await bob.tid("download").all()
                }
                self.assertEqual(mimes["page.html"], "application/octet-stream")
                self.assertEqual(mimes["drawing.svg"], "application/octet-stream")
                self.assertEqual(mimes["real.png"], "image/png")
                self.assertEqual(await bob.tid("attachment-image").count(), 1)

                # -- mallory reuses alice's file id --------------------------------
                good = os.urandom(100_000)
                header, chunks = chunked_file("contract.txt", "text/plain", good, file_id="c1")
                for plaintext in [header, *chunks]:
                    await send(alice, "alice", plaintext)
                await bob.page.locator("[data-testid=download][download='contract.txt']").wait_for(
                    timeout=WAIT
                )
                evil = os.urandom(100_000)
                header, chunks = chunked_file("contract.txt", "text/plain", evil, file_id="c1")
                for plaintext in [*chunks, header]:
                    await send(mallory, "mallory", plaintext)
                self.assertEqual(await self.download(bob, "contract.txt"), good)

                # -- a stranger's first message relabelled as someone unpinned --
                envelope = seal_envelope(carol, bob_primary, text_message("ATTACK stranger"))
                relay.rewriters.append(relabel("erin@kez.lat", when=by_sig(envelope)))
                await on_twisted(self.post(carol, "carol", envelope))
                await bob.tid("refused-link").click()
                await (
                    bob.tid("warning")
                    .filter(has_text="registry does not give")
                    .wait_for(timeout=WAIT)
                )
                await (
                    bob.tid("warning")
                    .filter(has_text="could not be verified")
                    .wait_for(timeout=WAIT)
                )
                await bob.shot("hostile-refused")

                # -- and a genuine message afterwards is normal -------------------
                await send(alice, "alice", text_message("genuine at the end"))
                await bob.open_chat(ALICE)
                await bob.expect_message("genuine at the end")
                await bob.tid("composer").fill("bob replies")
                await bob.tid("composer").press("Enter")
                await (
                    bob.tid("message")
                    .filter(has_text="bob replies")
                    .get_by_test_id("message-status")
                    .filter(has_text=SENT)
                    .wait_for(timeout=WAIT)
                )
                await bob.shot("hostile-alice")
                self.assertEqual(await bob.tid("key-changed").count(), 0)
                handles = sorted(
                    [
                        await c.get_attribute("data-handle")
                        for c in await bob.tid("conversation").all()
                    ]
                )
                self.assertEqual(handles, [ALICE, MALLORY])
                for peer in (ALICE, MALLORY):
                    await bob.open_chat(peer)
                    texts = (
                        await bob.tid("message")
                        .and_(bob.page.locator("[data-direction=in]"))
                        .all_inner_texts()
                    )
                    self.assertFalse([t for t in texts if "ATTACK" in t], texts)
                    if peer == ALICE:
                        self.assertEqual(sum(t.startswith("hello bob") for t in texts), 1, texts)
                await bob.tid("refused-link").click()
                # the refused list shows warnings only (waited for: the
                # thread re-renders after the route changes)
                await bob.page.wait_for_function(
                    "() => document.querySelectorAll('[data-testid=message]').length === 0",
                    timeout=WAIT,
                )
                self.assertGreaterEqual(await warnings(), 2)
                self.assertEqual(bob.watch.problems, [])
                # the app signed every request in the form that names the server
                self.assertEqual(await on_twisted(self.legacy_requests()), 0)
            finally:
                await browser.close()

    async def legacy_requests(self) -> float:
        """
        How many requests the server accepted signed in the older form
        (which names no server), from its metrics.
        """
        response = await self.client.get(self.chat.url + "/metrics")
        text = (await response.content()).decode()
        counts = [
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("kezchat_legacy_auth_requests_total{")
        ]
        self.assertEqual(len(counts), 4, text[-2000:])  # one per method, shown from the start
        return sum(counts)

    def inline(self, name: str, mime: str, data: bytes) -> dict[str, Any]:
        """
        An inline file as a hostile sender writes it (no name cleaning).
        """
        return {
            "type": "file",
            "mode": "inline",
            "name": name,
            "mime": mime,
            "size": len(data),
            "data": b64url_encode(data),
        }

    async def create_account(self, someone: Person, url: str) -> None:
        page = someone.page
        await page.goto(url + "/#/new")
        await someone.tid("handle").fill(someone.name)
        await someone.tid("passphrase").fill(PASSPHRASE)
        await someone.tid("create").click()
        await someone.tid("mnemonic-word").first.wait_for(timeout=WAIT)
        words = await someone.tid("mnemonic-word").all_inner_texts()
        await someone.tid("words-saved").click()
        inputs = someone.tid("recall-word")
        await inputs.first.wait_for()
        for i in range(3):
            field = inputs.nth(i)
            index = int(await field.get_attribute("data-index"))
            await field.fill(words[index])
        await someone.tid("recall-check").click()
        await someone.tid("your-kez").wait_for(timeout=WAIT)

    async def download(self, someone: Person, name: str) -> bytes:
        link = someone.page.locator(f"[data-testid=download][download='{name}']").first
        async with someone.page.expect_download() as info:
            await link.click()
        download = await info.value
        path = await download.path()
        with open(path, "rb") as f:
            return f.read()
