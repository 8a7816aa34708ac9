"""
Long-lived stream URLs: C{GET /v1/inbox/<h>/stream?auth=<ts>:<sig>&exp=<unix>}
stays valid until C{exp} (at most 24 h after C{ts}), so a standard
EventSource reconnects with the same URL by itself, across server
restarts, for the whole window.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from typing import Any

from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase

from kezchat.client.http import ChatClient
from kezchat.identity.keys import KeyPair
from kezchat.protocol.auth import MAX_STREAM_WINDOW, sign_request
from tests.relaysupport import open_stream, send
from tests.support import (
    deferred_sleep,
    http_client,
    json_of,
    register,
    start_server,
    temp_dir,
)
from tests.webdriver import (
    ChatProcess,
    launch_chromium,
    on_asyncio,
    require_browser,
    scratch_env,
)


def stream_auth(
    key: KeyPair, ts: int, exp: int | None, server: str | None = "kez.lat", h: str = "alice"
) -> str:
    fields = [] if exp is None else [f"exp={exp}"]
    return sign_request(key, "GET", f"/v1/inbox/{h}/stream", fields, ts, server)


async def restartable_stream(
    case: TestCase,
) -> tuple[ChatProcess, HTTPClient, Callable[[int], Awaitable[int]], str, float]:
    """
    A chat process that can be restarted on its port, with alice and bob
    registered; C{post(n)} has bob send alice C{{"n": n}} and gives its
    seq; the URL is alice's stream, signed (at the time returned last)
    90 s ago with an C{exp} an hour away. Both restart tests start from exactly this.
    """
    chat = ChatProcess(db=os.path.join(temp_dir(case), "chat.db"), sig_url=None)
    case.addCleanup(chat.kill)
    await chat.start()
    case.addCleanup(chat.stop)
    client = http_client(case)
    alice, _ = await register(client, chat.url, "alice")
    bob, _ = await register(client, chat.url, "bob")

    async def post(n: int) -> int:
        status, body = await send(client, chat.url, bob, "bob", "alice", {"n": n})
        case.assertEqual(status, 201, body)
        return int(body["seq"])

    signed_at = time.time() - 90
    python_client = ChatClient(chat.url, reactor, clock=lambda: signed_at)
    case.addCleanup(python_client.close)
    url = python_client.stream_url(alice, "alice@kez.lat", expires=int(time.time()) + 3600)
    return chat, client, post, url, signed_at


async def posts_across_a_restart(
    chat: ChatProcess,
    post: Callable[[int], Awaitable[int]],
    received: Callable[[int], Awaitable[object]],
) -> list[int]:
    """
    Once the client has the first two messages: the third, a restart of
    C{chat}, the fourth sent before the client has reconnected (so it
    comes by Last-Event-ID), the fifth; each waited for with
    C{received(n)}, then a second's room for a duplicate to show up.
    The seqs of the three.
    """
    await received(2)
    sent = [await post(3)]
    await received(3)

    await chat.restart()
    sent.append(await post(4))
    await received(4)
    sent.append(await post(5))
    await received(5)
    await deferred_sleep(1.0)
    return sent


class StreamExpiryTests(TestCase):
    """
    What the server accepts and refuses, over HTTP.
    """

    timeout = 60

    async def setUp(self) -> None:
        await self.start()

    async def start(self, **overrides: Any) -> None:
        self.server = await start_server(self, **overrides)
        self.client = http_client(self)
        self.alice, _ = await register(self.client, self.server.url, "alice")
        self.bob, _ = await register(self.client, self.server.url, "bob")

    async def post(self, n: int) -> int:
        status, body = await send(self.client, self.server.url, self.bob, "bob", "alice", {"n": n})
        self.assertEqual(status, 201, body)
        return int(body["seq"])

    async def get(self, query: str) -> tuple[int, Any]:
        response = await self.client.get(f"{self.server.url}/v1/inbox/alice/stream?{query}")
        return response.code, await json_of(response)

    async def refused(self, query: str, status: int, code: str) -> None:
        got, body = await self.get(query)
        self.assertEqual((got, body["error"]["code"]), (status, code), query)

    async def test_signed_90_s_ago_with_exp_streams(self) -> None:
        now = int(time.time())
        seq = await self.post(1)
        auth = stream_auth(self.alice, now - 90, now + 3600)
        stream = await open_stream(
            self, self.server.url, self.alice, "alice", since=0,
            auth=f"{auth}&exp={now + 3600}",
        )
        self.assertEqual(stream.response.code, 200)
        await stream.wait_for(1)
        later = await self.post(2)
        await stream.wait_for(2)
        self.assertEqual(stream.seqs, [seq, later])

    async def test_without_exp_the_60_s_rule_stands(self) -> None:
        now = int(time.time())
        auth = stream_auth(self.alice, now - 90, None)
        await self.refused(f"auth={auth}", 401, "stale_timestamp")

    async def test_exp_in_the_past(self) -> None:
        now = int(time.time())
        auth = stream_auth(self.alice, now - 300, now - 10)
        await self.refused(f"auth={auth}&exp={now - 10}", 401, "stale_timestamp")

    async def test_exp_more_than_a_day_after_ts(self) -> None:
        now = int(time.time())
        exp = now + MAX_STREAM_WINDOW + 1
        auth = stream_auth(self.alice, now, exp)
        await self.refused(f"auth={auth}&exp={exp}", 400, "bad_request")
        # exactly a day is fine
        exp = now + MAX_STREAM_WINDOW
        stream = await open_stream(
            self, self.server.url, self.alice, "alice",
            auth=f"{stream_auth(self.alice, now, exp)}&exp={exp}",
        )
        self.assertEqual(stream.response.code, 200)

    async def test_exp_not_after_ts(self) -> None:
        now = int(time.time())
        auth = stream_auth(self.alice, now, now)
        await self.refused(f"auth={auth}&exp={now}", 400, "bad_request")

    async def test_garbage_exp(self) -> None:
        now = int(time.time())
        auth = stream_auth(self.alice, now, now + 60)
        for exp in ("", "abc", "-5", "1e9", "%20" + str(now + 60), "0x10", str(10**13), "１２"):
            await self.refused(f"auth={auth}&exp={exp}", 400, "bad_request")
        await self.refused(f"auth={auth}&exp={now + 60}&exp={now + 60}", 400, "bad_request")

    async def test_exp_is_signed(self) -> None:
        now = int(time.time())
        auth = stream_auth(self.alice, now - 90, now + 600)
        # a longer window than the one signed, or none at all
        await self.refused(f"auth={auth}&exp={now + 3600}", 401, "bad_signature")
        await self.refused(f"auth={stream_auth(self.alice, now, now + 600)}", 401, "bad_signature")

    async def test_ts_from_the_future(self) -> None:
        now = int(time.time())
        auth = stream_auth(self.alice, now + 120, now + 600)
        await self.refused(f"auth={auth}&exp={now + 600}", 401, "stale_timestamp")

    async def test_legacy_form_with_exp(self) -> None:
        now = int(time.time())
        query = f"auth={stream_auth(self.alice, now - 90, now + 600, server=None)}&exp={now + 600}"
        stream = await open_stream(
            self, self.server.url, self.alice, "alice", auth=query.removeprefix("auth=")
        )
        self.assertEqual(stream.response.code, 200)
        await self.start(legacy_auth=False)
        await self.refused(query, 401, "bad_signature")

    async def test_python_client_builds_the_url(self) -> None:
        now = time.time()
        chat = ChatClient(self.server.url, reactor, clock=lambda: now - 90)
        self.addCleanup(chat.close)
        url = chat.stream_url(self.alice, "alice@kez.lat", expires=int(now) + 600)
        self.assertIn(f"&exp={int(now) + 600}", url)
        stream = await open_stream(
            self, self.server.url, self.alice, "alice", auth=url.split("auth=", 1)[1]
        )
        self.assertEqual(stream.response.code, 200)


#: the page's side: a stock EventSource, recording every event and reconnect
PAGE_SCRIPT = """
url => {
  window.got = [];
  window.opens = 0;
  window.errors = 0;
  const source = new EventSource(url);
  source.addEventListener('message', e => window.got.push([e.lastEventId, e.data]));
  source.addEventListener('open', () => { window.opens += 1; });
  source.addEventListener('error', () => { window.errors += 1; });
  window.source = source;
}
"""


class StockEventSourceTests(TestCase):
    """
    Chromium's own EventSource holds one stream URL, signed 90 s ago with
    an C{exp} an hour away, across a real restart of the server process.
    """

    timeout = 240

    async def test_eventsource_across_a_restart(self) -> None:
        require_browser()
        chat, client, post, url, signed_at = await restartable_stream(self)
        # the same auth without exp is already too old to use
        response = await client.get(url.split("&exp=")[0])
        self.assertEqual(response.code, 401)
        await response.content()

        sent = [await post(1), await post(2)]
        from playwright.async_api import async_playwright

        playwright = await on_asyncio(async_playwright().start())
        self.addCleanup(lambda: on_asyncio(playwright.stop()))
        browser = await on_asyncio(launch_chromium(playwright, scratch_env(self)))
        self.addCleanup(lambda: on_asyncio(browser.close()))
        page = await on_asyncio(browser.new_page())
        # any same-origin page will do: the stream is opened by the script
        await on_asyncio(page.goto(chat.url + "/v1/healthz"))
        await on_asyncio(page.evaluate(PAGE_SCRIPT, url + "&since=0"))

        async def received(count: int) -> list[list[str]]:
            await on_asyncio(
                page.wait_for_function(f"window.got.length >= {count}", timeout=60_000)
            )
            got: list[list[str]] = await on_asyncio(page.evaluate("window.got"))
            return got

        sent += await posts_across_a_restart(chat, post, received)
        got = await on_asyncio(page.evaluate("window.got"))
        state = await on_asyncio(
            page.evaluate("[window.opens, window.errors, window.source.readyState]")
        )

        self.assertEqual([int(event_id) for event_id, _ in got], sent)
        self.assertEqual([json.loads(data)["seq"] for _, data in got], sent)
        self.assertEqual([json.loads(data)["envelope"]["n"] for _, data in got], [1, 2, 3, 4, 5])
        opens, errors, ready_state = state
        self.assertGreaterEqual(opens, 2, "the EventSource never reconnected")
        self.assertGreaterEqual(errors, 1)
        self.assertEqual(ready_state, 1)  # OPEN: the reconnect was accepted
        # the reconnect happened well over a minute after signing
        self.assertGreater(time.time() - signed_at, 60)


#: the stock C{eventsource} package of npm (web/ devDependency): one
#: EventSource, every event and reconnect as a JSON line on stdout
NODE_SCRIPT = """
import { EventSource } from 'eventsource';
const say = (what) => process.stdout.write(JSON.stringify(what) + '\\n');
const source = new EventSource(process.env.KEZ_STREAM_URL);
source.addEventListener('message', (e) => say({ id: e.lastEventId, data: e.data }));
source.addEventListener('open', () => say({ open: true }));
source.addEventListener('error', () => say({ error: source.readyState }));
"""

WEB = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "web")


class _Lines(ProcessProtocol):
    """
    The node script's JSON lines, as they come; stderr kept for the failure message.
    """

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []
        self.errors = b""
        self.ended: Deferred[None] = Deferred()
        self._partial = b""

    def outReceived(self, data: bytes) -> None:
        *done, self._partial = (self._partial + data).split(b"\n")
        self.lines += [json.loads(line) for line in done if line.strip()]

    def errReceived(self, data: bytes) -> None:
        self.errors += data

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(None)


class NodeEventSourceTests(TestCase):
    """
    Node's stock C{eventsource} package (not our code: what a bot author
    would reach for) holds one stream URL, signed 90 s ago with an C{exp}
    an hour away, across a real restart of the server process, on the
    same port: nothing lost, nothing twice (Last-Event-ID).
    """

    timeout = 180

    async def test_node_eventsource_across_a_restart(self) -> None:
        node = shutil.which("node")
        if node is None or not os.path.isdir(os.path.join(WEB, "node_modules", "eventsource")):
            raise SkipTest("needs node and web/node_modules/eventsource (npm ci in web/)")
        chat, _, post, url, signed_at = await restartable_stream(self)
        sent = [await post(1), await post(2)]

        out = _Lines()
        env = {**os.environ, "KEZ_STREAM_URL": url + "&since=0"}
        process = reactor.spawnProcess(  # type: ignore[attr-defined]
            out, node, [node, "--input-type=module", "-e", NODE_SCRIPT], env=env, path=WEB
        )

        def stop_node() -> Deferred[None]:
            if not out.ended.called:
                process.signalProcess("KILL")
            return out.ended

        self.addCleanup(stop_node)

        async def received(count: int) -> list[dict[str, Any]]:
            deadline = time.monotonic() + 60
            while len([x for x in out.lines if "data" in x]) < count:
                if out.ended.called or time.monotonic() > deadline:
                    self.fail(f"node got {out.lines}; stderr {out.errors.decode()[-2000:]}")
                await deferred_sleep(0.1)
            return [x for x in out.lines if "data" in x]

        sent += await posts_across_a_restart(chat, post, received)
        got = [x for x in out.lines if "data" in x]

        self.assertEqual([int(x["id"]) for x in got], sent)
        self.assertEqual([json.loads(x["data"])["seq"] for x in got], sent)
        self.assertEqual([json.loads(x["data"])["envelope"]["n"] for x in got], [1, 2, 3, 4, 5])
        opens = [x for x in out.lines if "open" in x]
        errors = [x for x in out.lines if "error" in x]
        self.assertGreaterEqual(len(opens), 2, "the EventSource never reconnected")
        self.assertGreaterEqual(len(errors), 1)
        # it reconnected by itself (CONNECTING, never CLOSED), over a minute after signing
        self.assertNotIn({"error": 2}, errors)
        self.assertGreater(time.time() - signed_at, 60)
