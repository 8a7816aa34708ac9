"""
The registry over real HTTP: every check of SPEC §3.1 with its own code.
"""

from __future__ import annotations

import time

from twisted.internet.defer import gatherResults
from twisted.trial.unittest import TestCase

from kezchat.identity.keys import KeyPair
from tests.backends import on_postgresql
from tests.support import http_client, json_of, register, registration, start_server


class RegistrationTests(TestCase):
    timeout = 30

    async def setUp(self) -> None:
        self.server = await start_server(self, sig_server_url="http://localhost:7878/")
        self.client = http_client(self)
        self.url = self.server.url

    async def post(self, body: object) -> tuple[int, dict]:
        response = await self.client.post(f"{self.url}/v1/register", json=body)
        return response.code, await json_of(response)

    async def assertRefused(self, body: object, status: int, code: str) -> None:
        got_status, got = await self.post(body)
        self.assertEqual((got_status, got["error"]["code"]), (status, code), got)

    async def test_register_and_read_back(self) -> None:
        key, record = await register(self.client, self.url, "tudisco")
        self.assertEqual(record["handle"], "tudisco")
        self.assertEqual(record["fqhn"], "tudisco@kez.lat")
        self.assertEqual(record["primary"], key.primary)
        self.assertEqual(
            record["sigchain_url"],
            f"http://localhost:7878/v1/sigchains/ed25519/{key.public_hex}",
        )
        self.assertRegex(record["registered_at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        for path in ("/v1/u/tudisco", "/v1/u/TUDISCO@Kez.Lat", f"/v1/by-primary/{key.primary}"):
            response = await self.client.get(self.url + path)
            self.assertEqual(response.code, 200, path)
            self.assertEqual(await json_of(response), record, path)

    async def test_no_sig_server_no_sigchain_url(self) -> None:
        """
        Without a configured sig-server (the default) a record advertises
        no sigchain, and WebFinger has no sigchain link: nothing points at
        a server that is not there.
        """
        server = await start_server(self)
        _key, record = await register(self.client, server.url, "nochain")
        self.assertNotIn("sigchain_url", record)
        self.assertEqual(set(record), {"handle", "fqhn", "primary", "registered_at", "log_index"})
        response = await self.client.get(
            f"{server.url}/.well-known/webfinger", params={"resource": "acct:nochain@kez.lat"}
        )
        jrd = await json_of(response)
        self.assertEqual([link["rel"] for link in jrd["links"]], ["self"])

    async def test_webfinger(self) -> None:
        key, record = await register(self.client, self.url, "alice")
        response = await self.client.get(
            f"{self.url}/.well-known/webfinger", params={"resource": "acct:alice@kez.lat"}
        )
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/jrd+json"])
        self.assertEqual(response.headers.getRawHeaders("access-control-allow-origin"), ["*"])
        jrd = await json_of(response)
        self.assertEqual(jrd["subject"], "acct:alice@kez.lat")
        self.assertIn(record["sigchain_url"], [link["href"] for link in jrd["links"]])
        self.assertIn("self", [link["rel"] for link in jrd["links"]])
        self.assertIn(key.primary, jrd["properties"].values())
        for resource, status in [
            (None, 400),
            ("alice@kez.lat", 400),
            ("acct:", 400),
            ("acct:a@kez.lat", 400),
            ("acct:bob@kez.lat", 404),
            ("acct:alice@elsewhere.org", 404),
        ]:
            params = {} if resource is None else {"resource": resource}
            response = await self.client.get(f"{self.url}/.well-known/webfinger", params=params)
            self.assertEqual(response.code, status, resource)
            await json_of(response)

    async def test_each_check_has_its_code(self) -> None:
        key = KeyPair.generate()
        good = registration(key, "carol")
        cases = [
            (dict(good, kez="other"), 400, "bad_request"),
            ({**good, "payload": {**good["payload"], "type": "x"}}, 400, "bad_request"),
            ({**good, "payload": {**good["payload"], "version": 2}}, 400, "bad_request"),
            (
                {**good, "signature": {**good["signature"], "key": KeyPair.generate().primary}},
                401,
                "bad_signature",
            ),
            ({**good, "signature": {**good["signature"], "sig": "00" * 64}}, 401, "bad_signature"),
            (registration(key, "carol", server="other.example"), 400, "wrong_server"),
            (registration(key, "Carol"), 400, "invalid_handle"),
            (registration(key, "ab"), 400, "invalid_handle"),
            (registration(key, "_carol"), 400, "invalid_handle"),
            (registration(key, "admin"), 400, "reserved_handle"),
            (registration(key, "carol", created_at=time.time() - 301), 401, "stale_timestamp"),
            # whole-second RFC 3339 truncates, and cases are built before sending:
            # leave a margin beyond the 300 s window
            (registration(key, "carol", created_at=time.time() + 310), 401, "stale_timestamp"),
        ]
        for body, status, code in cases:
            await self.assertRefused(body, status, code)
        # none of the refused bodies stored anything
        response = await self.client.get(f"{self.url}/v1/u/carol")
        self.assertEqual(response.code, 404)
        await register(self.client, self.url, "carol", key)
        await self.assertRefused(registration(KeyPair.generate(), "carol"), 409, "handle_taken")
        await self.assertRefused(registration(key, "carol2"), 409, "primary_taken")

    async def test_concurrent_registrations_of_one_handle(self) -> None:
        bodies = [registration(KeyPair.generate(), "racer") for _ in range(50)]
        responses = await gatherResults(
            [self.client.post(f"{self.url}/v1/register", json=b) for b in bodies]
        )
        codes = sorted(r.code for r in responses)
        for r in responses:
            await r.content()
        self.assertEqual(codes, [201] + [409] * 49)

    async def test_lookup_errors(self) -> None:
        for path, status, code in [
            ("/v1/u/ghost", 404, "not_found"),
            # test servers do not federate (lookups there: tests.test_federation)
            ("/v1/u/ghost@elsewhere.org", 400, "federation_disabled"),
            ("/v1/u/a", 400, "invalid_handle"),
            ("/v1/by-primary/garbage", 400, "bad_request"),
            ("/v1/by-primary/ed25519:" + "ab" * 32, 404, "not_found"),
            ("/nowhere", 404, "not_found"),
            ("/v1/u/%ff%fe", 400, "bad_request"),
        ]:
            response = await self.client.get(self.url + path)
            body = await json_of(response)
            self.assertEqual((response.code, body["error"]["code"]), (status, code), path)

    async def test_wrong_method(self) -> None:
        response = await self.client.delete(f"{self.url}/v1/register")
        self.assertEqual(response.code, 405)
        self.assertEqual((await json_of(response))["error"]["code"], "method_not_allowed")
        self.assertIn("POST", response.headers.getRawHeaders("allow")[0])

    async def test_healthz(self) -> None:
        response = await self.client.get(f"{self.url}/v1/healthz")
        body = await json_of(response)
        self.assertEqual(body["status"], "ok")
        self.assertEqual(body["server"], "kez.lat")
        self.assertEqual(body["nats"], "disabled")
        self.assertIn("version", body)

    async def test_metrics(self) -> None:
        await register(self.client, self.url, "metered")
        await self.assertRefused(registration(KeyPair.generate(), "admin"), 400, "reserved_handle")
        response = await self.client.get(f"{self.url}/metrics")
        text = (await response.content()).decode()
        self.assertEqual(response.code, 200)
        self.assertIn("kezchat_registrations_total 1.0", text)
        self.assertIn('kezchat_rejections_total{code="reserved_handle"} 1.0', text)
        self.assertIn('route="register"', text)
        self.assertIn("kezchat_http_request_seconds_bucket", text)


# the same tests on PostgreSQL
on_postgresql(globals(), RegistrationTests)
