"""
The web app in real Chromium against the real servers (kezchat in its own
twistd process, kezsig in-process): two people create accounts through
C{#/new}, find each other and chat both ways live; an inline image and a
3 MiB chunked file arrive byte for byte; a file from the Python client
arrives in chunks out of order and across a reload ("Receiving i/n"); a
forged message is shown as a warning; the identity view shows the
sigchain and the shared files the sigchain vouches for; a reload and
unlock keeps history and the live stream, and a second tab does not run
the account twice; a server restart shows C{reconnecting} then C{live}
and loses nothing; a third browser logs in from the first person's 24
words; a key swapped by the server is flagged loudly; log-out wipes the
browser's store. No console error and no CSP violation is allowed
anywhere (the few expected network errors are named where they happen).
Screenshots of every main screen, at desktop and phone width, go to
C{_trial_temp/screenshots} (or $KEZ_SCREENSHOTS).

The story is L{BrowserStoryTests}: one named test per step, in order,
sharing one pair of servers and one Chromium.
"""

from __future__ import annotations

import atexit
import json
import os
import random
import re
import shutil
import sqlite3
import struct
import tempfile
import time
import zlib
from collections.abc import Callable, Coroutine
from typing import Any

from twisted.trial.unittest import TestCase

from kezchat.e2e import chunked_file, seal_envelope, text_message
from kezchat.identity.keys import KeyPair
from kezchat.manifests import (
    build_manifest,
    manifest_bytes,
    private_entry,
    public_entry,
    shared_files_body,
)
from kezchat.protocol.auth import body_digest, sign_request
from kezchat.sigchain.events import next_event
from kezchat.timeutil import format_rfc3339
from tests.support import http_client, json_of, register, temp_dir
from tests.webdriver import (
    ChatProcess,
    LoopChatProcess,
    LoopSigProcess,
    PageWatch,
    launch_chromium,
    on_asyncio,
    on_twisted,
    require_browser,
    scratch_env,
    watched_page,
)

PASSPHRASE = "correct horse battery"
#: a message the server has (receipts may already have moved it on)
SENT = re.compile(r"^(sent|delivered|read)$")
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 360, "height": 740}
WAIT = 20_000  # ms, for any one expectation


