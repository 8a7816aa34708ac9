"""
schemathesis over every operation of both servers (see L{tests.apifuzz}):
no 5xx, every answer as documented, nothing stored changed by a refused
request. Authenticated requests carry real signatures, made for each
generated request, so the generator reaches the handlers, not just the 401.
"""

from __future__ import annotations

import os
import time
from typing import Any

from hypothesis import strategies as st
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from kezchat import openapi
from kezchat.identity.jcs import canonical_json
from kezchat.identity.keys import KeyPair
from kezchat.manifests import build_manifest, manifest_bytes, public_entry
from kezchat.protocol.auth import body_digest, sign_request
from kezchat.sigchain import bodies, next_event
from tests.apifuzz import Report, fuzz, transport
from tests.sigsupport import start_sig_server
from tests.support import http_client, registration, start_server

#: examples per operation and generation mode (valid, invalid)
EXAMPLES = int(os.environ.get("KEZ_SCHEMATHESIS_EXAMPLES", "40"))

handles = st.from_regex(r"[a-z0-9][a-z0-9_-]{2,12}", fullmatch=True)


def often(data: st.DataObject, label: str) -> bool:
    """
    True three times in four: most requests are made real, some are left
    as generated.
    """
    return data.draw(st.sampled_from([True, True, True, False]), label=label)


class ChatRequests:
    """
    Makes generated chat-server requests real: registered handles in paths
    and C{to}, valid registrations and manifests, and X-KEZ-Auth (or
    C{auth}) signed by the right key for exactly the request sent.
    """

    def __init__(self, users: dict[str, KeyPair]) -> None:
        self.users = users

    def key_of(self, handle: str) -> KeyPair:
        return self.users.get(handle.split("@")[0].lower()) or KeyPair.generate()

    def __call__(self, case: Any, data: st.DataObject, base_url: str) -> dict[str, Any]:
        operation = case.operation.definition.raw["operationId"]
        params = case.path_parameters or {}
        for name in ("h", "handle"):
            if name in params and often(data, "registered path handle"):
                params[name] = data.draw(st.sampled_from(sorted(self.users)), label=name)
        if operation == "send":
            sender = data.draw(st.sampled_from(sorted(self.users)), label="sender")
            if isinstance(case.body, dict) and often(data, "registered recipient"):
                case.body["to"] = data.draw(st.sampled_from(sorted(self.users)), label="to")
        if operation == "register" and often(data, "valid registration"):
            case.body = registration(KeyPair.generate(), data.draw(handles, label="new handle"))
        if operation == "manifest_put" and often(data, "valid manifest"):
            owner = self.key_of(params["handle"])
            entry = public_entry(
                id="f", name="f.txt", size=1, mime="text/plain", blake3="ab" * 32,
                added_at="2026-05-25T03:00:00Z",
            )
            case.body = manifest_bytes(build_manifest(owner, [entry]))

        kwargs = transport(case, base_url)
        if not often(data, "signed"):
            return kwargs
        now = int(time.time())
        headers, query = kwargs["headers"], kwargs["params"]
        body = kwargs.get("data", b"")
        if operation == "send":
            headers["X-KEZ-Sender"] = sender
            headers["X-KEZ-Auth"] = sign_request(
                self.users[sender], "POST", "/v1/messages", [body_digest(body)], now
            )
        elif operation in ("inbox", "acknowledge", "stream"):
            h = params["h"]
            path = f"/v1/inbox/{h}"
            if operation == "inbox":
                fields = [f"since={query.get('since', 0)}"]
            elif operation == "acknowledge":
                fields = [f"upto={query.get('upto', 0)}"]
            else:
                path, fields = path + "/stream", []
            auth = sign_request(self.key_of(h), case.method, path, fields, now)
            if operation == "stream":
                query["auth"] = auth
            else:
                headers["X-KEZ-Auth"] = auth
        elif operation == "manifest_put":
            h = params["handle"]
            headers["X-KEZ-Auth"] = sign_request(
                self.key_of(h), "PUT", f"/v1/manifests/{h}", [body_digest(body)], now
            )
        return kwargs


class SigRequests:
    """
    Makes generated sig-server requests real: known chains in paths and
    correctly signed first events for fresh keys.
    """

    def __init__(self, known: KeyPair) -> None:
        self.known = known

    def __call__(self, case: Any, data: st.DataObject, base_url: str) -> dict[str, Any]:
        operation = case.operation.definition.raw["operationId"]
        if operation == "sigchain" and often(data, "known chain"):
            case.path_parameters["key_hex"] = self.known.public_hex
        if operation == "append" and often(data, "valid event"):
            key = KeyPair.generate()
            claim = data.draw(st.from_regex(r"github:[a-z]{1,12}", fullmatch=True), label="claim")
            case.path_parameters["key_hex"] = key.public_hex
            case.body = canonical_json(next_event(key, [], "add_claim", bodies.add_claim(claim)))
        return transport(case, base_url)


def summary(report: Report) -> str:
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(report.statuses.items()))
    return f"{report.operations} operations, {report.requests} requests ({statuses})"


class SchemathesisTests(TestCase):
    timeout = 60 + 4 * EXAMPLES

    def check(self, report: Report) -> None:
        print(f"\n    schemathesis: {summary(report)}")
        self.assertEqual(report.failures, [], "\n\n".join(report.failures))
        # the generator reached the handlers: some requests succeeded
        self.assertTrue(any(200 <= s < 300 for s in report.statuses), summary(report))

    async def test_chat_server(self) -> None:
        # with a sig-server configured, so records carry the optional sigchain_url
        server = await start_server(self, sig_server_url="https://sig.kez.lat")
        client = http_client(self)
        users = {name: KeyPair.generate() for name in ("alice", "bob")}
        for name, key in users.items():
            response = await client.post(
                f"{server.url}/v1/register", data=canonical_json(registration(key, name))
            )
            self.assertEqual(response.code, 201)
        report = await deferToThread(
            fuzz,
            openapi.document("kezchat"),
            server.url,
            server.service.config.db,
            ChatRequests(users),
            EXAMPLES,
            frozenset({"stream"}),
        )
        self.check(report)

    async def test_sig_server(self) -> None:
        server = await start_sig_server(self)
        known = KeyPair.generate()
        event = next_event(known, [], "add_claim", bodies.add_claim("github:kez"))
        response = await http_client(self).post(
            server.chain_url(known.public_hex) + "/events", data=canonical_json(event)
        )
        self.assertEqual(response.code, 201)
        report = await deferToThread(
            fuzz,
            openapi.document("kezsig"),
            server.url,
            server.parts.config.db,
            SigRequests(known),
            EXAMPLES,
        )
        self.check(report)
