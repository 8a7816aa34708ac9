"""
The web app's key directory checks in real Chromium, behind a hostile
relay (L{tests.hostilerelay}) that rewrites the server's answers:

  - a substituted key for a handle (C{/v1/u/bob} with another key) is
    refused at "Start a chat", with an error, and nothing is pinned;
  - a head with a bad signature, and an inclusion proof with a bad path,
    are refused the same way;
  - a first message from zed's key relabelled as mallory, with the
    registry's answer for zed's key rewritten to say mallory: the key
    directory has no such registration, so it is a warning and nothing
    is pinned;
  - the genuine chat afterwards is normal, with no warning, and the
    plaintext the app sends carries the head it verified;
  - a split view: the relay shows carol a directory of the same size
    where bob's registration is rewritten (signed with the server's real
    log key, as a compromised server could), alice sees the genuine one;
    after one message each way both see the loud "different key
    directories" warning on that message, and a lasting banner.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from typing import Any

from twisted.trial.unittest import TestCase

from kezchat.e2e import open_envelope, seal_envelope, text_message
from kezchat.identity.jcs import canonical_json
from kezchat.identity.keys import KeyPair
from kezchat.identity.mnemonic import seed_to_mnemonic
from kezchat.protocol.auth import body_digest, sign_request
from tests.hostilerelay import HostileRelay, json_tamper, relabel
from tests.support import http_client, json_of, register, registration, temp_dir
from tests.test_keylog_attacks import ForgedLog
from tests.test_web_e2e import DESKTOP, PASSPHRASE, SENT, WAIT, Person
from tests.webdriver import (
    ChatProcess,
    PageWatch,
    launch_chromium,
    on_asyncio,
    on_twisted,
    require_browser,
    scratch_env,
    watched_page,
)

SPLIT = "different key directories"


class KeyDirectoryInChromiumTests(TestCase):
    timeout = 300

    async def test_the_app_refuses_what_the_log_does_not_vouch_for(self) -> None:
        require_browser()
        self.db = os.path.join(temp_dir(self), "chat.db")
        chat = ChatProcess(db=self.db, sig_url=None)
        self.addCleanup(chat.kill)
        await chat.start()
        self.addCleanup(chat.stop)
        client = http_client(self)
        for _ in range(100):  # the app loads off the reactor thread at start
            response = await client.get(chat.url + "/")
            await response.content()
            if response.code == 200:
                break
        self.client = client
        self.chat = chat
        relay = await HostileRelay.start(self, upstream=chat.url)
        self.keys: dict[str, KeyPair] = {}
        for name in ("alice", "bob", "carol", "mallory", "erin", "zed"):
            self.keys[name], _ = await register(client, chat.url, name)
        await on_asyncio(self.scenario(relay, scratch_env(self)))

    def forged_log(self) -> ForgedLog:
        """
        What a compromised server can build: the genuine leaves with bob's
        registration rewritten to a key it holds, signed by its log key.
        """
        conn = sqlite3.connect(self.db)
        try:
            seed = conn.execute("SELECT value FROM settings WHERE name = 'log_key'").fetchone()[0]
            leaves = [bytes(r[0]) for r in conn.execute("SELECT leaf FROM log_leaves ORDER BY idx")]
        finally:
            conn.close()
        forged = [
            canonical_json(registration(KeyPair.generate(), "bob"))
            if json.loads(leaf)["payload"]["handle"] == "bob"
            else leaf
            for leaf in leaves
        ]
        return ForgedLog(bytes.fromhex(seed), forged)

    async def get(self, path: str, key: KeyPair | None = None, handle: str = "") -> Any:
        headers = {}
        if key is not None:
            headers["x-kez-auth"] = sign_request(
                key, "GET", f"/v1/inbox/{handle}", ["since=0"], int(time.time()), "kez.lat"
            )
        response = await self.client.get(self.chat.url + path, headers=headers)
        body = await json_of(response)
        self.assertEqual(response.code, 200, body)
        return body

    async def post(self, key: KeyPair, handle: str, to: str, envelope: dict[str, Any]) -> None:
        data = json.dumps({"to": to, "envelope": envelope}).encode()
        auth = sign_request(
            key, "POST", "/v1/messages", [body_digest(data)], int(time.time()), "kez.lat"
        )
        response = await self.client.post(
            self.chat.url + "/v1/messages",
            data=data,
            headers={"content-type": "application/json", "x-kez-sender": handle,
                     "x-kez-auth": auth},
        )
        body = await json_of(response)
        self.assertEqual(response.code, 201, body)

    async def scenario(self, relay: HostileRelay, env: dict[str, str]) -> None:
        from playwright.async_api import async_playwright

        async with async_playwright() as p:
            browser = await launch_chromium(p, env)
            watches: list[PageWatch] = []

            async def login(name: str, url: str) -> Person:
                someone = Person(name, *await watched_page(browser, name, viewport=DESKTOP))
                watches.append(someone.watch)
                await someone.log_in(url, seed_to_mnemonic(self.keys[name].seed),
                                     f"{name}@kez.lat")
                return someone

            async def refused(someone: Person, handle: str, why: str) -> None:
                await someone.tid("new-chat").fill(handle)
                await someone.tid("new-chat-start").click()
                error = someone.tid("error").filter(has_text=why)
                await error.wait_for(timeout=WAIT)
                self.assertIn("not added", await error.inner_text())
                self.assertEqual(await conversation(someone, handle).count(), 0)

            def conversation(someone: Person, handle: str) -> Any:
                return someone.page.locator(
                    f"[data-testid=conversation][data-handle='{handle}@kez.lat']"
                )

            async def start(someone: Person, handle: str) -> None:
                await someone.tid("new-chat").fill(handle)
                await someone.tid("new-chat-start").click()
                await someone.tid("thread-title").filter(has_text=f"{handle}@kez.lat").wait_for(
                    timeout=WAIT
                )

            async def say(someone: Person, text: str) -> None:
                await someone.tid("composer").fill(text)
                await someone.tid("composer").press("Enter")
                await (
                    someone.tid("message").filter(has_text=text)
                    .locator("[data-testid=message-status]").filter(has_text=SENT)
                    .wait_for(timeout=WAIT)
                )

            try:
                # -- erin, through the relay: each lie refused at start chat ----
                erin = await login("erin", relay.url)
                attacker = KeyPair.generate().primary
                relay.tamper = json_tamper(
                    lambda path, query, value: {**value, "primary": attacker}
                    if path == "/v1/u/bob" else None
                )
                await refused(erin, "bob", "substituted a key")

                def bad_sig(path: str, query: Any, value: Any) -> Any:
                    if path == "/v1/log/head":
                        return {**value, "sig": ("0" if value["sig"][0] != "0" else "1")
                                + value["sig"][1:]}
                    return None

                relay.tamper = json_tamper(bad_sig)
                await refused(erin, "mallory", "signature")

                def bad_path(path: str, query: Any, value: Any) -> Any:
                    if path == "/v1/log/inclusion":
                        return {**value, "path": ["00" * 32, *value["path"][1:]]}
                    return None

                relay.tamper = json_tamper(bad_path)
                await refused(erin, "mallory", "does not vouch")

                # -- a first message whose sender the log does not vouch for ---
                zed = self.keys["zed"]
                erin_primary = self.keys["erin"].primary
                relay.rewriters.append(relabel("mallory@kez.lat"))

                def zed_is_mallory(path: str, query: Any, value: Any) -> Any:
                    if path.startswith("/v1/by-primary/") and zed.primary[8:] in path:
                        return {**value, "handle": "mallory", "fqhn": "mallory@kez.lat"}
                    return None

                relay.tamper = json_tamper(zed_is_mallory)
                envelope = seal_envelope(zed, erin_primary, text_message("hi, it's mallory"))
                await on_twisted(self.post(zed, "zed", "erin", envelope))
                await erin.tid("refused-link").click()
                await (
                    erin.tid("warning").filter(has_text="key directory does not vouch")
                    .wait_for(timeout=WAIT)
                )
                self.assertEqual(await conversation(erin, "mallory").count(), 0)
                relay.rewriters.clear()

                # -- the genuine chat afterwards: normal, and the head rides along
                relay.tamper = None
                await start(erin, "bob")
                await say(erin, "hello bob")
                head = await on_twisted(self.get("/v1/log/head"))
                inbox = await on_twisted(
                    self.get("/v1/inbox/bob?since=0", self.keys["bob"], "bob")
                )
                sent = open_envelope(inbox["messages"][-1]["envelope"], self.keys["bob"])
                self.assertEqual(
                    sent.plaintext,
                    {"type": "text", "text": "hello bob",
                     "head": {"size": head["size"], "root": head["root"]}},
                )
                reply = text_message("hi erin")
                reply["head"] = {"size": head["size"], "root": head["root"]}
                bob_key = self.keys["bob"]
                await on_twisted(
                    self.post(bob_key, "bob", "erin", seal_envelope(bob_key, erin_primary, reply))
                )
                await erin.expect_message("hi erin")
                await erin.open_chat("bob@kez.lat")
                self.assertEqual(await erin.tid("warning").count(), 0)
                self.assertEqual(await erin.tid("directory-warning").count(), 0)

                # -- a split view: carol sees a forged directory of one size ----
                relay.tamper = json_tamper(self.forged_log().answer)
                carol = await login("carol", relay.url)
                alice = await login("alice", self.chat.url)
                await start(carol, "alice")
                await say(carol, "hello from carol")
                await alice.open_chat("carol@kez.lat")
                await alice.expect_message("hello from carol")
                warning = alice.tid("warning").filter(has_text=SPLIT)
                await warning.wait_for(timeout=WAIT)
                await alice.tid("directory-warning").wait_for(timeout=WAIT)
                await say(alice, "hello from alice")
                await carol.open_chat("alice@kez.lat")
                await carol.expect_message("hello from alice")
                await carol.tid("warning").filter(has_text=SPLIT).wait_for(timeout=WAIT)
                banner = carol.tid("directory-warning")
                await banner.wait_for(timeout=WAIT)
                self.assertIn(SPLIT, (await banner.inner_text()).lower())
                await carol.shot("keydir-split-view")
                # the banner lasts: a reload still shows it
                await carol.page.reload()
                unlock = carol.tid("passphrase")
                await unlock.fill(PASSPHRASE)
                await carol.tid("unlock").click()
                await carol.tid("directory-warning").wait_for(timeout=WAIT)
                # one warning per message, and none in erin's genuine chat
                self.assertEqual(await alice.tid("warning").count(), 1)
                self.assertEqual(await erin.tid("warning").count(), 0)
                self.assertEqual(await erin.tid("directory-warning").count(), 0)
            finally:
                await browser.close()
            problems = [p for w in watches for p in w.problems]
            self.assertEqual(problems, [])