def png(width: int, height: int) -> bytes:
    """
    A small real PNG (a colour gradient), made without an imaging library.
    """
    rows = b"".join(
        b"\x00" + b"".join(bytes((x * 4 % 256, y * 4 % 256, 160)) for x in range(width))
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def screenshot_dir() -> str:
    path = os.environ.get("KEZ_SCREENSHOTS") or os.path.abspath("screenshots")
    os.makedirs(path, exist_ok=True)
    return path


class Person:
    """
    One browser context (its own IndexedDB) with one page, watched.
    """

    def __init__(self, name: str, context: Any, page: Any, watch: PageWatch) -> None:
        self.name = name
        self.context = context
        self.page = page
        self.watch = watch
        self.words: list[str] = []

    def tid(self, testid: str) -> Any:
        return self.page.get_by_test_id(testid)

    async def log_in(self, url: str, words: str, handle: str | None = None) -> None:
        """
        Log in on C{url}'s web app with C{words} and L{PASSPHRASE}; given
        C{handle}, wait until the app shows it and its stream is live.
        """
        await self.page.goto(url + "/#/login")
        await self.tid("login-mnemonic").fill(words)
        await self.tid("passphrase").fill(PASSPHRASE)
        await self.tid("login").click()
        if handle is not None:
            await self.tid("your-handle").filter(has_text=handle).wait_for(timeout=WAIT)
            await self.status("live")

    async def status(self, text: str, timeout: int = WAIT) -> None:
        await self.page.wait_for_function(
            "t => document.querySelector('[data-testid=connection-status]')?.textContent === t",
            arg=text,
            timeout=timeout,
        )

    async def shot(self, name: str) -> list[str]:
        """
        Desktop and phone-width screenshots of the current screen; at phone
        width nothing may scroll sideways.
        """
        paths = []
        for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
            await self.page.set_viewport_size(size)
            await self.page.wait_for_timeout(150)
            path = os.path.join(screenshot_dir(), f"{name}-{label}.png")
            await self.page.screenshot(path=path)
            paths.append(path)
            if label == "phone":
                wide = await self.page.evaluate(
                    "document.documentElement.scrollWidth - document.documentElement.clientWidth"
                )
                assert wide <= 0, f"{name} scrolls sideways by {wide}px at 360px"
        await self.page.set_viewport_size(DESKTOP)
        return paths

    async def open_chat(self, handle: str) -> None:
        await self.page.locator(f"[data-testid=conversation][data-handle='{handle}']").click()
        await self.tid("thread-title").filter(has_text=handle).wait_for(timeout=WAIT)

    async def expect_message(self, text: str) -> None:
        await self.tid("message").filter(has_text=text).first.wait_for(timeout=WAIT)


def refused(text: str) -> bool:
    """
    The console errors a browser shows while the server is down.
    """
    return "ERR_CONNECTION_REFUSED" in text or "ERR_EMPTY_RESPONSE" in text


class Story:
    """
    What the browser story's steps share: the servers (child processes run
    by asyncio's loop, which trial leaves alone between tests), Chromium,
    the people and what each step learnt for the next.
    """

    def __init__(
        self, chat: LoopChatProcess, sig: LoopSigProcess, playwright: Any, browser: Any
    ) -> None:
        self.chat, self.sig, self.playwright, self.browser = chat, sig, playwright, browser
        self.people: list[Person] = []
        self.shots: list[str] = []
        self.started = time.monotonic()
        #: the first step that failed: the later ones cannot run without it
        self.failed: str | None = None

    async def person(self, name: str) -> Person:
        someone = Person(name, *await watched_page(
            self.browser, name, viewport=DESKTOP, accept_downloads=True
        ))
        self.people.append(someone)
        return someone

    def problems(self) -> list[str]:
        return [p for someone in self.people for p in someone.watch.problems]

    async def close(self) -> None:
        try:
            await self.browser.close()
            await self.playwright.stop()
        finally:
            await on_twisted(self.chat.stop())
            await on_twisted(self.sig.stop())


class WebAppSteps:
    """
    Helpers of the browser tests: accounts, downloads, messages and
    shared files made outside the browser.
    """

    assertEqual: Any
    assertIn: Any

    async def create_account(
        self, someone: Person, chat: ChatProcess, shots: list[str] | None
    ) -> None:
        page = someone.page
        await page.goto(chat.url + "/#/new")
        await someone.tid("handle").fill(someone.name)
        await someone.tid("passphrase").fill(PASSPHRASE)
        if shots is not None:
            shots += await someone.shot("new-account")
        await someone.tid("create").click()
        await someone.tid("mnemonic-word").first.wait_for(timeout=WAIT)
        someone.words = await someone.tid("mnemonic-word").all_inner_texts()
        self_words = someone.words
        assert len(self_words) == 24, self_words
        if shots is not None:
            shots += await someone.shot("new-account-words")
        await someone.tid("words-saved").click()
        inputs = someone.tid("recall-word")
        await inputs.first.wait_for()
        self.assertEqual(await inputs.count(), 3)
        for i in range(3):
            field = inputs.nth(i)
            index = int(await field.get_attribute("data-index"))
            await field.fill(self_words[index])
        if shots is not None:
            shots += await someone.shot("new-account-recall")
        await someone.tid("recall-check").click()
        await someone.tid("your-kez").wait_for(timeout=WAIT)

    async def download(self, someone: Person, name: str) -> bytes:
        link = someone.page.locator(f"[data-testid=download][download='{name}']").last
        async with someone.page.expect_download() as info:
            await link.click()
        download = await info.value
        path = await download.path()
        with open(path, "rb") as f:
            return f.read()

    async def post_as(
        self, client: Any, url: str, key: KeyPair, handle: str, to: str, plaintext: dict[str, Any]
    ) -> None:
        """
        Send C{plaintext} to bob (whose primary is C{to}) the way the CLI does.
        """
        body = json.dumps({"to": "bob", "envelope": seal_envelope(key, to, plaintext)})
        data = body.encode()
        auth = sign_request(key, "POST", "/v1/messages", [body_digest(data)], int(time.time()))
        response = await client.post(
            url + "/v1/messages",
            data=data,
            headers={
                "content-type": "application/json",
                "x-kez-sender": handle,
                "x-kez-auth": auth,
            },
        )
        self.assertEqual(response.code, 201, await response.content())
        await response.content()

    async def publish_files(
        self, client: Any, url: str, sig: Any, owner: KeyPair, reader: str
    ) -> None:
        """
        The owner's manifest (a public entry, one for the reader, one for
        someone else) goes to the mirror, and its BLAKE3 into the sigchain.
        """
        now = format_rfc3339(time.time())
        common = {"mime": "application/octet-stream", "blake3": "ab" * 32, "added_at": now}
        entries = [
            public_entry(id="e1", name="holiday.mkv", size=700_000_000, **common),
            private_entry(
                id="e2",
                name="for-bob.pdf",
                size=12_000,
                content_key=os.urandom(32),
                recipients=[reader],
                **common,
            ),
            private_entry(
                id="e3",
                name="for-carol.pdf",
                size=12_000,
                content_key=os.urandom(32),
                recipients=[KeyPair.generate().primary],
                **common,
            ),
        ]
        data = manifest_bytes(build_manifest(owner, entries))
        auth = sign_request(
            owner, "PUT", "/v1/manifests/dave", [body_digest(data)], int(time.time())
        )
        response = await client.put(
            url + "/v1/manifests/dave", data=data, headers={"x-kez-auth": auth}
        )
        self.assertEqual(response.code, 201, await response.content())
        chain_url = sig.chain_url(owner.public_hex)
        event = next_event(
            owner, [], "set_shared_files", shared_files_body(data, url + "/v1/manifests/dave")
        )
        response = await client.post(chain_url + "/events", json=event)
        self.assertEqual(response.code, 201, await response.content())

    async def get_json(self, client: Any, url: str) -> Any:
        response = await client.get(url)
        return await json_of(response)

    async def post_forgery(self, client: Any, url: str, alice: str, bob: str) -> None:
        """
        Mallory, a registered user, sends bob an envelope that claims to
        come from alice and carries a signature that does not verify.
        """
        mallory, _ = await register(client, url, "mallory")
        envelope = {
            "v": 1,
            "from": alice,
            "to": bob,
            "ts": format_rfc3339(time.time()),
            "salt": "AAAAAAAAAAAAAAAAAAAAAA",
            "ct": "Zm9yZ2Vk",
            "sig": "ab" * 64,
        }
        body = json.dumps({"to": "bob", "envelope": envelope}).encode()
        auth = sign_request(mallory, "POST", "/v1/messages", [body_digest(body)], int(time.time()))
        response = await client.post(
            url + "/v1/messages",
            data=body,
            headers={
                "content-type": "application/json",
                "x-kez-sender": "mallory",
                "x-kez-auth": auth,
            },
        )
        self.assertEqual(response.code, 201, await response.content())
        await response.content()


class BrowserStoryTests(WebAppSteps, TestCase):
    """
    Two people, then a third browser, through the whole web app: one story
    in named steps that run in order (trial sorts them by name) and share
    one chat-server, sig-server and Chromium, started by the first step and
    stopped by the last (C{test_99_close}). Run the class as a whole: a
    step needs what the earlier ones did, and after a failed step the later
    ones fail at once naming it. No console error and no CSP violation is
    allowed in any step.
    """

    timeout = 180
    story: Story | None = None

    async def setUp(self) -> None:
        require_browser()
        self.client = http_client(self)
        cls = type(self)
        if cls.story is None:
            cls.story = await self.start_story()

    async def start_story(self) -> Story:
        from playwright.async_api import async_playwright

        scratch = tempfile.mkdtemp(prefix="kezchat-browser-story-")
        sig = LoopSigProcess(os.path.join(scratch, "kez-sig.db"))
        atexit.register(sig.kill)  # if test_99_close does not run
        await sig.start()
        chat = LoopChatProcess(os.path.join(scratch, "chat.db"), sig.url)
        atexit.register(chat.kill)
        await chat.start()
        for _ in range(100):  # the app loads off the reactor thread at start
            response = await self.client.get(chat.url + "/")
            await response.content()
            if response.code == 200:
                break
        env = scratch_env(self)
        for name in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "TMPDIR"):
            env[name] = scratch  # outlives this first step

        async def launch() -> tuple[Any, Any]:
            playwright = await async_playwright().start()
            browser = await launch_chromium(playwright, env)
            return playwright, browser

        playwright, browser = await on_asyncio(launch())
        return Story(chat, sig, playwright, browser)

    async def step(self, run: Callable[[Story], Coroutine[Any, Any, None]]) -> None:
        """
        Run one step of the story on asyncio; it fails if an earlier step
        did, or if a page reported a problem during it.
        """
        story = type(self).story
        assert story is not None
        if story.failed is not None:
            self.fail(f"an earlier step failed: {story.failed}")
        try:
            await on_asyncio(run(story))
            self.assertEqual(story.problems(), [])
        except BaseException:
            story.failed = self.id()
            raise

    async def test_01_accounts(self) -> None:
        """
        Both people create accounts through C{#/new}; the sigchain starts with an endpoint.
        """
        await self.step(self._accounts)

    async def _accounts(self, s: Story) -> None:
        chat = s.chat
        sig = s.sig
        client = self.client
        shots = s.shots
        person = s.person
        alice = await person("alice")
        bob = await person("bob")

        # -- create both accounts through #/new ------------------------
        await alice.page.goto(chat.url + "/")
        await alice.tid("go-new").wait_for()
        shots += await alice.shot("welcome")
        for someone in (alice, bob):
            await self.create_account(someone, chat, shots if someone is alice else None)
        await alice.tid("your-kez").wait_for(timeout=WAIT)
        alice_primary = (await alice.tid("your-kez").inner_text()).strip()
        bob_primary = (await bob.tid("your-kez").inner_text()).strip()
        self.assertRegex(alice_primary, r"^ed25519:[0-9a-f]{64}$")
        self.assertEqual(await alice.tid("your-handle").inner_text(), "alice@kez.lat")
        await alice.status("live")
        await bob.status("live")
        shots += await alice.shot("empty-state")

        # the sigchain was started with an endpoint event
        chain = await on_twisted(self.get_json(client, sig.chain_url(alice_primary[8:])))
        self.assertEqual([e["type"] for e in chain["events"]], ["add_endpoint"])
        s.alice = alice
        s.bob = bob
        s.alice_primary = alice_primary
        s.bob_primary = bob_primary

    async def test_02_start_chat(self) -> None:
        """
        Starting a chat clears errors first (oneself, nobody), then opens it.
        """
        await self.step(self._start_chat)

    async def _start_chat(self, s: Story) -> None:
        alice = s.alice
        # -- start a chat: clear errors first ----------------------------
        await alice.tid("new-chat").fill("alice")
        await alice.tid("new-chat-start").click()
        await alice.tid("error").filter(has_text="That's you").wait_for(timeout=WAIT)
        await alice.tid("new-chat").fill("nobody")
        await alice.tid("new-chat-start").click()
        await (
            alice.tid("error")
            .filter(has_text="Nobody is registered")
            .wait_for(timeout=WAIT)
        )
        await alice.tid("new-chat").fill("Bob@kez.lat")
        await alice.tid("new-chat-start").click()
        await (
            alice.tid("thread-title").filter(has_text="bob@kez.lat").wait_for(timeout=WAIT)
        )

    async def test_03_chat_both_ways(self) -> None:
        """
        Messages go both ways, live, multi-line included.
        """
        await self.step(self._chat_both_ways)

    async def _chat_both_ways(self, s: Story) -> None:
        alice = s.alice
        bob = s.bob
        # -- chat both ways, live -----------------------------------------
        await alice.tid("composer").fill("hello bob")
        await alice.tid("composer").press("Enter")
        await (
            alice.tid("message-status").filter(has_text=SENT).first.wait_for(timeout=WAIT)
        )
        await bob.tid("unread-count").filter(has_text="1").wait_for(timeout=WAIT)
        await bob.open_chat("alice@kez.lat")
        await bob.expect_message("hello bob")
        await bob.tid("composer").fill("hi alice")
        await bob.tid("composer").press("Shift+Enter")
        await bob.tid("composer").type("second line")
        await bob.tid("send").click()
        await alice.expect_message("hi alice\nsecond line")

    async def test_04_attachments(self) -> None:
        """
        An inline image and a 3 MiB chunked file arrive byte for byte; over 10 MiB is refused.
        """
        await self.step(self._attachments)

    async def _attachments(self, s: Story) -> None:
        alice = s.alice
        bob = s.bob
        shots = s.shots
        # -- an inline image and a 3 MiB chunked file ------------------
        image = png(48, 48)
        await alice.tid("attach").set_input_files(
            files=[{"name": "dot.png", "mimeType": "image/png", "buffer": image}]
        )
        await bob.tid("attachment-image").first.wait_for(timeout=WAIT)
        self.assertEqual(await self.download(bob, "dot.png"), image)
        big = os.urandom(3 * 1024 * 1024)
        await alice.tid("attach").set_input_files(
            files=[
                {"name": "big.bin", "mimeType": "application/octet-stream", "buffer": big}
            ]
        )
        await bob.page.locator("[data-testid=download][download='big.bin']").wait_for(
            timeout=60_000
        )
        self.assertEqual(await self.download(bob, "big.bin"), big)
        # over 10 MiB: refused with a friendly error, nothing sent
        await alice.tid("attach").set_input_files(
            files=[
                {
                    "name": "huge.bin",
                    "mimeType": "application/octet-stream",
                    "buffer": b"\0" * (10 * 1024 * 1024 + 1),
                }
            ]
        )
        await alice.tid("error").filter(has_text="over the 10 MiB").wait_for(timeout=WAIT)
        shots += await bob.shot("chat")

    async def test_05_forged_message(self) -> None:
        """
        A forged message is a loud warning in the refused list, never a conversation.
        """
        await self.step(self._forged_message)

    async def _forged_message(self, s: Story) -> None:
        bob = s.bob
        client = self.client
        chat = s.chat
        alice_primary = s.alice_primary
        bob_primary = s.bob_primary
        shots = s.shots
        # -- a forged message is a loud warning ---------------------------
        # (nothing is pinned or opened for it: it goes to the refused list)
        await on_twisted(self.post_forgery(client, chat.url, alice_primary, bob_primary))
        await bob.tid("refused-link").click()
        warning = bob.tid("warning")
        await warning.filter(has_text="could not be verified").wait_for(timeout=WAIT)
        self.assertIn("forged", await warning.inner_text())
        self.assertEqual(await bob.tid("message").count(), 0)
        mallory_conv = "[data-testid=conversation][data-handle^=mallory]"
        self.assertEqual(await bob.page.locator(mallory_conv).count(), 0)
        shots += await bob.shot("forged-warning")

    async def test_06_python_client_file(self) -> None:
        """
        A file from the Python client arrives in chunks out of order (first half).
        """
        await self.step(self._python_client_file)

    async def _python_client_file(self, s: Story) -> None:
        client = self.client
        chat = s.chat
        bob = s.bob
        bob_primary = s.bob_primary
        # -- a file from the Python client: chunks out of order, across a reload
        dave, _ = await on_twisted(register(client, chat.url, "dave"))
        dave_file = os.urandom(1_500_000)
        header, chunks = chunked_file("dave.bin", "application/octet-stream", dave_file)
        order = list(range(len(chunks)))
        random.Random(7).shuffle(order)
        half = len(chunks) // 2
        for plaintext in [chunks[i] for i in order[:3]] + [header]:
            await on_twisted(
                self.post_as(client, chat.url, dave, "dave", bob_primary, plaintext)
            )
        for i in order[3:half]:
            await on_twisted(
                self.post_as(client, chat.url, dave, "dave", bob_primary, chunks[i])
            )
        await bob.open_chat("dave@kez.lat")
        await (
            bob.tid("receiving")
            .filter(has_text=f"Receiving {half}/{len(chunks)}")
            .wait_for(timeout=WAIT)
        )
        s.dave = dave
        s.dave_file = dave_file
        s.chunks = chunks
        s.order = order
        s.half = half

    async def test_07_identity_and_settings(self) -> None:
        """
        The identity view shows the sigchain; settings show and re-check the words.
        """
        await self.step(self._identity_and_settings)

    async def _identity_and_settings(self, s: Story) -> None:
        bob = s.bob
        alice_primary = s.alice_primary
        shots = s.shots
        # -- identity view and settings -------------------------------------
        await bob.open_chat("alice@kez.lat")
        await bob.tid("identity-link").click()
        await bob.tid("sigchain-event").first.wait_for(timeout=WAIT)
        self.assertEqual(await bob.tid("pinned-key").inner_text(), alice_primary)
        shots += await bob.shot("identity")
        await bob.tid("settings-link").click()
        await bob.tid("passphrase").fill(PASSPHRASE)
        await bob.tid("show-words").click()
        await bob.tid("mnemonic-words").wait_for(timeout=WAIT)
        self.assertEqual(await bob.tid("mnemonic-word").all_inner_texts(), bob.words)
        await bob.tid("reverify").click()
        recall = bob.tid("recall-word")
        for i in range(3):
            index = int(await recall.nth(i).get_attribute("data-index"))
            await recall.nth(i).fill(bob.words[index])
        await bob.tid("recall-check").click()
        await bob.tid("recall-ok").wait_for(timeout=WAIT)
        shots += await bob.shot("settings")

    async def test_08_reload_and_unlock(self) -> None:
        """
        A reload and unlock keeps history and the stream; the file completes across it.
        """
        await self.step(self._reload_and_unlock)

    async def _reload_and_unlock(self, s: Story) -> None:
        bob = s.bob
        shots = s.shots
        order = s.order
        half = s.half
        client = self.client
        chat = s.chat
        dave = s.dave
        bob_primary = s.bob_primary
        chunks = s.chunks
        dave_file = s.dave_file
        # -- reload and unlock: history kept, stream live again -------------
        # a message sent just before the reload stays in the sender's history
        await bob.open_chat("alice@kez.lat")
        await bob.tid("composer").fill("sent right before the reload")
        await bob.tid("composer").press("Enter")
        await (
            bob.tid("message")
            .filter(has_text="sent right before the reload")
            .get_by_test_id("message-status")
            .filter(has_text=SENT)
            .wait_for(timeout=WAIT)
        )
        await bob.page.reload()
        await bob.tid("unlock").wait_for(timeout=WAIT)
        shots += await bob.shot("unlock")
        await bob.tid("passphrase").fill(PASSPHRASE)
        await bob.tid("unlock").click()
        await bob.status("live")
        await bob.open_chat("alice@kez.lat")
        for text in ("hello bob", "hi alice\nsecond line", "sent right before the reload"):
            await bob.expect_message(text)
        await bob.tid("attachment-image").first.wait_for(timeout=WAIT)
        for i in order[half:]:
            await on_twisted(
                self.post_as(client, chat.url, dave, "dave", bob_primary, chunks[i])
            )
        await bob.open_chat("dave@kez.lat")
        await bob.page.locator("[data-testid=download][download='dave.bin']").wait_for(
            timeout=WAIT
        )
        self.assertEqual(await self.download(bob, "dave.bin"), dave_file)

    async def test_09_shared_files_and_second_tab(self) -> None:
        """
        Shared files are browsed; a second tab does not run the account twice.
        """
        await self.step(self._shared_files_and_second_tab)

    async def _shared_files_and_second_tab(self, s: Story) -> None:
        client = self.client
        chat = s.chat
        sig = s.sig
        dave = s.dave
        bob_primary = s.bob_primary
        bob = s.bob
        shots = s.shots
        alice = s.alice
        # -- dave's shared files: browsed, not downloadable in a browser ------
        await on_twisted(self.publish_files(client, chat.url, sig, dave, bob_primary))
        await bob.tid("identity-link").click()
        shared = bob.tid("shared-files")
        await shared.wait_for(timeout=WAIT)
        listed = await shared.inner_text()
        for expected in (
            "holiday.mkv",
            "for-bob.pdf",
            "Download with the kez-chat CLI",
        ):
            self.assertIn(expected, listed)
        self.assertNotIn("for-carol.pdf", listed)
        shots += await bob.shot("shared-files")
        await bob.open_chat("alice@kez.lat")
        # a second tab of the same browser does not run the account twice
        second = await bob.context.new_page()
        bob.watch.attach(second)
        await second.goto(chat.url + "/#/")
        # said before any passphrase is asked
        await second.get_by_text("already open in another tab").wait_for(timeout=WAIT)
        self.assertEqual(await second.get_by_test_id("passphrase").count(), 0)
        await second.close()
        await alice.tid("composer").fill("after your reload")
        await alice.tid("composer").press("Enter")
        await bob.expect_message("after your reload")

    async def test_10_server_restart(self) -> None:
        """
        A server restart shows reconnecting, then live, and loses nothing.
        """
        await self.step(self._server_restart)

    async def _server_restart(self, s: Story) -> None:
        alice = s.alice
        bob = s.bob
        chat = s.chat
        shots = s.shots
        # -- the server restarts mid-conversation --------------------------
        for someone in (alice, bob):
            someone.watch.allowed.append(refused)
        await on_twisted(chat.stop())
        await alice.status("reconnecting")
        await bob.status("reconnecting")
        await alice.tid("composer").fill("sent while the server was down")
        await alice.tid("composer").press("Enter")
        await alice.tid("retry").wait_for(timeout=WAIT)
        shots += await alice.shot("failed-send")
        await on_twisted(chat.start())
        await alice.status("live")
        await bob.status("live")
        # no click: it goes out by itself once the server is back
        await bob.expect_message("sent while the server was down")
        await alice.tid("composer").fill("after the restart")
        await alice.tid("composer").press("Enter")
        await bob.expect_message("after the restart")
        for someone in (alice, bob):
            someone.watch.allowed.remove(refused)
        # nothing lost: bob has every text alice sent, once
        texts = await bob.tid("message").all_inner_texts()
        for text in (
            "hello bob",
            "after your reload",
            "sent while the server was down",
            "after the restart",
        ):
            self.assertEqual(sum(t.startswith(text) for t in texts), 1, (text, texts))

    async def test_11_third_browser(self) -> None:
        """
        A third browser logs in from alice's 24 words.
        """
        await self.step(self._third_browser)

    async def _third_browser(self, s: Story) -> None:
        person = s.person
        chat = s.chat
        alice = s.alice
        bob = s.bob
        shots = s.shots
        alice_primary = s.alice_primary
        # -- a third browser logs in from alice's 24 words -----------------
        carol = await person("alice-again")
        await carol.page.goto(chat.url + "/#/login")
        await carol.tid("login-mnemonic").fill(" ".join(alice.words))
        await carol.tid("passphrase").fill("another passphrase")
        shots += await carol.shot("login")
        await carol.tid("login").click()
        await (
            carol.tid("your-handle").filter(has_text="alice@kez.lat").wait_for(timeout=WAIT)
        )
        self.assertEqual(await carol.tid("your-kez").inner_text(), alice_primary)
        await carol.status("live")
        await carol.open_chat("bob@kez.lat")
        await carol.expect_message("hi alice\nsecond line")
        # her own messages, sent from the first browser, are restored
        # too (the server's copies): as sent, once each
        restored = carol.page.locator("[data-testid=message][data-dir=out]")
        await restored.filter(has_text="after the restart").first.wait_for(timeout=WAIT)
        mine = await restored.all_inner_texts()
        for text in ("hello bob", "after your reload", "after the restart"):
            self.assertEqual(sum(t.startswith(text) for t in mine), 1, (text, mine))
        # what the second browser sends, the first shows as alice's own,
        # and each browser shows each of its own messages once
        await carol.tid("composer").fill("from my second browser")
        await carol.tid("composer").press("Enter")
        await bob.open_chat("alice@kez.lat")
        await bob.expect_message("from my second browser")
        await alice.open_chat("bob@kez.lat")
        first = alice.page.locator("[data-testid=message][data-dir=out]")
        await first.filter(has_text="from my second browser").first.wait_for(timeout=WAIT)
        for someone, locator in ((alice, first), (carol, restored)):
            mine = await locator.all_inner_texts()
            for text in ("hello bob", "after the restart", "from my second browser"):
                self.assertEqual(
                    sum(t.startswith(text) for t in mine), 1, (someone.name, text, mine)
                )
            self.assertEqual(await someone.tid("warning").count(), 0, someone.name)
        s.carol = carol

    async def test_12_key_swap(self) -> None:
        """
        A key swapped by the server is flagged loudly; trusting it keeps one conversation.
        """
        await self.step(self._key_swap)

    async def _key_swap(self, s: Story) -> None:
        alice = s.alice
        bob = s.bob
        carol = s.carol
        chat = s.chat
        client = self.client
        bob_primary = s.bob_primary
        shots = s.shots
        # -- the server swaps alice's key: bob is warned loudly -------------
        for someone in (alice, bob, carol):
            someone.watch.allowed.append(refused)
        # alice's own browsers are refused from now on: the server has another key for her
        for someone in (alice, carol):
            someone.watch.allowed.append(
                lambda text: "401" in text and "/v1/inbox/alice" in text
            )
        await on_twisted(chat.stop())
        impostor = KeyPair.generate()
        with sqlite3.connect(chat.db) as db:
            db.execute(
                "UPDATE handles SET primary_key = ? WHERE local = 'alice'",
                (impostor.primary,),
            )
        await on_twisted(chat.start())
        await bob.status("live")
        await on_twisted(
            self.post_as(
                client, chat.url, impostor, "alice", bob_primary, text_message("it's me")
            )
        )
        # the warning is in alice's one conversation (no second "alice")
        await bob.open_chat("alice@kez.lat")
        changed = bob.tid("key-changed")
        await changed.wait_for(timeout=WAIT)
        self.assertIn("alice@kez.lat", await changed.inner_text())
        await (
            bob.tid("warning").filter(has_text="not the one pinned").wait_for(timeout=WAIT)
        )
        self.assertEqual(
            await bob.page.locator(
                f"[data-testid=conversation][href='#/chat/{impostor.primary}']"
            ).count(),
            0,
        )
        self.assertEqual(await bob.tid("message").filter(has_text="it's me").count(), 0)
        shots += await bob.shot("key-changed")
        # bob checks it another way and trusts the new key: one conversation still
        await bob.tid("trust-new-key").click()
        await bob.page.wait_for_function(
            "p => location.hash === '#/chat/' + p", arg=impostor.primary, timeout=WAIT
        )
        await on_twisted(
            self.post_as(
                client,
                chat.url,
                impostor,
                "alice",
                bob_primary,
                text_message("trusted now"),
            )
        )
        await bob.expect_message("trusted now")
        self.assertEqual(await bob.tid("key-changed").count(), 0)
        self.assertEqual(
            await bob.page.locator(
                "[data-testid=conversation][data-handle='alice@kez.lat']"
            ).count(),
            1,
        )
        # deleting server copies is an explicit action, never automatic
        await bob.tid("settings-link").click()
        await bob.tid("clear-server").click()
        cleared = await bob.tid("cleared").inner_text()
        self.assertRegex(cleared, r"^Removed [1-9][0-9]* messages from the server\.$")

        # alice's own browser is told the server refuses her key
        await (
            alice.tid("error")
            .filter(has_text="no longer accepts this key")
            .wait_for(timeout=WAIT)
        )

    async def test_13_logout(self) -> None:
        """
        Log-out wipes this browser's copy.
        """
        await self.step(self._logout)

    async def _logout(self, s: Story) -> None:
        carol = s.carol
        # -- log out wipes this browser's copy ----------------------------
        await carol.tid("settings-link").click()
        await carol.tid("logout").click()
        await carol.tid("logout-confirm").click()
        await carol.tid("go-new").wait_for(timeout=WAIT)
        await carol.page.reload()
        await carol.tid("go-login").wait_for(timeout=WAIT)
        stored = await carol.page.evaluate(
            """() => new Promise((ok, fail) => {
                const r = indexedDB.open('kezchat');
                r.onsuccess = () => {
                  const t = r.result.transaction('kv').objectStore('kv').count();
                  t.onsuccess = () => ok(t.result);
                  t.onerror = fail;
                };
                r.onerror = fail;
            })"""
        )
        self.assertEqual(stored, 0)

    async def test_99_close(self) -> None:
        """
        The end of the story: the browser and servers stop; the screenshots
        are listed.
        """
        story, type(self).story = type(self).story, None
        assert story is not None
        elapsed = time.monotonic() - story.started
        try:
            await on_asyncio(story.close())
        finally:
            shutil.rmtree(os.path.dirname(story.chat.db), ignore_errors=True)
        self.assertEqual(story.problems(), [])
        print(
            f"\nbrowser story: {elapsed:.1f} s; screenshots:\n  " + "\n  ".join(story.shots)
        )


