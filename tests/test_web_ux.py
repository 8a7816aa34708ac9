"""
The web app as a demanding new user meets it, in real Chromium against a
real chat-server (twistd, its own process): the registration pre-check
before any words are shown, and words kept when going back; a log-in
error naming the misspelt word; the second-tab notice before the
passphrase prompt; a passphrase change; browser notifications (asked
from a click, the sender in the title, text only when opted in, none for
the open conversation, a click opens it); the phone's connection banner
and the unread count on the back button; failed sends going out again by
themselves once the server is back; links, date separators, the list's
last time and "You:"; a thread that stays at its newest message while
images load after a reload; a peer-to-peer offer with its
C{kez-chat fetch} line. No test allows a console error it does not name.
Screenshots at desktop and phone width go to C{_trial_temp/screenshots}.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.trial.unittest import TestCase

from kezchat.e2e import seal_envelope, text_message
from kezchat.e2e.plaintext import file_share
from kezchat.identity.keys import KeyPair
from kezchat.protocol.auth import body_digest, sign_request
from kezchat.timeutil import format_rfc3339
from tests.support import http_client, register, temp_dir
from tests.test_web_e2e import DESKTOP, PASSPHRASE, PHONE, SENT, WAIT, Person, png
from tests.webdriver import (
    ChatProcess,
    launch_chromium,
    on_asyncio,
    on_twisted,
    require_browser,
    scratch_env,
    watched_page,
)

#: records every notification the page makes, and every permission request
NOTIFICATION_SPY = """
(() => {
  const Real = window.Notification;
  window.__shown = [];
  window.__asked = 0;
  class Spy {
    constructor(title, options) {
      this.title = title;
      this.options = options || {};
      this.onclick = null;
      this.closed = false;
      window.__shown.push(this);
    }
    close() { this.closed = true; }
    static get permission() { return Real ? Real.permission : 'default'; }
    static requestPermission() {
      window.__asked += 1;
      return Real ? Real.requestPermission() : Promise.resolve('default');
    }
  }
  window.Notification = Spy;
})();
"""

Scenario = Callable[["Fixture"], Awaitable[None]]


def refused(text: str) -> bool:
    """A network error while the test has the server stopped."""
    return "ERR_CONNECTION_REFUSED" in text or "ERR_EMPTY_RESPONSE" in text


class Fixture:
    """
    One chat-server and one Chromium, shared by the people of one test.
    """

    def __init__(self, case: TestCase, chat: ChatProcess, browser: Any) -> None:
        self.case = case
        self.chat = chat
        self.browser = browser
        self.client = http_client(case)
        self.people: list[Person] = []

    async def person(
        self, name: str, viewport: dict[str, int] = DESKTOP, notifications: bool = False
    ) -> Person:
        someone = Person(name, *await watched_page(
            self.browser, name, NOTIFICATION_SPY,
            grant=(["notifications"], self.chat.url) if notifications else None,
            viewport=viewport, accept_downloads=True,
        ))
        self.people.append(someone)
        return someone

    async def create(self, someone: Person, handle: str | None = None) -> None:
        """
        Create an account through C{#/new}; nothing may log an error (the
        availability question is a 200 now, not a 404).
        """
        page = someone.page
        await page.goto(self.chat.url + "/#/new")
        await someone.tid("handle").fill(handle or someone.name)
        await someone.tid("passphrase").fill(PASSPHRASE)
        await someone.tid("create").click()
        await someone.tid("mnemonic-word").first.wait_for(timeout=WAIT)
        someone.words = await someone.tid("mnemonic-word").all_inner_texts()
        await someone.tid("words-saved").click()
        await self.recall(someone)
        await someone.tid("your-kez").wait_for(timeout=WAIT)
        await someone.status("live")

    async def recall(self, someone: Person) -> None:
        inputs = someone.tid("recall-word")
        await inputs.first.wait_for(timeout=WAIT)
        for i in range(3):
            field = inputs.nth(i)
            index = int(await field.get_attribute("data-index"))
            await field.fill(someone.words[index])
        await someone.tid("recall-check").click()

    async def chat_with(self, someone: Person, handle: str) -> None:
        await someone.tid("new-chat").fill(handle)
        await someone.tid("new-chat-start").click()
        await someone.tid("thread-title").filter(has_text=handle).wait_for(timeout=WAIT)

    async def send(self, someone: Person, text: str) -> None:
        await someone.tid("composer").fill(text)
        await someone.tid("composer").press("Enter")

    async def post_as(
        self,
        key: KeyPair,
        handle: str,
        to_handle: str,
        to: str,
        plaintext: dict[str, Any],
        ts: str | None = None,
    ) -> None:
        """
        Send C{plaintext} the way the CLI does (C{to} is the recipient's
        primary), written at C{ts} (the envelope's time) when given.
        """
        await on_twisted(self._post_as(key, handle, to_handle, to, plaintext, ts))

    async def _post_as(
        self,
        key: KeyPair,
        handle: str,
        to_handle: str,
        to: str,
        plaintext: dict[str, Any],
        ts: str | None,
    ) -> None:
        body = json.dumps({"to": to_handle, "envelope": seal_envelope(key, to, plaintext, ts=ts)})
        data = body.encode()
        auth = sign_request(key, "POST", "/v1/messages", [body_digest(data)], int(time.time()))
        response = await self.client.post(
            self.chat.url + "/v1/messages",
            data=data,
            headers={
                "content-type": "application/json",
                "x-kez-sender": handle,
                "x-kez-auth": auth,
            },
        )
        content = await response.content()
        self.case.assertEqual(response.code, 201, content)

    def problems(self) -> list[str]:
        return [p for someone in self.people for p in someone.watch.problems]


class WebUxTests(TestCase):
    timeout = 240

    async def run_in_browser(self, scenario: Scenario, register_limit: int = 0) -> None:
        require_browser()
        chat = ChatProcess(
            db=os.path.join(temp_dir(self), "chat.db"), sig_url=None, register_limit=register_limit
        )
        self.addCleanup(chat.kill)
        await chat.start()
        self.addCleanup(chat.stop)
        client = http_client(self)
        for _ in range(100):  # the app loads off the reactor thread at start
            response = await client.get(chat.url + "/")
            await response.content()
            if response.code == 200:
                break
        await on_asyncio(self._launch(chat, scenario, scratch_env(self)))

    async def _launch(self, chat: ChatProcess, scenario: Scenario, env: dict[str, str]) -> None:
        from playwright.async_api import async_playwright

        async with async_playwright() as p:
            browser = await launch_chromium(p, env)
            try:
                fixture = Fixture(self, chat, browser)
                await scenario(fixture)
                self.assertEqual(fixture.problems(), [])
            finally:
                await browser.close()

    # -- creating an account ------------------------------------------------

    async def test_registration_is_checked_before_the_words(self) -> None:
        """
        A reserved, taken or rate-limited handle is refused before a key is
        made and its words are shown; going back keeps the words already
        shown, until the person starts over.
        """
        await self.run_in_browser(self.precheck, register_limit=2)

    async def precheck(self, f: Fixture) -> None:
        alice = await f.person("alice")
        await f.create(alice)
        zed = await f.person("zed")
        page = zed.page
        await page.goto(f.chat.url + "/#/new")
        await zed.tid("passphrase").fill(PASSPHRASE)
        for handle, expected in (("admin", "admin is reserved"), ("alice", "alice is taken")):
            await zed.tid("handle").fill(handle)
            await zed.tid("create").click()
            await zed.tid("error").filter(has_text=expected).wait_for(timeout=WAIT)
            self.assertEqual(await zed.tid("mnemonic-word").count(), 0)
        await zed.shot("ux-new-account-reserved")

        # words shown for "zed"; back to change the handle: the same words
        await zed.tid("handle").fill("zed")
        await zed.tid("create").click()
        await zed.tid("mnemonic-word").first.wait_for(timeout=WAIT)
        first = await zed.tid("mnemonic-word").all_inner_texts()
        await zed.tid("words-back").click()
        await zed.tid("words-kept").wait_for(timeout=WAIT)
        await zed.tid("handle").fill("zed2")
        await zed.tid("create").click()
        await zed.tid("mnemonic-word").first.wait_for(timeout=WAIT)
        self.assertEqual(await zed.tid("mnemonic-word").all_inner_texts(), first)
        # leaving the page and coming back keeps them too
        await page.goto(f.chat.url + "/#/")
        await zed.tid("go-new").wait_for(timeout=WAIT)
        await page.goto(f.chat.url + "/#/new")
        await zed.tid("words-kept").wait_for(timeout=WAIT)
        await zed.shot("ux-new-account-words-kept")
        await zed.tid("handle").fill("zed")
        await zed.tid("passphrase").fill(PASSPHRASE)
        await zed.tid("create").click()
        await zed.tid("mnemonic-word").first.wait_for(timeout=WAIT)
        self.assertEqual(await zed.tid("mnemonic-word").all_inner_texts(), first)
        # only "start over" makes new words
        await zed.tid("words-back").click()
        await zed.tid("start-over").click()
        await zed.tid("create").click()
        await zed.tid("mnemonic-word").first.wait_for(timeout=WAIT)
        self.assertNotEqual(await zed.tid("mnemonic-word").all_inner_texts(), first)
        zed.words = await zed.tid("mnemonic-word").all_inner_texts()
        await zed.tid("words-saved").click()
        await f.recall(zed)
        await zed.tid("your-kez").wait_for(timeout=WAIT)

        # two registrations from this address used the limit: the third is
        # refused before the words
        yan = await f.person("yan")
        await yan.page.goto(f.chat.url + "/#/new")
        await yan.tid("handle").fill("yan")
        await yan.tid("passphrase").fill(PASSPHRASE)
        await yan.tid("create").click()
        await yan.tid("error").filter(has_text="Too many accounts").wait_for(timeout=WAIT)
        self.assertEqual(await yan.tid("mnemonic-word").count(), 0)

    # -- logging in, tabs, passphrase --------------------------------------

    async def test_login_tabs_and_passphrase(self) -> None:
        """
        The log-in error names the misspelt word and the phone textarea
        shows all 24 words; a second tab says it is open elsewhere before
        asking for the passphrase; the passphrase can be changed (the old
        one is required) and the new one unlocks after a reload.
        """
        await self.run_in_browser(self.login_tabs_passphrase)

    async def login_tabs_passphrase(self, f: Fixture) -> None:
        alice = await f.person("alice")
        await f.create(alice)
        other = await f.person("alice-again", viewport=PHONE)
        await other.page.goto(f.chat.url + "/#/login")
        typo = list(alice.words)
        typo[6] = typo[6][:-1] + ("x" if typo[6][-1] != "x" else "y")
        await other.tid("login-mnemonic").fill(" ".join(typo))
        await other.tid("passphrase").fill("another passphrase")
        await other.tid("login").click()
        error = other.tid("error").filter(has_text=f'word 7, "{typo[6]}"')
        await error.wait_for(timeout=WAIT)
        # at phone width the textarea shows all 24 words without scrolling
        longest = " ".join(["abstract"] * 24)
        await other.tid("login-mnemonic").fill(longest)
        sizes = await other.tid("login-mnemonic").evaluate("e => [e.scrollHeight, e.clientHeight]")
        self.assertLessEqual(sizes[0], sizes[1], sizes)
        await other.shot("ux-login-misspelt")

        # a second tab: the notice comes first, no passphrase asked
        await alice.page.reload()
        await alice.tid("unlock").wait_for(timeout=WAIT)
        second = await alice.context.new_page()
        alice.watch.attach(second)
        await second.goto(f.chat.url + "/#/")
        await second.get_by_text("already open in another tab").wait_for(timeout=WAIT)
        self.assertEqual(await second.get_by_test_id("passphrase").count(), 0)
        await second.close()

        # change the passphrase: the old one must be right
        await alice.tid("passphrase").fill(PASSPHRASE)
        await alice.tid("unlock").click()
        await alice.status("live")
        await alice.tid("settings-link").click()
        await alice.tid("change-passphrase-open").click()
        current = alice.page.locator("[data-testid=passphrase][data-role=current]")
        await current.fill("not the passphrase")
        await alice.page.locator("[data-testid=passphrase][data-role=new]").fill(
            "a brand new passphrase"
        )
        await alice.tid("change-passphrase").click()
        await (
            alice.tid("error")
            .filter(has_text="current passphrase is not right")
            .wait_for(timeout=WAIT)
        )
        await current.fill(PASSPHRASE)
        await alice.tid("change-passphrase").click()
        await alice.tid("passphrase-changed").wait_for(timeout=WAIT)
        await alice.shot("ux-settings-passphrase")
        await alice.page.reload()
        await alice.tid("passphrase").fill(PASSPHRASE)
        await alice.tid("unlock").click()
        await alice.tid("error").filter(has_text="does not open").wait_for(timeout=WAIT)
        await alice.tid("passphrase").fill("a brand new passphrase")
        await alice.tid("unlock").click()
        await alice.status("live")

    # -- notifications --------------------------------------------------------

    async def test_notifications(self) -> None:
        """
        Permission is asked only from a click once a conversation exists;
        a notification names the sender, carries the text only when the
        person opted in, is not made for the conversation being read, and
        a click on it opens the conversation.
        """
        await self.run_in_browser(self.notifications)

    async def notifications(self, f: Fixture) -> None:
        alice = await f.person("alice")
        bob = await f.person("bob", notifications=True)
        for someone in (alice, bob):
            await f.create(someone)
        # alice's browser has not granted anything: nothing asked on load
        self.assertEqual(await alice.page.evaluate("window.__asked"), 0)
        self.assertEqual(await alice.tid("notify-prompt").count(), 0)
        await f.chat_with(alice, "bob")
        await alice.tid("notify-prompt").wait_for(timeout=WAIT)
        self.assertEqual(await alice.page.evaluate("window.__asked"), 0)
        await alice.shot("ux-notify-prompt")
        await alice.tid("notify-enable").click()
        await alice.page.wait_for_function("() => window.__asked === 1", timeout=WAIT)

        # bob was not in the conversation when "first" came: one notification
        await f.send(alice, "first")
        await bob.page.wait_for_function("() => window.__shown.length === 1", timeout=WAIT)
        # bob reads alice's conversation: no notification for it
        await bob.open_chat("alice@kez.lat")
        await bob.expect_message("first")
        await f.send(alice, "while bob reads")
        await bob.expect_message("while bob reads")
        await bob.page.wait_for_timeout(300)
        self.assertEqual(await bob.page.evaluate("window.__shown.length"), 1)

        # bob is elsewhere: the sender's handle, not the text
        await bob.page.goto(f.chat.url + "/#/settings")
        await f.send(alice, "secret plans")
        await bob.page.wait_for_function("() => window.__shown.length === 2", timeout=WAIT)
        shown = await bob.page.evaluate("window.__shown.map(n => [n.title, n.options.body || ''])")
        self.assertEqual(shown, [["alice@kez.lat", "New message"]] * 2)
        # opted in: the text too
        await bob.tid("notify-show-text").check()
        await f.send(alice, "now with text")
        await bob.page.wait_for_function("() => window.__shown.length === 3", timeout=WAIT)
        self.assertEqual(await bob.page.evaluate("window.__shown[2].options.body"), "now with text")
        # a click opens the conversation
        await bob.page.evaluate("window.__shown[2].onclick(new Event('click'))")
        await bob.tid("thread-title").filter(has_text="alice@kez.lat").wait_for(timeout=WAIT)
        self.assertTrue(await bob.page.evaluate("window.__shown[2].closed"))

    # -- phone: banner, unread, resend ----------------------------------------

    async def test_phone_banner_unread_and_resend(self) -> None:
        """
        On a phone the lost connection is a banner, a message in another
        conversation shows on the back button, and a send that failed while
        the server was down goes out by itself when it is back, once.
        """
        await self.run_in_browser(self.phone)

    async def phone(self, f: Fixture) -> None:
        alice = await f.person("alice", viewport=PHONE)
        bob = await f.person("bob", viewport=PHONE)
        for someone in (alice, bob):
            await f.create(someone)
        bob_primary = (await bob.tid("your-kez").inner_text()).strip()
        await f.chat_with(alice, "bob")
        await f.send(alice, "hello from a phone")
        await bob.tid("conversation").first.click()
        await bob.expect_message("hello from a phone")

        # dave (the CLI) writes to bob while bob reads alice's thread
        dave, _ = await on_twisted(register(f.client, f.chat.url, "dave"))
        await f.post_as(dave, "dave", "bob", bob_primary, text_message("psst, bob"))
        await bob.tid("back-unread").filter(has_text="1").wait_for(timeout=WAIT)
        self.assertTrue(await bob.tid("back-unread").is_visible())
        await bob.shot("ux-phone-back-unread")

        # the server goes away: a banner, and a send fails visibly
        for someone in (alice, bob):
            someone.watch.allowed.append(refused)
        await on_twisted(f.chat.stop())
        await alice.status("reconnecting")
        banner = alice.tid("connection-banner")
        await banner.wait_for(timeout=WAIT)
        self.assertTrue(await banner.is_visible())
        self.assertIn("trying again", await banner.inner_text())
        await f.send(alice, "sent while the server was down")
        failed = alice.tid("message").filter(has_text="sent while the server was down")
        await (
            failed.get_by_test_id("message-status").filter(has_text="failed").wait_for(timeout=WAIT)
        )
        self.assertEqual(await failed.get_attribute("data-failed"), "true")
        await alice.shot("ux-phone-failed-send")
        # back: it goes out by itself, no click
        await on_twisted(f.chat.start())
        await alice.status("live")
        await failed.get_by_test_id("message-status").filter(has_text=SENT).wait_for(timeout=WAIT)
        await alice.tid("connection-banner").wait_for(state="detached", timeout=WAIT)
        await bob.status("live")
        await bob.expect_message("sent while the server was down")
        await bob.page.wait_for_timeout(500)
        texts = await bob.tid("message").all_inner_texts()
        self.assertEqual(
            sum(t.startswith("sent while the server was down") for t in texts), 1, texts
        )
        for someone in (alice, bob):
            someone.watch.allowed.remove(refused)

    # -- the thread and the list ----------------------------------------------

    async def test_thread_links_dates_list_and_scroll(self) -> None:
        """
        Links are clickable (http/https only, a new tab, no opener), the
        thread has a date separator, the list shows the last time and
        "You:", a P2P offer shows its fetch line, and after a reload and
        unlock the open thread sits at its newest message even though its
        images load after the first scroll.
        """
        await self.run_in_browser(self.thread)

    async def thread(self, f: Fixture) -> None:
        alice = await f.person("alice")
        bob = await f.person("bob")
        for someone in (alice, bob):
            await f.create(someone)
        bob_primary = (await bob.tid("your-kez").inner_text()).strip()
        await f.chat_with(alice, "bob")
        await f.send(alice, "see https://example.org/a?b=1, not javascript:alert(1)")
        await bob.tid("conversation").first.click()
        link = bob.tid("message-link")
        await link.first.wait_for(timeout=WAIT)
        self.assertEqual(await link.count(), 1)
        self.assertEqual(await link.get_attribute("href"), "https://example.org/a?b=1")
        self.assertEqual(await link.get_attribute("target"), "_blank")
        self.assertEqual(await link.get_attribute("rel"), "noopener noreferrer")
        self.assertEqual(await link.inner_text(), "https://example.org/a?b=1")
        await bob.tid("date-separator").filter(has_text="Today").wait_for(timeout=WAIT)
        self.assertEqual(await bob.tid("date-separator").count(), 1)

        # the list: the last time, and "You:" only for one's own last message
        alice_row = bob.page.locator("[data-testid=conversation][data-handle='alice@kez.lat']")
        self.assertRegex(await alice_row.get_by_test_id("conversation-time").inner_text(), r"\d")
        self.assertNotIn(
            "You:", await alice_row.get_by_test_id("conversation-preview").inner_text()
        )
        bob_row = alice.page.locator("[data-testid=conversation][data-handle='bob@kez.lat']")
        await alice.page.wait_for_function(
            "() => document.querySelector('[data-testid=conversation-preview]')"
            "?.textContent.startsWith('You: see')",
            timeout=WAIT,
        )
        self.assertRegex(await bob_row.get_by_test_id("conversation-time").inner_text(), r"\d")

        # a P2P offer from dave, a CLI user: size, sender and the command to copy
        digest = "ab" * 32
        offer = file_share("holiday.mkv", 700_000_000, digest, "ticket", "k" * 43 + "=")
        dave, _ = await on_twisted(register(f.client, f.chat.url, "dave"))
        # written three days ago (sent late): its own day in the thread
        days_ago = format_rfc3339(time.time() - 3 * 86400)
        await f.post_as(dave, "dave", "bob", bob_primary, text_message("old news"), ts=days_ago)
        await f.post_as(dave, "dave", "bob", bob_primary, offer)
        await bob.open_chat("dave@kez.lat")
        separators = bob.tid("date-separator")
        await separators.nth(1).wait_for(timeout=WAIT)
        labels = await separators.all_inner_texts()
        self.assertEqual(len(labels), 2, labels)
        self.assertNotIn(labels[0], ("Today", "Yesterday"))
        self.assertEqual(labels[1], "Today")
        command = bob.tid("fetch-command")
        await command.wait_for(timeout=WAIT)
        self.assertEqual(await command.inner_text(), f"kez-chat fetch {digest} --out holiday.mkv")
        offered = await bob.tid("share-offer").inner_text()
        self.assertIn("dave@kez.lat", offered)
        self.assertIn("667.6 MiB", offered)
        body = (await bob.page.inner_text("body")).lower()
        self.assertNotIn("desktop", body)
        await bob.shot("ux-p2p-offer")

        # texts, then images last; after a reload + unlock bob's open thread
        # sits at the end although the images load after the first scroll
        for i in range(12):
            await f.send(alice, f"line {i}")
        for i in range(4):
            await alice.tid("attach").set_input_files(
                files=[{"name": f"pic{i}.png", "mimeType": "image/png", "buffer": png(200, 200)}]
            )
            await (
                alice.tid("message-status")
                .filter(has_text=SENT)
                .nth(13 + i)
                .wait_for(timeout=WAIT)
            )
        await bob.open_chat("alice@kez.lat")
        await bob.tid("attachment-image").nth(3).wait_for(timeout=WAIT)
        await bob.shot("ux-thread-links-dates")
        await bob.page.set_viewport_size(DESKTOP)
        await bob.page.reload()
        await bob.tid("passphrase").fill(PASSPHRASE)
        await bob.tid("unlock").click()
        await bob.expect_message("pic3.png")
        await bob.page.wait_for_function(
            "() => [...document.querySelectorAll('[data-testid=attachment-image]')]"
            ".filter(i => i.complete && i.naturalHeight > 0).length === 4",
            timeout=WAIT,
        )
        await bob.page.wait_for_timeout(300)
        gap = await bob.tid("thread-scroll").evaluate(
            "e => e.scrollHeight - e.scrollTop - e.clientHeight"
        )
        self.assertLessEqual(gap, 2, "the thread is not at its newest message after a reload")
