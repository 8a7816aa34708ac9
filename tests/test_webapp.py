"""
The web app is served beside the API (SPEC §3.5): assets with immutable
caching, index.html for client-side routes, security headers, and never
a fallback for API paths.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import TestCase

from tests.support import http_client, json_of, start_server, temp_dir

INDEX = b"<!doctype html><title>kez</title><script src=/assets/app-1234.js></script>"


class WebAppTests(TestCase):
    timeout = 30

    async def setUp(self) -> None:
        web = temp_dir(self)
        os.makedirs(os.path.join(web, "assets"))
        with open(os.path.join(web, "index.html"), "wb") as f:
            f.write(INDEX)
        with open(os.path.join(web, "assets", "app-1234.js"), "wb") as f:
            f.write(b"console.log('kez')")
        self.server = await start_server(
            self, web_dir=web, sig_server_url="http://localhost:7878"
        )
        self.client = http_client(self)
        # the files load off the reactor thread as the service starts
        for _ in range(50):
            response = await self.client.get(self.server.url + "/")
            await response.content()
            if response.code == 200:
                break

    async def test_index_and_fallback(self) -> None:
        for path in ("/", "/chat/alice", "/settings"):
            response = await self.client.get(self.server.url + path)
            self.assertEqual(response.code, 200, path)
            self.assertEqual(await response.content(), INDEX)
            headers = response.headers
            self.assertEqual(headers.getRawHeaders("cache-control"), ["no-cache"])
            self.assertEqual(headers.getRawHeaders("x-content-type-options"), ["nosniff"])
            self.assertTrue(headers.getRawHeaders("referrer-policy"))
            csp = headers.getRawHeaders("content-security-policy")[0]
            self.assertIn("default-src 'self'", csp)
            self.assertIn("http://localhost:7878", csp)  # the sig-server

    async def test_assets_are_immutable(self) -> None:
        response = await self.client.get(self.server.url + "/assets/app-1234.js")
        self.assertEqual(response.code, 200)
        self.assertEqual(await response.content(), b"console.log('kez')")
        self.assertIn("immutable", response.headers.getRawHeaders("cache-control")[0])
        self.assertIn("javascript", response.headers.getRawHeaders("content-type")[0])
        etag = response.headers.getRawHeaders("etag")[0]
        again = await self.client.get(
            self.server.url + "/assets/app-1234.js", headers={"If-None-Match": etag}
        )
        self.assertEqual(again.code, 304)
        await again.content()

    async def test_api_paths_never_fall_back(self) -> None:
        for path in ("/v1/nothing", "/v1/u/a", "/.well-known/nothing", "/metrics/x"):
            response = await self.client.get(self.server.url + path)
            self.assertIn(response.code, (400, 404), path)
            self.assertIn("error", await json_of(response), path)

    async def test_read_only(self) -> None:
        response = await self.client.post(self.server.url + "/somewhere", data=b"x")
        self.assertEqual(response.code, 405)
        self.assertEqual((await json_of(response))["error"]["code"], "method_not_allowed")
        # refused like any API error: counted as a rejection
        rejections = self.server.parts.metrics.rejections.labels("method_not_allowed")
        self.assertEqual(rejections._value.get(), 1)