class WebAppInChromiumTests(WebAppSteps, TestCase):
    timeout = 300

    async def test_without_a_sig_server(self) -> None:
        """
        The configuration C{scripts/run-server} starts: no sig-server. Two
        people create accounts and chat; the identity view says there is no
        sigchain instead of failing.
        """
        require_browser()
        chat = ChatProcess(db=os.path.join(temp_dir(self), "chat.db"), sig_url=None)
        self.addCleanup(chat.kill)
        await chat.start()
        self.addCleanup(chat.stop)
        client = http_client(self)
        for _ in range(100):
            response = await client.get(chat.url + "/")
            await response.content()
            if response.code == 200:
                break
        await on_asyncio(self.without_sig_server(chat, scratch_env(self)))

    async def without_sig_server(self, chat: ChatProcess, env: dict[str, str]) -> None:
        from playwright.async_api import async_playwright

        async with async_playwright() as p:
            browser = await launch_chromium(p, env)
            try:
                people = []
                for name in ("dora", "emil"):
                    someone = Person(name, *await watched_page(browser, name, viewport=DESKTOP))
                    await self.create_account(someone, chat, None)
                    await someone.status("live")
                    people.append(someone)
                dora, emil = people
                await dora.tid("new-chat").fill("emil")
                await dora.tid("new-chat-start").click()
                await dora.tid("composer").fill("no sig-server needed")
                await dora.tid("send").click()
                await emil.open_chat("dora@kez.lat")
                await emil.expect_message("no sig-server needed")
                await emil.tid("identity-link").click()
                note = emil.tid("no-sigchain")
                await note.wait_for(timeout=WAIT)
                self.assertIn("without a sig-server", await note.inner_text())
                problems = [p for someone in people for p in someone.watch.problems]
                self.assertEqual(problems, [])
            finally:
                await browser.close()

    async def test_sent_message_survives_an_immediate_reload(self) -> None:
        """
        A message shown as sent is stored: a reload right after "sent"
        appears still has it (it used to vanish when the reload came
        before a batching timer wrote the history).
        """
        require_browser()
        chat = ChatProcess(db=os.path.join(temp_dir(self), "chat.db"), sig_url=None)
        self.addCleanup(chat.kill)
        await chat.start()
        self.addCleanup(chat.stop)
        client = http_client(self)
        for _ in range(100):
            response = await client.get(chat.url + "/")
            await response.content()
            if response.code == 200:
                break
        await register(client, chat.url, "bob")
        await on_asyncio(self.immediate_reload(chat, scratch_env(self)))

    async def immediate_reload(self, chat: ChatProcess, env: dict[str, str]) -> None:
        from playwright.async_api import async_playwright

        async with async_playwright() as p:
            browser = await launch_chromium(p, env)
            try:
                context = await browser.new_context(viewport=DESKTOP)
                page = await context.new_page()
                watch = PageWatch("alice")
                watch.attach(page)
                alice = Person("alice", context, page, watch)
                await self.create_account(alice, chat, None)
                await alice.status("live")
                await alice.tid("new-chat").fill("bob")
                await alice.tid("new-chat-start").click()
                await alice.tid("thread-title").filter(has_text="bob@kez.lat").wait_for()
                for i in range(3):
                    text = f"sent then reloaded {i}"
                    await alice.tid("composer").fill(text)
                    await alice.tid("composer").press("Enter")
                    await (
                        alice.tid("message")
                        .filter(has_text=text)
                        .get_by_test_id("message-status")
                        .filter(has_text=SENT)
                        .wait_for(timeout=WAIT)
                    )
                    await page.reload()
                    await alice.tid("passphrase").fill(PASSPHRASE)
                    await alice.tid("unlock").click()
                    await alice.expect_message(text)
                texts = await alice.tid("message").all_inner_texts()
                self.assertEqual(
                    [t.split("\n")[0] for t in texts], [f"sent then reloaded {i}" for i in range(3)]
                )
                self.assertEqual(watch.problems, [])
            finally:
                await browser.close()
