"""
A hostile server for tests: a real HTTP server in front of a real
chat-server that forwards every request and lets a test rewrite any
answer, as a compromised server (or a network attacker holding its TLS
key) would. The key directory tests use it to show that clients catch what
it does.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import treq
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

#: (path, query, status, body) → a new (status, body), or None to pass it on
Tamper = Callable[[str, dict[str, list[str]], int, bytes], "tuple[int, bytes] | None"]

_FORWARDED = ("content-type", "x-kez-auth", "x-kez-sender", "accept", "last-event-id")


def json_tamper(
    rule: Callable[[str, dict[str, list[str]], Any], Any],
) -> Tamper:
    """
    A tamper working on parsed JSON: C{rule(path, query, value)} returns the
    value to send instead, or C{None} to leave the answer alone.
    """

    def tamper(path: str, query: dict[str, list[str]], status: int, body: bytes):
        try:
            value = json.loads(body)
        except ValueError:
            return None
        changed = rule(path, query, value)
        if changed is None:
            return None
        if isinstance(changed, tuple):
            return changed[0], json.dumps(changed[1]).encode()
        return status, json.dumps(changed).encode()

    return tamper


class _Forward(Resource):
    isLeaf = True

    def __init__(self, relay: HostileRelay) -> None:
        super().__init__()
        self.relay = relay

    def render(self, request: Any) -> Any:
        ensureDeferred(self.relay.forward(request))
        return NOT_DONE_YET


@dataclass
class HostileRelay:
    upstream: str
    pool: Any
    url: str = ""
    tamper: Tamper | None = None

    async def forward(self, request: Any) -> None:
        target = self.upstream + request.uri.decode("latin-1")
        headers = {
            name: request.getHeader(name) for name in _FORWARDED if request.getHeader(name)
        }
        request.content.seek(0)
        body = request.content.read()
        try:
            response = await treq.request(
                request.method.decode(), target, headers=headers, data=body or None,
                pool=self.pool, timeout=30,
            )
            status, content = response.code, await response.content()
            content_type = response.headers.getRawHeaders("content-type", ["application/json"])
        except Exception as e:  # the upstream is gone: say so, as a proxy would
            status, content, content_type = 502, str(e).encode(), ["text/plain"]
        parts = urlsplit(request.uri.decode("latin-1"))
        if self.tamper is not None:
            try:
                changed = self.tamper(parts.path, parse_qs(parts.query), status, content)
            except Exception as e:  # a bug in the test's tamper: say it loudly
                changed = 599, f"tamper failed: {type(e).__name__}: {e}".encode()
            if changed is not None:
                status, content = changed
        request.setResponseCode(status)
        request.setHeader(b"content-type", content_type[0].encode())
        request.setHeader(b"content-length", b"%d" % len(content))
        request.write(content)
        request.finish()


async def start_hostile_relay(case: TestCase, upstream: str) -> HostileRelay:
    """
    A hostile relay in front of C{upstream}, on 127.0.0.1, stopped with
    the test.
    """
    relay = HostileRelay(upstream.rstrip("/"), HTTPConnectionPool(reactor, persistent=False))
    port = reactor.listenTCP(0, Site(_Forward(relay)), interface="127.0.0.1")
    case.addCleanup(port.stopListening)
    case.addCleanup(relay.pool.closeCachedConnections)
    relay.url = f"http://127.0.0.1:{port.getHost().port}"
    return relay


__all__ = ["HostileRelay", "json_tamper", "start_hostile_relay"]
