"""
The registration pre-check (C{GET /v1/register/check}): clients ask it
before a person writes down 24 words, so every refusal a registration of
that handle would get without a key (invalid, another server's, reserved,
taken, rate-limited) is answered up front, and asking registers nothing
and spends no registration budget.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import TestCase

from tests.support import http_client, json_of, register, start_server


class RegisterCheckTests(TestCase):
    timeout = 60

    async def setUp(self) -> None:
        self.server = await start_server(self, register_limit=2)
        self.client = http_client(self)
        self.url = self.server.url

    async def check(self, *handles: str) -> tuple[int, dict]:
        response = await self.client.get(
            f"{self.url}/v1/register/check", params=[("handle", h) for h in handles]
        )
        return response.code, await json_of(response)

    async def assertUnavailable(self, handle: str, code: str) -> dict:
        status, body = await self.check(handle)
        self.assertEqual(status, 200, body)
        self.assertIs(body["available"], False, body)
        self.assertEqual(body["error"]["code"], code, body)
        self.assertTrue(body["error"]["message"])
        return body

    async def test_free_handle(self) -> None:
        for text in ("tudisco", "Tudisco", "TUDISCO@kez.lat"):
            status, body = await self.check(text)
            self.assertEqual(status, 200)
            self.assertEqual(
                body, {"handle": "tudisco", "fqhn": "tudisco@kez.lat", "available": True}
            )
        # asking registered nothing
        response = await self.client.get(f"{self.url}/v1/u/tudisco")
        self.assertEqual(response.code, 404)
        await response.content()

    async def test_each_refusal_up_front(self) -> None:
        await register(self.client, self.url, "taken")
        await self.assertUnavailable("taken", "handle_taken")
        await self.assertUnavailable("TAKEN@kez.lat", "handle_taken")
        await self.assertUnavailable("admin", "reserved_handle")
        await self.assertUnavailable("postmaster@kez.lat", "reserved_handle")
        await self.assertUnavailable("alice@other.example", "wrong_server")
        for bad in ("ab", "-alice", "alice\n", "al ice", "a" * 33, "", "alice\u200b"):
            await self.assertUnavailable(bad, "invalid_handle")

    async def test_rate_limited_without_spending(self) -> None:
        """
        The check spends no registration budget; once registrations from
        this address are used up, it says so (with the wait) before any
        words are written down.
        """
        for _ in range(5):
            _status, body = await self.check("fresh")
            self.assertIs(body["available"], True, body)
        await register(self.client, self.url, "one")
        await register(self.client, self.url, "two")
        body = await self.assertUnavailable("fresh", "rate_limited")
        self.assertGreater(body["error"]["retry_after"], 0)

    async def test_malformed_questions(self) -> None:
        for params in ([], [("handle", "a"), ("handle", "b")]):
            response = await self.client.get(f"{self.url}/v1/register/check", params=params)
            body = await json_of(response)
            self.assertEqual((response.code, body["error"]["code"]), (400, "bad_request"))
        response = await self.client.get(f"{self.url}/v1/register/check?handle=%ff%fe")
        body = await json_of(response)
        self.assertEqual((response.code, body["error"]["code"]), (400, "bad_request"))
        response = await self.client.post(f"{self.url}/v1/register/check?handle=a")
        self.assertEqual(response.code, 405)
        await response.content()

    async def test_any_text_answered(self) -> None:
        """
        Whatever text is asked about, the answer is a 200 saying yes or
        no with a registration's code, never a 5xx.
        """
        texts: list[str] = []

        @settings(max_examples=150, deadline=None, database=None)
        @given(st.text(max_size=80))
        def collect(text: str) -> None:
            texts.append(text)

        collect()
        for text in texts:
            status, body = await self.check(text)
            self.assertEqual(status, 200, (text, body))
            if not body["available"]:
                self.assertIn(
                    body["error"]["code"],
                    {"invalid_handle", "wrong_server", "reserved_handle", "handle_taken"},
                )
