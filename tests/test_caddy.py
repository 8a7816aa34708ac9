"""
The whole stack behind the shipped C{deploy/Caddyfile}: Debian's Caddy in
front of a real chat-server (with NATS), a real sig-server and a real
nats-server from C{deploy/nats.conf}, every request going through Caddy.

Caddy serves plain HTTP on a loopback port here (C{PUBLIC_HOST} with an
C{http://} scheme turns automatic HTTPS off); everything else is the file
operators deploy.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from typing import Any

from twisted.internet import reactor
from twisted.web.client import Agent, HTTPConnectionPool

from kezchat.compat.aio import deferred_from_coroutine
from kezchat.identity.keys import KeyPair
from kezchat.natsbridge.flush import flush
from kezchat.protocol.subjects import consumer_filter
from kezchat.server.config import ChatConfig
from tests.deploysupport import DEPLOY, free_port, need, spawn, wait_healthy
from tests.natssupport import NatsTestCase
from tests.relaysupport import open_stream, send
from tests.sigsupport import start_sig_server
from tests.support import deferred_sleep, http_client, json_of, registration, start_server
from tests.support import temp_dir as _temp_dir

CADDYFILE = os.path.join(DEPLOY, "Caddyfile")
nats_ = deferred_from_coroutine


async def eventually(check: Any, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if check():
            return
        await deferred_sleep(0.05)
    raise AssertionError(f"condition not met within {timeout}s")


class CaddyStackTests(NatsTestCase):
    timeout = 60

    async def _stack(self) -> tuple[str, Any, Any]:
        caddy = need("caddy", "caddy")
        sig = await start_sig_server(self)
        chat = await start_server(
            self,
            ChatConfig(
                listen=("tcp:0:interface=127.0.0.1",),
                db=os.path.join(_temp_dir(self), "kez-chat.db"),
                # one registration per client address: shows which address
                # the chat-server believes, through the proxy
                register_limit=1,
                send_limit=0,
                # what the guide tells operators to set behind Caddy
                trusted_proxies=("127.0.0.1",),
                nats_url=self.nats.url,
                nats_seed=str(self.nats.callout_seed_path),
                callout_issuer_seed=str(self.nats.issuer_seed_path),
            ),
        )
        await eventually(lambda: chat.parts.http.nats_status() == "connected")
        port = free_port()
        scratch = tempfile.mkdtemp(prefix="kezchat-caddy-")
        self.addCleanup(shutil.rmtree, scratch, True)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": scratch,
            "XDG_DATA_HOME": scratch,
            "XDG_CONFIG_HOME": scratch,
            "PUBLIC_HOST": f"http://127.0.0.1:{port}",
            "CADDY_ADMIN": "off",
            "CADDY_GRACE_PERIOD": "1s",
            "CHAT_UPSTREAM": f"127.0.0.1:{chat.port}",
            "SIG_UPSTREAM": sig.url.removeprefix("http://"),
            "NATS_WS_UPSTREAM": f"127.0.0.1:{self.nats.ws_port}",
        }
        proto = spawn(self, [caddy, "run", "--adapter", "caddyfile", "--config", CADDYFILE],
                      env, scratch)
        front = f"http://127.0.0.1:{port}"
        await wait_healthy(self, proto, front)
        return front, chat, sig

    async def test_routes(self) -> None:
        front, chat, _sig = await self._stack()
        client = http_client(self)
        health = await json_of(await client.get(f"{front}/v1/healthz"))
        self.assertEqual((health["status"], health["nats"]), ("ok", "connected"))
        # metrics stay inside
        self.assertEqual((await client.get(f"{front}/metrics")).code, 404)
        self.assertEqual((await client.get(f"{chat.url}/metrics")).code, 200)
        # sigchains are the sig-server's, on the same host
        key = KeyPair.generate()
        response = await client.get(f"{front}/v1/sigchains/ed25519/{key.public_hex}")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("access-control-allow-origin"), ["*"])
        self.assertEqual((await json_of(response))["events"], [])

    async def test_client_address_through_the_proxy(self) -> None:
        """
        The chat-server counts the address Caddy saw, and a client cannot
        choose another by sending its own X-Forwarded-For.
        """
        front, _chat, _sig = await self._stack()
        client = http_client(self)
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(pool.closeCachedConnections)
        from treq.client import HTTPClient

        other = HTTPClient(Agent(reactor, pool=pool, bindAddress=("127.0.0.2", 0)))

        async def register(http: Any, handle: str, spoof: str) -> int:
            body = registration(KeyPair.generate(), handle)
            response = await http.post(
                f"{front}/v1/register", json=body, headers={"X-Forwarded-For": [spoof]}
            )
            await response.content()
            return response.code

        self.assertEqual(await register(client, "alice", "203.0.113.7"), 201)
        self.assertEqual(await register(client, "carol", "198.51.100.9"), 429)
        self.assertEqual(await register(other, "bob", "203.0.113.7"), 201)

    async def test_streams_and_nats_websocket(self) -> None:
        """
        A message sent through Caddy reaches an SSE stream held through
        Caddy at once, and a browser-style NATS client on wss://host/nats
        (here ws://) logs in through the callout and gets it too.
        """
        front, _chat, _sig = await self._stack()
        client = http_client(self)
        keys = {}
        for handle in ("alice", "bob"):
            keys[handle] = KeyPair.generate()
            bind = ("127.0.0.2", 0) if handle == "bob" else None
            pool = HTTPConnectionPool(reactor, persistent=False)
            self.addCleanup(pool.closeCachedConnections)
            from treq.client import HTTPClient

            http = HTTPClient(Agent(reactor, pool=pool, bindAddress=bind))
            response = await http.post(
                f"{front}/v1/register", json=registration(keys[handle], handle)
            )
            self.assertEqual(response.code, 201, await response.text())

        stream = await open_stream(self, front, keys["bob"], "bob")
        self.addCleanup(stream.close)
        nc = await nats_(self.connect_user(keys["bob"], url=f"ws://{front[7:]}/nats"))
        queue: asyncio.Queue[Any] = asyncio.Queue()
        await nats_(nc.subscribe(consumer_filter(keys["bob"].public_hex), cb=queue.put))
        await nats_(flush(nc))  # nats-py's own flush may leave the SUB unsent

        code, body = await send(client, front, keys["alice"], "alice", "bob", {"hello": "caddy"})
        self.assertEqual(code, 201, body)
        await eventually(lambda: stream.seqs == [body["seq"]], timeout=5)
        self.assertEqual(stream.items()[0]["envelope"], {"hello": "caddy"})
        msg = await nats_(asyncio.wait_for(queue.get(), 5))
        self.assertIn(b"caddy", msg.data)
