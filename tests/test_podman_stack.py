"""
The container deployment, run for real: the image built from the shipped
C{Dockerfile} and the shipped C{deploy/docker-compose.yml} brought up in
podman (podman-compose), as an operator would with Docker.

One image is built per test run (see L{tests.podmansupport}); each test
brings up one compose project and takes it down, volumes and all, at the
end. The clients are kezchat's own (L{kezchat.client.natsclient}) and the
suite's HTTP helpers, talking to the published loopback ports.
"""

from __future__ import annotations

import json
import os
import re
import ssl
from typing import Any

import nats
from twisted.internet import reactor
from twisted.internet.ssl import Certificate
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS

from kezchat.client.natsclient import connect_user, fetch_inbox, open_inbox, publish_envelope
from kezchat.compat.aio import deferred_from_coroutine
from kezchat.identity.keys import KeyPair
from kezchat.protocol.natskeys import USER, NKey
from kezchat.protocol.subjects import reply_prefix
from tests.deploysupport import ROOT
from tests.podmansupport import CommandFailed, Engine, Stack, engine
from tests.relaysupport import inbox, open_stream, send
from tests.support import deferred_sleep, http_client, json_of, register

#: a first run builds the base images (debootstrap) and the image
TIMEOUT = 1200


def envelopes(page: dict[str, Any]) -> list[Any]:
    return [m["envelope"] for m in page["messages"]]


def guide_healthz() -> dict[str, Any]:
    """
    The health answer the operator guide shows after the first start.
    """
    with open(os.path.join(ROOT, "docs", "operations.md")) as f:
        found = re.search(r"curl https://\S+/v1/healthz\n\s*# (\{.*\})", f.read())
    assert found is not None, "the guide's healthz example"
    return json.loads(found.group(1))


async def fetch_and_ack(sub: Any, timeout: float = 5.0) -> list[Any]:
    """
    What a native client does: fetch from its durable consumer and
    acknowledge, so only newer messages come next time. (Unacknowledged
    ones would come again after the consumer's ack wait, at a time that
    depends on the machine's speed.)
    """
    got = await fetch_inbox(sub, timeout=timeout)
    for message in got:
        await message.ack()
    return got


class ImageTests(TestCase):
    timeout = TIMEOUT

    async def test_image(self) -> None:
        """
        The runtime image runs as the numeric non-root user, has the
        health check, the installed web app and the servers' packages only:
        no P2P wheel, no keyring, no pip.
        """
        eng = await engine(self)
        facts = await eng.podman(
            "run", "--rm", "--network", "none", "--entrypoint", "python", eng.image, "-c",
            "import os, importlib.util as u, kezchat.http.webapp as w;"
            "print(os.getuid(), os.getgid());"
            "print(os.path.isfile(os.path.join(w.packaged_web_dir(), 'index.html')));"
            "print(sorted(m for m in ('iroh', 'keyring', 'tqdm', 'pip') if u.find_spec(m)))",
        )
        self.assertEqual(facts.split("\n")[:3], ["10001 10001", "True", "[]"])
        health = await eng.podman(
            "image", "inspect", "--format", "{{.HealthCheck.Test}}", eng.image
        )
        self.assertIn("/v1/healthz", health)


