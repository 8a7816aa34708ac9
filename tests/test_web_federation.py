"""
The web app across servers, in real Chromium: alice on a.example's web
app and bob on b.example's (two C{twistd kezchat} processes of different
domains on loopback, resolving each other with C{--resolve}) chat both
ways. Each starts or receives the chat by the full remote handle, the
key is pinned only once the other domain's log (through the home server)
vouches for it, and the sidebar shows the domain that is not one's own.
Then a message to carol@c.example, whose server is gone for good, is
given up by a.example after its (short) retention period: alice's
out-bubble says C{failed}, marked undeliverable.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.trial.unittest import TestCase

from kezchat.identity.keys import KeyPair
from kezchat.identity.mnemonic import seed_to_mnemonic
from tests.chatprocess import ChatProcess, domain_process, resolve_each_other, until_ready
from tests.support import http_client, register
from tests.test_web_e2e import DESKTOP, WAIT, Person
from tests.webdriver import (
    WEB_DIST,
    launch_chromium,
    on_asyncio,
    on_twisted,
    require_browser,
    scratch_env,
    watched_page,
)

#: a.example gives a message up after this many seconds
RETENTION = 6


class FederatedWebAppTests(TestCase):
    timeout = 300

    async def test_alice_on_a_and_bob_on_b(self) -> None:
        require_browser()
        self.client = http_client(self)
        domains = ("a.example", "b.example", "c.example")
        servers = {domain: domain_process(self, domain, "--web-dir", WEB_DIST)
                   for domain in domains}
        resolve_each_other(servers)
        servers["a.example"].args += ["--retention-days", str(RETENTION / 86400)]
        for process in servers.values():
            process.start()
            self.addCleanup(process.stop)
        await gatherResults([ensureDeferred(self.until_ready(p)) for p in servers.values()])
        self.keys: dict[str, KeyPair] = {}
        for name, domain in (("alice", "a.example"), ("bob", "b.example"),
                             ("carol", "c.example")):
            self.keys[name], _ = await register(
                self.client, servers[domain].url, name, server=domain
            )
        self.servers = servers
        await on_asyncio(self.scenario(scratch_env(self)))

    async def until_ready(self, process: ChatProcess) -> None:
        await until_ready(self.client, process, "/")

    async def stop(self, domain: str) -> None:
        await self.servers[domain].stop()

    async def scenario(self, env: dict[str, str]) -> None:
        from playwright.async_api import async_playwright

        async with async_playwright() as p:
            browser = await launch_chromium(p, env)

            async def login(name: str, domain: str) -> Person:
                someone = Person(name, *await watched_page(browser, name, viewport=DESKTOP))
                await someone.log_in(self.servers[domain].url,
                                     seed_to_mnemonic(self.keys[name].seed), f"{name}@{domain}")
                return someone

            def conversation(someone: Person, fqhn: str) -> Any:
                return someone.page.locator(f"[data-testid=conversation][data-handle='{fqhn}']")

            async def start(someone: Person, fqhn: str) -> None:
                await someone.tid("new-chat").fill(fqhn)
                await someone.tid("new-chat-start").click()
                await someone.tid("thread-title").filter(has_text=fqhn).wait_for(timeout=WAIT)

            async def say(someone: Person, text: str) -> Any:
                await someone.tid("composer").fill(text)
                await someone.tid("composer").press("Enter")
                bubble = someone.tid("message").filter(has_text=text)
                await (
                    bubble.locator("[data-testid=message-status]").filter(has_text="sent")
                    .wait_for(timeout=WAIT)
                )
                return bubble

            try:
                alice = await login("alice", "a.example")
                bob = await login("bob", "b.example")
                # alice starts the chat by bob's full handle, through her server
                await start(alice, "bob@b.example")
                await say(alice, "hello bob, from a.example")
                # bob's app pins alice on first use, once a.example's log vouches
                await conversation(bob, "alice@a.example").wait_for(timeout=WAIT)
                self.assertIn(
                    "alice@a.example", await conversation(bob, "alice@a.example").inner_text()
                )
                await bob.open_chat("alice@a.example")
                await bob.expect_message("hello bob, from a.example")
                await say(bob, "hi alice, from b.example")
                await alice.expect_message("hi alice, from b.example")
                self.assertIn(
                    "bob@b.example", await conversation(alice, "bob@b.example").inner_text()
                )
                # bob's identity page, answered from b.example through a.example
                await alice.tid("identity-link").click()
                await alice.page.get_by_role("heading", name="bob@b.example").wait_for(
                    timeout=WAIT
                )
                # the record came (bob's server has no sig-server), not "no handle"
                await alice.tid("no-sigchain").wait_for(timeout=WAIT)
                self.assertEqual(
                    await alice.page.get_by_text("has no handle on this server").count(), 0
                )
                await alice.page.go_back()
                await alice.tid("thread-title").filter(has_text="bob@b.example").wait_for(
                    timeout=WAIT
                )
                self.assertEqual(await alice.tid("warning").all_inner_texts(), [])
                self.assertEqual(await bob.tid("warning").all_inner_texts(), [])

                # carol's server goes away for good: a.example gives the message up
                await start(alice, "carol@c.example")
                await on_twisted(self.stop("c.example"))
                bubble = await say(alice, "are you there, carol?")
                await (
                    bubble.locator("[data-testid=message-status]").filter(has_text="failed")
                    .wait_for(timeout=WAIT + RETENTION * 6000)
                )
                self.assertEqual(await bubble.get_by_test_id("undeliverable").count(), 1)
                self.assertIn("never took", await bubble.get_by_test_id("failed-reason")
                              .inner_text())
            finally:
                await browser.close()

