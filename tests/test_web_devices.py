"""
Several devices, one account (SPEC §11.3), with real parts: a real
kezchat (with a real nats-server answering its callout), two Chromium
contexts logged in from bob's 24 words, bob's CLI on the same key and two
native NATS clients of bob's with different device names, and alice on
her CLI.

  - every device of bob's sees every message (both directions): the two
    browsers show them, the CLI saves them, each native NATS client reads
    every item of bob's inbox from its own durable consumer;
  - read state is one: reading on one browser clears the unread count on
    the other, and in the CLI (through the server's copy of the read
    receipt); reading in the CLI clears it in both browsers;
  - statuses: a reply shows C{sent}, then C{delivered} and C{read} as
    alice's CLI stores and reads it, on both browsers;
  - read receipts off (Settings): alice gets no read receipt, and bob's
    other browser still learns the read state (a note to himself);
  - a fresh log-in from the words restores the whole retained history,
    both directions and the read state, with "Restoring n of N", and a
    message sent meanwhile shows before the restore is done. The restore's time and the longest
    main-thread task are logged (C{KEZ_RESTORE_MESSAGES} scales it).
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

from twisted.python import log

from kezchat.client.natsclient import connect_user, fetch_inbox, open_inbox
from kezchat.e2e import receipt, seal_envelope, text_message
from kezchat.identity.keys import KeyPair
from kezchat.identity.mnemonic import mnemonic_to_seed
from tests.clisupport import Cli, CliTestCase
from tests.natssupport import start_nats_server
from tests.relaysupport import send
from tests.support import deferred_sleep, http_client
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

ALICE = "alice@kez.lat"

#: the longest main-thread task, as the browser reports them
LONG_TASKS = """
window.__longest = 0;
window.__longTasks = 0;
window.__tasks = [];
try {
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      window.__longTasks += 1;
      window.__longest = Math.max(window.__longest, e.duration);
      window.__tasks.push([Math.round(e.startTime), Math.round(e.duration)]);
    }
  }).observe({ type: 'longtask', buffered: true });
} catch (e) {}
"""


def saved_items(cli: Cli) -> list[dict[str, Any]]:
    path = Path(cli.home) / "messages.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def key_of(cli: Cli) -> KeyPair:
    return KeyPair(mnemonic_to_seed(cli.mnemonic))


class Devices:
    """
    The browsers of one test: log-in and the looks the steps need.
    """

    def __init__(self, browser: Any, url: str) -> None:
        self.browser = browser
        self.url = url
        self.people: list[Person] = []

    async def login(self, name: str, words: str, live: bool = True) -> Person:
        someone = Person(name, *await watched_page(
            self.browser, name, LONG_TASKS, viewport=DESKTOP
        ))
        self.people.append(someone)
        await someone.log_in(self.url, words, "bob@kez.lat" if live else None)
        return someone

    @staticmethod
    def conversation(someone: Person, handle: str = ALICE) -> Any:
        return someone.page.locator(f"[data-testid=conversation][data-handle='{handle}']")

    async def unread(self, someone: Person, count: int, handle: str = ALICE) -> None:
        """
        Wait until the list shows C{count} unread for C{handle} (0: no badge).
        """
        from playwright.async_api import TimeoutError as PlaywrightTimeout

        await self.conversation(someone, handle).wait_for(timeout=WAIT)
        try:
            await someone.page.wait_for_function(
                """([handle, n]) => {
                  const c = document.querySelector(
                    `[data-testid=conversation][data-handle='${handle}']`);
                  const badge = c && c.querySelector('[data-testid=unread-count]');
                  return c && (badge ? badge.textContent.trim() === String(n) : n === 0);
                }""",
                arg=[handle, count],
                timeout=WAIT,
            )
        except PlaywrightTimeout:
            badge = self.conversation(someone, handle).locator("[data-testid=unread-count]")
            shown = await badge.inner_text() if await badge.count() else "no badge"
            raise AssertionError(f"{handle}: {shown} unread shown, not {count}") from None

    async def status_of(self, someone: Person, text: str, status: str) -> None:
        await (
            someone.tid("message").filter(has_text=text)
            .locator("[data-testid=message-status]").filter(has_text=re.compile(f"^{status}$"))
            .wait_for(timeout=WAIT)
        )

    def problems(self) -> list[str]:
        return [p for someone in self.people for p in someone.watch.problems]


class SeveralDevicesInChromiumTests(CliTestCase):
    timeout = 420

    async def start(self) -> None:
        require_browser()
        self.nats = await start_nats_server(self)
        await self.start_servers_on_nats(self.nats, web_dir=WEB_DIST)
        client = http_client(self)
        for _ in range(100):  # the app is read off the reactor thread at start
            response = await client.get(self.chat.url + "/")
            await response.content()
            if response.code == 200:
                break
            await deferred_sleep(0.05)
        self.client = client

    async def test_every_device_sees_everything_and_the_same_read_state(self) -> None:
        await self.start()
        alice, bob = await self.registered("alice", "bob")
        await on_asyncio(self.devices_story(alice, bob, scratch_env(self)))

    async def devices_story(self, alice: Cli, bob: Cli, env: dict[str, str]) -> None:
        from playwright.async_api import async_playwright

        bob_key = key_of(bob)
        natives = []
        for device in ("natone", "nattwo"):
            nc = await connect_user(self.nats.url, bob_key, reconnect=False, device=device)
            natives.append((nc, await open_inbox(nc, bob_key, device)))
        got: dict[str, list[Any]] = {"natone": [], "nattwo": []}

        async def drain(want: set[str]) -> None:
            """
            Read each native device's consumer until it has every sig in
            C{want} (the bridge publishes after storing: allow it time).
            """
            for name, (_, sub) in zip(("natone", "nattwo"), natives, strict=True):
                for _ in range(30):
                    if want <= {m.envelope["sig"] for m in got[name]}:
                        break
                    batch = await fetch_inbox(sub, batch=100, timeout=1.0)
                    for message in batch:
                        await message.ack()
                    got[name].extend(batch)

        async def cli(user: Cli, *args: str) -> Any:
            return await on_twisted(user.ok(*args))

        try:
            async with async_playwright() as p:
                browser = await launch_chromium(p, env)
                d = Devices(browser, self.chat.url)
                try:
                    await self.story(d, alice, bob, cli)
                finally:
                    problems = d.problems()
                    await browser.close()
                self.assertEqual(problems, [])
            # every item of bob's inbox reached both native devices
            await cli(bob, "listen", "--json", "--timeout", "2", "--no-receipts")
            everything = {i["envelope"]["sig"] for i in saved_items(bob)}
            await drain(everything)
            for name in got:
                self.assertEqual({m.envelope["sig"] for m in got[name]}, everything, name)
            directions = {m.direction for m in got["natone"]}
            self.assertEqual(directions, {"in", "out"})
        finally:
            for nc, _ in natives:
                await nc.close()

    async def story(self, d: Devices, alice: Cli, bob: Cli, cli: Any) -> None:
        one = await d.login("bob-one", bob.mnemonic)
        two = await d.login("bob-two", bob.mnemonic)
        await cli(alice, "send", "bob", "first")
        await cli(alice, "send", "bob", "second")
        # every device: both browsers show two unread, the CLI counts two
        for b in (one, two):
            await d.unread(b, 2)
        await cli(bob, "listen", "--json", "--count", "2", "--timeout", "30")
        counted = (await cli(bob, "unread", "--json")).lines
        self.assertEqual(counted, [{"fqhn": ALICE, "unread": 2}])

        # -- reading on one browser reads everywhere ------------------------
        await one.open_chat(ALICE)
        await one.expect_message("second")
        await d.unread(one, 0)
        await d.unread(two, 0)
        # the CLI learns it from the server's copy of the read receipt
        await cli(bob, "listen", "--json", "--timeout", "2", "--no-receipts")
        self.assertEqual((await cli(bob, "unread", "--json")).out, "")
        receipts = [
            m for m in (await cli(alice, "listen", "--json", "--timeout", "3")).lines
            if m["type"] == "receipt"
        ]
        # alice's two (the browsers' delivered receipts may come between them)
        first_sigs = [i["envelope"]["sig"] for i in saved_items(bob) if i["direction"] == "in"]
        self.assertEqual(len(first_sigs), 2)
        self.assertIn("read", [m["status"] for m in receipts])
        read_sigs = {s for m in receipts if m["status"] == "read" for s in m["sigs"]}
        self.assertEqual(read_sigs, set(first_sigs))

        # -- statuses of a reply, on both browsers ----------------------------
        await one.tid("composer").fill("hi alice")
        await one.tid("composer").press("Enter")
        await d.status_of(one, "hi alice", "sent")
        await two.open_chat(ALICE)
        await d.status_of(two, "hi alice", "sent")
        heard = await cli(alice, "listen", "--json", "--count", "1", "--timeout", "30")
        [reply] = [m for m in heard.lines if m.get("type") == "text"]
        self.assertEqual((reply["text"], reply["from"]), ("hi alice", "bob@kez.lat"))
        for b in (one, two):
            await d.status_of(b, "hi alice", "delivered")
        shown = (await cli(alice, "read", "bob", "--json")).lines
        self.assertEqual([m["text"] for m in shown], ["hi alice"])
        for b in (one, two):
            await d.status_of(b, "hi alice", "read")

        # -- reading in the CLI clears both browsers --------------------------
        for b in (one, two):
            await b.page.goto(self.chat.url + "/#/")
        await cli(alice, "send", "bob", "third")
        for b in (one, two):
            await d.unread(b, 1)
        await cli(bob, "listen", "--json", "--count", "1", "--timeout", "30")
        [third] = (await cli(bob, "read", "alice", "--json")).lines
        self.assertEqual(third["text"], "third")
        for b in (one, two):
            await d.unread(b, 0)

        # -- read receipts off: alice is not told ---------------------------
        await two.page.goto(self.chat.url + "/#/settings")
        toggle = two.tid("read-receipts")
        await toggle.uncheck()
        await two.page.wait_for_function(
            "() => !document.querySelector('[data-testid=read-receipts]').checked"
        )
        await two.page.goto(self.chat.url + "/#/")
        await cli(alice, "listen", "--json", "--timeout", "2")  # what came before
        await cli(alice, "send", "bob", "fourth")
        await d.unread(two, 1)
        await d.unread(one, 1)
        await two.open_chat(ALICE)
        await two.expect_message("fourth")
        await d.unread(two, 0)
        # the other browser still learns it (a note to bob himself)
        await d.unread(one, 0)
        # delivered (the browsers stored it), never read
        await two.page.wait_for_timeout(1500)  # receipts go out batched
        lines = (await cli(alice, "listen", "--json", "--timeout", "3")).lines
        statuses = {m["status"] for m in lines if m["type"] == "receipt"}
        self.assertIn("delivered", statuses)
        self.assertNotIn("read", statuses)
        await two.shot("devices-receipts-off")

    async def test_a_fresh_log_in_restores_everything_with_progress(self) -> None:
        await self.start()
        alice, bob = await self.registered("alice", "bob")
        await on_asyncio(self.restore_story(alice, bob, scratch_env(self)))

    async def post(self, key: KeyPair, sender: str, to: KeyPair, plaintext: Any) -> str:
        """
        Seal C{plaintext} from C{key} to C{to} and send it over HTTP; its sig.
        """
        envelope = seal_envelope(key, to.primary, plaintext)
        recipient = "alice" if sender == "bob" else "bob"
        code, body = await on_twisted(
            send(self.client, self.chat.url, key, sender, recipient, envelope)
        )
        self.assertEqual(code, 201, body)
        return str(envelope["sig"])

    async def restore_story(self, alice: Cli, bob: Cli, env: dict[str, str]) -> None:
        from playwright.async_api import async_playwright

        alice_key, bob_key = key_of(alice), key_of(bob)
        total = int(os.environ.get("KEZ_RESTORE_MESSAGES", "600"))
        # bob's CLI pins alice (its read receipt must be sealed to her key)
        await on_twisted(bob.ok("add", "alice"))
        received: list[str] = []
        for i in range(total):
            if i % 3 == 2:
                await self.post(bob_key, "bob", alice_key, text_message(f"b{i}"))
            else:
                received.append(await self.post(alice_key, "alice", bob_key, text_message(f"a{i}")))
        # another device of bob's read the first ten: a read receipt to alice
        await self.post(bob_key, "bob", alice_key, receipt("read", received[:10]))
        sent = total - len(received)

        async with async_playwright() as p:
            browser = await launch_chromium(p, env)
            d = Devices(browser, self.chat.url)
            try:
                started = time.monotonic()
                fresh = await d.login("bob-fresh", bob.mnemonic, live=False)
                progress = fresh.tid("restore-progress")
                counting = re.compile(r"^Restoring [\d,]+ of [\d,]+$")
                await progress.filter(has_text=counting).wait_for(timeout=WAIT)
                seen_at = await fresh.page.evaluate("performance.now()")
                text = await progress.inner_text()
                self.assertRegex(text, rf"of {total + 1:,}$")
                await fresh.shot("devices-restoring")
                # the app keeps working meanwhile: a message sent now shows
                # before the restore is done (the live stream opened at once)
                await self.post(alice_key, "alice", bob_key, text_message("while restoring"))
                # (not merely in the last moment before the banner goes: with
                # most of the backlog still to come)
                restoring_then = await fresh.page.wait_for_function(
                    """() => {
                      const shown = [...document.querySelectorAll(
                        '[data-testid=conversation-preview]')]
                        .some((p) => p.textContent.includes('while restoring'));
                      if (!shown) return null;
                      const p = document.querySelector('[data-testid=restore-progress]');
                      return p ? [Number(p.dataset.done), Number(p.dataset.total)] : 'after';
                    }""",
                    timeout=max(WAIT, total * 100),
                )
                then = await restoring_then.json_value()
                self.assertNotEqual(then, "after", "the message sent mid-restore showed after it")
                done, of = then
                self.assertLess(done, of - 50, f"shown only at {done} of {of}")
                await fresh.shot("devices-new-message-while-restoring")
                await progress.wait_for(state="detached", timeout=max(WAIT, total * 100))
                took = time.monotonic() - started
                await fresh.status("live")
                longest = await fresh.page.evaluate("window.__longest")
                long_tasks = await fresh.page.evaluate("window.__longTasks")
                tasks = await fresh.page.evaluate("window.__tasks")
                log.msg(f"long tasks [start, ms] (restore seen at {round(seen_at)} ms): {tasks}")
                log.msg(
                    f"restore of {total + 1} items: {took:.1f} s;"
                    f" longest main-thread task {longest:.0f} ms ({long_tasks} over 50 ms)"
                )
                # both directions, every message; the ten read elsewhere are read here
                await d.unread(fresh, len(received) + 1 - 10)
                await fresh.open_chat(ALICE)
                await fresh.expect_message("while restoring")
                counts = await fresh.page.evaluate(
                    """() => {
                      const all = [...document.querySelectorAll('[data-testid=message]')];
                      return [all.filter((m) => m.dataset.direction === 'in').length,
                              all.filter((m) => m.dataset.direction === 'out').length];
                    }"""
                )
                self.assertEqual(counts, [len(received) + 1, sent])
                first = await fresh.tid("message").first.inner_text()
                self.assertIn("a0", first)
                problems = d.problems()
            finally:
                await browser.close()
            self.assertEqual(problems, [])
