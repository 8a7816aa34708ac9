"""
The kezsig HTTP API over real HTTP: appends are verified exactly as a
client verifies a chain, forks are refused, and no input — however broken
— gets a 500 or changes what is stored.
"""

from __future__ import annotations

import json
from urllib.parse import quote

from hypothesis import strategies as st
from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.trial.unittest import TestCase

from kezchat.identity.jcs import canonical_json
from kezchat.identity.keys import KeyPair
from kezchat.sigchain import bodies, next_event, read_document, read_jsonl
from kezchat.sigserver.http import EVENT_CAP
from tests.backends import on_postgresql
from tests.sigsupport import examples, json_values, start_sig_server
from tests.support import http_client, json_of

NATS = bodies.add_endpoint("nats-1", "nats", url="wss://kez.lat/nats")
IROH = bodies.add_endpoint("laptop", "iroh", node_id="ab" * 32)


def encode(value: object) -> bytes:
    return json.dumps(value).encode()


def signable(value: object) -> bool:
    try:
        canonical_json(value)
    except ValueError:
        return False
    return True


def resigned(key: KeyPair, event: dict) -> dict:
    event = {k: v for k, v in event.items() if k != "sig"}
    event["sig"] = key.sign_jcs(event)
    return event


class SigServerTestCase(TestCase):
    timeout = 60

    async def setUp(self) -> None:
        self.server = await start_sig_server(self)
        self.client = http_client(self)
        self.key = KeyPair.generate()
        self.url = self.server.chain_url(self.key.public_hex)
        self.events: list[dict] = []

    async def post(self, event: object, url: str | None = None) -> tuple[int, dict]:
        response = await self.client.post(
            (url or self.url) + "/events",
            data=canonical_json(event),
            headers={"content-type": "application/json"},
        )
        return response.code, await json_of(response)

    async def append(self, kind: str, body: dict) -> dict:
        event = next_event(self.key, self.events, kind, body)
        status, answer = await self.post(event)
        self.assertEqual(status, 201, answer)
        self.events.append(event)
        return answer

    async def stored(self) -> bytes:
        response = await self.client.get(self.url)
        self.assertEqual(response.code, 200)
        return await response.content()

    async def assertRefused(self, event: object, status: int, code: str) -> None:
        before = await self.stored()
        got_status, answer = await self.post(event)
        self.assertEqual((got_status, answer["error"]["code"]), (status, code), answer)
        self.assertEqual(await self.stored(), before)


class AppendAndReadTests(SigServerTestCase):
    async def test_unknown_key_is_an_empty_chain(self) -> None:
        response = await self.client.get(self.url)
        self.assertEqual(response.code, 200)
        self.assertEqual(await json_of(response), {"primary": self.key.primary, "events": []})

    async def test_append_and_read(self) -> None:
        answer = await self.append("add_endpoint", NATS)
        self.assertEqual(answer["seq"], 1)
        await self.append("add_endpoint", IROH)
        await self.append("remove_endpoint", bodies.remove_endpoint("nats-1"))
        await self.append("revoke", bodies.revoke(3))
        state = read_document(await self.stored(), primary=self.key.primary)
        self.assertEqual(state.head_seq, 4)
        self.assertEqual([e.id for e in state.endpoints], ["nats-1", "laptop"])
        self.assertEqual(
            await self.stored(),
            canonical_json({"primary": self.key.primary, "events": self.events}),
        )

    async def test_jsonl(self) -> None:
        await self.append("add_endpoint", NATS)
        await self.append("add_claim", bodies.add_claim("github:chris", "https://gist/x"))
        for kwargs in (
            {"headers": {"accept": "application/jsonl"}},
            {"params": {"format": "jsonl"}},
        ):
            response = await self.client.get(self.url, **kwargs)
            self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/jsonl"])
            state = read_jsonl(await response.content(), self.key.primary)
            self.assertEqual(state.claims[0].claim, "github:chris")
        response = await self.client.get(self.url, params={"format": "xml"})
        self.assertEqual(
            (response.code, (await json_of(response))["error"]["code"]), (400, "bad_request")
        )

    async def test_retry_is_idempotent(self) -> None:
        await self.append("add_endpoint", NATS)
        status, answer = await self.post(self.events[0])
        self.assertEqual((status, answer["seq"]), (200, 1))

    async def test_cors(self) -> None:
        response = await self.client.request("OPTIONS", self.url + "/events")
        self.assertEqual(response.code, 204)
        self.assertEqual(response.headers.getRawHeaders("access-control-allow-origin"), ["*"])
        self.assertIn("POST", response.headers.getRawHeaders("access-control-allow-methods")[0])
        for response in [
            await self.client.get(self.url),
            await self.client.post(self.url + "/events", data=b"{}"),
        ]:
            self.assertEqual(response.headers.getRawHeaders("access-control-allow-origin"), ["*"])
            await response.content()

    async def test_healthz_and_metrics(self) -> None:
        await self.append("add_endpoint", NATS)
        response = await self.client.get(self.server.url + "/v1/healthz")
        self.assertEqual((await json_of(response))["status"], "ok")
        response = await self.client.get(self.server.url + "/metrics")
        text = (await response.content()).decode()
        self.assertIn('kezsig_events_appended_total{type="add_endpoint"} 1.0', text)
        self.assertNotIn("kezchat_", text)


