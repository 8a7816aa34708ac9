"""
C{--nats-ws-url}: where the web app reaches NATS over WebSocket. Checked
when parsed (a browser takes only ws:// and wss://, and the URL goes into
healthz and the content security policy as is), and advertised in healthz
as C{nats_ws} and allowed by the CSP only when NATS itself is configured.
"""

from __future__ import annotations

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from kezchat.server.config import ChatConfig, ChatOptions, nats_ws_url_problem
from kezchat.server.service import connect_sources
from tests.support import http_client, json_of, start_server


class ParseTests(SynchronousTestCase):
    def parse(self, argv: list[str], environ: dict[str, str] | None = None) -> ChatConfig:
        options = ChatOptions(environ or {})
        options.parseOptions(argv)
        config: ChatConfig = options.config
        return config

    def test_flag_and_variable(self) -> None:
        self.assertEqual(
            self.parse(["--nats-ws-url", "wss://kez.lat/nats"]).nats_ws_url, "wss://kez.lat/nats"
        )
        config = self.parse([], {"KEZ_CHAT_NATS_WS_URL": "ws://127.0.0.1:8080"})
        self.assertEqual(config.nats_ws_url, "ws://127.0.0.1:8080")
        self.assertIsNone(self.parse([]).nats_ws_url)
        self.assertIsNone(self.parse([], {"KEZ_CHAT_NATS_WS_URL": ""}).nats_ws_url)

    def test_refused(self) -> None:
        for bad in (
            "nats://127.0.0.1:4222",
            "http://kez.lat/nats",
            "ws://",
            "wss://kez.lat/nats; script-src *",
            "wss://kez.lat/nats?x=1",
            "wss://kez.lat/'nats'",
            "kez.lat:8080",
        ):
            self.assertIsNotNone(nats_ws_url_problem(bad), bad)
            with self.assertRaises(usage.UsageError):
                self.parse(["--nats-ws-url", bad])
        for good in (None, "", "ws://127.0.0.1:8080", "wss://chat.example.org/nats"):
            self.assertIsNone(nats_ws_url_problem(good), good)

    def test_content_security_policy(self) -> None:
        url = "wss://kez.lat/nats"
        with_nats = ChatConfig(nats_url="nats://127.0.0.1:4222", nats_ws_url=url)
        self.assertIn(url, connect_sources(with_nats))
        self.assertNotIn(url, connect_sources(ChatConfig(nats_ws_url=url)))


class HealthzTests(TestCase):
    async def test_not_advertised_without_nats(self) -> None:
        """
        A WebSocket URL without NATS behind it is not advertised: the web
        app would only fail to connect. (With NATS, tests/test_web_nats.py
        reads it from a real server.)
        """
        server = await start_server(self, nats_ws_url="wss://kez.lat/nats")
        health = await json_of(await http_client(self).get(f"{server.url}/v1/healthz"))
        self.assertNotIn("nats_ws", health)
        self.assertEqual(health["nats"], "disabled")