class StackTests(TestCase):
    timeout = TIMEOUT

    async def _users(self, url: str) -> tuple[KeyPair, KeyPair]:
        client = http_client(self)
        alice, _ = await register(client, url, "alice")
        bob, _ = await register(client, url, "bob")
        return alice, bob

    async def _nats(self, url: str, key: KeyPair) -> Any:
        nc = await deferred_from_coroutine(connect_user(url, key, reconnect=False))
        self.addCleanup(lambda: deferred_from_coroutine(nc.close()))
        return nc

    async def _inbox(self, url: str, key: KeyPair, handle: str) -> list[Any]:
        code, page = await inbox(http_client(self), url, key, handle)
        self.assertEqual(code, 200, page)
        return envelopes(page)

    async def test_bundled_stack(self) -> None:
        """
        The stack as shipped, with the bundled nats-server and Caddy (the
        tls profile): two users chat over HTTP/SSE and over native NATS
        through the auth callout, and over HTTPS through Caddy (its local
        CA) including the NATS WebSocket path; restarting the chat-server
        container loses nothing, and so does C{down} then C{up} (the named
        volumes keep the databases, the keys and JetStream).
        """
        eng = await engine(self)
        stack = Stack(self, eng, "bundled", 0)
        await stack.start_clean()
        await stack.create_keys()
        await stack.compose("up", "-d")
        health = await stack.healthy()
        self.assertEqual((health["status"], health["db"]), ("ok", "ok"))
        # what the guide shows an operator at this step
        self.assertEqual(set(guide_healthz()), set(health))
        # the image's HEALTHCHECK and the compose file's (sig-server, nats),
        # run by the engine (without systemd nothing runs them on a timer)
        for service in ("chat-server", "sig-server", "nats"):
            await eng.podman("healthcheck", "run", stack.container(service))
        running = await eng.podman("ps", "--format", "{{.Names}}")
        for service in ("chat-server", "sig-server", "nats", "caddy"):
            self.assertIn(stack.container(service), running)

        url = stack.chat_url
        client = http_client(self)
        alice, bob = await self._users(url)

        # HTTP in, SSE out
        stream = await open_stream(self, url, bob, "bob")
        self.assertEqual(stream.response.code, 200)
        code, body = await send(client, url, alice, "alice", "bob", {"via": "http"})
        self.assertEqual(code, 201, body)
        await stream.wait_for(1)

        # native NATS through the callout: alice publishes, bob reads his
        # JetStream inbox, and the SSE stream gets it too (the bridge)
        nc_alice = await self._nats(stack.nats_url, alice)
        nc_bob = await self._nats(stack.nats_url, bob)
        await deferred_from_coroutine(
            publish_envelope(nc_alice, alice, bob.public_hex, {"via": "nats"})
        )
        sub = await deferred_from_coroutine(open_inbox(nc_bob, bob))
        got = await deferred_from_coroutine(fetch_and_ack(sub))
        self.assertIn({"via": "nats"}, [m.envelope for m in got])
        self.assertEqual({m.from_primary for m in got}, {alice.primary})
        await stream.wait_for(2)
        self.assertEqual(
            [i["envelope"] for i in stream.items()], [{"via": "http"}, {"via": "nats"}]
        )
        await stream.close()
        await deferred_from_coroutine(nc_alice.close())
        await deferred_from_coroutine(nc_bob.close())

        await self._tls(stack, alice, bob)
        before = await self._inbox(url, bob, "bob")
        self.assertEqual(before, [{"via": "http"}, {"via": "nats"}, {"via": "https"}])

        # a restart of the chat-server container loses nothing, and NATS
        # logs in again with the keys from the nats-keys volume
        await stack.compose("restart", "chat-server")
        await stack.healthy()
        self.assertEqual(await self._inbox(url, bob, "bob"), before)
        code, body = await send(client, url, alice, "alice", "bob", {"via": "after restart"})
        self.assertEqual(code, 201, body)

        # down (volumes kept) and up: the same users, messages and stream
        await stack.compose("down", "--timeout", "5")
        self.assertNotIn(stack.container("chat-server"), await eng.podman("ps", "-a"))
        await stack.compose("up", "-d")
        await stack.healthy()
        after = await self._inbox(url, bob, "bob")
        self.assertEqual(after, [*before, {"via": "after restart"}])
        nc_bob = await self._nats(stack.nats_url, bob)
        sub = await deferred_from_coroutine(open_inbox(nc_bob, bob))
        # JetStream kept the stream and bob's durable consumer (nats-data):
        # what he had not fetched yet is there, what he acknowledged is not
        again = await deferred_from_coroutine(fetch_and_ack(sub))
        self.assertEqual([m.envelope for m in again], [{"via": "after restart"}])

    async def _tls(self, stack: Stack, alice: KeyPair, bob: KeyPair) -> None:
        """
        Caddy's HTTPS with its local CA (taken from its data volume): the
        API, the web app, the sig-server route and NATS over wss://…/nats.
        """
        pem = await self._caddy_root(stack)
        policy = BrowserLikePolicyForHTTPS(trustRoot=Certificate.loadPEM(pem))
        https = http_client(self, Agent(reactor, contextFactory=policy))
        front = stack.https_url

        response = await https.get(f"{front}/v1/healthz")
        self.assertEqual(response.code, 200)
        self.assertEqual((await json_of(response))["nats"], "connected")
        page = await https.get(f"{front}/")
        self.assertIn(b"<html", await page.content())
        chain = await https.get(f"{front}/v1/sigchains/{alice.public_hex}")
        await chain.content()
        self.assertIn(chain.code, (200, 404))
        self.assertEqual(chain.headers.getRawHeaders("content-type", [""])[0][:16],
                         "application/json")
        hidden = await https.get(f"{front}/metrics")
        await hidden.content()
        self.assertEqual(hidden.code, 404)

        # a browser-style NATS client: wss through Caddy, logged in by the
        # callout, receives what alice sends over HTTPS
        context = ssl.create_default_context(cadata=pem.decode())
        nc = await deferred_from_coroutine(
            nats.connect(
                f"wss://localhost:{stack.https_port}/nats",
                nkeys_seed_str=NKey(USER, bob.seed).seed_text,
                inbox_prefix=reply_prefix(bob.public_hex),
                tls=context,
                allow_reconnect=False,
                connect_timeout=5,
            )
        )
        self.addCleanup(lambda: deferred_from_coroutine(nc.close()))
        sub = await deferred_from_coroutine(open_inbox(nc, bob))
        await deferred_from_coroutine(fetch_and_ack(sub, timeout=1))
        code, body = await send(https, front, alice, "alice", "bob", {"via": "https"})
        self.assertEqual(code, 201, body)
        got = await deferred_from_coroutine(fetch_and_ack(sub))
        self.assertIn({"via": "https"}, [m.envelope for m in got])
        await deferred_from_coroutine(nc.close())

    async def _caddy_root(self, stack: Stack) -> bytes:
        for _ in range(60):
            try:
                pem = await stack.engine.podman(
                    "exec", stack.container("caddy"),
                    "cat", "/data/caddy/pki/authorities/local/root.crt",
                )
                return pem.encode()
            except CommandFailed:
                await deferred_sleep(0.5)
        self.fail(f"Caddy made no local CA:\n{await stack.logs()}")

    async def test_own_nats(self) -> None:
        """
        The bundled nats-server left off (C{--scale nats=0}) and C{NATS_URL}
        pointing at a broker outside the stack, configured with the snippet
        the operator guide gives: the chat-server logs in to it and
        answers its callout, and users chat through it.
        """
        eng = await engine(self)
        stack = Stack(
            self, eng, "own-nats", 1,
            {"NATS_URL": "nats://broker:4222", "NATS_WS_UPSTREAM": "broker:8080"},
        )
        await stack.start_clean()
        keys = await stack.create_keys()
        # the compose network first (the sig-server needs no broker), so
        # the broker can join it under the name NATS_URL gives
        await stack.compose("up", "-d", "sig-server", profiles=())
        broker = await self._broker(eng, stack, keys)
        await stack.compose("up", "-d", "--scale", "nats=0", profiles=())
        await stack.healthy()
        running = await eng.podman("ps", "--format", "{{.Names}}")
        self.assertNotIn(stack.container("nats"), running)

        alice, bob = await self._users(stack.chat_url)
        nc_alice = await self._nats(broker, alice)
        nc_bob = await self._nats(broker, bob)
        await deferred_from_coroutine(
            publish_envelope(nc_alice, alice, bob.public_hex, {"via": "own nats"})
        )
        sub = await deferred_from_coroutine(open_inbox(nc_bob, bob))
        got = await deferred_from_coroutine(fetch_and_ack(sub))
        self.assertEqual([m.envelope for m in got], [{"via": "own nats"}])
        # and the chat-server stored it: HTTP clients see it too
        for _ in range(50):
            if await self._inbox(stack.chat_url, bob, "bob"):
                break
            await deferred_sleep(0.1)
        self.assertEqual(await self._inbox(stack.chat_url, bob, "bob"), [{"via": "own nats"}])

    async def _broker(self, eng: Engine, stack: Stack, keys: dict[str, str]) -> str:
        """
        A nats-server container outside the compose project, on its
        network as C{broker}, configured with the guide's snippet; returns
        its published loopback URL.
        """
        with open(os.path.join(ROOT, "docs", "operations.md")) as f:
            guide = f.read()
        snippet = re.search(
            r"Add this to its configuration.*?```conf\n(.*?)```", guide, re.S
        )
        assert snippet is not None, "the guide's nats.conf snippet"
        conf = snippet.group(1).replace("U…", keys["KEZ_CALLOUT_USER"]).replace(
            "A…", keys["KEZ_CALLOUT_ISSUER"]
        )
        path = f"{stack.directory}/broker.conf"
        with open(path, "w") as f:
            f.write(conf)
        port = stack.nats_port
        name = f"{stack.project}-broker"
        remove = ("rm", "--force", "--ignore", "--time", "2", name)
        await eng.podman(*remove)
        self.addCleanup(eng.podman, *remove)
        await eng.podman(
            "run", "--detach", "--name", name,
            "--network", f"{stack.project}_default", "--network-alias", "broker",
            "--publish", f"127.0.0.1:{port}:4222",
            "--volume", f"{path}:/etc/nats/nats-server.conf:ro",
            stack.settings["NATS_IMAGE"],
        )
        return f"nats://127.0.0.1:{port}"