class RefusalTests(SigServerTestCase):
    async def setUp(self) -> None:
        await super().setUp()
        await self.append("add_endpoint", NATS)
        await self.append("add_endpoint", IROH)

    async def test_fork(self) -> None:
        fork = next_event(self.key, self.events[:1], "add_claim", bodies.add_claim("dns:x"))
        await self.assertRefused(fork, 409, "fork")

    async def test_gap(self) -> None:
        event = next_event(self.key, self.events, "add_claim", bodies.add_claim("dns:x"))
        await self.assertRefused(resigned(self.key, {**event, "seq": 4}), 409, "bad_seq")

    async def test_bad_prev(self) -> None:
        event = next_event(self.key, self.events, "add_claim", bodies.add_claim("dns:x"))
        await self.assertRefused(resigned(self.key, {**event, "prev": "00" * 32}), 409, "bad_prev")

    async def test_bad_revoke(self) -> None:
        await self.append("revoke", bodies.revoke(1))
        again = next_event(self.key, self.events, "revoke", bodies.revoke(1))
        await self.assertRefused(again, 409, "bad_revoke")
        of_revoke = next_event(self.key, self.events, "revoke", bodies.revoke(3))
        await self.assertRefused(of_revoke, 409, "bad_revoke")

    async def test_wrong_signer(self) -> None:
        other = KeyPair.generate()
        event = next_event(self.key, self.events, "add_claim", bodies.add_claim("a:b"))
        await self.assertRefused(
            resigned(other, {**event, "signer": other.primary}), 400, "wrong_signer"
        )

    async def test_bad_signature(self) -> None:
        event = next_event(self.key, self.events, "add_claim", bodies.add_claim("dns:x"))
        event["body"]["claim"] = "dns:y"
        await self.assertRefused(event, 401, "bad_signature")

    async def test_malformed(self) -> None:
        event = next_event(self.key, self.events, "add_claim", bodies.add_claim("dns:x"))
        await self.assertRefused(resigned(self.key, {**event, "body": {}}), 400, "bad_request")

    async def test_duplicate_keys(self) -> None:
        event = next_event(self.key, self.events, "add_claim", bodies.add_claim("dns:x"))
        before = await self.stored()
        data = canonical_json(event)[:-1] + b',"seq":3}'
        response = await self.client.post(self.url + "/events", data=data)
        self.assertEqual(
            (response.code, (await json_of(response))["error"]["code"]), (400, "bad_request")
        )
        self.assertEqual(await self.stored(), before)

    async def test_bad_key_in_path(self) -> None:
        event = next_event(self.key, self.events, "add_claim", bodies.add_claim("dns:x"))
        for key_hex in ("AB" * 32, "ab" * 31, "zz" * 32):
            url = self.server.chain_url(key_hex)
            status, answer = await self.post(event, url=url)
            self.assertEqual((status, answer["error"]["code"]), (400, "bad_request"))
            response = await self.client.get(url)
            self.assertEqual(response.code, 400)
            await response.content()

    async def test_oversize(self) -> None:
        before = await self.stored()
        response = await self.client.post(self.url + "/events", data=b" " * (EVENT_CAP + 1))
        self.assertEqual(response.code, 413)
        # refused before any resource ran, and still readable by a browser
        self.assertEqual(response.headers.getRawHeaders("access-control-allow-origin"), ["*"])
        self.assertEqual((await json_of(response))["error"]["code"], "payload_too_large")
        self.assertEqual(await self.stored(), before)

    async def test_concurrent_same_seq(self) -> None:
        """
        Ten different events for seq 3 race: exactly one is stored.
        """
        racers = [
            next_event(self.key, self.events, "add_claim", bodies.add_claim(f"dns:{n}"))
            for n in range(10)
        ]
        results = await gatherResults([ensureDeferred(self.post(event)) for event in racers])
        statuses = sorted(status for status, _ in results)
        self.assertEqual(statuses, [201] + [409] * 9)
        state = read_document(await self.stored(), primary=self.key.primary)
        self.assertEqual(state.head_seq, 3)


class GarbageTests(SigServerTestCase):
    """
    Hypothesis-drawn garbage at every endpoint: always a 4xx JSON error,
    never a 500, and the stored chain never changes.
    """

    timeout = 120

    async def setUp(self) -> None:
        await super().setUp()
        await self.append("add_endpoint", NATS)
        await self.append("add_endpoint", IROH)

    async def assert_4xx(self, response) -> None:
        body = await response.content()
        self.assertTrue(400 <= response.code < 500, (response.code, body[:200]))
        self.assertIn("error", json.loads(body))

    async def test_garbage_bodies(self) -> None:
        template = self.events[1]
        mutated = st.builds(
            lambda key, value: {**template, key: value},
            st.sampled_from(sorted(template)),
            json_values,
        ).filter(lambda e: e != template)
        dropped = st.sampled_from(sorted(template)).map(
            lambda key: {k: v for k, v in template.items() if k != key}
        )
        bodies_ = st.one_of(
            st.binary(max_size=200),
            st.binary(max_size=64).map(lambda b: b'{"seq": "' + b + b'"}'),
            json_values.map(encode),
            mutated.map(encode),
            # (re-signing a changed sig gives back the stored event: not garbage)
            mutated.filter(signable)
            .map(lambda e: resigned(self.key, e))
            .filter(lambda e: e != template)
            .map(encode),
            dropped.map(encode),
            st.integers(EVENT_CAP + 1, EVENT_CAP * 3).map(lambda n: b"[" * n),
        )
        before = await self.stored()
        for body in examples(bodies_, 150):
            response = await self.client.post(self.url + "/events", data=body)
            await self.assert_4xx(response)
        self.assertEqual(await self.stored(), before)

    async def test_garbage_paths_and_queries(self) -> None:
        before = await self.stored()
        for text in examples(st.text(max_size=70), 60):
            segment = quote(text, safe="")
            for response in [
                await self.client.get(f"{self.server.url}/v1/sigchains/ed25519/{segment}"),
                await self.client.post(
                    f"{self.server.url}/v1/sigchains/ed25519/{segment}/events",
                    data=canonical_json(self.events[0]),
                ),
                await self.client.get(self.url + "?format=" + segment),
            ]:
                if response.code == 200:  # format=json and a few spellings of it
                    await response.content()
                    continue
                await self.assert_4xx(response)
        response = await self.client.get(self.server.url + "/v1/sigchains/ed25519/%ff%fe")
        await self.assert_4xx(response)
        self.assertEqual(await self.stored(), before)


# the same tests on PostgreSQL
on_postgresql(globals(), AppendAndReadTests, RefusalTests)
